//! `check STICK_OR_FILE`: a dry run of a stick before the rollout. For each key file and each of
//! its servers, the agent opens TLS pinned to the file's UMS ID (a wrong pin is reported for that
//! server, and no key is sent to it), then asks the server's check route
//! ([`onboard_protocol::check`]) whether each key of the file would be accepted for this unit ID,
//! without consuming any. Keys are shown by their number in the file and masked, never in clear.
//!
//! The report is built from the answers by pure functions ([`key_results`], [`CheckReport`]);
//! [`check_server`] is the I/O.

use std::time::Duration;

use onboard_protocol::alternates::{
    ALTERNATE_KEYS_HEADER, MAX_KEYS_PER_REQUEST, encode_alternates,
};
use onboard_protocol::check::KeyCheckAnswer;
use onboard_protocol::routes::{DEVICE_CHECK_KEYS, EST_CACERTS};
use onboard_protocol::{KeyEntry, KeyKind, Problem, ProblemCode, Server, UnitId};
use reqwest::StatusCode;

use crate::clock::SharedClock;
use crate::discovery::FoundKeyFile;
use crate::est_client::{Answer, base_url, clean_detail, transport_fault};
use crate::pin::Pin;
use crate::tls::{self, PinnedVerifier, Timeouts};

/// How long `check` waits for a server to connect and for each answer, unless the config says
/// less: a stick is checked at a desk, where a dead server should be reported soon.
pub const CHECK_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    request: Duration::from_secs(15),
};

/// What `check` found, ready to print or serialise.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// The unit ID the keys were checked for.
    pub unit_id: UnitId,
    /// Each key file read, with its servers' answers.
    pub key_files: Vec<FileCheck>,
    /// How many (key file, key) pairs at least one server would accept.
    pub keys_accepted: usize,
}

/// One key file, checked against each of its servers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileCheck {
    /// Where it is.
    pub path: std::path::PathBuf,
    /// The UMS ID fingerprint it pins, whole.
    pub fingerprint: String,
    /// The same, short.
    pub fingerprint_short: String,
    /// Its keys, in file order, masked.
    pub keys: Vec<KeyLine>,
    /// Each server, in the file's order.
    pub servers: Vec<ServerCheck>,
}

/// One key of a file, masked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyLine {
    /// Its number in the file, from 1.
    pub number: usize,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: KeyKind,
    /// The unit ID a device-bound key names.
    pub unit_id: Option<UnitId>,
    /// The value, masked.
    pub key: String,
}

/// What one server said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerCheck {
    /// `host:port`.
    pub server: String,
    /// Whether it could be asked.
    pub status: ServerStatus,
    /// What went wrong, when it could not be asked about every key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Per key, in file order (empty when no key was sent).
    pub keys: Vec<KeyResult>,
}

/// Whether a server could be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerStatus {
    /// Pinned handshake done; every key asked about.
    Checked,
    /// Its chain is not anchored in the file's UMS ID: no key was sent.
    PinRefused,
    /// No connection (refused, timed out, TLS failed otherwise).
    Unreachable,
    /// It answered, but not with a check (an older server without the route, 5xx, not in sync).
    Failed,
}

/// What one server said of one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyResult {
    /// The key's number in the file, from 1.
    pub number: usize,
    /// Whether an enrollment with it would be accepted.
    pub accepted: bool,
    /// Accepted as the repeat of this unit ID's enrollment with the same key pair.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enrolled: bool,
    /// Why not: the code enrollment would answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ProblemCode>,
    /// When `rate_limited`: the seconds the server asked to wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl KeyResult {
    fn refused(number: usize, code: ProblemCode, retry_after: Option<u64>) -> KeyResult {
        KeyResult {
            number,
            accepted: false,
            enrolled: false,
            code: Some(code),
            retry_after,
        }
    }

    /// The result column of the table.
    fn text(&self) -> String {
        match (self.accepted, self.enrolled, self.code) {
            (true, true, _) => "accepted (this unit ID is enrolled with this key pair)".to_owned(),
            (true, false, _) => "accepted".to_owned(),
            (false, _, Some(ProblemCode::RateLimited)) => match self.retry_after {
                Some(seconds) => format!("rate_limited (not checked; retry in {seconds} s)"),
                None => "rate_limited (not checked)".to_owned(),
            },
            (false, _, Some(code)) => format!("{code}: {}", meaning(code)),
            (false, _, None) => "refused".to_owned(),
        }
    }
}

