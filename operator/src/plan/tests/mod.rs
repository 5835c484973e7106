//! Plan tests: a small simulated kernel (`sim`) applies plans to observed states, so
//! properties such as "a second plan after applying the first is empty" are checked over many
//! generated specs and drifted hosts (`properties`); `cases` holds worked examples.
//!
//! The generated host is deliberately crowded: foreign devices whose names look like
//! gremesh's, a Docker-networked container with its own default route, a container in the
//! host's namespace, optionally a foreign address or route inside a mesh network, and
//! optionally a mesh outside the pass's scope that may share a network, VNI, Docker network
//! or container routes with the meshes being planned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::addressing::Marker;
use crate::desired::{self, MeshOnHost};
use crate::manifest::Inventory;
use crate::observe::{Container, HostState, Link, RouteEntry, VxlanInfo};

use super::{kind_of, Scope};

mod cases;
mod properties;
mod sim;

pub use sim::Sim;

/// The host every generated plan is for.
pub const HOST: &str = "host-a";

/// The netns identity of the host itself.
const HOST_NETNS: &str = "net:[4026531840]";

/// Name of the generated mesh outside the pass's scope.
pub const OUTSIDE: &str = "zz";

/// How a generated container is networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// `--network none`: only `lo`.
    Isolated,
    /// A Docker bridge network: `eth0` in 172.18.0.0/16 and a default route through it.
    Docker,
    /// `--network host`.
    Host,
}

/// A generated container: name, running, network.
pub type Guest = (String, bool, Net);

/// Containers c0.. with the given run states, all `--network none`.
pub fn isolated(running: &[bool]) -> Vec<Guest> {
    running
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("c{i}"), *r, Net::Isolated))
        .collect()
}

fn link(name: &str, kind: Option<&str>, addrs: &[&str]) -> Link {
    Link {
        name: name.into(),
        kind: kind.map(str::to_owned),
        mtu: 1500,
        up: true,
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        ..Link::default()
    }
}

/// The foreign look-alike veth pair of the base host (both ends in the host's namespace).
pub const LOOKALIKE_PAIR: (&str, &str) = ("gv-0badcafe", "gc-0badcafe");

/// A host with foreign devices gremesh must never touch, and the given containers.
pub fn base_state(containers: &[Guest]) -> HostState {
    let mut state = HostState {
        netns: Some(HOST_NETNS.into()),
        ..HostState::default()
    };
    state.capabilities.gretap = true;
    state.capabilities.vxlan = true;
    state.capabilities.docker_version = Some("20.10.24".into());
    let mut lo = link("lo", None, &["127.0.0.1/8"]);
    lo.mtu = 65536;
    state.links.push(lo);
    state.links.push(link("eth0", None, &["10.200.0.11/24"]));
    state
        .links
        .push(link("docker0", Some("bridge"), &["172.17.0.1/16"]));
    let mut vx = link("vx-user", Some("vxlan"), &[]);
    vx.vxlan = Some(VxlanInfo {
        id: 999,
        local: None,
        port: 4789,
    });
    state.links.push(vx);
    // Look-alikes: gremesh's name patterns, but no marker and no name gremesh would derive.
    state.links.push(link("gm-deadbeef", Some("bridge"), &[]));
    let mut gx = link("gx-12345678", Some("vxlan"), &[]);
    gx.vxlan = Some(VxlanInfo {
        id: 3,
        local: None,
        port: 4789,
    });
    state.links.push(gx);
    state.links.push(link(LOOKALIKE_PAIR.0, Some("veth"), &[]));
    state.links.push(link(LOOKALIKE_PAIR.1, Some("veth"), &[]));
    state.routes.push(RouteEntry {
        dst: "default".into(),
        gateway: Some("10.200.0.1".parse().unwrap()),
        dev: Some("eth0".into()),
        protocol: Some("boot".into()),
    });
    for (i, (name, running, net)) in containers.iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        let pid = if *running { 1000 + i as u32 } else { 0 };
        let (mode, netns) = match net {
            Net::Isolated => ("none", format!("net:[{}]", 4026532000 + i)),
            Net::Docker => ("lan", format!("net:[{}]", 4026532000 + i)),
            Net::Host => ("host", HOST_NETNS.to_owned()),
        };
        state.containers.push(Container {
            id: id.clone(),
            name: name.clone(),
            running: *running,
            pid,
            network_mode: mode.into(),
            netns: running.then_some(netns),
        });
        if !*running || *net == Net::Host {
            continue;
        }
        let mut links = vec![Link {
            name: "lo".into(),
            mtu: 65536,
            up: true,
            ..Link::default()
        }];
        if *net == Net::Docker {
            links.push(link(
                "eth0",
                Some("veth"),
                &[&format!("172.18.0.{}/16", i + 2)],
            ));
            state.container_routes.insert(
                id.clone(),
                vec![RouteEntry {
                    dst: "default".into(),
                    gateway: Some("172.18.0.1".parse().unwrap()),
                    dev: Some("eth0".into()),
                    protocol: None,
                }],
            );
        }
        state.container_links.insert(id, links);
    }
    let mut sim = Sim::new(state);
    sim.sync_routes();
    sim.state
}

/// A simulator over `state` that knows the look-alike veth pair.
pub fn sim_of(state: HostState) -> Sim {
    let mut sim = Sim::new(state);
    sim.pairs.push((
        (None, LOOKALIKE_PAIR.0.into()),
        (None, LOOKALIKE_PAIR.1.into()),
    ));
    sim
}

