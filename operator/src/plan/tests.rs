//! Plan tests: a small simulated kernel applies plans to observed states, so properties such
//! as "a second plan after applying the first is empty" are checked over many generated
//! specs and drifted hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::addressing::Marker;
use crate::desired::{self, MeshOnHost};
use crate::manifest::Inventory;
use crate::observe::{Container, FdbEntry, GreInfo, HostState, Link, RouteEntry, VxlanInfo};
use crate::script;

const HOST: &str = "host-a";

/// Applies actions to a state the way the kernel would, failing where the kernel would.
struct Sim {
    state: HostState,
    /// host veth name → (container id, peer name)
    pairs: BTreeMap<String, (String, String)>,
}

impl Sim {
    fn links_mut(&mut self, ns: &Namespace) -> &mut Vec<Link> {
        match ns {
            Namespace::Host => &mut self.state.links,
            Namespace::Container { id, .. } => self
                .state
                .container_links
                .entry(id.as_str().to_owned())
                .or_default(),
        }
    }

    fn link_mut(&mut self, ns: &Namespace, name: &str) -> Result<&mut Link, String> {
        self.links_mut(ns)
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or_else(|| format!("Cannot find device \"{name}\""))
    }

    fn add(&mut self, ns: &Namespace, link: Link) -> Result<(), String> {
        if self.links_mut(ns).iter().any(|l| l.name == link.name) {
            return Err("File exists".into());
        }
        self.links_mut(ns).push(link);
        Ok(())
    }

