//! Enrollment over EST with a first-authentication key: where keys come from ([`KeySource`]),
//! which of them this device presents now, and one [`Enroller::pass`] over them.
//!
//! A pass walks the keys this device may present (ARCHITECTURE §6 order, keys refused before
//! skipped), up to eight per request ([`onboard_protocol::alternates`]: the first in HTTP Basic,
//! the others as alternates the server tries in order), and for each request the servers of the
//! key file in order:
//!
//! 1. TLS with the pinned verifier; `GET cacerts` first, carrying nothing secret. A server whose
//!    chain is not anchored in the pinned UMS ID is refused here, before any key is sent
//!    ([`crate::est_client`]).
//! 2. `POST simpleenroll` with HTTP Basic (unit ID, key) and a CSR for the device key pair, which
//!    was generated here and persisted before the first request (so a retry after a lost answer,
//!    or after a restart, presents the same key pair and the server answers idempotently).
//! 3. The certificate is checked ([`crate::device_key::check_issued`]): it names this unit ID,
//!    holds this public key, and is signed by the pinned UMS ID. Then the certificates are
//!    stored; the state file follows with the driver's transition.
//!
//! A final refusal of a key (`key_unknown`, `key_inactive`, `key_used`,
//! `key_bound_to_other_device`, `key_expired`, `key_not_yet_valid`, `key_exhausted`), for each
//! key the answer lists, is remembered by digest as if the
//! key had been presented alone. Which keys come next, how many a request, what 429s
//! (`rate_limited`, never remembered) and faults do to the pass is [`crate::presentation`]'s
//! rule, applied here. Network faults, a refused pin and 5xx on every server end the pass with
//! [`Pass::Fault`]: the caller backs off and retries the same keys. `unit_id_conflict` and `bad_request` end it with
//! [`Pass::Refused`]. A pass changes no phase: [`crate::driver`] makes every transition.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use onboard_protocol::{
    Fingerprint, FirstAuthKey, KeyEntry, KeyFile, KeyKind, ProblemCode, Server, UnitId,
};

use crate::clock::SharedClock;
pub use crate::device_key::DeviceKeyAlgorithm;
use crate::device_key::{self, DeviceKeyError};
use crate::est_client::{Answer, EstSession};
use crate::key_choice::{KeyKinds, KeyWalk};
use crate::lifecycle::{Event, Failure, InvalidTransition, rfc3339};
use crate::pin::Pin;
use crate::presentation::{Presentation, Round};
use crate::state::{self, AgentState, DEVICE_CERT_FILE, StateError, UMS_ID_CERT_FILE};
use crate::tls::Timeouts;

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
    keys: Vec<KeyEntry>,
    /// The same keys by type, for the devices' walks over them.
    kinds: KeyKinds,
}

impl KeySource {
    /// A source of `keys` for `servers` under `ums_id`, read from `origin`.
    pub fn new(
        origin: impl Into<String>,
        servers: Vec<Server>,
        ums_id: Pin,
        keys: Vec<KeyEntry>,
    ) -> KeySource {
        KeySource {
            origin: origin.into(),
            servers,
            ums_id,
            kinds: KeyKinds::of(&keys),
            keys,
        }
    }

    /// The servers, UMS ID and keys of a key file read from `origin`.
    pub fn from_key_file(origin: impl Into<String>, file: &KeyFile) -> KeySource {
        KeySource::new(
            origin,
            // A pass tries every server in turn: a file naming thousands must not make one pass
            // last for hours.
            file.servers.iter().take(MAX_SERVERS).cloned().collect(),
            Pin::Fingerprint(file.ums_id),
            file.keys.clone(),
        )
    }

    /// Its keys, in the source's order.
    pub fn keys(&self) -> &[KeyEntry] {
        &self.keys
    }

    /// How many keys `unit_id` may present (bound to it, one-time, mass).
    pub fn usable_keys(&self, unit_id: &UnitId) -> usize {
        self.walk(unit_id).len(&self.kinds)
    }

    /// The order `unit_id` would present these keys in, not walked yet.
    fn walk(&self, unit_id: &UnitId) -> KeyWalk {
        self.kinds.walk(&self.keys, unit_id)
    }
}

/// The most servers of one key file a device tries.
pub const MAX_SERVERS: usize = 16;

/// How one pass ended (decided in [`crate::presentation`]).
pub use crate::presentation::Pass;

