//! EST (RFC 7030) for devices: the UMS ID chain, enrollment with a first-authentication key, and
//! renewal over mutual TLS.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use onboard_protocol::alternates::{
    ALTERNATE_KEYS_HEADER, KEY_INDEX_HEADER, KEYS_REFUSED_HEADER, decode_alternates, encode_refused,
};
use onboard_protocol::est;
use onboard_protocol::routes::{EST_CACERTS, EST_SIMPLEENROLL, EST_SIMPLEREENROLL};
use onboard_protocol::{FirstAuthKey, Problem, ProblemCode, UnitId};

use super::device::{device_identity, not_current};
use super::{ApiError, Peer, Shared};
use crate::ca::{Authority, CertificateRequest, IssueOnce};
use crate::key_admission::{self, Budget, Decision, Guesses, LookUp, Looked};
use crate::metrics::{Answered, Outcome};
use crate::rate_limit::{Admission, Reservation};
use crate::renewal::Refusal;
use crate::store::{Actor, AuditEntry, EnrollAttempt, EnrollOutcome, RenewOutcome, RenewalRequest};

/// The EST routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(EST_CACERTS, get(cacerts))
        .route(EST_SIMPLEENROLL, post(simpleenroll))
        .route(EST_SIMPLEREENROLL, post(simplereenroll))
}

/// A base64 PKCS#7 certs-only answer.
pub(super) fn pkcs7_response(certificates: &[&[u8]]) -> Response {
    let body = est::encode_base64(&est::certs_only(certificates));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(onboard_protocol::routes::CONTENT_TYPE_PKCS7_CERTS_ONLY),
    );
    headers.insert(
        "content-transfer-encoding",
        HeaderValue::from_static("base64"),
    );
    response
}

async fn cacerts(State(shared): State<Arc<Shared>>) -> Response {
    pkcs7_response(&[shared.stub.ums_id.certificate_der()])
}

