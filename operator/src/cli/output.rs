//! Rendering pass reports for people (progress and a summary table) and machines (JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::api::LoopPrevention;
use crate::engine::{PassReport, Progress};

/// Per-host progress on standard error: spinners on a terminal, plain lines otherwise.
pub struct ProgressView {
    multi: Option<MultiProgress>,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
}

impl ProgressView {
    /// A view for the current standard error; `quiet` shows nothing.
    pub fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Self {
            multi,
            bars: Mutex::new(BTreeMap::new()),
        }
    }

    /// Reports one host's progress.
    pub fn report(&self, host: &str, progress: Progress) {
        let text = match &progress {
            Progress::Observing => "observing".to_owned(),
            Progress::Planned { steps: 0 } => "converged, nothing to do".to_owned(),
            Progress::Planned { steps } => format!("{steps} steps planned"),
            Progress::Applying { steps } => format!("applying {steps} steps"),
            Progress::Done => "done".to_owned(),
        };
        let Some(multi) = &self.multi else {
            if !matches!(progress, Progress::Done) {
                // A closed stderr (`2>&1 | head`) must not end the pass.
                let _ = writeln!(std::io::stderr(), "{host}: {text}");
            }
            return;
        };
        let mut bars = self.bars.lock().expect("progress lock");
        let bar = bars.entry(host.to_owned()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:10} {msg}")
                    .expect("static template"),
            );
            bar.set_prefix(host.to_owned());
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            bar
        });
        if matches!(progress, Progress::Done) {
            bar.finish_and_clear();
        } else {
            bar.set_message(text);
        }
    }
}

/// The human summary: one row per host, one line per mesh, then planned steps when asked.
pub fn summary(report: &PassReport, show_steps: bool) -> String {
    let mut out = String::new();
    if show_steps {
        for h in &report.hosts {
            if let (true, Some(e)) = (h.planned.is_empty(), &h.error) {
                let _ = writeln!(out, "{}: not planned: {e}", h.host);
                continue;
            }
            if h.planned.is_empty() {
                let _ = writeln!(out, "{}: no change", h.host);
                continue;
            }
            let _ = writeln!(out, "{}: {} steps", h.host, h.planned.len());
            for (i, s) in h.planned.iter().enumerate() {
                let _ = writeln!(out, "  {:>3}. {s}", i + 1);
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{:<12} {:>7} {:>7} {:>9}  RESULT",
        "HOST", "PLANNED", "APPLIED", "TIME"
    );
    for h in &report.hosts {
        let result = match (&h.error, h.converged, h.issues.len()) {
            (Some(e), _, _) => format!("FAILED: {e}"),
            (None, _, 1) => "blocked (1 issue, see below)".to_owned(),
            (None, _, n) if n > 1 => format!("blocked ({n} issues, see below)"),
            (None, true, _) => "converged".to_owned(),
            (None, false, _) => "not converged".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<12} {:>7} {:>7} {:>8.2}s  {result}",
            h.host,
            h.planned.len(),
            h.applied,
            h.duration.as_secs_f64()
        );
        for m in h.meshes.iter().filter(|m| !m.peers_unanswered.is_empty()) {
            let stp = report
                .meshes
                .iter()
                .any(|x| x.mesh == m.mesh && x.loop_prevention == LoopPrevention::Stp);
            let hint = if stp {
                "STP ports still settling (forward delay, about 30 s after a change), or the \
                 underlay blocks the encapsulation"
            } else {
                "underlay blocking the encapsulation?"
            };
            let _ = writeln!(
                out,
                "{:<12} ! mesh {}: no answer across the tunnel to {} although the devices are up ({hint})",
                "",
                m.mesh,
                m.peers_unanswered.join(", ")
            );
        }
        for i in &h.issues {
            let what = i
                .attachment
                .as_deref()
                .map(|a| format!(" attachment {a}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<12} ! mesh {}{what}: {} ({})",
                "", i.mesh, i.message, i.reason
            );
        }
    }
    for m in &report.meshes {
        match &m.error {
            Some(e) => {
                let _ = writeln!(out, "mesh {}: FAILED: {e}", m.mesh);
            }
            None => {
                let hosts: Vec<String> = report
                    .hosts
                    .iter()
                    .flat_map(|h| {
                        h.meshes.iter().filter(|x| x.mesh == m.mesh).map(move |x| {
                            format!(
                                "{} {} tunnels {}/{}",
                                h.host, x.subnet, x.tunnels_up, x.tunnels_expected
                            )
                        })
                    })
                    .collect();
                let state = if m.ready { "ready" } else { "not ready" };
                let loops = match m.loop_prevention {
                    LoopPrevention::Isolated => "isolated tunnel ports",
                    LoopPrevention::Stp => "stp",
                };
                let hosts = if hosts.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", hosts.join(", "))
                };
                let _ = writeln!(
                    out,
                    "mesh {}: {state}, {} mtu {}, loop prevention: {loops}{hosts}",
                    m.mesh,
                    m.encapsulation.as_str(),
                    m.mtu,
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{HostReport, IssueReport, MeshReport};
    use crate::plan::IssueReason;

    #[test]
    fn summary_tells_failed_blocked_and_converged_hosts_apart() {
        let report = PassReport {
            hosts: vec![
                HostReport {
                    host: "host-a".into(),
                    converged: true,
                    ..HostReport::default()
                },
                HostReport {
                    host: "host-b".into(),
                    converged: true,
                    issues: vec![IssueReport {
                        mesh: "m1".into(),
                        attachment: Some("web-b".into()),
                        reason: IssueReason::ContainerMissing,
                        message: "no container web-b on host-b".into(),
                    }],
                    ..HostReport::default()
                },
                HostReport {
                    host: "host-c".into(),
                    error: Some("cannot connect to 10.0.0.3:22: refused".into()),
                    ..HostReport::default()
                },
            ],
            meshes: vec![MeshReport {
                mesh: "m1".into(),
                mtu: 1450,
                encapsulation: crate::api::Encapsulation::Vxlan,
                loop_prevention: LoopPrevention::Isolated,
                ready: false,
                error: None,
            }],
        };
        let text = summary(&report, true);
        assert!(text.contains("host-a: no change"), "{text}");
        assert!(
            text.contains("host-c: not planned: cannot connect"),
            "{text}"
        );
        let row = |h: &str| {
            text.lines()
                .find(|l| l.starts_with(h) && l.contains("s "))
                .unwrap()
        };
        assert!(row("host-a").ends_with("converged"), "{text}");
        assert!(
            row("host-b").ends_with("blocked (1 issue, see below)"),
            "{text}"
        );
        assert!(row("host-c").contains("FAILED: cannot connect"), "{text}");
        assert!(text.contains("attachment web-b: no container web-b on host-b (ContainerMissing)"));
        assert!(
            text.ends_with("loop prevention: isolated tunnel ports\n"),
            "{text}"
        );
        assert!(report.blocked() && report.failed());
    }
}