/// Something on the device itself failed: the state directory, the device key pair, or the
/// agent's own bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The state directory cannot be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The device key pair cannot be made, read or used.
    #[error(transparent)]
    DeviceKey(#[from] DeviceKeyError),
    /// The device is not enrolled (renewal, inventory, the connector).
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
    /// A lifecycle event that cannot happen in the phase the agent is in: a bug, refused rather
    /// than saved.
    #[error("lifecycle: {0}")]
    Lifecycle(#[from] InvalidTransition),
}

impl From<state::WriteError> for EnrollError {
    fn from(error: state::WriteError) -> Self {
        EnrollError::State(error.into())
    }
}

/// Enrolls one device, and speaks for it afterwards ([`crate::enrolled`]).
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
    /// makes no sense in the phase is refused: nothing is saved and the error says which.
    pub fn transition(&self, state: &mut AgentState, event: Event) -> Result<(), EnrollError> {
        let next = state.phase.on(&event)?;
        if next != state.phase {
            tracing::info!(from = state.phase.name(), to = next.name(), "phase");
        }
        state.phase = next;
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
    /// before: looked at only as far as they are needed, so that a stick of thousands of keys
    /// does not cost a digest of each at every pass.
    pub fn candidates(&self, state: &AgentState, source: &KeySource) -> Candidates {
        let pin = self
            .pin_for(state, &source.ums_id)
            .unwrap_or_else(|_| source.ums_id.clone());
        let held = state
            .refused_digests(self.clock.now(), self.unknown_key_retry)
            .into_iter()
            .map(str::to_owned)
            .collect();
        Candidates {
            walk: source.walk(&self.unit_id),
            ahead: VecDeque::new(),
            held,
            pin,
            refused: 0,
        }
    }

    /// `candidates` are what [`Enroller::candidates`] made of `source` (and may have looked into).
    pub(crate) async fn pass(
        &self,
        source: &KeySource,
        state: &mut AgentState,
        mut candidates: Candidates,
    ) -> Result<Pass, EnrollError> {
        let pin = match self.pin_for(state, &source.ums_id) {
            Ok(pin) => pin,
            Err(failure) => return Ok(Pass::Refused(failure)),
        };
        if candidates.fill(state, source, 1) == 0 {
            return Ok(Pass::Refused(Failure::KeysExhausted {
                refused: candidates.refused,
            }));
        }
        let key = device_key::load_or_generate(&self.state_dir, self.key_algorithm)?;
        let csr = device_key::csr(&self.unit_id, &key, &self.state_dir)?;
        state.unit_id = Some(self.unit_id.clone());
        state.servers = source.servers.iter().map(ToString::to_string).collect();
        // The batch size, the keys limited and when the pass ends: crate::presentation.
        let mut presentation = Presentation::new();
        // One client per server for the whole pass: one handshake, one cacerts.
        let mut sessions: Vec<Option<EstSession>> = source.servers.iter().map(|_| None).collect();
        loop {
            let per_request = presentation.per_request();
            candidates.fill(state, source, per_request);
            if candidates.ahead.is_empty() {
                return Ok(presentation.finish(candidates.refused));
            }
            // The keys still to present, in order; each request presents the next few at once
            // (onboard_protocol::alternates).
            let batch: Vec<usize> = candidates.ahead.iter().take(per_request).copied().collect();
            let keys: Vec<&FirstAuthKey> = batch
                .iter()
                .map(|index| source.keys[*index].key())
                .collect();
            let mut round = Round::default();
            for (server, session) in source.servers.iter().zip(sessions.iter_mut()) {
                for index in &batch {
                    let entry = &source.keys[*index];
                    tracing::info!(
                        %server,
                        ums_id = %pin.short(),
                        key_type = %entry.kind(),
                        key = %entry.key().masked(),
                        "presenting key"
                    );
                }
                state.server = Some(server.to_string());
                let session = match session {
                    Some(session) => session,
                    None => match EstSession::new(&pin, self.clock.clone(), &self.timeouts) {
                        Ok(made) => session.insert(made),
                        Err(detail) => return Ok(Pass::Refused(Failure::Rejected { detail })),
                    },
                };
                match session.enroll(server, &self.unit_id, &keys, &csr).await {
                    Answer::Certificate {
                        der,
                        ums_id,
                        key: used,
                        refused: before,
                    } => {
                        // Refusals of the keys tried before it count as if each was presented
                        // alone.
                        self.remember(state, &pin, source, &batch, &before, server);
                        let index = batch[used.min(batch.len() - 1)];
                        let entry = &source.keys[index];
                        match device_key::check_issued(&der, &ums_id, &pin, &self.unit_id, &key) {
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
                    Answer::KeysRefused(each) => {
                        // Saved with the pass's outcome, not one fsync per refusal: a pass cut
                        // short presents these keys once more, and they are refused once more.
                        candidates.refused +=
                            self.remember(state, &pin, source, &batch, &each, server);
                        round.refused(&each);
                        break;
                    }
                    Answer::Refused(Failure::Rejected { detail }) => {
                        tracing::error!(%server, %detail, "server rejected the request");
                        round.rejected(Failure::Rejected {
                            detail: format!("{server}: {detail}"),
                        });
                    }
                    Answer::Refused(failure) => {
                        tracing::error!(%server, reason = %failure, "enrollment refused");
                        return Ok(Pass::Refused(failure));
                    }
                    Answer::Fault {
                        retry_after,
                        detail,
                        pin_refused,
                    } => {
                        if pin_refused {
                            tracing::error!(%server, %detail, "server refused: not the pinned UMS ID; the key was not sent");
                        } else {
                            tracing::warn!(%server, %detail, "server unavailable");
                        }
                        round.fault(format!("{server}: {detail}"), retry_after, pin_refused);
                    }
                    Answer::Limited { retry_after } => {
                        // A limited server looks at the Basic key only: the others were not
                        // tried.
                        tracing::warn!(%server, "rate limited");
                        round.limited(retry_after);
                    }
                }
            }
            if let Some(end) = presentation.after(round, &batch, &mut candidates.ahead) {
                return Ok(end);
            }
        }
    }

    /// Remembers the final refusals in `each` (positions in `batch`, keys of `source`) as if
    /// each key had been presented alone; how many.
    fn remember(
        &self,
        state: &mut AgentState,
        pin: &Pin,
        source: &KeySource,
        batch: &[usize],
        each: &[(usize, ProblemCode)],
        server: &Server,
    ) -> usize {
        let mut remembered = 0;
        for (position, code) in each {
            let Some(entry) = batch.get(*position).map(|index| &source.keys[*index]) else {
                continue;
            };
            if !code.is_final_for_key() {
                continue;
            }
            tracing::warn!(
                %server,
                code = %code,
                key_type = %entry.kind(),
                key = %entry.key().masked(),
                "key refused; trying the next one"
            );
            let digest = Self::digest(state, pin, entry.key());
            state.remember_refusal(digest, *code, self.clock.now());
            state.last_error = Some(format!("{server}: key refused ({code})"));
            remembered += 1;
        }
        remembered
    }

    /// Stores the certificates of an enrollment and what the state says of it; the driver saves
    /// the state with its transition.
    fn store_enrollment(
        &self,
        state: &mut AgentState,
        issued: device_key::Issued,
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
        Ok(())
    }

    /// Writes the device certificate (and the UMS ID certificate, when given) atomically.
    pub(crate) fn store_certificates(
        &self,
        der: &[u8],
        ums_id: Option<&[u8]>,
    ) -> Result<(), EnrollError> {
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
}

/// The keys of one source a device would present, in order, checked against the refusals it
/// remembers as they are needed ([`Enroller::candidates`]).
#[derive(Debug)]
pub struct Candidates {
    /// Where this device is in its order: the keys not looked at yet.
    walk: KeyWalk,
    /// Keys looked at and not refused before: presented next.
    ahead: VecDeque<usize>,
    /// Digests of the refusals that held when the look began.
    held: std::collections::HashSet<String>,
    /// The pin their digests are scoped to.
    pin: Pin,
    /// How many keys looked at were refused (before, or during this pass).
    pub refused: usize,
}

impl Candidates {
    /// Looks further until `want` keys are ahead or none is left; how many are ahead.
    pub fn fill(&mut self, state: &mut AgentState, source: &KeySource, want: usize) -> usize {
        while self.ahead.len() < want {
            let Some(index) = self.walk.next(&source.kinds) else {
                break;
            };
            let digest = Enroller::digest(state, &self.pin, source.keys[index].key());
            if self.held.contains(&digest) {
                self.refused += 1;
            } else {
                self.ahead.push_back(index);
            }
        }
        self.ahead.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::OffsetDateTime;

    use super::*;
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
    fn an_invalid_transition_is_an_error_and_nothing_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let enroller = Enroller {
            state_dir: dir.path().to_owned(),
            ..enroller(None)
        };
        let mut state = AgentState {
            phase: crate::lifecycle::Phase::Enrolled,
            ..AgentState::default()
        };
        let error = enroller
            .transition(&mut state, Event::KeysFound)
            .unwrap_err();
        assert!(matches!(error, EnrollError::Lifecycle(_)), "{error}");
        assert_eq!(state.phase, crate::lifecycle::Phase::Enrolled);
        assert!(!dir.path().join(crate::state::STATE_FILE).exists());
        // A valid one is saved.
        enroller.transition(&mut state, Event::Reset).unwrap();
        assert!(dir.path().join(crate::state::STATE_FILE).exists());
    }
}
