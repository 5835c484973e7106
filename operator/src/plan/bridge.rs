//! Bridge: the mesh's bridge on the host, with its MAC, STP state and gateway address.
//!
//! What may stand in the bridge's way (its name, its gateway address, the mesh network) is
//! checked before anything of the mesh is built (see `conflict`), since every other device of
//! the mesh is a port of the bridge.
//!
//! Caveat: only addresses inside the mesh network are the bridge's to manage (see `link`). An
//! address an administrator put on the bridge outside it stays, and so does the old gateway
//! after `spec.network` moves to a network that does not contain it: gremesh cannot tell the
//! two apart. Remove such an address by hand (`ip addr del`) after changing the network.

use crate::addressing::Role;
use crate::desired::MeshOnHost;

use super::{delete_action, mesh_network, Action, Namespace, Planner};

impl Planner<'_> {
    /// Converges the bridge (nothing is in its way: see `mesh_blocked`).
    pub(super) fn bridge(&mut self, m: &MeshOnHost) {
        let b = &m.bridge;
        let object = format!("mesh {} bridge {}", m.mesh, b.name);
        let marker = m.marker(Role::Bridge);
        let existing = match self.link(b.name.as_str()) {
            Some(l) if l.kind.as_deref() != Some("bridge") => {
                self.host(delete_action(l), &object);
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
        let network = mesh_network(m);
        self.addresses(
            Namespace::Host,
            existing,
            &b.name,
            &[b.address],
            network,
            &object,
        );
    }
}