/// The unit ID and key of an HTTP Basic header. The key is never logged or echoed; a refusal
/// never quotes the header.
pub fn basic_credentials(headers: &HeaderMap) -> Result<(UnitId, Option<FirstAuthKey>), ApiError> {
    let malformed = |detail: &str| ApiError::code(ProblemCode::BadRequest, detail);
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        malformed(
            "HTTP Basic authorization with the unit ID as user and the key as password is required",
        )
    })?;
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .ok_or_else(|| malformed("the Authorization header is not HTTP Basic"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| malformed("the Basic credentials are not base64 of UTF-8 text"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| malformed("the Basic credentials lack the ':' between unit ID and key"))?;
    let unit_id = user
        .parse::<UnitId>()
        // The refused text is not echoed: a client that swapped user and password would see its key.
        .map_err(|_| malformed("the Basic user must be the unit ID: 12 hex digits (a MAC) or an 18-character UD Pocket serial"))?;
    // A value no key can have is simply unknown, like any other wrong key.
    Ok((unit_id, FirstAuthKey::new(password).ok()))
}

pub(super) fn csr_from_body(body: &[u8]) -> Result<CertificateRequest, ApiError> {
    let der = est::decode_base64(body).map_err(|_| {
        ApiError::code(
            ProblemCode::BadRequest,
            "the body must be a base64 PKCS#10 certificate request",
        )
    })?;
    CertificateRequest::from_der(&der)
        .map_err(|error| ApiError::code(ProblemCode::BadRequest, error.to_string()))
}

async fn simpleenroll(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let response = answer_enrollment(&shared, &peer, &headers, &body).await;
    shared.metrics.enrollment_took(started.elapsed());
    shared.metrics.count_enrollment(&response);
    response
}

async fn answer_enrollment(
    shared: &Arc<Shared>,
    peer: &Peer,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let source = peer.client(headers, &shared.stub.settings.trusted_proxies);
    let mut unit_seen: Option<UnitId> = None;
    let result = enroll(shared, source, headers, body, &mut unit_seen).await;
    let response = match result {
        Ok(response) => return response,
        Err(error) => error,
    };
    if let ApiError::Problem { problem, .. } = &response {
        let unit = unit_seen.as_ref().map(UnitId::as_str);
        // Malformed requests are refused before the store is asked; they still belong in the audit
        // log. Rate-limited ones do not: a flood of them must not turn into a flood of writes.
        if problem.code == ProblemCode::BadRequest {
            let actor = match &unit_seen {
                Some(unit_id) => Actor::device(unit_id, source),
                None => Actor::anonymous(source),
            };
            let mut entry = AuditEntry::new("enroll", &actor);
            entry.unit_id = unit.map(str::to_owned);
            entry.outcome = problem.code.as_str().to_owned();
            entry.detail = problem.detail.clone().unwrap_or_default();
            if let Err(error) = shared.stub.store.record(entry).await {
                tracing::warn!("cannot audit a malformed enrollment: {error}");
            }
        }
        // Rate-limited refusals were logged once a window where they were decided.
        if problem.code != ProblemCode::RateLimited {
            tracing::info!(unit_id = unit.unwrap_or("-"), %source, code = %problem.code, "enrollment refused");
        }
    }
    response.into_response()
}

/// Refuses to issue certificates while this server could not adopt the Main UMS ID: devices pinned
/// to it would refuse them. Another server of the cluster, or this one restarted, will do.
pub(super) fn not_in_sync(shared: &Shared) -> Result<(), ApiError> {
    if shared.stub.sync == crate::cluster::SyncStatus::NotInSync {
        return Err(ApiError::Problem {
            problem: Problem::new(ProblemCode::ServerNotInSync).with_detail(
                "this server is not in sync with the Main UMS ID; try another server of the \
                 cluster, or later",
            ),
            retry_after: Some(std::time::Duration::from_secs(60)),
        });
    }
    Ok(())
}

/// The refusal of a guess from a source or unit ID that has used up its guesses.
pub(super) fn limited(wait: std::time::Duration) -> ApiError {
    ApiError::Problem {
        problem: Problem::new(ProblemCode::RateLimited)
            .with_detail("too many unknown keys or malformed requests; retry later"),
        retry_after: Some(wait),
    }
}

/// Spends one guess of the budgets on a request that cannot be tried (malformed, or a key value no
/// key can have): answered `refusal` while the budgets last, then `rate_limited`. `event` names
/// the request in the audit log (`enroll`, `check`).
pub(super) async fn guess(
    shared: &Shared,
    event: &str,
    source: IpAddr,
    unit_id: Option<&UnitId>,
    refusal: ApiError,
) -> ApiError {
    let unit = unit_id.map(UnitId::as_str);
    match shared.limiter.admit(source, unit, 1, Instant::now()) {
        // Counted, never refunded: a guess.
        Admission::Reserved(reservation) => {
            reservation.settle(&shared.limiter, 1);
            refusal
        }
        Admission::Limited { wait, first } => {
            limited_from(shared, event, source, unit_id, first).await;
            limited(wait)
        }
    }
}

/// Notes a request refused because its source or unit ID used up its guesses: the first of each
/// window is audited (as `event`) and logged at INFO, the rest only at DEBUG, so a flood of them is
/// neither a flood of writes nor of log lines.
async fn limited_from(
    shared: &Shared,
    event: &str,
    source: IpAddr,
    unit_id: Option<&UnitId>,
    first: bool,
) {
    let unit = unit_id.map_or("-", UnitId::as_str);
    if !first {
        tracing::debug!(unit_id = unit, %source, event, "refused: rate limited");
        return;
    }
    tracing::info!(unit_id = unit, %source, "guesses used up: further guesses and mass-deployment keys from this source or unit ID are refused until the window ends");
    let actor = match unit_id {
        Some(unit_id) => Actor::device(unit_id, source),
        None => Actor::anonymous(source),
    };
    let mut entry = AuditEntry::new(event, &actor);
    entry.unit_id = unit_id.map(ToString::to_string);
    entry.outcome = ProblemCode::RateLimited.as_str().to_owned();
    entry.detail = format!(
        "guesses used up (at most {} a source, {} a unit ID, in {} s): further guesses and \
         mass-deployment keys are refused until the window ends",
        shared.stub.settings.rate_limits.per_source,
        shared.stub.settings.rate_limits.per_unit,
        shared.stub.settings.rate_limits.window.as_secs(),
    );
    if let Err(error) = shared.stub.store.record(entry).await {
        tracing::warn!("cannot audit a rate-limited source: {error}");
    }
}

/// Audits the unknown keys of a request of several keys that the store was never asked about:
/// one line for the request, listing their places in it.
async fn audit_unknown_keys(
    shared: &Shared,
    source: IpAddr,
    unit_id: &UnitId,
    unknown: &[usize],
    presented: usize,
) {
    if unknown.is_empty() {
        return;
    }
    let mut entry = AuditEntry::new("enroll", &Actor::device(unit_id, source));
    entry.unit_id = Some(unit_id.to_string());
    entry.outcome = ProblemCode::KeyUnknown.as_str().to_owned();
    let places: Vec<String> = unknown.iter().map(ToString::to_string).collect();
    entry.detail = format!(
        "{} of the {presented} keys presented are unknown (places {} in the request; 0 is the Basic key)",
        unknown.len(),
        places.join(", ")
    );
    if let Err(error) = shared.stub.store.record(entry).await {
        tracing::warn!("cannot audit unknown keys: {error}");
    }
}

/// The keys of [`ALTERNATE_KEYS_HEADER`], none without it.
pub(super) fn alternate_keys(headers: &HeaderMap) -> Result<Vec<FirstAuthKey>, ApiError> {
    let Some(value) = headers.get(ALTERNATE_KEYS_HEADER) else {
        return Ok(Vec::new());
    };
    match value.to_str().ok().map(decode_alternates) {
        Some(Ok(keys)) => Ok(keys),
        refused => {
            let detail = match refused {
                Some(Err(error)) => format!("{ALTERNATE_KEYS_HEADER}: {error}"),
                _ => format!("{ALTERNATE_KEYS_HEADER} is not text"),
            };
            Err(ApiError::code(ProblemCode::BadRequest, detail))
        }
    }
}

/// Counts the guesses among the store's `refused` keys: the reservation kept for its answer is
/// settled with them, or, with none kept, each is counted apart.
pub(super) fn count_guesses(
    shared: &Shared,
    reservation: Option<Reservation>,
    refused: &[(usize, ProblemCode)],
    source: IpAddr,
    unit: Option<&str>,
) {
    let guesses = key_admission::guesses(refused);
    match reservation {
        Some(reservation) => reservation.settle(&shared.limiter, guesses),
        None => {
            for _ in 0..guesses {
                shared.limiter.guessed(source, unit, Instant::now());
            }
        }
    }
}

/// What the guess budget and the read it names made of a request's keys ([`admit_keys`]).
pub(super) struct Admitted {
    /// Which keys are tried, and the answers for the others.
    pub(super) decision: Decision,
    /// The guesses still reserved, to settle with the answer of the keys tried; `None` when
    /// settled already or when nothing was reserved (a limited request).
    pub(super) reservation: Option<Reservation>,
    /// How long a limited request is told to wait.
    pub(super) wait: std::time::Duration,
}

/// Admits a request presenting the keys `lookups` (at least one) from `source` for `unit_id`, as
/// every route that takes keys does (enrollment and the check, so that neither is a way around
/// the other's budget): reserves a guess for each key before anything is looked up, reads what
/// [`key_admission::look_up`] names, and applies [`key_admission::decide`]. `event` names the
/// request in the audit line of a source that used up its guesses.
pub(super) async fn admit_keys(
    shared: &Shared,
    event: &str,
    source: IpAddr,
    unit_id: &UnitId,
    lookups: &[crate::vault::LookupDigest],
) -> Result<Admitted, ApiError> {
    let presented = lookups.len();
    // The guesses reserved before any await: none when the request is limited.
    let (budget, wait, mut reservation) =
        match shared
            .limiter
            .admit(source, Some(unit_id.as_str()), presented, Instant::now())
        {
            Admission::Limited { wait, first } => {
                limited_from(shared, event, source, Some(unit_id), first).await;
                (Budget::Limited, wait, None)
            }
            Admission::Reserved(reservation) => (
                Budget::Granted(reservation.keys()),
                std::time::Duration::ZERO,
                Some(reservation),
            ),
        };
    let looked = match key_admission::look_up(budget, presented) {
        LookUp::Nothing => Looked::Nothing,
        LookUp::BasicKind => Looked::BasicKind(shared.stub.store.key_kind(&lookups[0]).await?),
        // Unknown keys are found in one read and cost no write.
        LookUp::Known { keys } => match shared.stub.store.known_keys(&lookups[..keys]).await {
            Ok(found) => Looked::Known(found),
            Err(error) => {
                // Nothing was learnt of the keys: their guesses are given back.
                if let Some(reservation) = reservation.take() {
                    reservation.settle(&shared.limiter, 0);
                }
                return Err(error.into());
            }
        },
    };
    let decision = key_admission::decide(budget, presented, &looked);
    if let Guesses::SettleNow(guesses) = decision.guesses
        && let Some(reservation) = reservation.take()
    {
        reservation.settle(&shared.limiter, guesses);
    }
    Ok(Admitted {
        decision,
        reservation,
        wait,
    })
}

/// Enrolls one device.
///
/// Each key presented reserves a guess before anything is looked up, and the guess is refunded
/// when the key turns out to be real ([`crate::rate_limit`]); which keys are then tried, and what
/// the others are answered, is [`crate::key_admission`]'s decision, applied here.
async fn enroll(
    shared: &Arc<Shared>,
    source: IpAddr,
    headers: &HeaderMap,
    body: &[u8],
    unit_seen: &mut Option<UnitId>,
) -> Result<Response, ApiError> {
    not_in_sync(shared)?;
    let (unit_id, key) = match basic_credentials(headers) {
        Ok(credentials) => credentials,
        Err(malformed) => return Err(guess(shared, "enroll", source, None, malformed).await),
    };
    *unit_seen = Some(unit_id.clone());
    let unit = Some(unit_id.as_str());
    // A device never sends a malformed request: it counts as a guess, and once the budget is used
    // up it is answered 429 without an audit line.
    let request = match csr_from_body(body) {
        Ok(request) => request,
        Err(malformed) => {
            return Err(guess(shared, "enroll", source, Some(&unit_id), malformed).await);
        }
    };
    let unknown = || {
        ApiError::code(
            ProblemCode::KeyUnknown,
            refusal_detail(ProblemCode::KeyUnknown),
        )
    };
    // Several keys in one request (onboard_protocol::alternates): a malformed list is a
    // malformed request, a guess like any.
    let alternates = match alternate_keys(headers) {
        Ok(alternates) => alternates,
        Err(malformed) => {
            return Err(guess(shared, "enroll", source, Some(&unit_id), malformed).await);
        }
    };
    let several = !alternates.is_empty();
    let Some(key) = key else {
        // A value no key can have: a guess like any unknown key.
        return Err(guess(shared, "enroll", source, Some(&unit_id), unknown()).await);
    };
    // Each key's lookup digest, in the request's order; the keys themselves go now.
    let lookups: Vec<crate::vault::LookupDigest> = std::iter::once(&key)
        .chain(&alternates)
        .map(|key| shared.stub.vault.lookup(key))
        .collect();
    let presented = lookups.len();
    drop((key, alternates));
    let Admitted {
        decision,
        mut reservation,
        wait,
    } = admit_keys(shared, "enroll", source, &unit_id, &lookups).await?;
    audit_unknown_keys(shared, source, &unit_id, &decision.unknown, presented).await;
    if let Some(code) = decision.refusal {
        let refusal = if code == ProblemCode::RateLimited {
            limited(wait)
        } else {
            tracing::info!(%unit_id, %source, keys = decision.unknown.len(), "enrollment refused: every key unknown");
            unknown()
        };
        return if several {
            Ok(with_refused(refusal, &decision.answered))
        } else {
            Err(refusal)
        };
    }
    let mut tried = decision.tried.iter().map(|place| lookups[*place]);
    let Some(lookup) = tried.next() else {
        return Err(unknown());
    };
    let attempt = EnrollAttempt {
        unit_id: unit_id.clone(),
        lookup,
        alternates: tried.collect(),
        public_key: request.public_key.clone(),
        source: source.to_string(),
        lapsed_before: shared.stub.clock.now() - shared.stub.settings.renewal_grace,
    };
    let signer = shared.clone();
    let lifetime = shared.certificate_lifetime;
    let subject = unit_id.clone();
    let issue: IssueOnce = Box::new(move || {
        let authority = Authority::new(&signer.stub.ums_id).map_err(|e| e.to_string())?;
        authority.device_certificate(
            subject.as_str(),
            &request,
            lifetime,
            signer.stub.clock.now(),
        )
    });
    let asked = Instant::now();
    let outcome = shared.stub.store.enroll(attempt, issue).await;
    shared.metrics.store_took("enroll", asked.elapsed());
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            // Nothing was decided about the key: its guess is given back.
            if let Some(reservation) = reservation.take() {
                reservation.settle(&shared.limiter, 0);
            }
            return Err(error.into());
        }
    };
    // The store's refusals of keys it no longer knows are guesses; a single key's reserved guess
    // is refunded unless it was one.
    let refused = match &outcome {
        EnrollOutcome::Issued { refused, .. } | EnrollOutcome::RefusedEach(refused) => {
            refused.clone()
        }
        EnrollOutcome::Refused(code) => vec![(0, *code)],
    };
    count_guesses(shared, reservation, &refused, source, unit);
    enrolled(outcome, &decision, several, source, &unit_id)
}

