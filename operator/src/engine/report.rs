//! What a pass reports: per host (steps planned and applied, issues, tunnels, attachments),
//! per mesh (MTU, readiness) and for the whole pass. Serialized as `gremesh apply -o json`.

use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::error::{FailureReason, HostError};
use crate::plan::{Issue, IssueReason};

/// The outcome of a pass on one host.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    /// Host name.
    pub host: String,
    /// Steps planned (human-readable, with their commands).
    pub planned: Vec<String>,
    /// Steps applied successfully.
    pub applied: usize,
    /// Whether the host matches the spec at the end of the pass.
    pub converged: bool,
    /// Why the host failed, when it did (nothing after the failing step ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of that failure, for machines (condition reasons, metric labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReason>,
    /// Objects that could not converge (foreign devices, stopped containers...).
    pub issues: Vec<IssueReport>,
    /// Per-mesh state of this host after the pass.
    pub meshes: Vec<MeshHostReport>,
    /// SSH scripts run on the host (round trips).
    pub round_trips: u32,
    /// Wall time for this host.
    #[serde(with = "millis")]
    pub duration: Duration,
    /// Capabilities read by the probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::api::host::HostCapabilities>,
    /// Container ID and address per attachment actually attached.
    pub attachments: Vec<AttachmentReport>,
}

/// An issue, serializable.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueReport {
    /// Mesh.
    pub mesh: String,
    /// Attachment, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<String>,
    /// Reason.
    pub reason: IssueReason,
    /// Message.
    pub message: String,
}

impl From<&Issue> for IssueReport {
    fn from(i: &Issue) -> Self {
        Self {
            mesh: i.mesh.clone(),
            attachment: i.attachment.clone(),
            reason: i.reason,
            message: i.message.clone(),
        }
    }
}

/// One mesh on one host after the pass.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshHostReport {
    /// Mesh name.
    pub mesh: String,
    /// Host subnet.
    pub subnet: Ipv4Net,
    /// Gateway on the bridge.
    pub gateway: std::net::Ipv4Addr,
    /// Tunnels present, configured and up.
    pub tunnels_up: u32,
    /// Tunnels expected.
    pub tunnels_expected: u32,
    /// Bridge name.
    pub bridge: String,
    /// Peers whose tunnel is up.
    pub peers_up: Vec<String>,
    /// Peers whose tunnel device is up but that did not answer across it (the underlay may
    /// block the encapsulation).
    pub peers_unanswered: Vec<String>,
}

/// An attachment as found after the pass.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentReport {
    /// Attachment name.
    pub name: String,
    /// Mesh name.
    pub mesh: String,
    /// Container ID attached.
    pub container_id: String,
    /// Address configured.
    pub address: Ipv4Net,
}

/// A mesh-wide result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshReport {
    /// Mesh name.
    pub mesh: String,
    /// MTU in force.
    pub mtu: u32,
    /// Encapsulation in force.
    pub encapsulation: crate::api::Encapsulation,
    /// Loop prevention in force.
    pub loop_prevention: crate::api::LoopPrevention,
    /// Every host converged and every tunnel up.
    pub ready: bool,
    /// Why the mesh could not be laid out, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of a whole pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    /// Per host, sorted by name.
    pub hosts: Vec<HostReport>,
    /// Per mesh.
    pub meshes: Vec<MeshReport>,
}

impl PassReport {
    /// Whether any host failed or a mesh could not be laid out.
    pub fn failed(&self) -> bool {
        self.hosts.iter().any(|h| h.error.is_some())
            || self.meshes.iter().any(|m| m.error.is_some())
    }

    /// Whether any object is blocked (a foreign device in the way, a container that is not
    /// running, a conflict...): the hosts did what they could, but not all of the spec.
    pub fn blocked(&self) -> bool {
        self.hosts.iter().any(|h| !h.issues.is_empty())
    }
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

impl HostReport {
    /// Records `error` as this host's failure.
    pub(super) fn fail(&mut self, error: &HostError) {
        self.error = Some(error.to_string());
        self.failure = Some(error.reason());
    }
}
