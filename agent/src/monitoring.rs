//! The agent's state as Prometheus text, for monitoring a fleet of devices: `onboard-agent status
//! --prometheus` prints it, and the daemon writes it to `metrics_textfile` (for a node exporter's
//! textfile collector) at every change of its state and of its device connector.
//!
//! The exposition is a pure function of the state ([`exposition`]); it holds no key, no unit ID
//! (the scraper knows which device it asked) and no free text, only bounded label values:
//!
//! - `onboard_agent_phase{phase}`: 1 for the current phase, 0 for the others;
//! - `onboard_agent_enrolled`: 1 while the device holds a certificate;
//! - `onboard_agent_failure{code}`: 1 when it stopped trying, with the failure's code;
//! - `onboard_agent_last_refusal{code}`: 1, with the problem code of the last key refused;
//! - `onboard_agent_refused_keys`: keys refused with a final code and remembered;
//! - `onboard_agent_backoff_attempt`: faults in a row while backing off, else 0;
//! - `onboard_agent_certificate_expiry_timestamp_seconds`: when the certificate expires;
//! - `onboard_agent_renewed_timestamp_seconds`: when it last renewed;
//! - `onboard_agent_connector_connected`: 1 while the device connector holds a session (only
//!   where the daemon knows it: the textfile; `status` is another process).
//!
//! Written by hand rather than with a metrics crate: a dozen lines of the text format, on a device
//! whose binary size is measured.

use std::fmt::Write as _;

use crate::lifecycle::{Failure, Phase};
use crate::state::AgentState;

/// Every phase's name, in the order they are listed.
const PHASES: [&str; 6] = [
    "waiting_for_key",
    "enrolling",
    "backing_off",
    "enrolled",
    "orphaned",
    "failed",
];

/// The Prometheus text for `state`; `connected` is whether the device connector holds a session,
/// where known.
pub fn exposition(state: &AgentState, connected: Option<bool>) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP onboard_agent_{name} {help}");
        let _ = writeln!(out, "# TYPE onboard_agent_{name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "onboard_agent_{name}{labels} {value}");
        }
    };
    let current = state.phase.name();
    let phases: Vec<(String, f64)> = PHASES
        .iter()
        .map(|phase| {
            (
                format!("{{phase=\"{phase}\"}}"),
                f64::from(u8::from(*phase == current)),
            )
        })
        .collect();
    metric(
        "phase",
        "The agent's phase (1 for the current one)",
        &phases,
    );
    metric(
        "enrolled",
        "Whether the device holds a device certificate",
        &[(
            String::new(),
            f64::from(u8::from(state.phase.is_enrolled())),
        )],
    );
    if let Phase::Failed { reason } = &state.phase {
        metric(
            "failure",
            "Why the agent stopped trying (1, with the failure's code)",
            &[(format!("{{code=\"{}\"}}", failure_code(reason)), 1.0)],
        );
    }
    if let Some(last) = state.refused_keys.last() {
        metric(
            "last_refusal",
            "The problem code of the last key refused with a final code",
            &[(format!("{{code=\"{}\"}}", last.code.as_str()), 1.0)],
        );
    }
    metric(
        "refused_keys",
        "Keys refused with a final code and remembered",
        &[(String::new(), state.refused_keys.len() as f64)],
    );
    let attempt = match state.phase {
        Phase::BackingOff { attempt, .. } => attempt,
        _ => 0,
    };
    metric(
        "backoff_attempt",
        "Faults in a row while backing off, else 0",
        &[(String::new(), f64::from(attempt))],
    );
    if let Some(at) = timestamp(state.certificate_not_after.as_deref()) {
        metric(
            "certificate_expiry_timestamp_seconds",
            "When the device certificate expires (Unix seconds)",
            &[(String::new(), at)],
        );
    }
    if let Some(at) = timestamp(state.renewed_at.as_deref()) {
        metric(
            "renewed_timestamp_seconds",
            "When the device certificate was last renewed (Unix seconds)",
            &[(String::new(), at)],
        );
    }
    if let Some(connected) = connected {
        metric(
            "connector_connected",
            "Whether the device connector holds a session with a server",
            &[(String::new(), f64::from(u8::from(connected)))],
        );
    }
    out
}

