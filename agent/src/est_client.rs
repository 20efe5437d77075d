//! The EST client (RFC 7030) of enrollment: one pinned client per server, `cacerts` before any
//! key, `simpleenroll` with HTTP Basic (unit ID, key) and a CSR, and what each answer means. Also
//! the reading of answers the mutual-TLS requests share (a problem body, a PKCS#7 certificate, a
//! transport fault or a pin refusal).

use std::sync::Arc;
use std::time::Duration;

use onboard_protocol::alternates::{
    ALTERNATE_KEYS_HEADER, KEY_INDEX_HEADER, KEYS_REFUSED_HEADER, decode_refused, encode_alternates,
};
use onboard_protocol::routes::{CONTENT_TYPE_PKCS10, EST_CACERTS, EST_SIMPLEENROLL};
use onboard_protocol::{FirstAuthKey, Problem, ProblemCode, Server, UnitId, est};
use reqwest::StatusCode;

use crate::clock::SharedClock;
use crate::lifecycle::Failure;
use crate::pin::Pin;
use crate::tls::{self, PinnedVerifier, Timeouts};

/// The longest problem detail quoted from a server.
const MAX_DETAIL_CHARS: usize = 200;

/// What one request to one server came to.
pub(crate) enum Answer {
    Certificate {
        der: Vec<u8>,
        ums_id: Vec<u8>,
        /// Which of the keys presented enrolled (0: the Basic one).
        key: usize,
        /// Keys presented before it and refused, by index.
        refused: Vec<(usize, ProblemCode)>,
    },
    /// Every key tried was refused, by index: final for each key with a final code; those
    /// refused `rate_limited` may be real (as [`Answer::Limited`]). Keys presented but not listed
    /// were not tried (a server that takes only the Basic key).
    KeysRefused(Vec<(usize, ProblemCode)>),
    /// Final for this source.
    Refused(Failure),
    /// Retry later.
    Fault {
        retry_after: Option<Duration>,
        detail: String,
        pin_refused: bool,
    },
    /// 429: the server took this key for a guess while the budget of this unit ID or address was
    /// used up (by someone else's junk, perhaps). The next key may still be real. A limited
    /// server looks at the Basic key only: whatever it lists of the others, they were not tried
    /// ([`crate::presentation`]).
    Limited { retry_after: Option<Duration> },
}

/// What a refusal means, from its status and problem body: final for the key, final for the
/// device, or a fault to retry (the server busy, down or out of time: 5xx, 429 and its own 408).
/// `listed` is what the answer's `X-Onboard-Keys-Refused` says of each key presented, if it says.
pub(crate) fn answer_to_refusal(
    status: StatusCode,
    problem: Option<&Problem>,
    retry_after: Option<Duration>,
    listed: Option<Vec<(usize, ProblemCode)>>,
) -> Answer {
    let limited = Answer::Limited { retry_after };
    let detail = problem
        .and_then(|problem| problem.detail.as_deref())
        .map(clean_detail);
    match problem.map(|problem| problem.code) {
        Some(code) if code.is_final_for_key() => {
            Answer::KeysRefused(listed.unwrap_or_else(|| vec![(0, code)]))
        }
        Some(ProblemCode::UnitIdConflict) => Answer::Refused(Failure::UnitIdConflict),
        Some(ProblemCode::RateLimited) => limited,
        None if status == StatusCode::TOO_MANY_REQUESTS => limited,
        Some(ProblemCode::BadRequest) => Answer::Refused(Failure::Rejected {
            detail: format!("bad_request: {}", detail.unwrap_or_default()),
        }),
        // The server's own time-out (408) says nothing about the key: retry it, as a 5xx.
        _ if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT =>
        {
            Answer::Fault {
                retry_after,
                detail: format!("HTTP {}", status.as_u16()),
                pin_refused: false,
            }
        }
        _ => Answer::Refused(Failure::Rejected {
            detail: format!("HTTP {} is not an EST answer", status.as_u16()),
        }),
    }
}

/// Whether a request failed because the server refused this device's own certificate in the
/// TLS handshake (an alert naming the certificate), as it does once the certificate has expired
/// past the renewal grace period. Network faults and pin refusals are not that.
pub(crate) fn certificate_refused_in_handshake(error: &reqwest::Error) -> bool {
    use rustls::AlertDescription as Alert;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        let rustls_error = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = rustls_error {
            return matches!(
                alert,
                Alert::CertificateExpired
                    | Alert::BadCertificate
                    | Alert::CertificateRevoked
                    | Alert::CertificateUnknown
                    | Alert::UnknownCA
            );
        }
        source = cause.source();
    }
    false
}