/// The answer to a request the store decided: the store's indexes are of the keys it was given,
/// the answer names the request's places (when it presented several).
fn enrolled(
    outcome: EnrollOutcome,
    decision: &Decision,
    several: bool,
    source: IpAddr,
    unit_id: &UnitId,
) -> Result<Response, ApiError> {
    match outcome {
        EnrollOutcome::Issued {
            device,
            repeated,
            key,
            refused,
        } => {
            tracing::info!(unit_id = %device.unit_id, serial = %device.serial, repeated, key_type = %device.key_kind, "device enrolled");
            let mut response = pkcs7_response(&[&device.certificate]);
            response.extensions_mut().insert(Answered {
                outcome: if repeated {
                    Outcome::Repeated
                } else {
                    Outcome::Issued
                },
                kind: Some(device.key_kind),
            });
            if several {
                let headers = response.headers_mut();
                headers.insert(KEY_INDEX_HEADER, HeaderValue::from(decision.place(key)));
                let refused = decision.in_request(&refused);
                if !refused.is_empty()
                    && let Ok(value) = HeaderValue::from_str(&encode_refused(&refused))
                {
                    headers.insert(KEYS_REFUSED_HEADER, value);
                }
            }
            Ok(response)
        }
        EnrollOutcome::Refused(code) => {
            let refusal = ApiError::code(code, refusal_detail(code));
            if several {
                tracing::info!(%unit_id, %source, %code, "enrollment refused");
                Ok(with_refused(refusal, &decision.in_request(&[(0, code)])))
            } else {
                Err(refusal)
            }
        }
        EnrollOutcome::RefusedEach(refused) => {
            let code = refused
                .last()
                .map_or(ProblemCode::KeyUnknown, |(_, code)| *code);
            let refusal = ApiError::code(code, refusal_detail(code));
            tracing::info!(%unit_id, %source, %code, keys = refused.len(), "enrollment refused");
            Ok(with_refused(refusal, &decision.in_request(&refused)))
        }
    }
}