    fn apply(&mut self, step: &Step) -> Result<(), String> {
        let ns = &step.ns;
        match &step.action {
            Action::CheckContainer => {
                let Namespace::Container { id, pid } = ns else {
                    return Err("check on host".into());
                };
                let c = self
                    .state
                    .containers
                    .iter()
                    .find(|c| c.id == id.as_str())
                    .ok_or("no container")?;
                if !(c.running && c.pid == *pid) {
                    return Err("pid changed".into());
                }
            }
            Action::DeleteLink { name } => {
                let links = self.links_mut(ns);
                let before = links.len();
                links.retain(|l| l.name != name.as_str());
                if links.len() == before {
                    return Err(format!("Cannot find device \"{name}\""));
                }
                for l in self.links_mut(ns).iter_mut() {
                    if l.master.as_deref() == Some(name.as_str()) {
                        l.master = None;
                        l.isolated = None;
                    }
                }
                if let (Namespace::Host, Some((cid, peer))) = (ns, self.pairs.remove(name.as_str()))
                {
                    if let Some(links) = self.state.container_links.get_mut(&cid) {
                        links.retain(|l| l.name != peer);
                    }
                }
                if let Namespace::Container { id, .. } = ns {
                    self.pairs
                        .retain(|_, (cid, peer)| !(cid == id.as_str() && peer == name.as_str()));
                    let gone: Vec<String> = self
                        .pairs
                        .iter()
                        .filter(|(_, (c, _))| c == id.as_str())
                        .map(|(h, _)| h.clone())
                        .collect();
                    let _ = gone;
                }
                self.state.fdb.remove(name.as_str());
            }
            Action::AddBridge {
                name,
                mac,
                mtu,
                stp,
            } => self.add(
                ns,
                Link {
                    name: name.to_string(),
                    kind: Some("bridge".into()),
                    mtu: *mtu,
                    mac: Some(mac.to_string()),
                    stp: Some(*stp),
                    ..Link::default()
                },
            )?,
            Action::AddGretap {
                name,
                local,
                remote,
                key,
                mtu,
            } => self.add(
                ns,
                Link {
                    name: name.to_string(),
                    kind: Some("gretap".into()),
                    mtu: *mtu,
                    gre: Some(GreInfo {
                        local: Some(*local),
                        remote: Some(*remote),
                        ikey: Some(*key),
                        okey: Some(*key),
                    }),
                    ..Link::default()
                },
            )?,
            Action::AddVxlan {
                name,
                vni,
                local,
                port,
                mtu,
            } => {
                if self.state.links.iter().any(|l| {
                    l.vxlan
                        .as_ref()
                        .is_some_and(|v| v.id == *vni && v.port == *port)
                }) {
                    return Err("A VXLAN device with the specified VNI already exists".into());
                }
                self.add(
                    ns,
                    Link {
                        name: name.to_string(),
                        kind: Some("vxlan".into()),
                        mtu: *mtu,
                        vxlan: Some(VxlanInfo {
                            id: *vni,
                            local: Some(*local),
                            port: *port,
                        }),
                        ..Link::default()
                    },
                )?
            }
            Action::AddVeth {
                name,
                peer,
                pid,
                mtu,
            } => {
                let cid = self
                    .state
                    .containers
                    .iter()
                    .find(|c| c.pid == *pid && c.running)
                    .ok_or("no such process")?
                    .id
                    .clone();
                self.add(
                    ns,
                    Link {
                        name: name.to_string(),
                        kind: Some("veth".into()),
                        mtu: *mtu,
                        ..Link::default()
                    },
                )?;
                let cns = Namespace::Container {
                    id: ContainerId::new(&cid).unwrap(),
                    pid: *pid,
                };
                self.add(
                    &cns,
                    Link {
                        name: peer.to_string(),
                        kind: Some("veth".into()),
                        mtu: *mtu,
                        ..Link::default()
                    },
                )?;
                self.pairs.insert(name.to_string(), (cid, peer.to_string()));
            }
            Action::Rename { from, to } => {
                if self.links_mut(ns).iter().any(|l| l.name == to.as_str()) {
                    return Err("File exists".into());
                }
                let l = self.link_mut(ns, from.as_str())?;
                l.name = to.to_string();
                l.up = false;
                if let Namespace::Container { id, .. } = ns {
                    for (cid, peer) in self.pairs.values_mut() {
                        if cid == id.as_str() && peer == from.as_str() {
                            *peer = to.to_string();
                        }
                    }
                }
            }
            Action::SetLink {
                name,
                mtu,
                mac,
                marker,
                master,
            } => {
                if let Some(m) = master {
                    if !self
                        .state
                        .links
                        .iter()
                        .any(|l| l.name == m.as_str() && l.kind.as_deref() == Some("bridge"))
                    {
                        return Err(format!("Cannot find device \"{m}\""));
                    }
                }
                let l = self.link_mut(ns, name.as_str())?;
                if let Some(mtu) = mtu {
                    l.mtu = *mtu;
                }
                if let Some(mac) = mac {
                    l.mac = Some(mac.to_string());
                }
                if let Some(marker) = marker {
                    l.alias = Some(marker.to_string());
                }
                if let Some(m) = master {
                    l.master = Some(m.to_string());
                    l.isolated.get_or_insert(false);
                }
                l.up = true;
            }
            Action::Up { name } => self.link_mut(ns, name.as_str())?.up = true,
            Action::SetIsolated { name, on } => {
                let l = self.link_mut(ns, name.as_str())?;
                if l.master.is_none() {
                    return Err("not a bridge port".into());
                }
                l.isolated = Some(*on);
            }
            Action::SetStp { name, on } => self.link_mut(ns, name.as_str())?.stp = Some(*on),
            Action::AddAddress { dev, address } => {
                let l = self.link_mut(ns, dev.as_str())?;
                if l.addrs.contains(address) {
                    return Err("File exists".into());
                }
                l.addrs.push(*address);
            }
            Action::DelAddress { dev, address } => {
                let l = self.link_mut(ns, dev.as_str())?;
                let before = l.addrs.len();
                l.addrs.retain(|a| a != address);
                if before == l.addrs.len() {
                    return Err("Cannot assign requested address".into());
                }
            }
            Action::AddFlood { dev, dst } => {
                self.link_mut(ns, dev.as_str())?;
                let e = self.state.fdb.entry(dev.to_string()).or_default();
                if e.iter().any(|x| x.dst == Some(*dst)) {
                    return Err("File exists".into());
                }
                e.push(FdbEntry {
                    mac: "00:00:00:00:00:00".into(),
                    dst: Some(*dst),
                });
            }
            Action::DelFlood { dev, dst } => {
                let e = self.state.fdb.entry(dev.to_string()).or_default();
                e.retain(|x| x.dst != Some(*dst));
            }
            Action::CreateDockerNetwork {
                name,
                mesh,
                subnet,
                ip_range,
                gateway,
                bridge,
                mtu,
            } => {
                if self
                    .state
                    .docker_network_names
                    .iter()
                    .any(|n| n == name.as_str())
                {
                    return Err("network with name already exists".into());
                }
                if !self.state.links.iter().any(|l| l.name == bridge.as_str()) {
                    return Err("bridge missing".into());
                }
                self.state.docker_network_names.push(name.to_string());
                self.state
                    .docker_networks
                    .push(crate::observe::DockerNetworkState {
                        name: name.to_string(),
                        mesh: mesh.to_string(),
                        subnet: Some(*subnet),
                        ip_range: Some(*ip_range),
                        gateway: Some(*gateway),
                        bridge: Some(bridge.to_string()),
                        mtu: Some(*mtu),
                        containers: 0,
                    });
            }
            Action::RemoveDockerNetwork { name } => {
                let before = self.state.docker_networks.len();
                self.state
                    .docker_networks
                    .retain(|n| n.name != name.as_str());
                self.state
                    .docker_network_names
                    .retain(|n| n != name.as_str());
                if before == self.state.docker_networks.len() {
                    return Err("no such network".into());
                }
            }
            Action::ReplaceRoute { dev, to, via } => {
                let Namespace::Container { id, .. } = ns else {
                    return Err("route on host".into());
                };
                self.link_mut(ns, dev.as_str())?;
                let dst = if to.prefix_len() == 0 {
                    "default".to_owned()
                } else if to.prefix_len() == 32 {
                    to.addr().to_string()
                } else {
                    to.to_string()
                };
                let routes = self
                    .state
                    .container_routes
                    .entry(id.as_str().to_owned())
                    .or_default();
                routes.retain(|r| r.dst != dst);
                routes.push(RouteEntry {
                    dst,
                    gateway: *via,
                    dev: Some(dev.to_string()),
                    protocol: Some("boot".into()),
                });
            }
        }
        Ok(())
    }
}

