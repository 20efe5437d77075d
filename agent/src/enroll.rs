//! Enrollment over EST with a first-authentication key, and the mutual-TLS requests that follow
//! it (renewal, the inventory report).
//!
//! One [`Enroller::pass`] walks the keys this device may present (ARCHITECTURE §6 order, keys
//! refused before skipped) and, for each, the servers of the key file in order:
//!
//! 1. TLS with the [`PinnedVerifier`]; `GET cacerts` first, carrying nothing secret. A server
//!    whose chain is not anchored in the pinned UMS ID is refused here, before any key is sent.
//! 2. `POST simpleenroll` with HTTP Basic (unit ID, key) and a CSR for the device key pair, which
//!    was generated here and persisted before the first request (so a retry after a lost answer,
//!    or after a restart, presents the same key pair and the server answers idempotently).
//! 3. The certificate is checked: it names this unit ID, holds this public key, and is signed by
//!    the pinned UMS ID. Then the certificates are stored, and the state file last.
//!
//! A final refusal of a key (`key_unknown`, `key_inactive`, `key_used`,
//! `key_bound_to_other_device`) is remembered by digest and the next key follows. Network faults,
//! a refused pin, 5xx and 429 on every server end the pass with [`Pass::Fault`]: the caller backs
//! off and retries the same key. `unit_id_conflict` and `bad_request` end it with
//! [`Pass::Refused`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use onboard_protocol::routes::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_PKCS10, DEVICE_INVENTORY, EST_CACERTS, EST_SIMPLEENROLL,
    EST_SIMPLEREENROLL,
};
use onboard_protocol::{
    Fingerprint, FirstAuthKey, Inventory, KeyEntry, KeyFile, KeyKind, Problem, ProblemCode, Server,
    UnitId, est,
};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use reqwest::StatusCode;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::clock::SharedClock;
pub use crate::device_key::DeviceKeyAlgorithm;
use crate::key_choice::key_order;
use crate::lifecycle::{Event, Failure, Phase, rfc3339};
use crate::pin::Pin;
use crate::state::{
    self, AgentState, DEVICE_CERT_FILE, DEVICE_KEY_FILE, StateError, UMS_ID_CERT_FILE,
};
use crate::tls::{self, ClientIdentity, PinnedVerifier, Timeouts};

/// A certificate this close to expiry is renewed.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(30);

/// The longest problem detail quoted from a server.
const MAX_DETAIL_CHARS: usize = 200;

/// Where keys come from for one enrollment: a key file on a stick, or the command line.
#[derive(Debug, Clone)]
pub struct KeySource {
    /// Where it came from, for logs (a path, or "the command line").
    pub origin: String,
    /// The servers to try, in order.
    pub servers: Vec<Server>,
    /// The UMS ID the source names.
    pub ums_id: Pin,
    /// Its keys, in the source's order.
    pub keys: Vec<KeyEntry>,
}

impl KeySource {
    /// The servers, UMS ID and keys of a key file read from `origin`.
    pub fn from_key_file(origin: impl Into<String>, file: &KeyFile) -> KeySource {
        KeySource {
            origin: origin.into(),
            // A pass tries every server in turn: a file naming thousands must not make one pass
            // last for hours.
            servers: file.servers.iter().take(MAX_SERVERS).cloned().collect(),
            ums_id: Pin::Fingerprint(file.ums_id),
            keys: file.keys.clone(),
        }
    }

    /// How many keys `unit_id` may present (bound to it, one-time, mass).
    pub fn usable_keys(&self, unit_id: &UnitId) -> usize {
        key_order(&self.keys, unit_id).len()
    }
}

/// The most servers of one key file a device tries.
pub const MAX_SERVERS: usize = 16;

/// How one pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Enrolled; the certificates and the state are stored.
    Issued {
        /// The index (into the source's keys) of the key that enrolled it.
        key: usize,
    },
    /// No server answered usefully: back off and retry the same key.
    Fault {
        /// The longest `Retry-After` a server asked for.
        retry_after: Option<Duration>,
        /// What went wrong on each server (never a key).
        detail: String,
        /// Whether a server was refused because its chain is not the pinned UMS ID.
        pin_refused: bool,
    },
    /// Nothing more can be done with this source.
    Refused(Failure),
}

/// Something on the device itself failed: the state directory, or making a key pair.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The state directory cannot be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The device key pair cannot be made, read or used.
    #[error("the device key in {}: {reason}", path.display())]
    DeviceKey {
        /// The key file.
        path: PathBuf,
        /// What failed (never key material).
        reason: String,
    },
    /// The device is not enrolled (renewal, inventory).
    #[error("this device is not enrolled")]
    NotEnrolled,
    /// A file of the state directory is missing or unreadable.
    #[error("{}: {reason}", path.display())]
    StateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its contents).
        reason: String,
    },
    /// The TLS configuration cannot be built.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

