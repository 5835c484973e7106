//! Status: what the operator writes back, computed purely from a pass report (or a rejection)
//! and the previous status. Transition times are kept when a condition does not change, so a
//! converged mesh gets an identical status on every resync and nothing is written.

use crate::api::attachment::ContainerAttachmentStatus;
use crate::api::host::{DockerHostStatus, HostCapabilities};
use crate::api::mesh::{GreMeshStatus, MeshHostStatus};
use crate::api::{Condition, ContainerAttachment, GreMesh};
use crate::engine::{FailureReason, HostReport, IssueReport, PassReport};
use crate::plan::IssueReason;
use crate::validate::ValidationError;

/// The result of trying to reconcile a mesh.
pub enum Outcome<'a> {
    /// The spec was rejected; no host was contacted.
    Rejected(&'a [ValidationError]),
    /// A pass ran.
    Pass(&'a PassReport),
}

/// Condition types.
pub const READY: &str = "Ready";
/// Condition types.
pub const PROGRESSING: &str = "Progressing";
/// Condition types.
pub const DEGRADED: &str = "Degraded";

/// Copies `lastTransitionTime` from the previous conditions where the status did not change,
/// and stamps `now` where it did.
pub fn carry_transitions(conditions: &mut [Condition], previous: &[Condition], now: &str) {
    for c in conditions.iter_mut() {
        let before = previous.iter().find(|p| p.type_ == c.type_);
        c.last_transition_time = match before {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Some(now.to_owned()),
        };
    }
}

fn conditions(
    ready: bool,
    degraded: Option<(&str, String)>,
    progress: String,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut out = Vec::new();
    match &degraded {
        _ if ready => out.push(Condition::new(
            READY,
            true,
            "Converged",
            "every host matches the spec",
        )),
        Some((reason, message)) => out.push(Condition::new(READY, false, reason, message.clone())),
        None => out.push(Condition::new(READY, false, "Converging", progress.clone())),
    }
    out.push(Condition::new(
        PROGRESSING,
        !ready && degraded.is_none(),
        if ready { "Converged" } else { "Converging" },
        if ready { String::new() } else { progress },
    ));
    match degraded {
        Some((reason, message)) => out.push(Condition::new(DEGRADED, true, reason, message)),
        None => out.push(Condition::new(DEGRADED, false, "AsExpected", "")),
    }
    for c in &mut out {
        c.observed_generation = generation;
    }
    out
}

/// What keeps host `h` from being ready in `mesh`, if it is a failure or a blocking issue:
/// the condition reason and a message (without the host's name).
fn host_problem(mesh: &str, h: &HostReport) -> Option<(&'static str, String)> {
    if let Some(e) = &h.error {
        let reason = if h.capabilities.is_none() {
            "HostUnreachable"
        } else {
            "HostFailed"
        };
        return Some((reason, e.clone()));
    }
    let issue = h
        .issues
        .iter()
        .find(|i| i.mesh == mesh && i.attachment.is_none())?;
    let reason = match issue.reason {
        IssueReason::NetworkInUse => "NetworkInUse",
        IssueReason::NetworkOverlap => "NetworkOverlap",
        IssueReason::Unsupported => "Unsupported",
        IssueReason::LayoutFailed => "LayoutFailed",
        _ => "ForeignDevice",
    };
    Some((reason, issue.message.clone()))
}

/// What the underlay must pass for the mesh's encapsulation.
fn blocked_hint(mesh: &GreMesh) -> String {
    let blocked = match mesh.spec.encapsulation_or_default() {
        crate::api::Encapsulation::Gretap => "IP protocol 47 (GRE)".to_owned(),
        crate::api::Encapsulation::Vxlan => {
            format!("UDP port {} (VXLAN)", mesh.spec.vxlan_port_or_default())
        }
    };
    match mesh.spec.loop_prevention_or_default() {
        crate::api::LoopPrevention::Stp => {
            format!("{blocked}, or STP ports are still settling (forward delay, about 30 s)")
        }
        crate::api::LoopPrevention::Isolated => blocked,
    }
}

/// The status of a mesh after an attempt.
pub fn mesh_status(
    mesh: &GreMesh,
    outcome: Outcome<'_>,
    previous: Option<&GreMeshStatus>,
    now: &str,
) -> GreMeshStatus {
    let name = mesh.metadata.name.clone().unwrap_or_default();
    let generation = mesh.metadata.generation;
    let mut status = GreMeshStatus {
        observed_generation: generation,
        loop_prevention: Some(mesh.spec.loop_prevention_or_default()),
        ..GreMeshStatus::default()
    };
    match outcome {
        Outcome::Rejected(errors) => {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            status.conditions = conditions(
                false,
                Some(("Rejected", message)),
                String::new(),
                generation,
            );
            status.hosts_ready = Some(format!("0/{}", mesh.spec.hosts.len()));
        }
        Outcome::Pass(report) => {
            let mesh_report = report.meshes.iter().find(|m| m.mesh == name);
            status.mtu = mesh_report.map(|m| m.mtu).filter(|m| *m > 0);
            let mut problems = Vec::new();
            let mut ready_hosts = 0;
            for member in &mesh.spec.hosts {
                let Some(h) = report.hosts.iter().find(|h| h.host == member.name) else {
                    continue;
                };
                let on_mesh = h.meshes.iter().find(|m| m.mesh == name);
                let problem = host_problem(&name, h);
                let tunnels_ok = on_mesh.is_some_and(|m| m.tunnels_up == m.tunnels_expected);
                let ready = problem.is_none() && h.converged && tunnels_ok;
                ready_hosts += usize::from(ready);
                let message = match (&problem, on_mesh) {
                    (Some((_, m)), _) => m.clone(),
                    (None, Some(m)) if !m.peers_unanswered.is_empty() => format!(
                        "no answer across the tunnel to {} although the devices are up; the underlay may block {}",
                        m.peers_unanswered.join(", "),
                        blocked_hint(mesh)
                    ),
                    (None, Some(m)) if !tunnels_ok => {
                        format!("{} of {} tunnels up", m.tunnels_up, m.tunnels_expected)
                    }
                    (None, _) if !h.converged => "not converged".to_owned(),
                    _ => String::new(),
                };
                if let Some((reason, m)) = problem {
                    problems.push((reason, format!("{}: {m}", h.host)));
                }
                status.hosts.push(MeshHostStatus {
                    name: member.name.clone(),
                    subnet: on_mesh.map(|m| m.subnet),
                    gateway: on_mesh.map(|m| m.gateway),
                    tunnels_up: on_mesh.map(|m| m.tunnels_up).unwrap_or(0),
                    tunnels_expected: on_mesh.map(|m| m.tunnels_expected).unwrap_or(0),
                    ready,
                    message,
                });
            }
            if let Some(e) = mesh_report.and_then(|m| m.error.clone()) {
                problems.push(("LayoutFailed", e));
            }
            let ready = mesh_report.is_some_and(|m| m.ready);
            let degraded = (!problems.is_empty()).then(|| {
                let reason = problems[0].0;
                (
                    reason,
                    problems
                        .into_iter()
                        .map(|(_, m)| m)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            });
            let waiting: Vec<String> = status
                .hosts
                .iter()
                .filter(|h| !h.ready)
                .map(|h| h.name.clone())
                .collect();
            let progress = format!("waiting for {}", waiting.join(", "));
            status.conditions = conditions(ready, degraded, progress, generation);
            status.hosts_ready = Some(format!("{ready_hosts}/{}", mesh.spec.hosts.len()));
        }
    }
    carry_transitions(
        &mut status.conditions,
        previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]),
        now,
    );
    status
}