fn base_state(containers: &[(String, bool)]) -> HostState {
    let mut state = HostState::default();
    state.capabilities.gretap = true;
    state.capabilities.vxlan = true;
    state.capabilities.docker_version = Some("20.10.24".into());
    state.links.push(Link {
        name: "lo".into(),
        mtu: 65536,
        up: true,
        addrs: vec!["127.0.0.1/8".parse().unwrap()],
        ..Link::default()
    });
    state.links.push(Link {
        name: "eth0".into(),
        mtu: 1500,
        up: true,
        addrs: vec!["10.200.0.11/24".parse().unwrap()],
        ..Link::default()
    });
    // A foreign bridge and VXLAN that gremesh must never touch.
    state.links.push(Link {
        name: "docker0".into(),
        kind: Some("bridge".into()),
        mtu: 1500,
        up: true,
        addrs: vec!["172.17.0.1/16".parse().unwrap()],
        ..Link::default()
    });
    state.links.push(Link {
        name: "vx-user".into(),
        kind: Some("vxlan".into()),
        mtu: 1450,
        vxlan: Some(VxlanInfo {
            id: 999,
            local: None,
            port: 4789,
        }),
        ..Link::default()
    });
    for (i, (name, running)) in containers.iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        let pid = if *running { 1000 + i as u32 } else { 0 };
        state.containers.push(Container {
            id: id.clone(),
            name: name.clone(),
            running: *running,
            pid,
            network_mode: "none".into(),
            netns: None,
        });
        if *running {
            state.container_links.insert(
                id,
                vec![Link {
                    name: "lo".into(),
                    mtu: 65536,
                    up: true,
                    ..Link::default()
                }],
            );
        }
    }
    state
}

