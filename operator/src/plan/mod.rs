//! Plan: the pure diff between what a host should look like and what it looks like.
//!
//! [`plan_host`] takes the desired meshes of one host and its observed state and returns the
//! ordered steps that converge it, plus the problems that keep some object from converging
//! (a foreign device in the way, a container that is not running). It performs no I/O; an
//! empty plan means the host is converged.
//!
//! Safety rules enforced here:
//! - only devices carrying a gremesh marker (see [`crate::addressing::Marker`]) are changed or
//!   removed, except a device whose name is one gremesh derives from a hash (`gm-`, `gt-`,
//!   `gx-`, `gv-`, `gc-` + 8 hex digits) and whose kind matches: that is one gremesh created
//!   and was interrupted before marking, and it is adopted;
//! - container-side steps are guarded by a check that the container still has the PID that
//!   was observed, so nothing lands in a namespace that is not the container's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::addressing::{IfName, Mac, Marker, MeshName, NetworkName, Role};
use crate::desired::{AttachmentSpec, MeshOnHost};
use crate::observe::{Container, HostState, Link};

/// Which meshes a pass is responsible for.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Devices of these meshes that the spec does not ask for are removed.
    pub meshes: BTreeSet<String>,
    /// Also remove attachments of these meshes that the spec does not list (the operator
    /// knows every attachment; `gremesh apply` does so only with `--prune`).
    pub prune_attachments: bool,
    /// Hash-derived names gremesh would give its devices in these meshes, with the marker each
    /// would carry (see [`crate::desired::claimable`]). An unmarked device of the right kind
    /// with one of these names was created by an interrupted pass and is adopted.
    pub claimable: BTreeMap<String, Marker>,
}

/// Where a step runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// The host's own network namespace.
    Host,
    /// A container's network namespace, entered by PID.
    Container {
        /// Container ID (hex, from Docker).
        id: ContainerId,
        /// PID observed for it this pass.
        pid: u32,
    },
}

/// A Docker container ID: hex digits only, as Docker reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// Wraps an ID after checking it is 12–64 lowercase hex digits.
    pub fn new(id: &str) -> Option<Self> {
        let ok = (12..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(id.to_owned()))
    }

    /// The ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One change, in terms of typed values only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Check the container still runs with the observed PID (guards the steps after it).
    CheckContainer,
    /// Delete a link (and, for a veth, its peer).
    DeleteLink { name: IfName },
    /// Create a bridge.
    AddBridge {
        name: IfName,
        mac: Mac,
        mtu: u32,
        stp: bool,
    },
    /// Create a gretap tunnel.
    AddGretap {
        name: IfName,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        key: u32,
        mtu: u32,
    },
    /// Create a VXLAN device.
    AddVxlan {
        name: IfName,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        mtu: u32,
    },
    /// Create a veth pair whose peer lands in the namespace of process `pid`.
    AddVeth {
        name: IfName,
        peer: IfName,
        pid: u32,
        mtu: u32,
    },
    /// Take a link down and rename it.
    Rename { from: IfName, to: IfName },
    /// Set link attributes (only the given ones) and bring it up.
    SetLink {
        name: IfName,
        mtu: Option<u32>,
        mac: Option<Mac>,
        marker: Option<Marker>,
        master: Option<IfName>,
    },
    /// Bring a link up.
    Up { name: IfName },
    /// Set the bridge-port `isolated` flag.
    SetIsolated { name: IfName, on: bool },
    /// Set a bridge's spanning tree state.
    SetStp { name: IfName, on: bool },
    /// Add an IPv4 address.
    AddAddress { dev: IfName, address: Ipv4Net },
    /// Remove an IPv4 address.
    DelAddress { dev: IfName, address: Ipv4Net },
    /// Add a VXLAN flood entry towards a peer.
    AddFlood { dev: IfName, dst: Ipv4Addr },
    /// Remove a VXLAN flood entry.
    DelFlood { dev: IfName, dst: Ipv4Addr },
    /// Add or replace a route.
    ReplaceRoute {
        dev: IfName,
        to: Ipv4Net,
        via: Option<Ipv4Addr>,
    },
    /// Create a Docker network bound to the mesh bridge, labelled with the mesh.
    CreateDockerNetwork {
        name: NetworkName,
        mesh: MeshName,
        subnet: Ipv4Net,
        ip_range: Ipv4Net,
        gateway: Ipv4Addr,
        bridge: IfName,
        mtu: u32,
    },
    /// Remove a Docker network gremesh created (only when no container is connected).
    RemoveDockerNetwork { name: NetworkName },
}

