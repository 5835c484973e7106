//! Docker network: the mesh's network, created on the mesh bridge once the bridge exists.
//!
//! A network of that name that belongs to another mesh or that gremesh did not create is
//! reported instead, and so is a host where no Docker engine answers. Networks with other
//! settings, or no longer wanted, are removed in the prune step.

use crate::addressing::MeshName;
use crate::desired::MeshOnHost;

use super::{Action, IssueReason, Planner};

impl Planner<'_> {
    /// Creates the mesh's Docker network when it is missing (after the bridge exists).
    pub(super) fn docker_network(
        &mut self,
        m: &MeshOnHost,
        want: &crate::desired::DockerNetworkSpec,
    ) {
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
}
