//! Tunnels: one gretap device per peer host, or one VXLAN device with a flood entry per peer.
//!
//! Each is a port of the mesh bridge and carries the mesh's isolation flag. A device whose
//! endpoints, key or VNI differ from the spec is deleted and built again. A device of another
//! owner holding a tunnel's name blocks that tunnel only; one holding the VXLAN device's name,
//! VNI or port blocks the whole mesh (see `conflict`).

use std::net::Ipv4Addr;

use crate::addressing::{IfName, Role};
use crate::desired::MeshOnHost;
use crate::observe::Link;

use super::{delete_action, Action, IssueReason, Namespace, Planner};

/// Whether a gretap link has exactly the tunnel's endpoints and key.
pub fn gre_matches(link: &Link, t: &crate::desired::TunnelSpec) -> bool {
    link.gre.as_ref().is_some_and(|g| {
        g.local == Some(t.local)
            && g.remote == Some(t.remote)
            && g.ikey == Some(t.key)
            && g.okey == Some(t.key)
    })
}

/// Whether a VXLAN link has exactly the mesh's VNI, local address and port.
pub fn vxlan_matches(link: &Link, v: &crate::desired::VxlanSpec) -> bool {
    link.vxlan
        == Some(crate::observe::VxlanInfo {
            id: v.vni,
            local: Some(v.local),
            port: v.port,
        })
}

impl Planner<'_> {
    /// Converges the gretap tunnel to one peer host.
    pub(super) fn tunnel(&mut self, m: &MeshOnHost, t: &crate::desired::TunnelSpec) {
        let object = format!("mesh {} tunnel to {}", m.mesh, t.peer);
        let marker = m.marker(Role::Tunnel(t.peer.clone()));
        let mut existing = self.link(t.name.as_str());
        if let Some(l) = existing {
            if !self.owned_as(l, &marker) {
                let message = format!("{}; tunnel to {} not built", self.name_taken(l), t.peer);
                self.issue(&m.mesh, None, IssueReason::ForeignDevice, message);
                return;
            }
            if !gre_matches(l, t) {
                self.host(delete_action(l), &object);
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

    /// Converges the mesh's VXLAN device and its flood entries, one per peer host.
    pub(super) fn vxlan(&mut self, m: &MeshOnHost, v: &crate::desired::VxlanSpec) {
        let object = format!("mesh {} vxlan {}", m.mesh, v.name);
        let marker = m.marker(Role::Vxlan);
        // Whatever else holds its name, VNI or port was reported by `mesh_blocked`.
        let mut existing = self.link(v.name.as_str());
        if let Some(l) = existing.filter(|l| !vxlan_matches(l, v)) {
            self.host(delete_action(l), &object);
            existing = None;
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
}
