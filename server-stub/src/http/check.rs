//! Checking keys before a rollout ([`onboard_protocol::check`]): for a unit ID and the keys
//! presented as an enrollment presents them, whether each would be accepted now. Nothing is
//! consumed: the store reads the key rows and the device row and decides each key with the claim
//! rule ([`crate::store::Store::check_keys`]); what is written is one audit line and the guesses.
//!
//! Admitted as enrollment is ([`super::est::admit_keys`]), from the same budget: each unknown
//! key is a guess, an over-budget source or unit ID is refused `rate_limited` with the same
//! `Retry-After`, and a limited request has only a random Basic key looked at. A check therefore
//! learns nothing an enrollment would not have told (an unknown key says nothing of the device,
//! [`crate::claim::decide`]) and is no way around the enrollment budget.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use onboard_protocol::check::{CheckedKey, KeyCheckAnswer};
use onboard_protocol::routes::DEVICE_CHECK_KEYS;
use onboard_protocol::{ProblemCode, UnitId};

use super::est::{
    Admitted, admit_keys, alternate_keys, basic_credentials, count_guesses, csr_from_body, guess,
    limited, not_in_sync, refusal_detail,
};
use super::{ApiError, Peer, Shared};
use crate::claim::Decision;
use crate::store::{Actor, AuditEntry, KeyCheck};

/// The audit event of a check.
const EVENT: &str = "check";

/// The check route.
pub fn router() -> Router<Arc<Shared>> {
    Router::new().route(DEVICE_CHECK_KEYS, post(check_keys))
}

async fn check_keys(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = peer.client(&headers, &shared.stub.settings.trusted_proxies);
    match check(&shared, source, &headers, &body).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(error) => {
            if let ApiError::Problem { problem, .. } = &error
                && problem.code != ProblemCode::RateLimited
            {
                tracing::info!(%source, code = %problem.code, "key check refused");
            }
            error.into_response()
        }
    }
}

/// Checks the keys of one request. Malformed requests and Basic values no key can have are
/// guesses answered as enrollment answers them; otherwise every key presented gets an entry.
async fn check(
    shared: &Arc<Shared>,
    source: IpAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<KeyCheckAnswer, ApiError> {
    not_in_sync(shared)?;
    let (unit_id, key) = match basic_credentials(headers) {
        Ok(credentials) => credentials,
        Err(malformed) => return Err(guess(shared, EVENT, source, None, malformed).await),
    };
    // The key pair the device would enroll with, if it says (a CSR proves it holds it); none: a
    // new key pair, so an enrolled unit ID is a conflict, as its enrollment would be.
    let public_key = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        match csr_from_body(body) {
            Ok(request) => request.public_key,
            Err(malformed) => {
                return Err(guess(shared, EVENT, source, Some(&unit_id), malformed).await);
            }
        }
    };
    let alternates = match alternate_keys(headers) {
        Ok(alternates) => alternates,
        Err(malformed) => {
            return Err(guess(shared, EVENT, source, Some(&unit_id), malformed).await);
        }
    };
    let Some(key) = key else {
        let unknown = ApiError::code(
            ProblemCode::KeyUnknown,
            refusal_detail(ProblemCode::KeyUnknown),
        );
        return Err(guess(shared, EVENT, source, Some(&unit_id), unknown).await);
    };
    let lookups: Vec<crate::vault::LookupDigest> = std::iter::once(&key)
        .chain(&alternates)
        .map(|key| shared.stub.vault.lookup(key))
        .collect();
    drop((key, alternates));
    let Admitted {
        decision,
        reservation,
        wait,
    } = admit_keys(shared, EVENT, source, &unit_id, &lookups).await?;
    if decision.refusal == Some(ProblemCode::RateLimited) {
        return Err(limited(wait));
    }
    let mut answers: Vec<CheckedKey> = decision
        .answered
        .iter()
        .map(|(place, code)| CheckedKey::refused(*place, *code))
        .collect();
    let mut known = Vec::new();
    if !decision.tried.is_empty() {
        let check = KeyCheck {
            unit_id: unit_id.clone(),
            lookups: decision.tried.iter().map(|place| lookups[*place]).collect(),
            public_key,
            lapsed_before: shared.stub.clock.now() - shared.stub.settings.renewal_grace,
        };
        let checked = match shared.stub.store.check_keys(&check).await {
            Ok(checked) => checked,
            Err(error) => {
                // Nothing was learnt of the keys: their guesses are given back.
                if let Some(reservation) = reservation {
                    reservation.settle(&shared.limiter, 0);
                }
                return Err(error.into());
            }
        };
        // Keys the store does not know (deleted since the read, or never read) are guesses.
        let refused: Vec<(usize, ProblemCode)> = checked
            .iter()
            .enumerate()
            .filter_map(|(index, key)| match key.decision {
                Decision::Refuse(code) => Some((index, code)),
                _ => None,
            })
            .collect();
        count_guesses(
            shared,
            reservation,
            &refused,
            source,
            Some(unit_id.as_str()),
        );
        for (index, key) in checked.iter().enumerate() {
            let place = decision.place(index);
            answers.push(match key.decision {
                Decision::Consume => CheckedKey::accepted(place, false),
                Decision::Repeat => CheckedKey::accepted(place, true),
                Decision::Refuse(code) => CheckedKey::refused(place, code),
            });
            if let Some(id) = key.key_id {
                known.push((place, id));
            }
        }
    } else if let Some(reservation) = reservation {
        reservation.settle(&shared.limiter, decision.unknown.len());
    }
    answers.sort_by_key(|key| key.place);
    audit(shared, source, &unit_id, &answers, &known).await?;
    Ok(KeyCheckAnswer {
        unit_id,
        keys: answers,
    })
}

/// Writes the check's one audit line, before the answer: the keys by ID (never a value) or, for
/// keys no key has, by their place in the request; the outcome `accepted` when one key would be,
/// else the code of the last.
async fn audit(
    shared: &Shared,
    source: IpAddr,
    unit_id: &UnitId,
    answers: &[CheckedKey],
    known: &[(usize, onboard_protocol::admin::KeyId)],
) -> Result<(), ApiError> {
    let mut entry = AuditEntry::new(EVENT, &Actor::device(unit_id, source));
    entry.unit_id = Some(unit_id.to_string());
    if let [(_, id)] = known {
        entry.key_id = Some(*id);
    }
    let accepted = answers.iter().filter(|key| key.accepted).count();
    entry.outcome = if accepted > 0 {
        "accepted".to_owned()
    } else {
        answers
            .last()
            .and_then(|key| key.code)
            .map_or("refused", ProblemCode::as_str)
            .to_owned()
    };
    let each: Vec<String> = answers
        .iter()
        .map(|answer| {
            let named = known
                .iter()
                .find(|(place, _)| *place == answer.place)
                .map_or_else(
                    || format!("place {}", answer.place),
                    |(_, id)| format!("key {id}"),
                );
            let what = match (answer.accepted, answer.enrolled, answer.code) {
                (true, true, _) => "accepted (enrolled with this key pair)",
                (true, false, _) => "accepted",
                (false, _, Some(code)) => code.as_str(),
                (false, _, None) => "refused",
            };
            format!("{named} {what}")
        })
        .collect();
    entry.detail = format!(
        "{accepted} of {} keys would be accepted: {}",
        answers.len(),
        each.join(", ")
    );
    shared.stub.store.record(entry).await?;
    tracing::info!(%unit_id, %source, keys = answers.len(), accepted, "keys checked");
    Ok(())
}