/// What a code means for the administrator preparing the stick.
fn meaning(code: ProblemCode) -> &'static str {
    match code {
        ProblemCode::KeyUnknown => "no such key on this server",
        ProblemCode::KeyUsed => "a one-time key already used by another device",
        ProblemCode::KeyInactive => "deactivated; an administrator can activate it",
        ProblemCode::KeyBoundToOtherDevice => "bound to another unit ID",
        ProblemCode::UnitIdConflict => {
            "this unit ID is enrolled with another key pair; delete the device record first"
        }
        _ => "refused",
    }
}

/// The results of the keys `numbers` (file numbers, in the order presented) from the server's
/// `answer`: each place it names, once; a key it leaves out is reported as refused with no code.
pub fn key_results(numbers: &[usize], answer: &KeyCheckAnswer) -> Vec<KeyResult> {
    numbers
        .iter()
        .enumerate()
        .map(
            |(place, number)| match answer.keys.iter().find(|key| key.place == place) {
                Some(key) if key.accepted => KeyResult {
                    number: *number,
                    accepted: true,
                    enrolled: key.enrolled,
                    code: None,
                    retry_after: None,
                },
                Some(key) => KeyResult {
                    number: *number,
                    accepted: false,
                    enrolled: false,
                    code: key.code,
                    retry_after: None,
                },
                None => KeyResult {
                    number: *number,
                    accepted: false,
                    enrolled: false,
                    code: None,
                    retry_after: None,
                },
            },
        )
        .collect()
}

impl FileCheck {
    /// The lines of `found`'s keys, masked, with no server asked yet.
    pub fn new(found: &FoundKeyFile) -> FileCheck {
        let file = &found.key_file;
        FileCheck {
            path: found.path.clone(),
            fingerprint: file.ums_id.to_string(),
            fingerprint_short: file.ums_id.short(),
            keys: file
                .keys
                .iter()
                .enumerate()
                .map(|(index, entry)| KeyLine {
                    number: index + 1,
                    kind: entry.kind(),
                    unit_id: entry.unit_id().cloned(),
                    key: entry.key().masked(),
                })
                .collect(),
            servers: Vec::new(),
        }
    }

    /// How many of its keys at least one server would accept.
    pub fn accepted(&self) -> usize {
        self.keys
            .iter()
            .filter(|line| {
                self.servers.iter().any(|server| {
                    server
                        .keys
                        .iter()
                        .any(|key| key.number == line.number && key.accepted)
                })
            })
            .count()
    }
}

impl CheckReport {
    /// The report over the files checked.
    pub fn new(unit_id: UnitId, key_files: Vec<FileCheck>) -> CheckReport {
        let keys_accepted = key_files.iter().map(FileCheck::accepted).sum();
        CheckReport {
            unit_id,
            key_files,
            keys_accepted,
        }
    }