#[derive(Clone, Debug)]
struct Spec {
    vxlan: bool,
    stp: bool,
    peers: Vec<&'static str>,
    mtu: Option<u32>,
    key: u32,
    attachments: Vec<(usize, u8)>,
    docker_net: bool,
}

fn spec_yaml(mesh: &str, spec: &Spec, index: usize) -> String {
    let mut y = String::new();
    for (i, h) in ["host-a", "host-b", "host-c", "host-d"].iter().enumerate() {
        y.push_str(&format!(
            "apiVersion: gremesh.io/v1alpha1\nkind: DockerHost\nmetadata: {{name: {h}}}\nspec: {{address: 10.200.0.{a}, sshKeySecretRef: {{name: k}}, hostKey: \"ssh-ed25519 AAAA\", underlayAddress: 10.200.0.{a}}}\n---\n",
            a = 11 + i
        ));
    }
    let hosts: Vec<String> = std::iter::once(HOST)
        .chain(spec.peers.iter().copied())
        .map(|h| format!("{{name: {h}}}"))
        .collect();
    y.push_str(&format!(
        "apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata: {{name: {mesh}}}\nspec: {{hosts: [{}], encapsulation: {}, key: {}, network: 10.{}.0.0/16, loopPrevention: {}{}}}\n",
        hosts.join(", "),
        if spec.vxlan { "vxlan" } else { "gretap" },
        spec.key,
        10 + index,
        if spec.stp { "stp" } else { "isolated" },
        spec.mtu.map(|m| format!(", mtu: {m}")).unwrap_or_default()
            + &if spec.docker_net { format!(", dockerNetwork: {{name: net{index}}}") } else { String::new() },
    ));
    for (container, host_octet) in &spec.attachments {
        y.push_str(&format!(
            "---\napiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\nmetadata: {{name: {mesh}-c{container}}}\nspec: {{mesh: {mesh}, host: {HOST}, container: c{container}, interface: eth{}, address: 10.{}.0.{}, routes: [{{to: 192.168.{}.0/24}}]}}\n",
            index + 1, 10 + index, host_octet, index * 10 + container
        ));
    }
    y
}

/// Whether the generated specs pass validation together.
fn valid(specs: &[Spec]) -> bool {
    let mut inv = Inventory::default();
    for (i, spec) in specs.iter().enumerate() {
        let mut one = Inventory::default();
        one.add_yaml(Path::new("gen.yaml"), &spec_yaml(&format!("m{i}"), spec, i))
            .unwrap();
        inv.hosts.extend(one.hosts);
        inv.meshes.extend(one.meshes);
        inv.attachments.extend(one.attachments);
    }
    crate::validate::validate(&inv).is_ok()
}

/// Desired meshes of host-a for the given specs, with subnets pinned by the layout.
fn desired_for(specs: &[Spec], state: &HostState) -> Vec<MeshOnHost> {
    let mut inv = Inventory::default();
    for (i, spec) in specs.iter().enumerate() {
        let mut one = Inventory::default();
        one.add_yaml(Path::new("gen.yaml"), &spec_yaml(&format!("m{i}"), spec, i))
            .unwrap();
        inv.hosts.extend(one.hosts);
        inv.meshes.extend(one.meshes);
        inv.attachments.extend(one.attachments);
    }
    let states = BTreeMap::from([(HOST.to_owned(), state.clone())]);
    let mut out = Vec::new();
    for (name, mesh) in &inv.meshes {
        let mut layout = desired::layout(&inv, name, mesh, &states).unwrap();
        // Put host-a's subnet at .0 so generated addresses are inside it.
        let net = mesh.spec.network;
        layout.subnets.insert(
            HOST.to_owned(),
            ipnet::Ipv4Net::new(net.network(), 24).unwrap(),
        );
        if let Some(m) = desired::mesh_on_host(&inv, name, mesh, &layout, HOST, state).unwrap() {
            out.push(m);
        }
    }
    out
}

