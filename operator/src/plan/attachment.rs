//! Attachments: a veth pair from the mesh bridge into a running container, renamed,
//! addressed and routed inside the container's namespace.
//!
//! The container-side steps are preceded by a `CheckContainer` guard. A container that is
//! missing or not running is reported, and the host side of its veth pair is removed. So is a
//! container whose network namespace is not its own (`--network host`, `--network
//! container:…`): the veth's far end would land in the host's or another container's
//! namespace, where gremesh would take it for a stale device of its own.
//!
//! Inside the container gremesh manages only its own interface: the addresses on it inside the
//! mesh network (see `link`) and the routes through it (see `route`). A container whose other
//! interfaces already overlap the mesh network is not attached.

use std::collections::BTreeSet;

use crate::addressing::{IfName, Marker, Role};
use crate::desired::{AttachmentSpec, MeshOnHost};
use crate::observe::{Container, Link, RouteEntry};

use super::route::plan_routes;
use super::{
    delete_action, mesh_network, Action, ContainerId, IssueReason, Namespace, Plan, Planner,
};

impl Planner<'_> {
    /// Converges one container attachment, or reports why it cannot converge this pass.
    pub(super) fn attachment(&mut self, m: &MeshOnHost, a: &AttachmentSpec) {
        let object = format!("mesh {} attachment {}", m.mesh, a.name);
        let issue =
            |p: &mut Self, reason, message| p.issue(&m.mesh, Some(&a.name), reason, message);
        let veth_marker = m.marker(Role::Veth(a.name.clone()));
        let host_link = self.link(a.veth.as_str());
        if let Some(l) = host_link {
            if !self.owned_as(l, &veth_marker) {
                issue(self, IssueReason::ForeignDevice, self.name_taken(l));
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
            Some(c) => match self.state.shared_namespace(c) {
                Some(shared) => {
                    let message = format!(
                        "container {} {shared}; gremesh attaches only containers with a network \
                         namespace of their own, so it is not attached",
                        a.container
                    );
                    issue(self, IssueReason::SharedNamespace, message);
                    None
                }
                None => ContainerId::new(&c.id).map(|id| (id, c)),
            },
        };
        let Some((id, container)) = container else {
            if let Some(l) = host_link {
                self.host(delete_action(l), &object);
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
        // Interfaces whose host end this plan deletes go with it, and so do their routes.
        let all: &[Link] = self
            .state
            .container_links
            .get(&container.id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let (gone, inner_links): (Vec<Link>, Vec<Link>) =
            all.iter().cloned().partition(|l| self.going_away(l));
        let routes: Vec<RouteEntry> = self
            .state
            .container_routes
            .get(&container.id)
            .into_iter()
            .flatten()
            .filter(|r| {
                !gone
                    .iter()
                    .any(|l| r.dev.as_deref() == Some(l.name.as_str()))
            })
            .cloned()
            .collect();
        let (inner_links, routes) = (inner_links.as_slice(), routes.as_slice());
        let observed = inner_links.iter().find(|l| self.owned_as(l, &inner_marker));
        if !self.container_free(m, a, inner_links, routes, observed) {
            return;
        }
        let ns = Namespace::Container {
            id,
            pid: container.pid,
        };
        let (host_link, inner) = match (host_link, observed) {
            (Some(h), Some(i)) => (Some(h), Some(i)),
            (h, i) => {
                // Half a pair (or a pair into an old namespace): rebuild it whole.
                if let Some(h) = h {
                    self.host(delete_action(h), object);
                }
                self.push(ns.clone(), Action::CheckContainer, object);
                if let Some(i) = i {
                    self.push(ns.clone(), delete_action(i), object);
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
            planned_attachments: self.planned_attachments,
        };
        let current_name = inner
            .map(|i| i.name.clone())
            .unwrap_or_else(|| a.peer.to_string());
        let kept = inner.filter(|i| i.name == a.interface.as_str());
        if kept.is_none() {
            // Marked before the rename, so a pass interrupted in between leaves a device
            // gremesh still recognises (the rename takes the link down; it comes up after).
            let from = IfName::new(&current_name).expect("kernel name");
            inner_steps.set_link(
                ns.clone(),
                inner,
                &from,
                m.mtu,
                Some(a.mac),
                &inner_marker,
                None,
                object,
            );
            let to = a.interface.clone();
            inner_steps.push(ns.clone(), Action::Rename { from, to }, object);
            let name = a.interface.clone();
            inner_steps.push(ns.clone(), Action::Up { name }, object);
        } else {
            inner_steps.set_link(
                ns.clone(),
                kept,
                &a.interface,
                m.mtu,
                Some(a.mac),
                &inner_marker,
                None,
                object,
            );
        }
        // A route through the interface of another attachment that this plan also converges
        // is stale: that attachment's whole spec is known, and validation lets only one
        // attachment of a container route a destination. This attachment may take it over
        // (the other's delete of it then finds it gone, which counts as done) — but never the
        // connected route of that interface, and never a route of an attachment this pass does
        // not know (applied from other files): that one is a conflict.
        let stale_of_other = |r: &RouteEntry| {
            let dev = inner_links
                .iter()
                .find(|l| Some(l.name.as_str()) == r.dev.as_deref());
            dev.is_some_and(|l| {
                !r.is_connected_of(l)
                    && self.marker_of(l).is_some_and(|mk| {
                        mk != inner_marker && self.planned_attachments.contains(&mk)
                    })
            })
        };
        let route_steps = plan_routes(a, routes, observed, kept, &stale_of_other);
        for action in route_steps.delete {
            inner_steps.push(ns.clone(), action, object);
        }
        let network = mesh_network(m);
        inner_steps.addresses(
            ns.clone(),
            inner,
            &a.interface,
            &[a.address],
            network,
            object,
        );
        for action in route_steps.replace {
            inner_steps.push(ns.clone(), action, object);
        }
        for (to, route) in route_steps.conflicts {
            let message = self.route_conflict(&a.container, to, &route, inner_links);
            self.issue(&m.mesh, Some(&a.name), IssueReason::RouteConflict, message);
        }
        if !inner_steps.plan.steps.is_empty() {
            self.push(ns, Action::CheckContainer, object);
            self.plan.steps.extend(inner_steps.plan.steps);
        }
    }

    /// Whether nothing in the container stands in the attachment's way: no other interface
    /// with its name, no other interface or route overlapping the mesh network. Reports what
    /// does.
    fn container_free(
        &mut self,
        m: &MeshOnHost,
        a: &AttachmentSpec,
        links: &[Link],
        routes: &[RouteEntry],
        own: Option<&Link>,
    ) -> bool {
        let others: Vec<&Link> = links
            .iter()
            .filter(|l| own.is_none_or(|o| o.name != l.name))
            .collect();
        if let Some(blocker) = others.iter().find(|l| l.name == a.interface.as_str()) {
            let message = self.interface_taken(&a.container, blocker);
            self.issue(&m.mesh, Some(&a.name), IssueReason::ForeignDevice, message);
            return false;
        }
        let other_routes: Vec<&RouteEntry> = routes
            .iter()
            .filter(|r| own.is_none_or(|o| r.dev.as_deref() != Some(o.name.as_str())))
            .collect();
        if let Some((found, _)) = self.overlap(mesh_network(m), &others, &other_routes) {
            let message = format!(
                "container {} already has {found}, which overlaps mesh network {}; not attached",
                a.container,
                mesh_network(m)
            );
            self.issue(&m.mesh, Some(&a.name), IssueReason::NetworkOverlap, message);
            return false;
        }
        true
    }

    /// Whether a container interface goes away with this plan: it is an attachment's, and
    /// the host end of that attachment's veth pair is deleted.
    fn going_away(&self, link: &Link) -> bool {
        match self.marker_of(link) {
            Some(Marker {
                mesh,
                role: Role::Attach(att),
            }) => self
                .deleted
                .contains(crate::addressing::veth_name(&mesh, &att).as_str()),
            _ => false,
        }
    }

    /// The message for a route the spec lists whose destination another device has.
    fn route_conflict(
        &self,
        container: &str,
        to: ipnet::Ipv4Net,
        route: &RouteEntry,
        links: &[Link],
    ) -> String {
        let via = route
            .gateway
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let dev = match route.dev.as_deref() {
            Some(dev) => match links.iter().find(|l| l.name == dev) {
                Some(l) => self.holder(l).to_string(),
                None => format!("device {dev}"),
            },
            None => "several next hops".to_owned(),
        };
        format!(
            "container {container} already routes {to}{via} through {dev}; that route is left \
             alone and the attachment's route to {to} is not added"
        )
    }
}
