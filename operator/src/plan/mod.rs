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
//! - a device that is in a mesh's way (its name, gateway address or VXLAN port) is never
//!   touched, whether gremesh did not create it or it belongs to another mesh: the mesh is
//!   reported and nothing of it is built on that host (`conflict`);
//! - a mesh whose network overlaps the host's own networks (an address or a route that is not
//!   the mesh's) is not built on that host, since its connected route would take traffic from
//!   them — possibly the SSH connection itself;
//! - on its own devices gremesh manages only the addresses inside the mesh network, and in a
//!   container only the routes through its own interface (`link`, `attachment`);
//! - container-side steps are guarded by a check that the container still has the PID that
//!   was observed, so nothing lands in a namespace that is not the container's, and a
//!   container whose namespace is the host's or another container's is never attached.
//!
//! The planner first prunes what is no longer wanted (`prune`), then converges each mesh in
//! order: what stands in its way (`conflict`), its bridge (`bridge`), its tunnels (`tunnel`),
//! its container attachments (`attachment`) and its Docker network (`network`). `link` holds
//! the link-attribute and address steps they share.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::addressing::{IfName, Mac, Marker, MeshName, NetworkName, Role};
use crate::desired::MeshOnHost;
use crate::observe::{HostState, Link};

mod attachment;
mod bridge;
mod conflict;
mod link;
mod network;
mod prune;
mod route;
mod tunnel;

pub use tunnel::{gre_matches, vxlan_matches};

/// Which meshes a pass is responsible for.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Devices of these meshes that the spec does not ask for are removed. Devices of any
    /// other mesh are never changed: where they hold a name, address or port a mesh of this
    /// pass needs, they are in its way exactly like a device gremesh did not create.
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
    /// Delete a link that is not a veth.
    DeleteLink { name: IfName },
    /// Delete one end of a veth pair. The kernel removes both ends together, so an end that
    /// is already gone (its peer was deleted first) counts as done.
    DeleteVeth { name: IfName },
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
    /// Put back the connected route of an address (deleted by hand, or replaced by a route
    /// through a next hop): the kernel adds it only when the address is added.
    AddConnectedRoute { dev: IfName, address: Ipv4Net },
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
    /// Delete a route through one of gremesh's own interfaces.
    DeleteRoute {
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
    /// A device gremesh did not create, or one of another mesh, occupies a name, address or
    /// port it needs.
    ForeignDevice,
    /// The attachment's container exists but is not running.
    ContainerNotRunning,
    /// No container with that name or ID exists on the host.
    ContainerMissing,
    /// The attachment's address does not fit the host's subnet.
    AddressConflict,
    /// A Docker network cannot be changed or removed while containers use it.
    NetworkInUse,
    /// The mesh network overlaps a network the host (or the container) already has.
    NetworkOverlap,
    /// A route the attachment asks for would replace one through a device gremesh does not own.
    RouteConflict,
    /// The container's network namespace is the host's or another container's.
    SharedNamespace,
    /// The host's kernel lacks the mesh's encapsulation; the mesh is left as it is there.
    Unsupported,
    /// The mesh could not be laid out (a member's underlay address is not on it, no room for
    /// the hosts' subnets); it is left as it is on every host.
    LayoutFailed,
}

impl fmt::Display for IssueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IssueReason::ForeignDevice => "ForeignDevice",
            IssueReason::ContainerNotRunning => "ContainerNotRunning",
            IssueReason::ContainerMissing => "ContainerMissing",
            IssueReason::AddressConflict => "AddressConflict",
            IssueReason::NetworkInUse => "NetworkInUse",
            IssueReason::NetworkOverlap => "NetworkOverlap",
            IssueReason::RouteConflict => "RouteConflict",
            IssueReason::SharedNamespace => "SharedNamespace",
            IssueReason::Unsupported => "Unsupported",
            IssueReason::LayoutFailed => "LayoutFailed",
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
    /// The container-side markers of every attachment this plan converges: its whole spec is
    /// known to this pass.
    planned_attachments: &'a BTreeSet<Marker>,
}

/// Plans one host. Pure.
pub fn plan_host(desired: &[MeshOnHost], state: &HostState, scope: &Scope) -> Plan {
    let planned_attachments: BTreeSet<Marker> = desired
        .iter()
        .flat_map(|m| {
            m.attachments
                .iter()
                .map(|a| m.marker(Role::Attach(a.name.clone())))
        })
        .collect();
    let mut p = Planner {
        state,
        scope,
        plan: Plan::default(),
        deleted: BTreeSet::new(),
        removed_networks: BTreeSet::new(),
        planned_attachments: &planned_attachments,
    };
    p.prune(desired, scope);
    for mesh in desired {
        p.mesh(mesh);
    }
    p.plan
}

/// The mesh network of a mesh: its gateway address carries the network's prefix length.
fn mesh_network(m: &MeshOnHost) -> Ipv4Net {
    m.bridge.address.trunc()
}

/// The step that deletes an observed link: veth ends are deleted so that an end already
/// removed with its peer is no failure.
fn delete_action(link: &Link) -> Action {
    let name = IfName::new(&link.name).expect("names from the kernel fit");
    if link.kind.as_deref() == Some("veth") {
        Action::DeleteVeth { name }
    } else {
        Action::DeleteLink { name }
    }
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

    /// Converges one mesh, unless something stands in its way on this host: the bridge first,
    /// since its other devices and its Docker network sit on it.
    fn mesh(&mut self, m: &MeshOnHost) {
        if self.mesh_blocked(m) {
            return;
        }
        self.bridge(m);
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
}

#[cfg(test)]
mod tests;
