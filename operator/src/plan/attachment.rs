//! Attachments: a veth pair from the mesh bridge into a running container, renamed,
//! addressed and routed inside the container's namespace.
//!
//! The container-side steps are preceded by a `CheckContainer` guard. A container that is
//! missing or not running is reported, and the host side of its veth pair is removed.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::addressing::{IfName, Role};
use crate::desired::{AttachmentSpec, MeshOnHost};
use crate::observe::{Container, Link};

use super::{Action, ContainerId, IssueReason, Namespace, Plan, Planner};

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