impl From<state::WriteError> for EnrollError {
    fn from(error: state::WriteError) -> Self {
        EnrollError::State(error.into())
    }
}

/// What one request to one server came to.
enum Answer {
    Certificate {
        der: Vec<u8>,
        ums_id: Vec<u8>,
    },
    /// Final for the key.
    KeyRefused(ProblemCode),
    /// Final for this source.
    Refused(Failure),
    /// Retry later.
    Fault {
        retry_after: Option<Duration>,
        detail: String,
        pin_refused: bool,
    },
    /// 429: the server took this key for a guess while the budget of this unit ID or address was
    /// used up (by someone else's junk, perhaps). The next key may still be real.
    Limited {
        retry_after: Option<Duration>,
    },
}

/// What a refusal means, from its status and problem body: final for the key, final for the
/// device, or a fault to retry (the server busy, down or out of time: 5xx, 429 and its own 408).
fn answer_to_refusal(
    status: StatusCode,
    problem: Option<&Problem>,
    retry_after: Option<Duration>,
) -> Answer {
    let detail = problem
        .and_then(|problem| problem.detail.as_deref())
        .map(clean_detail);
    match problem.map(|problem| problem.code) {
        Some(code) if code.is_final_for_key() => Answer::KeyRefused(code),
        Some(ProblemCode::UnitIdConflict) => Answer::Refused(Failure::UnitIdConflict),
        Some(ProblemCode::RateLimited) => Answer::Limited { retry_after },
        None if status == StatusCode::TOO_MANY_REQUESTS => Answer::Limited { retry_after },
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
fn certificate_refused_in_handshake(error: &reqwest::Error) -> bool {
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

/// Enrolls one device and speaks for it afterwards.
#[derive(Clone)]
pub struct Enroller {
    /// The state directory.
    pub state_dir: PathBuf,
    /// This device's unit ID.
    pub unit_id: UnitId,
    /// A pin from the config file, which nothing replaces.
    pub configured_pin: Option<Pin>,
    /// The device clock.
    pub clock: SharedClock,
    /// Connection and request time-outs.
    pub timeouts: Timeouts,
    /// The algorithm of a new device key pair.
    pub key_algorithm: DeviceKeyAlgorithm,
    /// How long a key refused as unknown is skipped.
    pub unknown_key_retry: Duration,
    /// Told of every state change (the daemon's observer).
    pub on_change: Arc<dyn Fn(&AgentState) + Send + Sync>,
}

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroller")
            .field("state_dir", &self.state_dir)
            .field("unit_id", &self.unit_id)
            .field("configured_pin", &self.configured_pin)
            .finish_non_exhaustive()
    }
}

impl Enroller {
    /// Moves `state` to the phase after `event`, saves it and tells the observer. An event that
    /// makes no sense in the phase is a bug: logged, and the phase is kept.
    pub fn transition(&self, state: &mut AgentState, event: Event) -> Result<(), EnrollError> {
        match state.phase.on(&event) {
            Ok(next) => {
                if next != state.phase {
                    tracing::info!(from = state.phase.name(), to = next.name(), "phase");
                }
                state.phase = next;
            }
            Err(error) => tracing::error!(%error, "lifecycle"),
        }
        self.save(state)
    }

    /// Saves `state` and tells the observer.
    pub fn save(&self, state: &AgentState) -> Result<(), EnrollError> {
        state.save(&self.state_dir)?;
        (self.on_change)(state);
        Ok(())
    }

    /// The pin this source may be used with: the device's own (configured, else learned at
    /// enrollment), which the source must agree with; else the one the source names
    /// ([`crate::pin::trust`] decides).
    pub fn pin_for(&self, state: &AgentState, source: &Pin) -> Result<Pin, Failure> {
        let held = self.configured_pin.as_ref().or(state.pin.as_ref());
        match crate::pin::trust(held, source) {
            crate::pin::Trust::Use(pin) => Ok(pin),
            crate::pin::Trust::Mismatch { pinned, stick } => {
                Err(Failure::PinMismatch { pinned, stick })
            }
        }
    }

    /// The digests scope: the whole fingerprint when known, else the token.
    fn digest(state: &mut AgentState, pin: &Pin, key: &FirstAuthKey) -> String {
        let scope = match pin {
            Pin::Fingerprint(fingerprint) => *fingerprint,
            Pin::Token(token) => Fingerprint::of_der(token.as_bytes()),
        };
        state.key_digest(&scope, key)
    }

    /// The keys of `source` this device would present now, in order, without those refused
    /// before; and how many were refused before.
    pub fn candidates(&self, state: &mut AgentState, source: &KeySource) -> (Vec<usize>, usize) {
        let pin = self
            .pin_for(state, &source.ums_id)
            .unwrap_or_else(|_| source.ums_id.clone());
        let mut fresh = Vec::new();
        let mut refused = 0;
        for index in key_order(&source.keys, &self.unit_id) {
            let digest = Self::digest(state, &pin, source.keys[index].key());
            if state.is_refused(&digest, self.clock.now(), self.unknown_key_retry) {
                refused += 1;
            } else {
                fresh.push(index);
            }
        }
        (fresh, refused)
    }

    /// The device key pair: the stored one, else a new one, stored (0600) before it is used.
    fn device_key(&self) -> Result<KeyPair, EnrollError> {
        let path = self.state_dir.join(DEVICE_KEY_FILE);
        let fail = |reason: &str| EnrollError::DeviceKey {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        if let Some(bytes) = state::read_optional(&self.state_dir, DEVICE_KEY_FILE)? {
            let text = String::from_utf8(bytes).map_err(|_| fail("not a PEM file"))?;
            return KeyPair::from_pem(&text)
                .map_err(|_| fail("not a PKCS#8 P-256 or P-384 private key in PEM"));
        }
        let key = KeyPair::generate_for(self.key_algorithm.rcgen())
            .map_err(|_| fail("cannot generate a key pair"))?;
        state::write_atomically(
            &self.state_dir,
            DEVICE_KEY_FILE,
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        tracing::info!(algorithm = ?self.key_algorithm, "device key pair generated");
        Ok(key)
    }

    /// A CSR (base64 DER) for `key`, naming the unit ID.
    fn csr(&self, key: &KeyPair) -> Result<String, EnrollError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, self.unit_id.as_str());
        params.distinguished_name = name;
        let request = params
            .serialize_request(key)
            .map_err(|_| EnrollError::DeviceKey {
                path: self.state_dir.join(DEVICE_KEY_FILE),
                reason: "cannot sign a certificate request with it".to_owned(),
            })?;
        Ok(est::encode_base64(request.der()))
    }

    /// One pass over the keys and servers of `source` (see the module documentation). `state`
    /// is updated and saved as it goes.
    pub async fn pass(
        &self,
        source: &KeySource,
        state: &mut AgentState,
    ) -> Result<Pass, EnrollError> {
        let pin = match self.pin_for(state, &source.ums_id) {
            Ok(pin) => pin,
            Err(failure) => return Ok(Pass::Refused(failure)),
        };
        let (candidates, refused_before) = self.candidates(state, source);
        if candidates.is_empty() {
            return Ok(Pass::Refused(Failure::KeysExhausted {
                refused: refused_before,
            }));
        }
        let key = self.device_key()?;
        let csr = self.csr(&key)?;
        state.unit_id = Some(self.unit_id.clone());
        state.servers = source.servers.iter().map(ToString::to_string).collect();
        match state.phase {
            Phase::Enrolling => {}
            // A wait that is over (or one a restart cut short): resume.
            Phase::BackingOff { .. } => self.transition(state, Event::RetryDue)?,
            _ => self.transition(state, Event::KeysFound)?,
        }
        let mut refused = refused_before;
        // Keys answered 429 by every server, and the longest wait asked for.
        let mut limited_keys = 0usize;
        let mut limited_wait: Option<Duration> = None;
        // One client per server for the whole pass: one handshake, one cacerts.
        let mut sessions: Vec<Option<Session>> = source.servers.iter().map(|_| None).collect();
        for index in candidates {
            let entry = &source.keys[index];
            let mut faults = Vec::new();
            let mut retry_after: Option<Duration> = None;
            let mut pin_refused = false;
            let mut key_refused = false;
            let mut limited = false;
            let mut rejected: Option<Failure> = None;
            for (server, session) in source.servers.iter().zip(sessions.iter_mut()) {
                tracing::info!(
                    %server,
                    ums_id = %pin.short(),
                    key_type = %entry.kind(),
                    key = %entry.key().masked(),
                    "presenting key"
                );
                state.server = Some(server.to_string());
                match self
                    .request_certificate(server, session, &pin, entry.key(), &csr)
                    .await
                {
                    Answer::Certificate { der, ums_id } => {
                        match self.check_issued(&der, &ums_id, &pin, &key) {
                            Ok(issued) => {
                                self.store_enrollment(state, issued, &der, &ums_id, entry.kind())?;
                                return Ok(Pass::Issued { key: index });
                            }
                            Err(problem) => {
                                return Ok(Pass::Refused(Failure::Rejected {
                                    detail: format!("{server} issued a certificate that {problem}"),
                                }));
                            }
                        }
                    }
                    Answer::KeyRefused(code) => {
                        tracing::warn!(
                            %server,
                            code = %code,
                            key_type = %entry.kind(),
                            key = %entry.key().masked(),
                            "key refused; trying the next one"
                        );
                        let digest = Self::digest(state, &pin, entry.key());
                        state.remember_refusal(digest, code, self.clock.now());
                        state.last_error = Some(format!("{server}: key refused ({code})"));
                        refused += 1;
                        key_refused = true;
                        // Saved with the pass's outcome, not one fsync per refusal: a pass cut
                        // short presents these keys once more, and they are refused once more.
                        if let Ok(next) = state.phase.on(&Event::KeyRefused) {
                            state.phase = next;
                        }
                        break;
                    }
                    Answer::Refused(Failure::Rejected { detail }) => {
                        // One server's odd answer (a 404 from the wrong service) does not
                        // speak for the others: they are tried first.
                        tracing::error!(%server, %detail, "server rejected the request");
                        rejected.get_or_insert(Failure::Rejected {
                            detail: format!("{server}: {detail}"),
                        });
                    }
                    Answer::Refused(failure) => {
                        tracing::error!(%server, reason = %failure, "enrollment refused");
                        return Ok(Pass::Refused(failure));
                    }
                    Answer::Fault {
                        retry_after: asked,
                        detail,
                        pin_refused: refused_pin,
                    } => {
                        if refused_pin {
                            tracing::error!(%server, %detail, "server refused: not the pinned UMS ID; the key was not sent");
                        } else {
                            tracing::warn!(%server, %detail, "server unavailable");
                        }
                        pin_refused |= refused_pin;
                        retry_after = retry_after.max(asked);
                        faults.push(format!("{server}: {detail}"));
                    }
                    Answer::Limited { retry_after: asked } => {
                        tracing::warn!(%server, key_type = %entry.kind(), key = %entry.key().masked(), "rate limited");
                        limited = true;
                        retry_after = retry_after.max(asked);
                    }
                }
            }
            if !key_refused && limited && faults.is_empty() && rejected.is_none() {
                // Not remembered: the key may be real once the budget refills. The next key is
                // tried now, so that junk sent under this unit ID cannot hold a device with a good
                // key further down its list; only when every key drew 429 does the device wait.
                limited_keys += 1;
                limited_wait = limited_wait.max(retry_after);
                continue;
            }
            if !key_refused {
                if faults.is_empty()
                    && let Some(failure) = rejected
                {
                    return Ok(Pass::Refused(failure));
                }
                return Ok(Pass::Fault {
                    retry_after,
                    detail: faults.join("; "),
                    pin_refused,
                });
            }
        }
        if limited_keys > 0 {
            return Ok(Pass::Fault {
                retry_after: limited_wait,
                detail: format!("rate limited (429) on {limited_keys} key(s)"),
                pin_refused: false,
            });
        }
        Ok(Pass::Refused(Failure::KeysExhausted { refused }))
    }

    /// `https://host:port` for a server (IPv6 literals bracketed, as `Server` prints them).
    fn base_url(server: &Server) -> String {
        format!("https://{server}")
    }

    /// A fault for a request that failed before any answer: the pin refusal if that is what it
    /// was, else the transport error's kind (never its URL, which is harmless, nor anything sent).
    fn transport_fault(verifier: &PinnedVerifier, error: &reqwest::Error) -> Answer {
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

    async fn request_certificate(
        &self,
        server: &Server,
        session: &mut Option<Session>,
        pin: &Pin,
        key: &FirstAuthKey,
        csr: &str,
    ) -> Answer {
        let session = match session {
            Some(session) => session,
            None => {
                let verifier = PinnedVerifier::new(pin.clone(), self.clock.clone());
                let client = match tls::client(verifier.clone(), None, &self.timeouts) {
                    Ok(client) => client,
                    Err(error) => {
                        return Answer::Refused(Failure::Rejected {
                            detail: format!("cannot set up TLS: {error}"),
                        });
                    }
                };
                session.insert(Session {
                    client,
                    verifier,
                    proven: false,
                })
            }
        };
        let (client, verifier) = (&session.client, &session.verifier);
        let base = Self::base_url(server);
        // First contact carries nothing secret: it proves the pin before any key goes out. Later
        // keys of the same pass reuse the client (and its connection, whose chain the same
        // verifier accepted; a new connection is verified again).
        if !session.proven {
            let cacerts = match client.get(format!("{base}{EST_CACERTS}")).send().await {
                Ok(response) => response,
                Err(error) => return Self::transport_fault(verifier, &error),
            };
            let status = cacerts.status();
            if status != StatusCode::OK {
                return Self::unexpected(status, cacerts).await;
            }
            let _ = cacerts.bytes().await;
            session.proven = true;
        }
        let Some(ums_id) = verifier.ums_id_certificate() else {
            return Answer::Fault {
                retry_after: None,
                detail: "the pinned handshake was not seen".to_owned(),
                pin_refused: false,
            };
        };
        // Only now, over a connection whose chain the verifier accepted, the key.
        let response = match client
            .post(format!("{base}{EST_SIMPLEENROLL}"))
            .basic_auth(self.unit_id.as_str(), Some(key.expose_secret()))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_PKCS10)
            .body(csr.to_owned())
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => return Self::transport_fault(verifier, &error),
        };
        let status = response.status();
        if status == StatusCode::OK {
            return match certificate_from(response).await {
                Ok(der) => Answer::Certificate { der, ums_id },
                Err(detail) => Answer::Refused(Failure::Rejected { detail }),
            };
        }
        Self::unexpected(status, response).await
    }

    /// What a non-200 answer means: a problem code to branch on, a fault to retry, or a
    /// rejection.
    async fn unexpected(status: StatusCode, response: reqwest::Response) -> Answer {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.unwrap_or_default();
        let problem: Option<Problem> = serde_json::from_slice(&body).ok();
        answer_to_refusal(status, problem.as_ref(), retry_after)
    }

    /// Checks a certificate the server issued: it names this unit ID, holds `key`'s public key
    /// and is signed by the UMS ID certificate `ums_id`, which is the pinned one.
    fn check_issued(
        &self,
        der: &[u8],
        ums_id: &[u8],
        pin: &Pin,
        key: &KeyPair,
    ) -> Result<Issued, &'static str> {
        if !pin.matches(&Fingerprint::of_der(ums_id)) {
            return Err("is not from the pinned UMS ID");
        }
        let (_, issuer) = X509Certificate::from_der(ums_id).map_err(|_| "cannot be checked")?;
        let (_, certificate) = X509Certificate::from_der(der).map_err(|_| "cannot be parsed")?;
        let names_unit = certificate
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .any(|cn| cn.eq_ignore_ascii_case(self.unit_id.as_str()));
        if !names_unit {
            return Err("names another unit ID");
        }
        if certificate.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err("holds another public key than this device's");
        }
        certificate
            .verify_signature(Some(issuer.public_key()))
            .map_err(|_| "is not signed by the pinned UMS ID")?;
        let not_after = certificate.validity().not_after.to_datetime();
        let serial = state::hex(certificate.raw_serial());
        Ok(Issued { serial, not_after })
    }

    fn store_enrollment(
        &self,
        state: &mut AgentState,
        issued: Issued,
        der: &[u8],
        ums_id: &[u8],
        key_type: KeyKind,
    ) -> Result<(), EnrollError> {
        self.store_certificates(der, Some(ums_id))?;
        let now = self.clock.now();
        state.pin = Some(Pin::Fingerprint(Fingerprint::of_der(ums_id)));
        state.enrolled_at = Some(rfc3339(now));
        state.key_type = Some(key_type);
        state.certificate_serial = Some(issued.serial.clone());
        state.certificate_not_after = Some(rfc3339(issued.not_after));
        state.last_error = None;
        tracing::info!(
            server = state.server.as_deref().unwrap_or("-"),
            ums_id = %Fingerprint::of_der(ums_id).short(),
            serial = %issued.serial,
            not_after = %rfc3339(issued.not_after),
            key_type = %key_type,
            "enrolled"
        );
        self.transition(state, Event::Issued)
    }

    fn store_certificates(&self, der: &[u8], ums_id: Option<&[u8]>) -> Result<(), EnrollError> {
        if let Some(ums_id) = ums_id {
            state::write_atomically(
                &self.state_dir,
                UMS_ID_CERT_FILE,
                state::certificate_pem(ums_id).as_bytes(),
                0o644,
            )?;
        }
        state::write_atomically(
            &self.state_dir,
            DEVICE_CERT_FILE,
            state::certificate_pem(der).as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    /// The pin, identity and key pair of an enrolled device, and its servers (the one it
    /// enrolled with first).
    fn enrolled(&self, state: &AgentState) -> Result<Enrolled, EnrollError> {
        if !state.phase.is_enrolled() {
            return Err(EnrollError::NotEnrolled);
        }
        let pin = self
            .configured_pin
            .clone()
            .or_else(|| state.pin.clone())
            .ok_or(EnrollError::NotEnrolled)?;
        let key = self.device_key_existing()?;
        let certificate = state::read_optional(&self.state_dir, DEVICE_CERT_FILE)?
            .and_then(|pem| state::certificate_der(&pem))
            .ok_or_else(|| EnrollError::StateFile {
                path: self.state_dir.join(DEVICE_CERT_FILE),
                reason: "the device certificate is missing or not PEM".to_owned(),
            })?;
        let mut servers: Vec<String> = state.server.iter().cloned().collect();
        for server in &state.servers {
            if !servers.contains(server) {
                servers.push(server.clone());
            }
        }
        Ok(Enrolled {
            pin,
            identity: ClientIdentity {
                certificate,
                private_key: key.serialize_der(),
            },
            key,
            servers,
        })
    }

    /// A client presenting the device certificate; a failure names both files.
    fn mutual_client(
        &self,
        verifier: Arc<PinnedVerifier>,
        enrolled: &Enrolled,
    ) -> Result<reqwest::Client, EnrollError> {
        tls::client(verifier, Some(&enrolled.identity), &self.timeouts).map_err(|error| {
            EnrollError::Tls(format!(
                "the device key {} and certificate {} cannot be used together: {error}",
                self.state_dir.join(DEVICE_KEY_FILE).display(),
                self.state_dir.join(DEVICE_CERT_FILE).display()
            ))
        })
    }

    fn device_key_existing(&self) -> Result<KeyPair, EnrollError> {
        if state::read_optional(&self.state_dir, DEVICE_KEY_FILE)?.is_none() {
            return Err(EnrollError::DeviceKey {
                path: self.state_dir.join(DEVICE_KEY_FILE),
                reason: "missing".to_owned(),
            });
        }
        self.device_key()
    }

    /// Whether the certificate of an enrolled device is within [`RENEW_BEFORE`] of expiry. With
    /// an implausible clock nothing can be judged: `false`.
    pub fn renewal_due(&self, state: &AgentState) -> bool {
        if !self.clock.is_plausible() {
            return false;
        }
        state
            .certificate_not_after
            .as_deref()
            .and_then(|text| {
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_some_and(|not_after| not_after - self.clock.now() <= RENEW_BEFORE)
    }

    /// Renews the device certificate over mutual TLS with the current one (same key pair), on
    /// the servers in turn. `Ok(false)` when no server could do it now (logged; retried later).
    pub async fn renew(&self, state: &mut AgentState) -> Result<bool, EnrollError> {
        let enrolled = self.enrolled(state)?;
        let csr = self.csr(&enrolled.key)?;
        for server in &enrolled.servers {
            let verifier = PinnedVerifier::new(enrolled.pin.clone(), self.clock.clone());
            let client = self.mutual_client(verifier.clone(), &enrolled)?;
            let url = format!("https://{server}{EST_SIMPLEREENROLL}");
            let response = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_PKCS10)
                .body(csr.clone())
                .send()
                .await;
            let response = match response {
                Ok(response) if response.status() == StatusCode::OK => response,
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await.unwrap_or_default();
                    let problem = serde_json::from_slice::<Problem>(&body).ok();
                    let detail = problem
                        .as_ref()
                        .and_then(|problem| problem.detail.as_deref())
                        .map(clean_detail)
                        .unwrap_or_default();
                    if problem.is_some_and(|p| p.code == ProblemCode::CertificateNotCurrent)
                        && Self::speaks_for_the_device(state, server)
                    {
                        self.orphaned(state, server, &detail)?;
                        return Ok(false);
                    }
                    tracing::warn!(%server, status = status.as_u16(), %detail, "renewal refused");
                    state.last_error =
                        Some(format!("{server}: renewal refused: HTTP {status} {detail}"));
                    continue;
                }
                Err(error) => {
                    if certificate_refused_in_handshake(&error) && self.certificate_expired(state) {
                        self.orphaned(
                            state,
                            server,
                            "the server refused this device's certificate in the TLS handshake \
                             (expired past its renewal grace period)",
                        )?;
                        return Ok(false);
                    }
                    let Answer::Fault { detail, .. } = Self::transport_fault(&verifier, &error)
                    else {
                        continue;
                    };
                    tracing::warn!(%server, %detail, "renewal failed");
                    state.last_error = Some(format!("{server}: renewal failed: {detail}"));
                    continue;
                }
            };
            let der = match certificate_from(response).await {
                Ok(der) => der,
                Err(detail) => {
                    state.last_error = Some(format!("{server}: {detail}"));
                    continue;
                }
            };
            let Some(ums_id) = verifier.ums_id_certificate() else {
                continue;
            };
            let issued = match self.check_issued(&der, &ums_id, &enrolled.pin, &enrolled.key) {
                Ok(issued) => issued,
                Err(problem) => {
                    tracing::error!(%server, problem, "renewed certificate refused");
                    state.last_error =
                        Some(format!("{server} renewed a certificate that {problem}"));
                    continue;
                }
            };
            self.store_certificates(&der, None)?;
            state.certificate_serial = Some(issued.serial.clone());
            state.certificate_not_after = Some(rfc3339(issued.not_after));
            state.renewed_at = Some(rfc3339(self.clock.now()));
            state.server = Some(server.clone());
            state.last_error = None;
            tracing::info!(%server, serial = %issued.serial, not_after = %rfc3339(issued.not_after), "device certificate renewed");
            self.transition(state, Event::Renewed)?;
            return Ok(true);
        }
        self.save(state)?;
        Ok(false)
    }

    /// Whether `server`'s word on this device's certificate is final: the server that issued or
    /// last renewed it (another one may hold an older copy of the database).
    fn speaks_for_the_device(state: &AgentState, server: &str) -> bool {
        state
            .server
            .as_deref()
            .is_none_or(|issuer| issuer == server)
    }

    /// Whether this device's own certificate has expired, judged on a plausible clock only: a
    /// handshake refusal means the certificate lapsed only then.
    fn certificate_expired(&self, state: &AgentState) -> bool {
        self.clock.is_plausible()
            && state
                .certificate_not_after
                .as_deref()
                .and_then(|text| {
                    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
                })
                .is_some_and(|not_after| not_after < self.clock.now())
    }

    /// The server no longer honours this device's certificate: the phase says so, with the fix,
    /// and the device enrolls again with a key from the next stick, keeping its key pair.
    fn orphaned(
        &self,
        state: &mut AgentState,
        server: &str,
        detail: &str,
    ) -> Result<(), EnrollError> {
        tracing::error!(
            %server,
            %detail,
            "the server no longer honours this device's certificate; plug in a stick with a fresh \
             key to enroll again"
        );
        state.last_error = Some(format!("{server}: {detail}"));
        self.transition(
            state,
            Event::Orphaned {
                detail: detail.to_owned(),
            },
        )
    }

    /// Sends `inventory` to the server over mutual TLS. `Ok(false)` when no server took it.
    pub async fn report_inventory(
        &self,
        state: &mut AgentState,
        inventory: &Inventory,
    ) -> Result<bool, EnrollError> {
        let enrolled = self.enrolled(state)?;
        let body = serde_json::to_vec(inventory).unwrap_or_default();
        for server in &enrolled.servers {
            let verifier = PinnedVerifier::new(enrolled.pin.clone(), self.clock.clone());
            let client = self.mutual_client(verifier.clone(), &enrolled)?;
            let response = client
                .put(format!("https://{server}{DEVICE_INVENTORY}"))
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_JSON)
                .body(body.clone())
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    state.inventory_reported_at = Some(rfc3339(self.clock.now()));
                    self.save(state)?;
                    tracing::info!(%server, host_name = %inventory.host_name, nics = inventory.nics.len(), "inventory reported");
                    return Ok(true);
                }
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await.unwrap_or_default();
                    let problem = serde_json::from_slice::<Problem>(&body).ok();
                    if let Some(problem) = problem.filter(|p| {
                        p.code == ProblemCode::CertificateNotCurrent
                            && Self::speaks_for_the_device(state, server)
                    }) {
                        let detail = problem.detail.as_deref().map(clean_detail);
                        self.orphaned(state, server, &detail.unwrap_or_default())?;
                        return Ok(false);
                    }
                    tracing::warn!(%server, status = status.as_u16(), "inventory refused");
                }
                Err(error) => {
                    if certificate_refused_in_handshake(&error) && self.certificate_expired(state) {
                        self.orphaned(
                            state,
                            server,
                            "the server refused this device's certificate in the TLS handshake",
                        )?;
                        return Ok(false);
                    }
                    let detail = match Self::transport_fault(&verifier, &error) {
                        Answer::Fault { detail, .. } => detail,
                        _ => String::new(),
                    };
                    tracing::warn!(%server, %detail, "inventory not reported");
                }
            }
        }
        Ok(false)
    }
}