/// The status of one attachment after a mesh pass.
pub fn attachment_status(
    att: &ContainerAttachment,
    outcome: Outcome<'_>,
    previous: Option<&ContainerAttachmentStatus>,
    now: &str,
) -> ContainerAttachmentStatus {
    let name = att.metadata.name.clone().unwrap_or_default();
    let generation = att.metadata.generation;
    let mut status = ContainerAttachmentStatus {
        observed_generation: generation,
        ..Default::default()
    };
    let (ready, reason, message) = match outcome {
        Outcome::Rejected(errors) => {
            let mine: Vec<&ValidationError> = errors
                .iter()
                .filter(|e| e.kind == "ContainerAttachment" && e.name == name)
                .collect();
            if mine.is_empty() {
                (
                    false,
                    "MeshRejected",
                    format!("mesh {} is rejected", att.spec.mesh),
                )
            } else {
                let conflict = mine.iter().any(|e| e.conflicts_with.is_some());
                let message = mine
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.reason))
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    false,
                    if conflict { "Conflict" } else { "Rejected" },
                    message,
                )
            }
        }
        Outcome::Pass(report) => {
            let host = report.hosts.iter().find(|h| h.host == att.spec.host);
            let attached = host.and_then(|h| h.attachments.iter().find(|a| a.name == name));
            if let Some(a) = attached {
                status.container_id = Some(a.container_id.clone());
                status.address = Some(a.address.addr());
                (
                    true,
                    "Attached",
                    format!(
                        "{} on {} as {}",
                        att.spec.container,
                        att.spec.host,
                        att.spec.interface_or_default()
                    ),
                )
            } else if let Some(i) = host.and_then(|h| {
                // Its own issue, else one that keeps its whole mesh off the host.
                let mine = |i: &&IssueReport| i.attachment.as_deref() == Some(name.as_str());
                let mesh = |i: &&IssueReport| i.mesh == att.spec.mesh && i.attachment.is_none();
                h.issues
                    .iter()
                    .find(mine)
                    .or_else(|| h.issues.iter().find(mesh))
            }) {
                (false, attachment_reason(i.reason), i.message.clone())
            } else if let Some(e) = host.and_then(|h| h.error.clone()) {
                let reason = if host.is_some_and(|h| h.capabilities.is_none()) {
                    "HostUnreachable"
                } else {
                    "HostFailed"
                };
                (false, reason, format!("{}: {e}", att.spec.host))
            } else {
                (false, "Converging", "not attached yet".to_owned())
            }
        }
    };
    status.mac = None;
    status.conditions = vec![Condition::new(READY, ready, reason, message)];
    for c in &mut status.conditions {
        c.observed_generation = generation;
    }
    carry_transitions(
        &mut status.conditions,
        previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]),
        now,
    );
    status
}