/// `refusal` as a response listing every key's refusal in [`KEYS_REFUSED_HEADER`].
fn with_refused(refusal: ApiError, refused: &[(usize, ProblemCode)]) -> Response {
    let mut response = refusal.into_response();
    if let Ok(value) = HeaderValue::from_str(&encode_refused(refused)) {
        response.headers_mut().insert(KEYS_REFUSED_HEADER, value);
    }
    response
}

/// What a device is told when its key is refused.
pub(super) fn refusal_detail(code: ProblemCode) -> &'static str {
    match code {
        ProblemCode::KeyUnknown => "no such first-authentication key",
        ProblemCode::KeyInactive => "the key is deactivated; an administrator can activate it",
        ProblemCode::KeyUsed => "the one-time key was already used by another device",
        ProblemCode::KeyBoundToOtherDevice => "the key is bound to another unit ID",
        ProblemCode::UnitIdConflict => {
            "this unit ID is enrolled with another key pair; an administrator must delete the device record \
             (ums-stub devices delete UNIT_ID) before it can enroll again"
        }
        _ => "refused",
    }
}

async fn simplereenroll(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = match reenroll(&shared, &peer, &headers, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    shared.metrics.count_renewal(&response);
    response
}

async fn reenroll(
    shared: &Arc<Shared>,
    peer: &Peer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    not_in_sync(shared)?;
    let presented = device_identity(peer, "renewal")?;
    let request = csr_from_body(body)?;
    let source = peer.client(headers, &shared.stub.settings.trusted_proxies);
    let actor = Actor::device(&presented.unit_id, source);
    let lifetime = shared.certificate_lifetime;
    let public_key = request.public_key.clone();
    let (signer, subject) = (shared.clone(), presented.unit_id.clone());
    let issue: IssueOnce = Box::new(move || {
        let authority = Authority::new(&signer.stub.ums_id).map_err(|e| e.to_string())?;
        authority.device_certificate(
            subject.as_str(),
            &request,
            lifetime,
            signer.stub.clock.now(),
        )
    });
    let renewal = RenewalRequest {
        unit_id: presented.unit_id,
        serial: presented.serial,
        not_after: presented.not_after,
        public_key,
        grace: shared.stub.settings.renewal_grace,
    };
    let asked = Instant::now();
    let outcome = shared.stub.store.renew(renewal, &actor, issue).await;
    shared.metrics.store_took("renew", asked.elapsed());
    let answered = |device: &crate::store::DeviceRecord, outcome| {
        let mut response = pkcs7_response(&[&device.certificate]);
        response.extensions_mut().insert(Answered {
            outcome,
            kind: None,
        });
        response
    };
    match outcome? {
        RenewOutcome::Renewed(device) => {
            tracing::info!(unit_id = %device.unit_id, serial = %device.serial, "device certificate renewed");
            Ok(answered(&device, Outcome::Issued))
        }
        RenewOutcome::Repeated(device) => {
            tracing::info!(unit_id = %device.unit_id, serial = %device.serial, "device certificate sent again");
            Ok(answered(&device, Outcome::Repeated))
        }
        RenewOutcome::Refused(Refusal::NotCurrent) => Err(not_current()),
        RenewOutcome::Refused(Refusal::Lapsed) => Err(ApiError::code(
            ProblemCode::CertificateNotCurrent,
            "the device certificate expired longer ago than the renewal grace period: enroll \
             again with a first-authentication key",
        )),
    }
}