    /// The report as the tables `check` prints: per key file, per server, one row per key.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "unit ID: {}", self.unit_id);
        for file in &self.key_files {
            let _ = writeln!(
                out,
                "\nkey file {} ({} keys), UMS ID {}",
                file.path.display(),
                file.keys.len(),
                file.fingerprint_short
            );
            for server in &file.servers {
                let status = match server.status {
                    ServerStatus::Checked => "pinned handshake done, keys checked",
                    ServerStatus::PinRefused => "PIN REFUSED, no key sent",
                    ServerStatus::Unreachable => "UNREACHABLE",
                    ServerStatus::Failed => "NOT CHECKED",
                };
                let _ = write!(out, "\n  server {}: {status}", server.server);
                if let Some(detail) = &server.detail {
                    let _ = write!(out, ": {detail}");
                }
                out.push('\n');
                if server.keys.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "    {:>3}  {:<12}  {:<12}  {:<20}  result",
                    "#", "type", "unit ID", "key"
                );
                for result in &server.keys {
                    let Some(line) = file.keys.iter().find(|line| line.number == result.number)
                    else {
                        continue;
                    };
                    let _ = writeln!(
                        out,
                        "    {:>3}  {:<12}  {:<12}  {:<20}  {}",
                        line.number,
                        line.kind.as_str(),
                        line.unit_id.as_ref().map_or("-", UnitId::as_str),
                        line.key,
                        result.text()
                    );
                }
            }
        }
        let keys: usize = self.key_files.iter().map(|file| file.keys.len()).sum();
        let _ = writeln!(
            out,
            "\n{} of {keys} keys would be accepted for {} by at least one server",
            self.keys_accepted, self.unit_id
        );
        out
    }
}

