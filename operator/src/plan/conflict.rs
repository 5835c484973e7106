//! Conflicts: what keeps a mesh, or one of its objects, from being built on a host.
//!
//! A device is in a mesh's way when it is still there once this plan's deletions have run and
//! it is not the mesh's own: a device gremesh did not create, or a device of another mesh
//! (typically one outside this pass's scope, such as a mesh applied from other files). Both
//! are treated alike: the device is never touched, and the issue names its owner so the user
//! knows what to remove. A mesh blocked on a host gets nothing built there, so no host is left
//! half-built (a bridge without its tunnel, a second gateway on a second bridge).
//!
//! A mesh is also kept off a host whose own networks overlap the mesh network: an address on
//! any device that is not the mesh's (the underlay on `eth0`, Docker's `docker0`, another
//! mesh's bridge), or a route through such a device whose destination lies inside the mesh
//! network. The gateway on the bridge would bring a connected route that takes traffic from
//! them — possibly the SSH connection the pass runs over. The same check keeps an attachment
//! out of a container whose other interfaces overlap the mesh network.
//!
//! Caveat: a route that covers more than the mesh network (the default route, or an aggregate
//! such as `10.0.0.0/8 via` a router) is not a conflict: the mesh network is a more specific
//! claim inside it, as any directly connected network is. Choose a mesh network that is not in
//! use behind such a route, or hosts behind it become unreachable from the mesh's hosts.

use std::fmt;

use ipnet::Ipv4Net;

use crate::addressing::{Marker, Role};
use crate::desired::MeshOnHost;
use crate::observe::{Link, RouteEntry};

use super::{mesh_network, IssueReason, Planner};

/// Who holds a device that stands in the way, as messages name it.
pub(super) struct Holder {
    name: String,
    owner: Option<Marker>,
}

impl Holder {
    /// What the user can do about it: remove the other mesh, or nothing gremesh can suggest.
    pub(super) fn remedy(&self) -> String {
        match &self.owner {
            Some(m) => format!("; remove mesh {} from this host first", m.mesh),
            None => String::new(),
        }
    }

    /// Whether gremesh created the device (for another mesh or attachment).
    pub(super) fn is_gremesh(&self) -> bool {
        self.owner.is_some()
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(m) = &self.owner else {
            return write!(f, "device {}, which gremesh did not create", self.name);
        };
        let role = match &m.role {
            Role::Bridge => "bridge".to_owned(),
            Role::Vxlan => "VXLAN device".to_owned(),
            Role::Tunnel(peer) => format!("tunnel to {peer}"),
            Role::Veth(a) => format!("veth of attachment {a}"),
            Role::Attach(a) => format!("interface of attachment {a}"),
        };
        write!(f, "mesh {}'s {role} {}", m.mesh, self.name)
    }
}