fn scope(n: usize) -> Scope {
    let meshes: BTreeSet<String> = (0..n).map(|i| format!("m{i}")).collect();
    // Every host and attachment name the generator can produce (hosts only once).
    let mut inv = Inventory::default();
    for i in 0..n {
        let spec = Spec {
            vxlan: true,
            stp: false,
            peers: vec!["host-b", "host-c", "host-d"],
            mtu: None,
            key: 1,
            attachments: (0..4).map(|c| (c, 2)).collect(),
            docker_net: false,
        };
        inv.add_yaml(
            Path::new("gen.yaml"),
            &spec_yaml(&format!("m{i}"), &spec, i)
                .split("---\n")
                .filter(|d| i == 0 || !d.contains("kind: DockerHost"))
                .collect::<Vec<_>>()
                .join("---\n"),
        )
        .unwrap();
    }
    Scope {
        claimable: desired::claimable(&inv, &meshes),
        meshes,
        prune_attachments: true,
    }
}

fn apply_all(sim: &mut Sim, plan: &Plan) {
    for step in &plan.steps {
        if let Err(e) = sim.apply(step) {
            panic!(
                "step failed: {}: {e}\nplan: {:#?}",
                script::describe(step),
                plan.steps
            );
        }
    }
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::sample::subsequence(vec!["host-b", "host-c", "host-d"], 0..=3),
        proptest::option::of(1200u32..1500),
        1u32..5,
        proptest::collection::btree_map(0usize..4, 2u8..250, 0..4),
        any::<bool>(),
    )
        .prop_map(|(vxlan, stp, peers, mtu, key, atts, docker_net)| Spec {
            vxlan,
            stp,
            peers,
            mtu,
            key,
            attachments: atts.into_iter().collect(),
            docker_net,
        })
}

fn containers() -> impl Strategy<Value = Vec<(String, bool)>> {
    proptest::collection::vec(any::<bool>(), 4).prop_map(|r| {
        r.into_iter()
            .enumerate()
            .map(|(i, run)| (format!("c{i}"), run))
            .collect()
    })
}