/// One generated mesh (its name and network index are given separately).
#[derive(Clone, Debug)]
pub struct Spec {
    pub vxlan: bool,
    pub stp: bool,
    pub peers: Vec<&'static str>,
    pub mtu: Option<u32>,
    pub key: u32,
    /// Container index, last octet of its address, which routes (see [`routes_yaml`]).
    pub attachments: Vec<(usize, u8, u8)>,
    pub docker_net: bool,
}

impl Spec {
    /// A VXLAN mesh of host-a alone with the given key and attachments.
    pub fn vxlan(key: u32, attachments: Vec<(usize, u8, u8)>) -> Self {
        Spec {
            vxlan: true,
            stp: false,
            peers: vec![],
            mtu: None,
            key,
            attachments,
            docker_net: false,
        }
    }
}

/// The routes of a generated attachment: 0 none, 1 a network of its own, 2 a default route
/// through the mesh gateway, 3 both, 4 Docker's network of the `Net::Docker` containers.
fn routes_yaml(kind: u8, index: usize, container: usize) -> String {
    let own = format!("{{to: 192.168.{}.0/24}}", index * 10 + container);
    let default = format!("{{to: 0.0.0.0/0, via: 10.{}.0.1}}", 10 + index);
    match kind {
        1 => own,
        2 => default,
        3 => format!("{own}, {default}"),
        4 => "{to: 172.18.0.0/16}".into(),
        _ => String::new(),
    }
}

/// Manifests of mesh `mesh` with network index `index` (network `10.<10+index>.0.0/16`,
/// container interface `eth<index+1>`, Docker network `net<index>`).
pub fn spec_yaml(mesh: &str, spec: &Spec, index: usize) -> String {
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
    for (container, host_octet, routes) in &spec.attachments {
        y.push_str(&format!(
            "---\napiVersion: gremesh.io/v1alpha1\nkind: ContainerAttachment\nmetadata: {{name: {mesh}-c{container}}}\nspec: {{mesh: {mesh}, host: {HOST}, container: c{container}, interface: eth{}, address: 10.{}.0.{}, routes: [{}]}}\n",
            index + 1, 10 + index, host_octet, routes_yaml(*routes, index, *container)
        ));
    }
    y
}

/// A named mesh: name, spec, network index.
pub type Named<'a> = (String, &'a Spec, usize);

/// In-scope meshes m0, m1, ... with network indices 0, 1, ...
pub fn numbered(specs: &[Spec]) -> Vec<Named<'_>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("m{i}"), s, i))
        .collect()
}

fn inventory(meshes: &[Named<'_>]) -> Inventory {
    let mut inv = Inventory::default();
    for (name, spec, index) in meshes {
        let mut one = Inventory::default();
        one.add_yaml(Path::new("gen.yaml"), &spec_yaml(name, spec, *index))
            .unwrap();
        inv.hosts.extend(one.hosts);
        inv.meshes.extend(one.meshes);
        inv.attachments.extend(one.attachments);
    }
    inv
}

/// Whether the meshes pass validation together.
pub fn valid_named(meshes: &[Named<'_>]) -> bool {
    crate::validate::validate(&inventory(meshes)).is_ok()
}

/// Whether the in-scope meshes m0.. pass validation together.
pub fn valid(specs: &[Spec]) -> bool {
    valid_named(&numbered(specs))
}

/// Desired meshes of host-a, with host-a's subnet at the start of each mesh network.
pub fn desired_named(meshes: &[Named<'_>], state: &HostState) -> Vec<MeshOnHost> {
    let inv = inventory(meshes);
    let states = BTreeMap::from([(HOST.to_owned(), state.clone())]);
    let mut out = Vec::new();
    for (name, mesh) in &inv.meshes {
        let mut layout = desired::layout(&inv, name, mesh, &states).unwrap();
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

/// Desired meshes m0.. of host-a.
pub fn desired_for(specs: &[Spec], state: &HostState) -> Vec<MeshOnHost> {
    desired_named(&numbered(specs), state)
}

/// A pass responsible for the named meshes, pruning attachments, that can adopt every device
/// name the generator can produce for them.
pub fn scope_named(names: &[&str]) -> Scope {
    let meshes: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let every = Spec {
        peers: vec!["host-b", "host-c", "host-d"],
        attachments: (0..4).map(|c| (c, 2, 0)).collect(),
        ..Spec::vxlan(1, vec![])
    };
    let all: Vec<Named<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), &every, i))
        .collect();
    Scope {
        claimable: desired::claimable(&inventory(&all), &meshes),
        meshes,
        prune_attachments: true,
    }
}

/// A pass responsible for m0..m<n-1>.
pub fn scope(n: usize) -> Scope {
    let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    scope_named(&names.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Whether a link is one the pass may change: marked for an in-scope mesh, or unmarked with a
/// name and kind gremesh would give an in-scope device.
pub fn in_scope(scope: &Scope, link: &Link) -> bool {
    let marker: Option<Marker> = link.marker().or_else(|| {
        if !link.alias.as_deref().unwrap_or("").is_empty() {
            return None;
        }
        let m = scope.claimable.get(&link.name)?;
        (link.kind.as_deref() == Some(kind_of(&m.role))).then(|| m.clone())
    });
    marker.is_some_and(|m| scope.meshes.contains(&m.mesh))
}

/// Applies every step of `plan`, panicking with the plan at the first failure.
pub fn apply_all(sim: &mut Sim, plan: &super::Plan) {
    for step in &plan.steps {
        if let Err(e) = sim.apply(step) {
            panic!(
                "step failed: {}: {e}\nplan: {:#?}",
                crate::script::describe(step),
                plan.steps
                    .iter()
                    .map(crate::script::describe)
                    .collect::<Vec<_>>()
            );
        }
    }
}
