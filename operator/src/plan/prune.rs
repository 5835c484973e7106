//! Prune: removes the devices and Docker networks of in-scope meshes that the desired state
//! no longer contains, before anything is built.
//!
//! Docker networks go first because they sit on the bridges; a network that still has
//! containers connected is reported and keeps its mesh's bridge. Bridges are deleted last,
//! after the devices that are their ports.

use std::collections::BTreeSet;

use crate::addressing::{NetworkName, Role};
use crate::desired::MeshOnHost;

use super::{delete_action, gre_matches, vxlan_matches, Action, IssueReason, Planner, Scope};

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

impl Planner<'_> {
    /// Removes gremesh devices of in-scope meshes that the desired state does not contain.
    pub(super) fn prune(&mut self, desired: &[MeshOnHost], scope: &Scope) {
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
            if marker.role == Role::Bridge && keep_bridges.contains(&marker.mesh) {
                continue;
            }
            let object = format!("mesh {} stale {}", marker.mesh, link.name);
            self.deleted.insert(link.name.clone());
            if marker.role == Role::Bridge {
                bridges.push((delete_action(link), object));
            } else {
                self.host(delete_action(link), &object);
            }
        }
        for (action, object) in bridges {
            self.host(action, &object);
        }
    }
}