/// One step of a plan: an action, where it runs, and which object it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Where it runs.
    pub ns: Namespace,
    /// What it does.
    pub action: Action,
    /// The object it serves, for humans (`mesh m1 tunnel to host-b`).
    pub object: String,
}

/// Why an object cannot converge this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum IssueReason {
    /// A device gremesh did not create occupies a name, address or port it needs.
    ForeignDevice,
    /// The attachment's container exists but is not running.
    ContainerNotRunning,
    /// No container with that name or ID exists on the host.
    ContainerMissing,
    /// The attachment's address does not fit the host's subnet.
    AddressConflict,
    /// A Docker network cannot be changed or removed while containers use it.
    NetworkInUse,
}

impl fmt::Display for IssueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IssueReason::ForeignDevice => "ForeignDevice",
            IssueReason::ContainerNotRunning => "ContainerNotRunning",
            IssueReason::ContainerMissing => "ContainerMissing",
            IssueReason::AddressConflict => "AddressConflict",
            IssueReason::NetworkInUse => "NetworkInUse",
        })
    }
}

/// Something that keeps one object from converging; the rest of the plan still runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// Mesh name.
    pub mesh: String,
    /// Attachment name, when the issue is an attachment's.
    pub attachment: Option<String>,
    /// Machine-readable reason.
    pub reason: IssueReason,
    /// What is wrong, for humans.
    pub message: String,
}

/// The ordered steps for one host and the problems found while planning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// Objects that cannot converge.
    pub issues: Vec<Issue>,
}

impl Plan {
    /// Whether the host needs no change.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

struct Planner<'a> {
    state: &'a HostState,
    scope: &'a Scope,
    plan: Plan,
    /// Host links deleted by the prune phase; later phases treat them as absent.
    deleted: BTreeSet<String>,
    /// Docker networks removed by the prune phase.
    removed_networks: BTreeSet<String>,
}

/// Plans one host. Pure.
pub fn plan_host(desired: &[MeshOnHost], state: &HostState, scope: &Scope) -> Plan {
    let mut p = Planner {
        state,
        scope,
        plan: Plan::default(),
        deleted: BTreeSet::new(),
        removed_networks: BTreeSet::new(),
    };
    p.prune(desired, scope);
    for mesh in desired {
        p.mesh(mesh);
    }
    p.plan
}

/// Whether a Docker network has exactly the wanted settings.
fn network_matches(
    net: &crate::observe::DockerNetworkState,
    want: &crate::desired::DockerNetworkSpec,
) -> bool {
    net.name == want.name.as_str()
        && net.subnet == Some(want.subnet)
        && net.ip_range == Some(want.ip_range)
        && net.gateway == Some(want.gateway)
        && net.bridge.as_deref() == Some(want.bridge.as_str())
        && net.mtu == Some(want.mtu)
}

/// Whether a gretap link has exactly the tunnel's endpoints and key.
fn gre_matches(link: &Link, t: &crate::desired::TunnelSpec) -> bool {
    link.gre.as_ref().is_some_and(|g| {
        g.local == Some(t.local)
            && g.remote == Some(t.remote)
            && g.ikey == Some(t.key)
            && g.okey == Some(t.key)
    })
}

/// Whether a VXLAN link has exactly the mesh's VNI, local address and port.
fn vxlan_matches(link: &Link, v: &crate::desired::VxlanSpec) -> bool {
    link.vxlan
        == Some(crate::observe::VxlanInfo {
            id: v.vni,
            local: Some(v.local),
            port: v.port,
        })
}

/// The device kind each role has.
fn kind_of(role: &Role) -> &'static str {
    match role {
        Role::Bridge => "bridge",
        Role::Tunnel(_) => "gretap",
        Role::Vxlan => "vxlan",
        Role::Veth(_) | Role::Attach(_) => "veth",
    }
}