fn foreign_snapshot(state: &HostState) -> Vec<Link> {
    state
        .links
        .iter()
        .filter(|l| l.marker().is_none() && !l.name.starts_with("g"))
        .cloned()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// From any earlier gremesh state (a different spec, partly applied, then drifted), one
    /// plan converges the host: a second plan is empty, and foreign devices are untouched.
    #[test]
    fn one_pass_converges_from_any_earlier_state(
        old in proptest::collection::vec(spec_strategy(), 1..3),
        new in proptest::collection::vec(spec_strategy(), 1..3),
        cut in 0usize..200,
        drift in proptest::collection::vec((0usize..50, 0u8..4), 0..4),
        running in containers(),
    ) {
        prop_assume!(valid(&old) && valid(&new));
        let state = base_state(&running);
        let foreign = foreign_snapshot(&state);
        let mut sim = Sim { state: state.clone(), pairs: BTreeMap::new() };

        // An earlier spec, applied up to an arbitrary step (an interrupted pass).
        let old_plan = plan_host(&desired_for(&old, &sim.state), &sim.state, &scope(old.len().max(new.len())));
        for step in old_plan.steps.iter().take(cut) {
            sim.apply(step).unwrap();
        }
        // Drift by hand: delete or re-MTU gremesh's devices, drop addresses.
        for (pick, kind) in drift {
            let owned: Vec<String> = sim.state.links.iter().filter(|l| l.name.starts_with("g")).map(|l| l.name.clone()).collect();
            if owned.is_empty() { break; }
            let name = owned[pick % owned.len()].clone();
            match kind {
                0 => { sim.apply(&Step { ns: Namespace::Host, action: Action::DeleteLink { name: IfName::new(&name).unwrap() }, object: "drift".into() }).unwrap(); }
                1 => { sim.link_mut(&Namespace::Host, &name).unwrap().mtu = 1300; }
                2 => { sim.link_mut(&Namespace::Host, &name).unwrap().addrs.clear(); }
                _ => { sim.link_mut(&Namespace::Host, &name).unwrap().up = false; }
            }
        }

        let desired = desired_for(&new, &sim.state);
        let scope = scope(old.len().max(new.len()));
        let plan = plan_host(&desired, &sim.state, &scope);
        apply_all(&mut sim, &plan);
        let again = plan_host(&desired, &sim.state, &scope);
        prop_assert!(again.steps.is_empty(), "second plan not empty: {:#?}", again.steps.iter().map(script::describe).collect::<Vec<_>>());
        prop_assert_eq!(foreign_snapshot(&sim.state), foreign);
    }

    /// Every word of every generated command is made of characters that no shell treats
    /// specially, whatever the spec.
    #[test]
    fn commands_carry_only_safe_words(new in proptest::collection::vec(spec_strategy(), 1..3), running in containers()) {
        prop_assume!(valid(&new));
        let state = base_state(&running);
        let plan = plan_host(&desired_for(&new, &state), &state, &scope(new.len()));
        for step in &plan.steps {
            let words = script::argv(step);
            for w in &words {
                // Literal flags and the fixed rename script are the only words not from values.
                if ["-t", "-n", "-c", "--", "--driver", script::RENAME_SCRIPT].contains(&w.as_str()) { continue; }
                // `--flag=value` words: a literal flag, then a value that must be safe.
                let value = match w.strip_prefix("--") {
                    Some(rest) => rest.split_once('=').map(|(_, v)| v).unwrap_or(""),
                    None => w.as_str(),
                };
                prop_assert!(!value.is_empty() && !value.starts_with('-') && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/=-".contains(&b)),
                    "unsafe word {:?} in {:?}", w, words);
            }
        }
    }
}

#[test]
fn converged_host_gets_an_empty_plan_and_container_side_is_guarded() {
    let spec = Spec {
        vxlan: true,
        stp: false,
        peers: vec!["host-b", "host-c"],
        mtu: None,
        key: 42,
        attachments: vec![(0, 10)],
        docker_net: false,
    };
    let state = base_state(&[("c0".into(), true)]);
    let desired = desired_for(std::slice::from_ref(&spec), &state);
    assert_eq!(desired[0].mtu, 1450);
    let plan = plan_host(&desired, &state, &scope(1));
    let first_container_step = plan
        .steps
        .iter()
        .position(|s| matches!(s.ns, Namespace::Container { .. }))
        .unwrap();
    assert_eq!(
        plan.steps[first_container_step].action,
        Action::CheckContainer
    );
    let mut sim = Sim {
        state,
        pairs: BTreeMap::new(),
    };
    apply_all(&mut sim, &plan);
    assert!(plan_host(&desired, &sim.state, &scope(1)).is_empty());
    let eth1 = sim
        .state
        .container_links
        .values()
        .flatten()
        .find(|l| l.name == "eth1")
        .unwrap();
    assert_eq!(eth1.mtu, 1450);
    assert_eq!(eth1.addrs, vec!["10.10.0.10/16".parse().unwrap()]);
}

