//! Rendering pass reports for people (progress and a summary table) and machines (JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
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
                eprintln!("{host}: {text}");
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
        let result = match (&h.error, h.converged) {
            (Some(e), _) => format!("FAILED: {e}"),
            (None, true) => "converged".to_owned(),
            (None, false) => "not converged".to_owned(),
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
            let _ = writeln!(
                out,
                "{:<12} ! mesh {}: no answer across the tunnel to {} although the devices are up (underlay blocking the encapsulation?)",
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
                let _ = writeln!(
                    out,
                    "mesh {}: {state}, {} mtu {}, loop prevention: {loops} — {}",
                    m.mesh,
                    m.encapsulation.as_str(),
                    m.mtu,
                    hosts.join(", ")
                );
            }
        }
    }
    out
}
