//! Bridge: the mesh's bridge on the host, with its MAC, STP state and gateway address.
//!
//! A foreign device holding the bridge's name or its gateway address blocks the whole mesh on
//! that host, since every other device of the mesh is a port of the bridge.

use std::net::Ipv4Addr;

use crate::addressing::{IfName, Role};
use crate::desired::MeshOnHost;

use super::{Action, IssueReason, Namespace, Planner};

impl Planner<'_> {
    /// Converges the bridge; false when a foreign device blocks the whole mesh on this host.
    pub(super) fn bridge(&mut self, m: &MeshOnHost) -> bool {
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
}
