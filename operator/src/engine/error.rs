//! Why a pass could not converge a host: one typed error per way it can fail, and the kind of
//! failure that conditions and metrics name.

use serde::Serialize;

use crate::observe::ProbeError;
use crate::ssh::SshError;

/// Why a pass could not converge one host. Nothing after the failure ran on that host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The inventory cannot say how to reach the host (its key Secret is missing).
    #[error("{0}")]
    Config(String),
    /// The SSH connection could not be made (unreachable, host key mismatch, login refused).
    #[error(transparent)]
    Connect(SshError),
    /// The read-only probe did not run to its end.
    #[error("probe: {0}")]
    ProbeRun(SshError),
    /// The probe's output could not be read.
    #[error(transparent)]
    ProbeOutput(ProbeError),
    /// The apply round trip itself failed (connection lost, time limit).
    #[error(transparent)]
    ApplyRun(SshError),
    /// A step of the plan failed on the host; the steps after it did not run.
    #[error("step {number} of {total} failed: {step}: {detail}")]
    Step {
        /// 1-based number of the failing step.
        number: usize,
        /// Steps in the plan.
        total: usize,
        /// The step, as `describe` prints it.
        step: String,
        /// What the failing command printed.
        detail: String,
    },
    /// The probe that closes the apply round trip could not be read.
    #[error("after apply: {0}")]
    AfterApply(ProbeError),
}

/// The kind of a [`HostError`], as condition reasons and metric labels name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FailureReason {
    /// The inventory lacks what is needed to reach the host.
    Misconfigured,
    /// No SSH connection (refused, timed out, name not resolved).
    Unreachable,
    /// The host presented a key other than the pinned one.
    HostKeyMismatch,
    /// The host refused the private key.
    AuthFailed,
    /// The probe did not run or its output was unreadable.
    ProbeFailed,
    /// Applying the plan failed.
    ApplyFailed,
}

impl FailureReason {
    /// The `reason` label of the `gremesh_host_failures_total` metric.
    pub fn metric_label(self) -> &'static str {
        match self {
            FailureReason::Misconfigured => "misconfigured",
            FailureReason::Unreachable => "unreachable",
            FailureReason::HostKeyMismatch => "host_key_mismatch",
            FailureReason::AuthFailed => "auth_failed",
            FailureReason::ProbeFailed => "probe_failed",
            FailureReason::ApplyFailed => "apply_failed",
        }
    }
}

impl HostError {
    /// The kind of this failure.
    pub fn reason(&self) -> FailureReason {
        match self {
            HostError::Config(_) => FailureReason::Misconfigured,
            HostError::Connect(SshError::HostKeyMismatch { .. }) => FailureReason::HostKeyMismatch,
            HostError::Connect(SshError::Auth { .. }) => FailureReason::AuthFailed,
            HostError::Connect(_) => FailureReason::Unreachable,
            HostError::ProbeRun(_) | HostError::ProbeOutput(_) => FailureReason::ProbeFailed,
            HostError::ApplyRun(_) | HostError::Step { .. } | HostError::AfterApply(_) => {
                FailureReason::ApplyFailed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::HostReport;
    use std::time::Duration;

    #[test]
    fn failure_reasons_come_from_the_error_kind() {
        let mismatch = HostError::Connect(SshError::HostKeyMismatch {
            presented: "SHA256:a".into(),
            pinned: "SHA256:b".into(),
        });
        assert_eq!(mismatch.reason(), FailureReason::HostKeyMismatch);
        assert!(mismatch.to_string().starts_with("host key mismatch"));
        let refused = HostError::Connect(SshError::Connect {
            address: "192.0.2.1".into(),
            port: 22,
            detail: "refused".into(),
        });
        assert_eq!(refused.reason(), FailureReason::Unreachable);
        let probe = HostError::ProbeRun(SshError::Timeout {
            what: "remote script",
            after: Duration::from_secs(1),
        });
        assert_eq!(probe.reason(), FailureReason::ProbeFailed);
        let step = HostError::Step {
            number: 3,
            total: 5,
            step: "create bridge".into(),
            detail: "File exists".into(),
        };
        assert_eq!(step.reason(), FailureReason::ApplyFailed);
        assert_eq!(
            step.to_string(),
            "step 3 of 5 failed: create bridge: File exists"
        );
        let mut report = HostReport::default();
        report.fail(&step);
        assert_eq!(report.failure, Some(FailureReason::ApplyFailed));
        assert_eq!(report.error.as_deref(), Some(step.to_string().as_str()));
    }
}