/// `https://host:port` for a server (IPv6 literals bracketed, as `Server` prints them).
pub(crate) fn base_url(server: &Server) -> String {
    format!("https://{server}")
}

/// A fault for a request that failed before any answer: the pin refusal if that is what it was,
/// else the transport error's kind (never its URL, which is harmless, nor anything sent).
pub(crate) fn transport_fault(verifier: &PinnedVerifier, error: &reqwest::Error) -> Answer {
    if let Some(refusal) = verifier.take_refusal() {
        return Answer::Fault {
            retry_after: None,
            detail: refusal.to_string(),
            pin_refused: true,
        };
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    };
    Answer::Fault {
        retry_after: None,
        detail: what.to_owned(),
        pin_refused: false,
    }
}

/// A pinned client for one server during one pass: one handshake and one `cacerts` for all the
/// keys presented to it.
pub(crate) struct EstSession {
    client: reqwest::Client,
    verifier: Arc<PinnedVerifier>,
    /// Whether `cacerts` went through, proving the pin, on this client.
    proven: bool,
}

impl EstSession {
    /// A client pinned to `pin`.
    pub(crate) fn new(
        pin: &Pin,
        clock: SharedClock,
        timeouts: &Timeouts,
    ) -> Result<EstSession, String> {
        let verifier = PinnedVerifier::new(pin.clone(), clock);
        let client = tls::client(verifier.clone(), None, timeouts)
            .map_err(|error| format!("cannot set up TLS: {error}"))?;
        Ok(EstSession {
            client,
            verifier,
            proven: false,
        })
    }

    /// `simpleenroll` on `server` with `key` for `unit_id` and `csr`; first, once per session,
    /// `cacerts`, which carries nothing secret and proves the pin before any key goes out.
    /// `keys` (at most [`onboard_protocol::alternates::MAX_KEYS_PER_REQUEST`]): the first in HTTP Basic, the others as
    /// alternates, tried by the server in order.
    pub(crate) async fn enroll(
        &mut self,
        server: &Server,
        unit_id: &UnitId,
        keys: &[&FirstAuthKey],
        csr: &str,
    ) -> Answer {
        let Some((key, alternates)) = keys.split_first() else {
            return Answer::KeysRefused(Vec::new());
        };
        let base = base_url(server);
        // Later keys of the same pass reuse the client (and its connection, whose chain the same
        // verifier accepted; a new connection is verified again).
        if !self.proven {
            let cacerts = match self.client.get(format!("{base}{EST_CACERTS}")).send().await {
                Ok(response) => response,
                Err(error) => return transport_fault(&self.verifier, &error),
            };
            let status = cacerts.status();
            if status != StatusCode::OK {
                return unexpected(status, cacerts, 0).await;
            }
            let _ = cacerts.bytes().await;
            self.proven = true;
        }
        let Some(ums_id) = self.verifier.ums_id_certificate() else {
            return Answer::Fault {
                retry_after: None,
                detail: "the pinned handshake was not seen".to_owned(),
                pin_refused: false,
            };
        };
        // Only now, over a connection whose chain the verifier accepted, the key.
        let mut request = self
            .client
            .post(format!("{base}{EST_SIMPLEENROLL}"))
            .basic_auth(unit_id.as_str(), Some(key.expose_secret()))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_PKCS10);
        if !alternates.is_empty() {
            // Keys, like the Authorization header: marked so that no layer logs them.
            let encoded = encode_alternates(alternates.iter().copied());
            let Ok(mut value) = reqwest::header::HeaderValue::from_str(&encoded) else {
                return Answer::KeysRefused(Vec::new());
            };
            value.set_sensitive(true);
            request = request.header(ALTERNATE_KEYS_HEADER, value);
        }
        let response = match request.body(csr.to_owned()).send().await {
            Ok(response) => response,
            Err(error) => return transport_fault(&self.verifier, &error),
        };
        let status = response.status();
        if status == StatusCode::OK {
            let key = response
                .headers()
                .get(KEY_INDEX_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<usize>().ok())
                .filter(|index| *index < keys.len())
                .unwrap_or(0);
            let refused = listed_refusals(&response, keys.len()).unwrap_or_default();
            return match certificate_from(response).await {
                Ok(der) => Answer::Certificate {
                    der,
                    ums_id,
                    key,
                    refused,
                },
                Err(detail) => Answer::Refused(Failure::Rejected { detail }),
            };
        }
        unexpected(status, response, keys.len()).await
    }
}

