//! Reading the apply script's output: which steps succeeded, which one failed and what it
//! printed, and the probe that closes the round trip.

use crate::script::PROBE_MARK;

/// What the apply script reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Steps that succeeded.
    pub applied: usize,
    /// The failing step's index and output.
    pub failed: Option<(usize, String)>,
    /// Probe output after the change.
    pub after: String,
}

/// Parses the apply script's markers.
pub fn parse_apply_output(out: &str) -> ApplyOutcome {
    let mut outcome = ApplyOutcome::default();
    let (steps, after) = match out.split_once(PROBE_MARK) {
        Some((s, a)) => (s, a.to_owned()),
        None => (out, String::new()),
    };
    outcome.after = after;
    let mut failing: Option<(usize, String)> = None;
    for line in steps.lines() {
        if let Some((n, text)) = failing.as_mut() {
            if line == "gremesh-failed-end" {
                outcome.failed = Some((*n, std::mem::take(text)));
                failing = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
        } else if line.starts_with("gremesh-ok ") {
            outcome.applied += 1;
        } else if let Some(rest) = line.strip_prefix("gremesh-failed ") {
            let n = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            failing = Some((n, String::new()));
        }
    }
    if let Some((n, text)) = failing {
        outcome.failed = Some((n, text));
    }
    if outcome.after.is_empty() && outcome.failed.is_none() {
        outcome.failed = Some((
            outcome.applied,
            "the apply script ended early (connection lost?)".to_owned(),
        ));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_output_reports_the_failing_step_and_its_output() {
        let out =
            "gremesh-ok 0\ngremesh-ok 1\ngremesh-failed 2 2\nRTNETLINK answers: File exists\n\
                   \ngremesh-failed-end\n";
        let outcome = parse_apply_output(out);
        assert_eq!(outcome.applied, 2);
        let (n, detail) = outcome.failed.expect("a failed step");
        assert_eq!(n, 2);
        assert!(detail.contains("File exists"), "{detail}");
    }

    #[test]
    fn apply_output_cut_before_the_closing_probe_is_a_failure() {
        let outcome = parse_apply_output("gremesh-ok 0\n");
        assert_eq!(outcome.applied, 1);
        assert_eq!(outcome.failed.map(|(n, _)| n), Some(1));

        let done = parse_apply_output(&format!("gremesh-ok 0\n{PROBE_MARK}\n@@links\n[]\n"));
        assert_eq!(done.failed, None);
        assert!(done.after.contains("@@links"));
    }
}