impl Planner<'_> {
    /// Who holds `link`, for messages.
    pub(super) fn holder(&self, link: &Link) -> Holder {
        Holder {
            name: link.name.clone(),
            owner: self.marker_of(link),
        }
    }

    /// The message for a name gremesh needs that `link` already has.
    pub(super) fn name_taken(&self, link: &Link) -> String {
        let holder = self.holder(link);
        if holder.is_gremesh() {
            format!(
                "the name {} is taken by {holder}{}",
                link.name,
                holder.remedy()
            )
        } else {
            format!(
                "a device named {} exists that gremesh did not create",
                link.name
            )
        }
    }

    /// Whether a host link stands in mesh `mesh`'s way: still there after this plan's
    /// deletions, and not the mesh's own.
    fn in_the_way(&self, link: &Link, mesh: &str) -> bool {
        !self.deleted.contains(&link.name) && self.marker_of(link).is_none_or(|m| m.mesh != mesh)
    }

    /// Reports what keeps the whole mesh off this host; true when something does.
    pub(super) fn mesh_blocked(&mut self, m: &MeshOnHost) -> bool {
        let problem = self
            .gateway_taken(m)
            .map(|msg| (IssueReason::ForeignDevice, msg))
            .or_else(|| {
                self.host_overlap(m)
                    .map(|msg| (IssueReason::NetworkOverlap, msg))
            })
            .or_else(|| {
                self.bridge_name_taken(m)
                    .map(|msg| (IssueReason::ForeignDevice, msg))
            })
            .or_else(|| {
                self.vxlan_taken(m)
                    .map(|msg| (IssueReason::ForeignDevice, msg))
            });
        match problem {
            Some((reason, message)) => {
                self.issue(&m.mesh, None, reason, message);
                true
            }
            None => false,
        }
    }

    /// An address or route of the host's (or another mesh's) that overlaps the mesh network.
    fn host_overlap(&self, m: &MeshOnHost) -> Option<String> {
        let network = mesh_network(m);
        let links: Vec<&Link> = self
            .state
            .links
            .iter()
            .filter(|l| self.in_the_way(l, &m.mesh))
            .collect();
        let routes: Vec<&RouteEntry> = self
            .state
            .routes
            .iter()
            .filter(|r| {
                r.dev.as_deref().is_none_or(|d| {
                    self.state
                        .link(d)
                        .is_none_or(|l| self.in_the_way(l, &m.mesh))
                })
            })
            .collect();
        let (found, other) = self.overlap(network, &links, &routes)?;
        let remedy = match other {
            Some(mesh) => {
                format!("remove mesh {mesh} from this host first or choose another spec.network")
            }
            None => "choose a spec.network apart from the host's own networks".to_owned(),
        };
        Some(format!(
            "mesh network {network} overlaps {found}; nothing of the mesh is built on this host \
             ({remedy})"
        ))
    }

    /// Another device already carrying the mesh's gateway address on this host.
    fn gateway_taken(&self, m: &MeshOnHost) -> Option<String> {
        let gateway = m.bridge.address.addr();
        let holder = self.state.links.iter().find(|l| {
            l.name != m.bridge.name.as_str()
                && self.in_the_way(l, &m.mesh)
                && l.addrs.iter().any(|a| a.addr() == gateway)
        })?;
        let holder = self.holder(holder);
        Some(format!(
            "gateway address {gateway} is already on {holder}{}",
            holder.remedy()
        ))
    }

    /// A device holding the bridge's name that is not the mesh's bridge.
    fn bridge_name_taken(&self, m: &MeshOnHost) -> Option<String> {
        let name = &m.bridge.name;
        let link = self.link(name.as_str())?;
        if self.owned_as(link, &m.marker(Role::Bridge)) {
            return None;
        }
        let chosen = *name != crate::addressing::bridge_name(&m.mesh);
        let rename = match (self.holder(link).is_gremesh(), chosen) {
            (true, true) => "; or choose another spec.bridge",
            (true, false) => "; or set spec.bridge",
            (false, true) => "; rename that device or choose another spec.bridge",
            (false, false) => "; rename it or set spec.bridge",
        };
        Some(format!("{}{rename}", self.name_taken(link)))
    }

    /// A device in the way of the mesh's VXLAN device: its VNI and port, or its name.
    fn vxlan_taken(&self, m: &MeshOnHost) -> Option<String> {
        let v = m.vxlan.as_ref()?;
        if let Some(other) = self.state.links.iter().find(|l| {
            l.name != v.name.as_str()
                && self.in_the_way(l, &m.mesh)
                && l.vxlan
                    .as_ref()
                    .is_some_and(|x| x.id == v.vni && x.port == v.port)
        }) {
            let holder = self.holder(other);
            return Some(format!(
                "VNI {} on port {} is used by {holder}{}",
                v.vni,
                v.port,
                holder.remedy()
            ));
        }
        let link = self.link(v.name.as_str())?;
        (!self.owned_as(link, &m.marker(Role::Vxlan))).then(|| self.name_taken(link))
    }

    /// The first address or route among `links` and `routes` that overlaps `network`, described
    /// for a message, with the mesh whose device it is when it is another mesh's. Addresses
    /// count when their networks overlap at all; routes when their destination lies inside
    /// `network` (see the module caveat).
    pub(super) fn overlap(
        &self,
        network: Ipv4Net,
        links: &[&Link],
        routes: &[&RouteEntry],
    ) -> Option<(String, Option<String>)> {
        let overlaps = |a: &Ipv4Net| network.contains(&a.trunc()) || a.trunc().contains(&network);
        let mesh_of = |l: &Link| self.marker_of(l).map(|m| m.mesh);
        for link in links {
            if let Some(address) = link.addrs.iter().find(|a| overlaps(a)) {
                let found = format!("address {address} of {}", self.holder(link));
                return Some((found, mesh_of(link)));
            }
        }
        let route = routes.iter().find(|r| {
            r.destination()
                .is_some_and(|d| d.prefix_len() > 0 && network.contains(&d))
        })?;
        let via = route
            .gateway
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let holder = route
            .dev
            .as_deref()
            .and_then(|dev| links.iter().find(|l| l.name == dev));
        let dev = match (holder, route.dev.as_deref()) {
            (Some(l), _) => format!(" through {}", self.holder(l)),
            (None, Some(dev)) => format!(" dev {dev}"),
            (None, None) => String::new(),
        };
        let found = format!("route {}{via}{dev}", route.dst);
        Some((found, holder.and_then(|l| mesh_of(l))))
    }

    /// The message for a container interface name that another device already has.
    pub(super) fn interface_taken(&self, container: &str, link: &Link) -> String {
        let holder = self.holder(link);
        if holder.is_gremesh() {
            format!(
                "container {container} already has an interface {}: {holder}; remove that \
                 attachment first (delete it, or `gremesh apply --prune` without it) or set \
                 spec.interface to another name",
                link.name
            )
        } else {
            format!(
                "container {container} already has an interface {} that gremesh did not create; \
                 set spec.interface to another name",
                link.name
            )
        }
    }
}