/// A client for one server during one pass.
struct Session {
    client: reqwest::Client,
    verifier: Arc<PinnedVerifier>,
    /// Whether `cacerts` went through, proving the pin, on this client.
    proven: bool,
}

/// What an enrolled device speaks with.
struct Enrolled {
    pin: Pin,
    identity: ClientIdentity,
    key: KeyPair,
    servers: Vec<String>,
}

/// What the checks of an issued certificate learned.
struct Issued {
    serial: String,
    not_after: OffsetDateTime,
}

/// The one certificate of a base64 PKCS#7 certs-only answer.
async fn certificate_from(response: reqwest::Response) -> Result<Vec<u8>, String> {
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
fn clean_detail(detail: &str) -> String {
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
    fn every_device_key_the_agent_offers_is_one_the_server_certifies() {
        for algorithm in DeviceKeyAlgorithm::ALL {
            let enroller = Enroller {
                key_algorithm: algorithm,
                ..enroller(None)
            };
            let key = KeyPair::generate_for(algorithm.rcgen()).unwrap();
            let csr = enroller.csr(&key).unwrap();
            let der = onboard_protocol::est::decode_base64(csr.as_bytes()).unwrap();
            let request = ums_stub::ca::CertificateRequest::from_der(&der);
            assert!(request.is_ok(), "{algorithm:?}: {request:?}");
        }
    }

    #[test]
    fn refusals_are_final_for_the_key_the_device_or_retried() {
        let kind = |status: u16, code: Option<ProblemCode>| {
            let problem = code.map(Problem::new);
            match answer_to_refusal(
                StatusCode::from_u16(status).unwrap(),
                problem.as_ref(),
                None,
            ) {
                Answer::Certificate { .. } => "certificate",
                Answer::KeyRefused(_) => "next key",
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
    use crate::clock::FixedClock;

    fn enroller(configured: Option<Pin>) -> Enroller {
        Enroller {
            state_dir: PathBuf::from("/nonexistent"),
            unit_id: "00E0C5540B8B".parse().unwrap(),
            configured_pin: configured,
            clock: Arc::new(FixedClock(OffsetDateTime::UNIX_EPOCH)),
            timeouts: Timeouts::default(),
            key_algorithm: DeviceKeyAlgorithm::P256,
            unknown_key_retry: crate::state::DEFAULT_UNKNOWN_KEY_RETRY,
            on_change: Arc::new(|_| {}),
        }
    }

    #[test]
    fn a_held_pin_is_never_replaced_by_a_stick() {
        let mine = Fingerprint::of_der(b"mine");
        let other = Fingerprint::of_der(b"other");
        let stick = |fp: &Fingerprint| Pin::Fingerprint(*fp);
        let learned = AgentState {
            pin: Some(stick(&mine)),
            ..AgentState::default()
        };
        let fresh = AgentState::default();
        let token = Pin::token(&mine.communication_token()).unwrap();

        // Nothing held: the stick's pin is taken.
        assert_eq!(
            enroller(None).pin_for(&fresh, &stick(&other)),
            Ok(stick(&other))
        );
        // Learned, or configured (whole or as a token): the stick must agree.
        for (configured, state) in [
            (None, &learned),
            (Some(stick(&mine)), &fresh),
            (Some(token.clone()), &fresh),
        ] {
            let enroller = enroller(configured);
            assert_eq!(enroller.pin_for(state, &stick(&mine)), Ok(stick(&mine)));
            let refused = enroller.pin_for(state, &stick(&other)).unwrap_err();
            assert!(
                matches!(refused, Failure::PinMismatch { .. }),
                "{refused:?}"
            );
        }
        // A configured pin wins over a learned one.
        let configured = enroller(Some(stick(&other)));
        assert!(configured.pin_for(&learned, &stick(&mine)).is_err());
        // A token on the command line agrees with a whole fingerprint held.
        assert_eq!(enroller(None).pin_for(&learned, &token), Ok(stick(&mine)));
    }

    #[test]
    fn details_lose_control_characters_and_length() {
        assert_eq!(clean_detail("a\nb\u{1b}[31mc"), "ab[31mc");
        assert_eq!(clean_detail(&"x".repeat(500)).len(), MAX_DETAIL_CHARS);
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let server = Server::new("::1", 8443).unwrap();
        assert_eq!(Enroller::base_url(&server), "https://[::1]:8443");
        let server = Server::new("ums.example", 8443).unwrap();
        assert_eq!(Enroller::base_url(&server), "https://ums.example:8443");
    }
}
