//! A small simulated kernel: applies plan steps to an observed state the way Linux and Docker
//! would, and fails where they would.
//!
//! It models network namespaces (the host's and each container's, where a container started
//! with `--network host` or `container:…` has no namespace of its own), veth pairs (deleting
//! either end removes both), and routes per namespace: the kernel's connected route of every
//! address on an up link, routes dropped when their link goes down or away, `ip route replace`
//! taking over any route to the same destination, and next hops that must be on-link.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use crate::observe::{FdbEntry, GreInfo, HostState, Link, RouteEntry, VxlanInfo};
use crate::plan::{Action, Namespace, Step};

/// A namespace: `None` for the host's, else the container ID whose links and routes it holds.
pub type Ns = Option<String>;

/// Applies actions to a state the way the kernel would.
pub struct Sim {
    /// What the probe would report now.
    pub state: HostState,
    /// veth pairs, each end as (namespace, name).
    pub pairs: Vec<((Ns, String), (Ns, String))>,
}

fn route_dst(to: Ipv4Net) -> String {
    crate::observe::route_dst(to)
}

impl Sim {
    /// A simulator starting from `state`.
    pub fn new(state: HostState) -> Self {
        Self {
            state,
            pairs: Vec::new(),
        }
    }

    /// The namespace a step runs in.
    fn ns_of(&self, ns: &Namespace) -> Ns {
        match ns {
            Namespace::Host => None,
            Namespace::Container { pid, .. } => self.ns_of_pid(*pid),
        }
    }

    /// The namespace process `pid` lives in: a container's own, the host's, or the one of the
    /// container it joined.
    fn ns_of_pid(&self, pid: u32) -> Ns {
        let c = self.state.containers.iter().find(|c| c.pid == pid)?;
        if c.network_mode == "host" {
            return None;
        }
        match c.network_mode.strip_prefix("container:") {
            Some(other) => Some(other.to_owned()),
            None => Some(c.id.clone()),
        }
    }

    /// The links of a namespace.
    pub fn links_mut(&mut self, ns: &Ns) -> &mut Vec<Link> {
        match ns {
            None => &mut self.state.links,
            Some(id) => self.state.container_links.entry(id.clone()).or_default(),
        }
    }

    fn routes_mut(&mut self, ns: &Ns) -> &mut Vec<RouteEntry> {
        match ns {
            None => &mut self.state.routes,
            Some(id) => self.state.container_routes.entry(id.clone()).or_default(),
        }
    }

    /// A link of a namespace, or the kernel's error.
    pub fn link_mut(&mut self, ns: &Ns, name: &str) -> Result<&mut Link, String> {
        self.links_mut(ns)
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or_else(|| format!("Cannot find device \"{name}\""))
    }

    fn add(&mut self, ns: &Ns, link: Link) -> Result<(), String> {
        if self.links_mut(ns).iter().any(|l| l.name == link.name) {
            return Err("File exists".into());
        }
        self.links_mut(ns).push(link);
        Ok(())
    }

    /// Removes a link, its peer when it is a veth end, and what hangs off them.
    pub fn delete(&mut self, ns: &Ns, name: &str) -> Result<(), String> {
        let links = self.links_mut(ns);
        let before = links.len();
        links.retain(|l| l.name != name);
        if links.len() == before {
            return Err(format!("Cannot find device \"{name}\""));
        }
        for l in self.links_mut(ns).iter_mut() {
            if l.master.as_deref() == Some(name) {
                l.master = None;
                l.isolated = None;
            }
        }
        if ns.is_none() {
            self.state.fdb.remove(name);
        }
        let end = (ns.clone(), name.to_owned());
        if let Some(i) = self.pairs.iter().position(|(a, b)| *a == end || *b == end) {
            let (a, b) = self.pairs.remove(i);
            let (peer_ns, peer) = if a == end { b } else { a };
            self.links_mut(&peer_ns).retain(|l| l.name != peer);
        }
        Ok(())
    }

    /// Applies one step, then lets routes follow links and addresses.
    pub fn apply(&mut self, step: &Step) -> Result<(), String> {
        let ns = self.ns_of(&step.ns);
        let result = self.apply_action(&step.ns, &ns, &step.action);
        self.sync_routes();
        result
    }