/// The attachment condition reason for an issue found while planning it.
fn attachment_reason(reason: IssueReason) -> &'static str {
    match reason {
        IssueReason::ContainerNotRunning => "ContainerNotRunning",
        IssueReason::ContainerMissing => "ContainerMissing",
        IssueReason::ForeignDevice => "ForeignDevice",
        IssueReason::AddressConflict => "Conflict",
        IssueReason::NetworkInUse => "NotAttached",
        IssueReason::NetworkOverlap => "NetworkOverlap",
        IssueReason::RouteConflict => "RouteConflict",
        IssueReason::SharedNamespace => "SharedNamespace",
        IssueReason::Unsupported => "Unsupported",
        IssueReason::LayoutFailed => "LayoutFailed",
    }
}

/// The status of a host after a pass; `lastContact` moves only when something else changes,
/// so a healthy host's status is not rewritten on every resync.
pub fn host_status(
    h: &HostReport,
    generation: Option<i64>,
    previous: Option<&DockerHostStatus>,
    now: &str,
) -> DockerHostStatus {
    let reachable = h.capabilities.is_some();
    let capabilities: Option<HostCapabilities> = h
        .capabilities
        .clone()
        .or_else(|| previous.and_then(|p| p.capabilities.clone()));
    let message = if reachable {
        String::new()
    } else {
        h.error.clone().unwrap_or_default()
    };
    let mut conditions = vec![if reachable {
        Condition::new(READY, true, "Reachable", "")
    } else {
        let reason = match h.failure {
            Some(FailureReason::HostKeyMismatch) => "HostKeyMismatch",
            Some(FailureReason::AuthFailed) => "AuthFailed",
            _ => "Unreachable",
        };
        Condition::new(READY, false, reason, message.clone())
    }];
    carry_transitions(
        &mut conditions,
        previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]),
        now,
    );
    let mut status = DockerHostStatus {
        observed_generation: generation,
        reachable,
        capabilities,
        last_contact: None,
        message,
        conditions,
    };
    let unchanged = previous.is_some_and(|p| {
        p.observed_generation == status.observed_generation
            && p.reachable == status.reachable
            && p.capabilities == status.capabilities
            && p.message == status.message
    });
    status.last_contact = if unchanged {
        previous.and_then(|p| p.last_contact.clone())
    } else if reachable {
        Some(now.to_owned())
    } else {
        previous.and_then(|p| p.last_contact.clone())
    };
    status
}