/// The refusals an answer lists (`X-Onboard-Keys-Refused`) of the `presented` keys, if it lists
/// them readably.
fn listed_refusals(
    response: &reqwest::Response,
    presented: usize,
) -> Option<Vec<(usize, ProblemCode)>> {
    let value = response.headers().get(KEYS_REFUSED_HEADER)?.to_str().ok()?;
    let listed = decode_refused(value).ok()?;
    listed
        .iter()
        .all(|(index, _)| *index < presented)
        .then_some(listed)
}

/// What a non-200 answer means: a problem code to branch on, a fault to retry, or a rejection.
async fn unexpected(status: StatusCode, response: reqwest::Response, presented: usize) -> Answer {
    let listed = listed_refusals(&response, presented);
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.bytes().await.unwrap_or_default();
    let problem: Option<Problem> = serde_json::from_slice(&body).ok();
    answer_to_refusal(status, problem.as_ref(), retry_after, listed)
}

/// The problem body of a refusal, if it is one.
pub(crate) async fn problem_of(response: reqwest::Response) -> Option<Problem> {
    let body = response.bytes().await.unwrap_or_default();
    serde_json::from_slice(&body).ok()
}

/// The one certificate of a base64 PKCS#7 certs-only answer.
pub(crate) async fn certificate_from(response: reqwest::Response) -> Result<Vec<u8>, String> {
    let body = response
        .bytes()
        .await
        .map_err(|_| "the answer was cut short".to_owned())?;
    let der = est::decode_base64(&body).map_err(|_| "the answer is not base64".to_owned())?;
    est::parse_certs_only(&der)
        .ok()
        .and_then(|certificates| certificates.into_iter().next())
        .ok_or_else(|| "the answer is not a PKCS#7 certs-only with a certificate".to_owned())
}

/// A server's problem detail, fit for a log line: no control characters, bounded.
pub(crate) fn clean_detail(detail: &str) -> String {
    detail
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_final_for_the_key_the_device_or_retried() {
        let kind = |status: u16, code: Option<ProblemCode>| {
            let problem = code.map(Problem::new);
            match answer_to_refusal(
                StatusCode::from_u16(status).unwrap(),
                problem.as_ref(),
                None,
                None,
            ) {
                Answer::Certificate { .. } => "certificate",
                Answer::KeysRefused(_) => "next key",
                Answer::Refused(_) => "stop",
                Answer::Fault { .. } => "retry",
                Answer::Limited { .. } => "next key, then retry",
            }
        };
        // status, problem code => what the agent does
        let table = [
            (403, Some(ProblemCode::KeyUnknown), "next key"),
            (403, Some(ProblemCode::KeyInactive), "next key"),
            (403, Some(ProblemCode::KeyUsed), "next key"),
            (403, Some(ProblemCode::KeyBoundToOtherDevice), "next key"),
            (403, Some(ProblemCode::KeyExpired), "next key"),
            (403, Some(ProblemCode::KeyNotYetValid), "next key"),
            (403, Some(ProblemCode::KeyExhausted), "next key"),
            (409, Some(ProblemCode::UnitIdConflict), "stop"),
            (400, Some(ProblemCode::BadRequest), "stop"),
            (429, Some(ProblemCode::RateLimited), "next key, then retry"),
            (429, None, "next key, then retry"),
            (503, Some(ProblemCode::Unavailable), "retry"),
            (500, None, "retry"),
            (502, None, "retry"),
            (408, None, "retry"),
            (404, None, "stop"),
            (401, None, "stop"),
        ];
        for (status, code, expected) in table {
            assert_eq!(kind(status, code), expected, "{status} {code:?}");
        }
    }
    #[test]
    fn details_lose_control_characters_and_length() {
        assert_eq!(clean_detail("a\nb\u{1b}[31mc"), "ab[31mc");
        assert_eq!(clean_detail(&"x".repeat(500)).len(), MAX_DETAIL_CHARS);
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let server = Server::new("::1", 8443).unwrap();
        assert_eq!(base_url(&server), "https://[::1]:8443");
        let server = Server::new("ums.example", 8443).unwrap();
        assert_eq!(base_url(&server), "https://ums.example:8443");
    }
}