impl<'a> Planner<'a> {
    /// The marker a link carries, or would carry had its creating pass not been interrupted.
    fn marker_of(&self, link: &Link) -> Option<Marker> {
        link.marker().or_else(|| {
            if !link.alias.as_deref().unwrap_or("").is_empty() {
                return None;
            }
            let marker = self.scope.claimable.get(&link.name)?;
            (link.kind.as_deref() == Some(kind_of(&marker.role))).then(|| marker.clone())
        })
    }

    /// Whether the link is gremesh's, for exactly this marker.
    fn owned_as(&self, link: &Link, marker: &Marker) -> bool {
        self.marker_of(link).as_ref() == Some(marker)
    }

    /// A host link as it will be when this plan's deletions have run.
    fn link(&self, name: &str) -> Option<&'a Link> {
        let state: &'a HostState = self.state;
        state.link(name).filter(|l| !self.deleted.contains(&l.name))
    }

    fn push(&mut self, ns: Namespace, action: Action, object: &str) {
        self.plan.steps.push(Step {
            ns,
            action,
            object: object.to_owned(),
        });
    }

    fn host(&mut self, action: Action, object: &str) {
        self.push(Namespace::Host, action, object);
    }

    fn issue(
        &mut self,
        mesh: &str,
        attachment: Option<&str>,
        reason: IssueReason,
        message: String,
    ) {
        self.plan.issues.push(Issue {
            mesh: mesh.to_owned(),
            attachment: attachment.map(str::to_owned),
            reason,
            message,
        });
    }

    /// Removes gremesh devices of in-scope meshes that the desired state does not contain.
    fn prune(&mut self, desired: &[MeshOnHost], scope: &Scope) {
        // Docker networks first: they sit on the bridges. A network still in use keeps its
        // mesh's bridge alive.
        let mut keep_bridges: BTreeSet<String> = BTreeSet::new();
        for net in &self.state.docker_networks {
            if !scope.meshes.contains(&net.mesh) {
                continue;
            }
            let want = desired
                .iter()
                .find(|m| m.mesh == net.mesh)
                .and_then(|m| m.docker_network.as_ref());
            if want.is_some_and(|w| network_matches(net, w)) {
                continue;
            }
            let Some(name) = NetworkName::new(&net.name) else {
                continue;
            };
            if net.containers > 0 {
                keep_bridges.insert(net.mesh.clone());
                let message = format!(
                    "Docker network {} has {} container(s) connected, so it is not {}; disconnect them to let gremesh proceed",
                    net.name,
                    net.containers,
                    if want.is_some() { "recreated with the new settings" } else { "removed (nor its bridge)" }
                );
                self.issue(&net.mesh, None, IssueReason::NetworkInUse, message);
                continue;
            }
            self.removed_networks.insert(net.name.clone());
            self.host(
                Action::RemoveDockerNetwork { name },
                &format!("mesh {} docker network {}", net.mesh, net.name),
            );
        }
        let mut bridges = Vec::new();
        for link in &self.state.links {
            let Some(marker) = self.marker_of(link) else {
                continue;
            };
            if !scope.meshes.contains(&marker.mesh) {
                continue;
            }
            let mesh = desired.iter().find(|m| m.mesh == marker.mesh);
            let keep = match (&marker.role, mesh) {
                (_, None) => false,
                (Role::Bridge, Some(m)) => m.bridge.name.as_str() == link.name,
                (Role::Tunnel(peer), Some(m)) => m.tunnels.iter().any(|t| {
                    t.name.as_str() == link.name && &t.peer == peer && gre_matches(link, t)
                }),
                (Role::Vxlan, Some(m)) => m
                    .vxlan
                    .as_ref()
                    .is_some_and(|v| v.name.as_str() == link.name && vxlan_matches(link, v)),
                (Role::Veth(att), Some(m)) => match m.attachments.iter().find(|a| &a.name == att) {
                    Some(a) => a.veth.as_str() == link.name,
                    None => !scope.prune_attachments,
                },
                (Role::Attach(_), Some(_)) => false,
            };
            if keep {
                continue;
            }
            let name = IfName::new(&link.name).expect("names from the kernel fit");
            let object = format!("mesh {} stale {}", marker.mesh, link.name);
            self.deleted.insert(link.name.clone());
            if marker.role == Role::Bridge {
                if keep_bridges.contains(&marker.mesh) {
                    continue;
                }
                bridges.push((name, object));
            } else {
                self.host(Action::DeleteLink { name }, &object);
            }
        }
        for (name, object) in bridges {
            self.host(Action::DeleteLink { name }, &object);
        }
    }

    fn mesh(&mut self, m: &MeshOnHost) {
        if !self.bridge(m) {
            return;
        }
        for t in &m.tunnels {
            self.tunnel(m, t);
        }
        if let Some(v) = &m.vxlan {
            self.vxlan(m, v);
        }
        for a in &m.attachments {
            self.attachment(m, a);
        }
        if let Some(net) = &m.docker_network {
            self.docker_network(m, net);
        }
    }

    /// Creates the mesh's Docker network when it is missing (after the bridge exists).
    fn docker_network(&mut self, m: &MeshOnHost, want: &crate::desired::DockerNetworkSpec) {
        let existing = self
            .state
            .docker_networks
            .iter()
            .find(|n| n.name == want.name.as_str() && !self.removed_networks.contains(&n.name));
        match existing {
            Some(n) if n.mesh == m.mesh => return, // matching, or in use and reported by prune
            Some(n) => {
                let message = format!("Docker network {} belongs to mesh {}", n.name, n.mesh);
                self.issue(&m.mesh, None, IssueReason::ForeignDevice, message);
                return;
            }
            None => {}
        }
        let labelled = self
            .state
            .docker_networks
            .iter()
            .any(|n| n.name == want.name.as_str());
        if !labelled
            && self
                .state
                .docker_network_names
                .iter()
                .any(|n| n == want.name.as_str())
        {
            let message = format!(
                "a Docker network named {} exists that gremesh did not create",
                want.name
            );
            self.issue(&m.mesh, None, IssueReason::ForeignDevice, message);
            return;
        }
        if self.state.capabilities.docker_version.is_none() {
            let message = format!(
                "Docker network {} needs a Docker engine, and none answers on this host",
                want.name
            );
            self.issue(&m.mesh, None, IssueReason::ForeignDevice, message);
            return;
        }
        let action = Action::CreateDockerNetwork {
            name: want.name.clone(),
            mesh: MeshName::new(&m.mesh).expect("validated mesh name"),
            subnet: want.subnet,
            ip_range: want.ip_range,
            gateway: want.gateway,
            bridge: want.bridge.clone(),
            mtu: want.mtu,
        };
        self.host(
            action,
            &format!("mesh {} docker network {}", m.mesh, want.name),
        );
    }

    /// Converges the bridge; false when a foreign device blocks the whole mesh on this host.
    fn bridge(&mut self, m: &MeshOnHost) -> bool {
        let b = &m.bridge;
        let object = format!("mesh {} bridge {}", m.mesh, b.name);
        let marker = m.marker(Role::Bridge);
        if let Some(holder) = self.foreign_address_holder(b.address.addr(), &b.name) {
            self.issue(&m.mesh, None, IssueReason::ForeignDevice, format!(
                "gateway address {} is already on device {holder}, which gremesh did not create", b.address.addr()));
            return false;
        }
        let existing = self.link(b.name.as_str());
        let existing = match existing {
            Some(l) if !self.owned_as(l, &marker) => {
                self.issue(&m.mesh, None, IssueReason::ForeignDevice, format!(
                    "a device named {} exists that gremesh did not create; rename it or set spec.bridge", b.name));
                return false;
            }
            Some(l) if l.kind.as_deref() != Some("bridge") => {
                self.host(
                    Action::DeleteLink {
                        name: b.name.clone(),
                    },
                    &object,
                );
                None
            }
            other => other,
        };
        if existing.is_none() {
            self.host(
                Action::AddBridge {
                    name: b.name.clone(),
                    mac: b.mac,
                    mtu: m.mtu,
                    stp: b.stp,
                },
                &object,
            );
        }
        self.set_link(
            Namespace::Host,
            existing,
            &b.name,
            m.mtu,
            Some(b.mac),
            &marker,
            None,
            &object,
        );
        if existing.is_some_and(|l| l.stp != Some(b.stp)) {
            self.host(
                Action::SetStp {
                    name: b.name.clone(),
                    on: b.stp,
                },
                &object,
            );
        }
        self.addresses(Namespace::Host, existing, &b.name, &[b.address], &object);
        true
    }

    /// The name of an unowned device other than `own` that carries `address`.
    fn foreign_address_holder(&self, address: Ipv4Addr, own: &IfName) -> Option<&str> {
        self.state
            .links
            .iter()
            .find(|l| {
                l.name != own.as_str()
                    && self.marker_of(l).is_none()
                    && l.addrs.iter().any(|a| a.addr() == address)
            })
            .map(|l| l.name.as_str())
    }

    #[allow(clippy::too_many_arguments)]
    fn set_link(
        &mut self,
        ns: Namespace,
        existing: Option<&Link>,
        name: &IfName,
        mtu: u32,
        mac: Option<Mac>,
        marker: &Marker,
        master: Option<&IfName>,
        object: &str,
    ) {
        let want_mac = mac.map(|m| m.to_string());
        let action = Action::SetLink {
            name: name.clone(),
            mtu: (existing.map(|l| l.mtu) != Some(mtu)).then_some(mtu),
            mac: mac.filter(|_| existing.and_then(|l| l.mac.clone()) != want_mac),
            marker: (existing.and_then(|l| l.marker()).as_ref() != Some(marker))
                .then(|| marker.clone()),
            master: master
                .filter(|b| existing.and_then(|l| l.master.as_deref()) != Some(b.as_str()))
                .cloned(),
        };
        if let Action::SetLink {
            mtu: None,
            mac: None,
            marker: None,
            master: None,
            ..
        } = action
        {
            if !existing.is_some_and(|l| l.up) {
                self.push(ns, Action::Up { name: name.clone() }, object);
            }
        } else {
            self.push(ns, action, object);
        }
    }

    fn addresses(
        &mut self,
        ns: Namespace,
        existing: Option<&Link>,
        dev: &IfName,
        want: &[Ipv4Net],
        object: &str,
    ) {
        let have: &[Ipv4Net] = existing.map(|l| l.addrs.as_slice()).unwrap_or(&[]);
        for address in have.iter().filter(|a| !want.contains(a)) {
            self.push(
                ns.clone(),
                Action::DelAddress {
                    dev: dev.clone(),
                    address: *address,
                },
                object,
            );
        }
        for address in want.iter().filter(|a| !have.contains(a)) {
            self.push(
                ns.clone(),
                Action::AddAddress {
                    dev: dev.clone(),
                    address: *address,
                },
                object,
            );
        }
    }

    fn tunnel(&mut self, m: &MeshOnHost, t: &crate::desired::TunnelSpec) {
        let object = format!("mesh {} tunnel to {}", m.mesh, t.peer);
        let marker = m.marker(Role::Tunnel(t.peer.clone()));
        let mut existing = self.link(t.name.as_str());
        if let Some(l) = existing {
            if !self.owned_as(l, &marker) {
                self.issue(&m.mesh, None, IssueReason::ForeignDevice, format!(
                    "a device named {} exists that gremesh did not create; tunnel to {} not built", t.name, t.peer));
                return;
            }
            let g = l.gre.as_ref();
            let same = g.is_some_and(|g| {
                g.local == Some(t.local)
                    && g.remote == Some(t.remote)
                    && g.ikey == Some(t.key)
                    && g.okey == Some(t.key)
            });
            if !same {
                self.host(
                    Action::DeleteLink {
                        name: t.name.clone(),
                    },
                    &object,
                );
                existing = None;
            }
        }
        if existing.is_none() {
            let action = Action::AddGretap {
                name: t.name.clone(),
                local: t.local,
                remote: t.remote,
                key: t.key,
                mtu: m.mtu,
            };
            self.host(action, &object);
        }
        self.set_link(
            Namespace::Host,
            existing,
            &t.name,
            m.mtu,
            None,
            &marker,
            Some(&m.bridge.name),
            &object,
        );
        self.isolation(m, existing, &t.name, &object);
    }

    fn isolation(&mut self, m: &MeshOnHost, existing: Option<&Link>, name: &IfName, object: &str) {
        if existing.and_then(|l| l.isolated) != Some(m.isolated)
            && (m.isolated || existing.is_some())
        {
            self.host(
                Action::SetIsolated {
                    name: name.clone(),
                    on: m.isolated,
                },
                object,
            );
        }
    }

    fn vxlan(&mut self, m: &MeshOnHost, v: &crate::desired::VxlanSpec) {
        let object = format!("mesh {} vxlan {}", m.mesh, v.name);
        let marker = m.marker(Role::Vxlan);
        if let Some(other) = self.state.links.iter().find(|l| {
            l.name != v.name.as_str()
                && self.marker_of(l).is_none()
                && l.vxlan
                    .as_ref()
                    .is_some_and(|x| x.id == v.vni && x.port == v.port)
        }) {
            self.issue(
                &m.mesh,
                None,
                IssueReason::ForeignDevice,
                format!(
                    "VXLAN device {} (not gremesh's) already uses VNI {} on port {}",
                    other.name, v.vni, v.port
                ),
            );
            return;
        }
        let mut existing = self.link(v.name.as_str());
        if let Some(l) = existing {
            if !self.owned_as(l, &marker) {
                self.issue(
                    &m.mesh,
                    None,
                    IssueReason::ForeignDevice,
                    format!(
                        "a device named {} exists that gremesh did not create",
                        v.name
                    ),
                );
                return;
            }
            let want = crate::observe::VxlanInfo {
                id: v.vni,
                local: Some(v.local),
                port: v.port,
            };
            if l.vxlan.as_ref() != Some(&want) {
                self.host(
                    Action::DeleteLink {
                        name: v.name.clone(),
                    },
                    &object,
                );
                existing = None;
            }
        }
        if existing.is_none() {
            let action = Action::AddVxlan {
                name: v.name.clone(),
                vni: v.vni,
                local: v.local,
                port: v.port,
                mtu: m.mtu,
            };
            self.host(action, &object);
        }
        self.set_link(
            Namespace::Host,
            existing,
            &v.name,
            m.mtu,
            None,
            &marker,
            Some(&m.bridge.name),
            &object,
        );
        self.isolation(m, existing, &v.name, &object);
        let have: Vec<Ipv4Addr> = match existing {
            Some(_) => self
                .state
                .fdb
                .get(v.name.as_str())
                .map(|entries| {
                    entries
                        .iter()
                        .filter(|e| e.mac == "00:00:00:00:00:00")
                        .filter_map(|e| e.dst)
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for dst in have.iter().filter(|d| !v.peers.values().any(|p| p == *d)) {
            self.host(
                Action::DelFlood {
                    dev: v.name.clone(),
                    dst: *dst,
                },
                &object,
            );
        }
        for (peer, dst) in &v.peers {
            if !have.contains(dst) {
                self.host(
                    Action::AddFlood {
                        dev: v.name.clone(),
                        dst: *dst,
                    },
                    &format!("mesh {} vxlan flood to {peer}", m.mesh),
                );
            }
        }
    }

    fn attachment(&mut self, m: &MeshOnHost, a: &AttachmentSpec) {
        let object = format!("mesh {} attachment {}", m.mesh, a.name);
        let issue =
            |p: &mut Self, reason, message| p.issue(&m.mesh, Some(&a.name), reason, message);
        let veth_marker = m.marker(Role::Veth(a.name.clone()));
        let host_link = self.link(a.veth.as_str());
        if let Some(l) = host_link {
            if !self.owned_as(l, &veth_marker) {
                issue(
                    self,
                    IssueReason::ForeignDevice,
                    format!(
                        "a device named {} exists that gremesh did not create",
                        a.veth
                    ),
                );
                return;
            }
        }
        if let Some(problem) = &a.problem {
            issue(self, IssueReason::AddressConflict, problem.clone());
            return;
        }
        let container = match self.state.container(&a.container) {
            None => {
                issue(
                    self,
                    IssueReason::ContainerMissing,
                    format!("no container {} on this host", a.container),
                );
                None
            }
            Some(c) if !c.running || c.pid == 0 => {
                issue(
                    self,
                    IssueReason::ContainerNotRunning,
                    format!("container {} is not running", a.container),
                );
                None
            }
            Some(c) => ContainerId::new(&c.id).map(|id| (id, c)),
        };
        let Some((id, container)) = container else {
            if let Some(l) = host_link {
                self.host(
                    Action::DeleteLink {
                        name: IfName::new(&l.name).expect("kernel name"),
                    },
                    &object,
                );
            }
            return;
        };
        self.attach_running(m, a, &object, host_link, id, container);
    }

    fn attach_running(
        &mut self,
        m: &MeshOnHost,
        a: &AttachmentSpec,
        object: &str,
        host_link: Option<&Link>,
        id: ContainerId,
        container: &Container,
    ) {
        let inner_marker = m.marker(Role::Attach(a.name.clone()));
        let veth_marker = m.marker(Role::Veth(a.name.clone()));
        let inner_links: &[Link] = self
            .state
            .container_links
            .get(&container.id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let inner = inner_links.iter().find(|l| self.owned_as(l, &inner_marker));
        if let Some(blocker) = inner_links
            .iter()
            .find(|l| l.name == a.interface.as_str() && inner.is_none_or(|i| i.name != l.name))
        {
            self.issue(
                &m.mesh,
                Some(&a.name),
                IssueReason::ForeignDevice,
                format!(
                    "container {} already has an interface {} that gremesh did not create",
                    a.container, blocker.name
                ),
            );
            return;
        }
        let ns = Namespace::Container {
            id,
            pid: container.pid,
        };
        let (host_link, inner) = match (host_link, inner) {
            (Some(h), Some(i)) => (Some(h), Some(i)),
            (h, i) => {
                // Half a pair (or a pair into an old namespace): rebuild it whole.
                if let Some(h) = h {
                    self.host(
                        Action::DeleteLink {
                            name: IfName::new(&h.name).expect("kernel name"),
                        },
                        object,
                    );
                }
                self.push(ns.clone(), Action::CheckContainer, object);
                if let Some(i) = i {
                    self.push(
                        ns.clone(),
                        Action::DeleteLink {
                            name: IfName::new(&i.name).expect("kernel name"),
                        },
                        object,
                    );
                }
                let action = Action::AddVeth {
                    name: a.veth.clone(),
                    peer: a.peer.clone(),
                    pid: container.pid,
                    mtu: m.mtu,
                };
                self.host(action, object);
                (None, None)
            }
        };
        self.set_link(
            Namespace::Host,
            host_link,
            &a.veth,
            m.mtu,
            None,
            &veth_marker,
            Some(&m.bridge.name),
            object,
        );
        let mut inner_steps = Planner {
            state: self.state,
            scope: self.scope,
            plan: Plan::default(),
            deleted: BTreeSet::new(),
            removed_networks: BTreeSet::new(),
        };
        let current_name = inner
            .map(|i| i.name.clone())
            .unwrap_or_else(|| a.peer.to_string());
        if current_name != a.interface.as_str() {
            let from = IfName::new(&current_name).expect("kernel name");
            inner_steps.push(
                ns.clone(),
                Action::Rename {
                    from,
                    to: a.interface.clone(),
                },
                object,
            );
        }
        let renamed = inner.filter(|i| i.name == a.interface.as_str());
        inner_steps.set_link(
            ns.clone(),
            renamed,
            &a.interface,
            m.mtu,
            Some(a.mac),
            &inner_marker,
            None,
            object,
        );
        inner_steps.addresses(ns.clone(), inner, &a.interface, &[a.address], object);
        for (to, via) in &a.routes {
            if !self.has_route(&container.id, a.interface.as_str(), *to, *via) || inner.is_none() {
                inner_steps.push(
                    ns.clone(),
                    Action::ReplaceRoute {
                        dev: a.interface.clone(),
                        to: *to,
                        via: *via,
                    },
                    object,
                );
            }
        }
        if !inner_steps.plan.steps.is_empty() {
            self.push(ns, Action::CheckContainer, object);
            self.plan.steps.extend(inner_steps.plan.steps);
        }
    }

    fn has_route(&self, id: &str, dev: &str, to: Ipv4Net, via: Option<Ipv4Addr>) -> bool {
        let dst = if to.prefix_len() == 0 {
            "default".to_owned()
        } else if to.prefix_len() == 32 {
            to.addr().to_string()
        } else {
            to.to_string()
        };
        self.state.container_routes.get(id).is_some_and(|routes| {
            routes
                .iter()
                .any(|r| r.dst == dst && r.gateway == via && r.dev.as_deref() == Some(dev))
        })
    }
}

#[cfg(test)]
mod tests;