#[test]
fn foreign_device_with_our_name_is_reported_not_touched() {
    let spec = Spec {
        vxlan: false,
        stp: false,
        peers: vec!["host-b"],
        mtu: None,
        key: 7,
        attachments: vec![],
        docker_net: false,
    };
    let mut state = base_state(&[]);
    let tunnel = crate::addressing::tunnel_name("m0", "host-b");
    state.links.push(Link {
        name: tunnel.to_string(),
        kind: Some("gretap".into()),
        alias: Some("someone else's".into()),
        ..Link::default()
    });
    let plan = plan_host(&desired_for(&[spec], &state), &state, &scope(1));
    assert!(plan
        .steps
        .iter()
        .all(|s| script::argv(s).iter().all(|w| w != tunnel.as_str())
            || !matches!(s.action, Action::DeleteLink { .. })));
    assert_eq!(plan.issues.len(), 1);
    assert_eq!(plan.issues[0].reason, IssueReason::ForeignDevice);
}

#[test]
fn wrong_gre_key_is_recreated() {
    let spec = Spec {
        vxlan: false,
        stp: false,
        peers: vec!["host-b"],
        mtu: None,
        key: 7,
        attachments: vec![],
        docker_net: false,
    };
    let state = base_state(&[]);
    let desired = desired_for(&[spec], &state);
    let mut sim = Sim {
        state,
        pairs: BTreeMap::new(),
    };
    let first = plan_host(&desired, &sim.state, &scope(1));
    apply_all(&mut sim, &first);
    let name = desired[0].tunnels[0].name.to_string();
    sim.link_mut(&Namespace::Host, &name)
        .unwrap()
        .gre
        .as_mut()
        .unwrap()
        .ikey = None;
    let plan = plan_host(&desired, &sim.state, &scope(1));
    assert!(matches!(&plan.steps[0].action, Action::DeleteLink { name: n } if n.as_str() == name));
    assert!(plan
        .steps
        .iter()
        .any(|s| matches!(&s.action, Action::AddGretap { key: 7, .. })));
}

#[test]
fn stopped_container_gets_an_issue_and_no_container_step() {
    let spec = Spec {
        vxlan: true,
        stp: false,
        peers: vec![],
        mtu: None,
        key: 1,
        attachments: vec![(0, 10)],
        docker_net: false,
    };
    let state = base_state(&[("c0".into(), false)]);
    let plan = plan_host(&desired_for(&[spec], &state), &state, &scope(1));
    assert!(plan.steps.iter().all(|s| s.ns == Namespace::Host));
    assert_eq!(plan.issues[0].reason, IssueReason::ContainerNotRunning);
}

#[test]
fn marker_on_foreign_mesh_is_left_alone_outside_scope() {
    let mut state = base_state(&[]);
    state.links.push(Link {
        name: "gm-other".into(),
        kind: Some("bridge".into()),
        alias: Some(Marker::new("other", crate::addressing::Role::Bridge).to_string()),
        ..Link::default()
    });
    let plan = plan_host(&[], &state, &scope(1));
    assert!(plan.is_empty());
}

#[test]
fn interrupted_vxlan_of_other_mesh_with_same_vni_is_replaced_first() {
    let sp = |vxlan, key| Spec {
        vxlan,
        stp: false,
        peers: vec![],
        mtu: None,
        key,
        attachments: vec![],
        docker_net: false,
    };
    let old = [sp(false, 1), sp(true, 1)];
    let new = [sp(true, 1), sp(true, 2)];
    let state = base_state(&[]);
    let mut sim = Sim {
        state: state.clone(),
        pairs: BTreeMap::new(),
    };
    let old_plan = plan_host(&desired_for(&old, &sim.state), &sim.state, &scope(2));
    for step in old_plan.steps.iter().take(7) {
        sim.apply(step).unwrap();
    }
    let desired = desired_for(&new, &sim.state);
    let plan = plan_host(&desired, &sim.state, &scope(2));
    apply_all(&mut sim, &plan);
}