    fn apply_action(&mut self, place: &Namespace, ns: &Ns, action: &Action) -> Result<(), String> {
        match action {
            Action::CheckContainer => {
                let Namespace::Container { id, pid } = place else {
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
            Action::DeleteLink { name } => self.delete(ns, name.as_str())?,
            Action::DeleteVeth { name } => {
                // Rendered so that an end already gone with its peer is success.
                if self.links_mut(ns).iter().any(|l| l.name == name.as_str()) {
                    self.delete(ns, name.as_str())?;
                }
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
                if self.links_mut(ns).iter().any(|l| {
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
                if !self
                    .state
                    .containers
                    .iter()
                    .any(|c| c.pid == *pid && c.running)
                {
                    return Err("no such process".into());
                }
                let peer_ns = self.ns_of_pid(*pid);
                let veth = |name: String| Link {
                    name,
                    kind: Some("veth".into()),
                    mtu: *mtu,
                    ..Link::default()
                };
                if peer_ns == *ns && name == peer {
                    return Err("File exists".into());
                }
                if self
                    .links_mut(&peer_ns)
                    .iter()
                    .any(|l| l.name == peer.as_str())
                {
                    return Err("File exists".into());
                }
                self.add(ns, veth(name.to_string()))?;
                self.add(&peer_ns, veth(peer.to_string()))?;
                self.pairs
                    .push(((ns.clone(), name.to_string()), (peer_ns, peer.to_string())));
            }
            Action::Rename { from, to } => {
                if self.links_mut(ns).iter().any(|l| l.name == to.as_str()) {
                    return Err("File exists".into());
                }
                let l = self.link_mut(ns, from.as_str())?;
                l.name = to.to_string();
                l.up = false;
                for (a, b) in self.pairs.iter_mut() {
                    for end in [a, b] {
                        if end.0 == *ns && end.1 == from.as_str() {
                            end.1 = to.to_string();
                        }
                    }
                }
                for r in self.routes_mut(ns).iter_mut() {
                    if r.dev.as_deref() == Some(from.as_str()) {
                        r.dev = Some(to.to_string());
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
                        .links_mut(ns)
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
            Action::AddConnectedRoute { dev, address } => {
                let up = self.link_mut(ns, dev.as_str())?.up;
                if !up {
                    return Err("Nexthop device is not up".into());
                }
                let route = RouteEntry {
                    dst: route_dst(address.trunc()),
                    gateway: None,
                    dev: Some(dev.to_string()),
                    protocol: Some("kernel".into()),
                };
                let routes = self.routes_mut(ns);
                routes.retain(|r| r.dst != route.dst);
                routes.push(route);
            }
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
                let l = self.link_mut(ns, dev.as_str())?.clone();
                if !l.up {
                    return Err("Nexthop device is not up".into());
                }
                if let Some(via) = via {
                    if !l.addrs.iter().any(|a| a.trunc().contains(via)) {
                        return Err("Nexthop has invalid gateway".into());
                    }
                }
                let dst = route_dst(*to);
                let routes = self.routes_mut(ns);
                routes.retain(|r| r.dst != dst);
                routes.push(RouteEntry {
                    dst,
                    gateway: *via,
                    dev: Some(dev.to_string()),
                    protocol: Some("boot".into()),
                });
            }
            Action::DeleteRoute { dev, to, via } => {
                // Rendered so that a route already gone counts as deleted.
                let dst = route_dst(*to);
                self.routes_mut(ns).retain(|r| {
                    !(r.dst == dst
                        && r.dev.as_deref() == Some(dev.as_str())
                        && via.is_none_or(|v| r.gateway == Some(v)))
                });
            }
        }
        Ok(())
    }

    /// Routes follow links: the connected route of every address of an up link exists, and no
    /// route through a link that is down or gone survives.
    pub fn sync_routes(&mut self) {
        let mut spaces: Vec<Ns> = vec![None];
        spaces.extend(self.state.container_links.keys().cloned().map(Some));
        for ns in spaces {
            let links = self.links_mut(&ns).clone();
            let connected = |l: &Link| {
                l.addrs
                    .iter()
                    .filter(|a| a.prefix_len() < 32)
                    .map(|a| RouteEntry {
                        dst: route_dst(a.trunc()),
                        gateway: None,
                        dev: Some(l.name.clone()),
                        protocol: Some("kernel".into()),
                    })
                    .collect::<Vec<_>>()
            };
            let want: Vec<RouteEntry> = links
                .iter()
                .filter(|l| l.up && l.name != "lo")
                .flat_map(connected)
                .collect();
            let routes = self.routes_mut(&ns);
            routes.retain(|r| {
                let dev = r.dev.as_deref();
                let up = dev.is_none_or(|d| links.iter().any(|l| l.name == d && l.up));
                let justified = r.protocol.as_deref() != Some("kernel")
                    || want.iter().any(|w| w.dst == r.dst && w.dev == r.dev)
                    || dev.is_none();
                up && justified
            });
            for w in want {
                if !routes.iter().any(|r| r.dst == w.dst && r.dev == w.dev) {
                    routes.push(w);
                }
            }
        }
    }
}

/// Routes of every namespace, sorted, for comparisons.
pub fn all_routes(state: &HostState) -> BTreeMap<Ns, Vec<String>> {
    let fmt = |r: &RouteEntry| format!("{:?}", r);
    let mut out = BTreeMap::new();
    let mut host: Vec<String> = state.routes.iter().map(fmt).collect();
    host.sort();
    out.insert(None, host);
    for (id, routes) in &state.container_routes {
        let mut v: Vec<String> = routes.iter().map(fmt).collect();
        v.sort();
        out.insert(Some(id.clone()), v);
    }
    out
}