/// Asks `server`, pinned to `pin`, about every key of `keys` for `unit_id`, in chunks of
/// [`MAX_KEYS_PER_REQUEST`]. `cacerts` goes first and carries nothing secret: a chain the pin
/// refuses ends the check of this server before any key is sent.
pub async fn check_server(
    server: &Server,
    pin: &Pin,
    unit_id: &UnitId,
    keys: &[KeyEntry],
    clock: SharedClock,
    timeouts: &Timeouts,
) -> ServerCheck {
    let mut report = ServerCheck {
        server: server.to_string(),
        status: ServerStatus::Checked,
        detail: None,
        keys: Vec::new(),
    };
    let verifier = PinnedVerifier::new(pin.clone(), clock);
    let client = match tls::client(verifier.clone(), None, timeouts) {
        Ok(client) => client,
        Err(error) => {
            report.status = ServerStatus::Failed;
            report.detail = Some(format!("cannot set up TLS: {error}"));
            return report;
        }
    };
    let base = base_url(server);
    let fault = |report: &mut ServerCheck, answer: Answer| {
        if let Answer::Fault {
            detail,
            pin_refused,
            ..
        } = answer
        {
            report.status = if pin_refused {
                ServerStatus::PinRefused
            } else {
                ServerStatus::Unreachable
            };
            report.detail = Some(detail);
        }
    };
    match client.get(format!("{base}{EST_CACERTS}")).send().await {
        Ok(response) if response.status() == StatusCode::OK => {
            let _ = response.bytes().await;
        }
        Ok(response) => {
            report.status = ServerStatus::Failed;
            report.detail = Some(format!(
                "cacerts answered HTTP {}",
                response.status().as_u16()
            ));
            return report;
        }
        Err(error) => {
            fault(&mut report, transport_fault(&verifier, &error));
            return report;
        }
    }
    if verifier.ums_id_certificate().is_none() {
        report.status = ServerStatus::Failed;
        report.detail = Some("the pinned handshake was not seen".to_owned());
        return report;
    }
    let numbered: Vec<(usize, &KeyEntry)> =
        keys.iter().enumerate().map(|(i, k)| (i + 1, k)).collect();
    for chunk in numbered.chunks(MAX_KEYS_PER_REQUEST) {
        let numbers: Vec<usize> = chunk.iter().map(|(number, _)| *number).collect();
        let Some(((_, first), rest)) = chunk.split_first() else {
            continue;
        };
        // Only now, over a connection whose chain the verifier accepted, the keys.
        let mut request = client
            .post(format!("{base}{DEVICE_CHECK_KEYS}"))
            .basic_auth(unit_id.as_str(), Some(first.key().expose_secret()));
        if !rest.is_empty() {
            let encoded = encode_alternates(rest.iter().map(|(_, entry)| entry.key()));
            let Ok(mut value) = reqwest::header::HeaderValue::from_str(&encoded) else {
                report.status = ServerStatus::Failed;
                report.detail = Some("a key cannot be sent in a header".to_owned());
                return report;
            };
            value.set_sensitive(true);
            request = request.header(ALTERNATE_KEYS_HEADER, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                fault(&mut report, transport_fault(&verifier, &error));
                return report;
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        let body = response.bytes().await.unwrap_or_default();
        if status == StatusCode::OK {
            match serde_json::from_slice::<KeyCheckAnswer>(&body) {
                Ok(answer) => report.keys.extend(key_results(&numbers, &answer)),
                Err(_) => {
                    report.status = ServerStatus::Failed;
                    report.detail = Some("the answer is not a key check".to_owned());
                    return report;
                }
            }
            continue;
        }
        let problem: Option<Problem> = serde_json::from_slice(&body).ok();
        match problem.as_ref().map(|problem| problem.code) {
            // Refused as a whole the way enrollment refuses: the same code for each key of it.
            Some(code @ (ProblemCode::RateLimited | ProblemCode::KeyUnknown)) => {
                report.keys.extend(
                    numbers
                        .iter()
                        .map(|number| KeyResult::refused(*number, code, retry_after)),
                );
            }
            code => {
                report.status = ServerStatus::Failed;
                let detail = problem
                    .as_ref()
                    .and_then(|problem| problem.detail.as_deref())
                    .map(clean_detail);
                report.detail = Some(match (code, detail) {
                    (Some(code), Some(detail)) => format!("{code}: {detail}"),
                    (Some(code), None) => code.to_string(),
                    (None, _) if status == StatusCode::NOT_FOUND => {
                        "the server offers no key check (a version before it?)".to_owned()
                    }
                    (None, _) => format!("HTTP {}", status.as_u16()),
                });
                return report;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use onboard_protocol::check::CheckedKey;

    use super::*;

    fn unit() -> UnitId {
        "00E0C5540B8B".parse().unwrap()
    }

    #[test]
    fn answers_map_to_file_numbers_and_missing_places_are_no_acceptance() {
        let answer = KeyCheckAnswer {
            unit_id: unit(),
            keys: vec![
                CheckedKey::refused(1, ProblemCode::KeyUsed),
                CheckedKey::accepted(0, false),
                CheckedKey::accepted(3, true),
                // A place the request did not have is ignored.
                CheckedKey::accepted(9, false),
            ],
        };
        let results = key_results(&[9, 10, 11, 12], &answer);
        let summary: Vec<(usize, bool, bool, Option<ProblemCode>)> = results
            .iter()
            .map(|r| (r.number, r.accepted, r.enrolled, r.code))
            .collect();
        assert_eq!(
            summary,
            [
                (9, true, false, None),
                (10, false, false, Some(ProblemCode::KeyUsed)),
                (11, false, false, None),
                (12, true, true, None),
            ]
        );
    }

    #[test]
    fn a_key_counts_once_when_any_server_accepts_it() {
        let line = |number| KeyLine {
            number,
            kind: KeyKind::OneTime,
            unit_id: None,
            key: "*************1234".to_owned(),
        };
        let accepted = |number| KeyResult {
            number,
            accepted: true,
            enrolled: false,
            code: None,
            retry_after: None,
        };
        let server = |keys| ServerCheck {
            server: "ums.example:8443".to_owned(),
            status: ServerStatus::Checked,
            detail: None,
            keys,
        };
        let file = FileCheck {
            path: "icg.xml".into(),
            fingerprint: String::new(),
            fingerprint_short: String::new(),
            keys: vec![line(1), line(2), line(3)],
            servers: vec![
                server(vec![
                    accepted(1),
                    KeyResult::refused(2, ProblemCode::KeyUsed, None),
                ]),
                server(vec![accepted(1), accepted(3)]),
            ],
        };
        let report = CheckReport::new(unit(), vec![file]);
        assert_eq!(report.keys_accepted, 2);
        let text = report.to_text();
        assert!(text.contains("2 of 3 keys would be accepted"), "{text}");
        assert!(
            text.contains("key_used: a one-time key already used"),
            "{text}"
        );
        assert!(
            text.contains("*************1234"),
            "keys are shown masked: {text}"
        );
    }
}
