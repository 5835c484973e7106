//! Judging tunnels: which peers' tunnel devices are right and up, which of those answered
//! the health ping across the mesh, and the per-mesh results of a host filled in from its
//! final state.

use std::collections::BTreeSet;

use super::report::{AttachmentReport, HostReport, IssueReport, MeshHostReport};
use crate::desired::MeshOnHost;
use crate::observe::HostState;
use crate::plan::{gre_matches, vxlan_matches, Plan};

/// Fills per-mesh health and attachment results from the final state.
pub(super) fn summarize(
    report: &mut HostReport,
    desired: &[MeshOnHost],
    state: &HostState,
    plan: &Plan,
) {
    report.issues = plan.issues.iter().map(IssueReport::from).collect();
    report.meshes = mesh_reports(desired, state);
    for m in desired {
        for a in &m.attachments {
            let Some(c) = state.container(&a.container).filter(|c| c.running) else {
                continue;
            };
            let attached = state.container_links.get(&c.id).is_some_and(|links| {
                links
                    .iter()
                    .any(|l| l.name == a.interface.as_str() && l.addrs.contains(&a.address))
            });
            if attached {
                report.attachments.push(AttachmentReport {
                    name: a.name.clone(),
                    mesh: m.mesh.clone(),
                    container_id: c.id.clone(),
                    address: a.address,
                });
            }
        }
    }
}

/// Per mesh of the host: its subnet and which peers' tunnels are up and answer.
pub(super) fn mesh_reports(desired: &[MeshOnHost], state: &HostState) -> Vec<MeshHostReport> {
    desired
        .iter()
        .map(|m| {
            let up = peers_up(m, state);
            let unanswered: Vec<String> = devices_up(m, state)
                .into_iter()
                .filter(|p| !up.contains(p))
                .collect();
            MeshHostReport {
                mesh: m.mesh.clone(),
                subnet: m.bridge.subnet,
                gateway: m.bridge.address.addr(),
                tunnels_up: up.len() as u32,
                tunnels_expected: tunnels_expected(m),
                bridge: m.bridge.name.to_string(),
                peers_up: up,
                peers_unanswered: unanswered,
            }
        })
        .collect()
}

/// Gateways of the peers that did not answer and that changed in this pass: their answer may
/// only have been missing because they were still being built when this host asked.
pub(super) fn unanswered_changed_peers(
    report: &HostReport,
    desired: &[MeshOnHost],
    changed: &BTreeSet<String>,
) -> Vec<std::net::Ipv4Addr> {
    let gateways: BTreeSet<std::net::Ipv4Addr> = desired
        .iter()
        .flat_map(|m| {
            let unanswered = report
                .meshes
                .iter()
                .filter(|r| r.mesh == m.mesh)
                .flat_map(|r| r.peers_unanswered.iter());
            unanswered
                .filter(|p| changed.contains(*p))
                .filter_map(|p| m.peer_gateways.get(p).copied())
                .collect::<Vec<_>>()
        })
        .collect();
    gateways.into_iter().collect()
}

/// Every peer gateway of the host's meshes.
pub(super) fn health_targets(desired: &[MeshOnHost]) -> Vec<std::net::Ipv4Addr> {
    let set: BTreeSet<std::net::Ipv4Addr> = desired
        .iter()
        .flat_map(|m| m.peer_gateways.values().copied())
        .collect();
    set.into_iter().collect()
}

/// Peers of a mesh on a host whose tunnel exists with the right parameters, sits on the bridge
/// and is up (for VXLAN: the device is right and has the peer's flood entry).
pub fn peers_up(m: &MeshOnHost, state: &HostState) -> Vec<String> {
    let answered = |peer: &str| {
        m.peer_gateways
            .get(peer)
            .and_then(|gw| state.health.get(gw))
            .copied()
            .unwrap_or(true)
    };
    devices_up(m, state)
        .into_iter()
        .filter(|p| answered(p))
        .collect()
}

/// Peers whose tunnel device is right and up, whatever the health check says.
pub fn devices_up(m: &MeshOnHost, state: &HostState) -> Vec<String> {
    let on_bridge = |name: &str| {
        state
            .link(name)
            .filter(|l| l.up && l.master.as_deref() == Some(m.bridge.name.as_str()))
    };
    if let Some(v) = &m.vxlan {
        let ok_dev = on_bridge(v.name.as_str()).is_some_and(|d| vxlan_matches(d, v));
        let floods = state
            .fdb
            .get(v.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        return v
            .peers
            .iter()
            .filter(|(_, dst)| {
                ok_dev
                    && floods
                        .iter()
                        .any(|e| e.mac == "00:00:00:00:00:00" && e.dst == Some(**dst))
            })
            .map(|(peer, _)| peer.clone())
            .collect();
    }
    m.tunnels
        .iter()
        .filter(|t| on_bridge(t.name.as_str()).is_some_and(|l| gre_matches(l, t)))
        .map(|t| t.peer.clone())
        .collect()
}

/// Expected tunnels of a mesh on a host (one per peer).
fn tunnels_expected(m: &MeshOnHost) -> u32 {
    m.vxlan.as_ref().map_or(m.tunnels.len(), |v| v.peers.len()) as u32
}