/// A failure's code, as the state file names it.
fn failure_code(failure: &Failure) -> &'static str {
    match failure {
        Failure::UnitIdConflict => "unit_id_conflict",
        Failure::KeysExhausted { .. } => "keys_exhausted",
        Failure::PinMismatch { .. } => "pin_mismatch",
        Failure::Rejected { .. } => "rejected",
    }
}

/// An RFC 3339 time as Unix seconds.
fn timestamp(text: Option<&str>) -> Option<f64> {
    let at =
        time::OffsetDateTime::parse(text?, &time::format_description::well_known::Rfc3339).ok()?;
    Some(at.unix_timestamp() as f64)
}

/// Writes `text` to `path` whole (a temporary file beside it, synced, then renamed over it), so a
/// scraper never reads half a file; mode 0644, for a node exporter running as another user (it
/// holds no secret).
pub fn write_textfile(path: &std::path::Path, text: &str) -> Result<(), crate::state::WriteError> {
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    let name = path.file_name().map_or_else(
        || "onboard-agent.prom".into(),
        |name| name.to_string_lossy(),
    );
    crate::state::write_atomically(dir, &name, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RefusedKey;
    use onboard_protocol::ProblemCode;

    fn line(text: &str, prefix: &str) -> Option<String> {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .map(str::to_owned)
    }

    #[test]
    fn each_phase_is_one_and_the_others_zero() {
        #[rustfmt::skip]
        let table = [
            (Phase::WaitingForKey, "waiting_for_key", 0),
            (Phase::Enrolling, "enrolling", 0),
            (Phase::BackingOff { attempt: 3, delay_ms: 800 }, "backing_off", 0),
            (Phase::Enrolled, "enrolled", 1),
            (Phase::Orphaned { detail: "x".to_owned() }, "orphaned", 0),
            (Phase::Failed { reason: Failure::UnitIdConflict }, "failed", 0),
        ];
        for (phase, name, enrolled) in table {
            let state = AgentState {
                phase,
                ..AgentState::default()
            };
            let text = exposition(&state, None);
            for other in PHASES {
                let want = u8::from(other == name);
                assert_eq!(
                    line(&text, &format!("onboard_agent_phase{{phase=\"{other}\"}}")),
                    Some(format!("onboard_agent_phase{{phase=\"{other}\"}} {want}")),
                    "{name}: {text}"
                );
            }
            assert_eq!(
                line(&text, "onboard_agent_enrolled "),
                Some(format!("onboard_agent_enrolled {enrolled}")),
                "{name}"
            );
            assert!(!text.contains("connector_connected"), "unknown: not shown");
        }
    }

    #[test]
    fn codes_times_and_the_connector_are_shown_and_nothing_free_form() {
        let state = AgentState {
            phase: Phase::Failed {
                reason: Failure::Rejected {
                    detail: "secret-looking detail".to_owned(),
                },
            },
            certificate_not_after: Some("2027-01-01T00:00:00Z".to_owned()),
            refused_keys: vec![RefusedKey {
                digest: "ab".repeat(32),
                code: ProblemCode::KeyUsed,
                at: Some(1),
            }],
            last_error: Some("server.example: key refused (key_used)".to_owned()),
            ..AgentState::default()
        };
        let text = exposition(&state, Some(true));
        assert!(
            text.contains("onboard_agent_failure{code=\"rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("onboard_agent_last_refusal{code=\"key_used\"} 1"),
            "{text}"
        );
        assert!(text.contains("onboard_agent_refused_keys 1"), "{text}");
        assert!(
            text.contains("onboard_agent_certificate_expiry_timestamp_seconds 1798761600"),
            "{text}"
        );
        assert!(
            text.contains("onboard_agent_connector_connected 1"),
            "{text}"
        );
        assert!(!text.contains("secret-looking"), "{text}");
        assert!(!text.contains("server.example"), "{text}");
        assert!(!text.contains(&"ab".repeat(32)), "{text}");
    }

    #[test]
    fn the_textfile_is_replaced_whole_and_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("onboard-agent.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
