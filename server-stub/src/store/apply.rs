//! The flows that apply a decision, written once for both backends over the row operations of
//! one transaction ([`Tx`]): enroll (the keys of an attempt in order, [`claim::decide`] for each),
//! check keys (the same decision, read-only: nothing applied), renew ([`renewal::decide`]),
//! touch ([`renewal::held`]), delete a device, queue a command, change keys (stored statuses by
//! [`claim::stored_status`]) and insert keys (clashes by
//! [`claim::after_clash`]). Each reads rows, asks the rule, writes what it decided and the audit
//! line; the backend opened the transaction, holds its locks and commits it. Nothing here decides
//! a rule itself.

use std::collections::HashMap;

use onboard_protocol::admin::{KeyId, Right};
use onboard_protocol::{ProblemCode, UnitId};
use time::OffsetDateTime;

use super::error::{Missing, StoreError};
use super::rows::{
    Actor, AuditEntry, CheckedKey, DISCONNECT, DeviceRecord, EnrollAttempt, EnrollOutcome,
    KeyCheck, KeyPatch, MakeKey, Progress, RenewOutcome, RenewalRequest, SessionRef,
};
use super::tx::{KeyChange, KeyForClaim, KeyInsert, Seen, Tx};
use crate::ca::IssueOnce;
use crate::claim::{self, Decision};
use crate::renewal;
use crate::vault::LookupDigest;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

/// Keys inserted per call of [`Tx::insert_keys`] (one statement on PostgreSQL).
pub(crate) const INSERT_CHUNK: usize = 1000;

/// Applies an enrollment attempt: its keys tried in order ([`KeyTries`]), each decided
/// with [`claim::decide`] over the key row and the device row read inside `tx`; the certificate
/// `issue` signs is taken only once a key is consumed.
pub(crate) async fn enroll<T: Tx>(
    tx: &mut T,
    attempt: &EnrollAttempt,
    issue: IssueOnce,
    now: OffsetDateTime,
) -> Result<EnrollOutcome, StoreError> {
    let mut issue = Some(issue);
    let (mut tries, lookups) = KeyTries::new(attempt);
    for (index, lookup) in lookups {
        let outcome = enroll_key(tx, attempt, lookup, &mut issue, now).await?;
        if let Some(done) = tries.take(index, outcome) {
            return Ok(done);
        }
    }
    Ok(tries.finish())
}

/// The claim rule over the rows read: the one call of [`claim::decide`], for an enrollment and
/// for a check alike, so both always answer the same.
fn decide(
    attempt: claim::Attempt<'_>,
    key: Option<&KeyForClaim>,
    device: Option<&DeviceRecord>,
    lapsed_before: OffsetDateTime,
    now: OffsetDateTime,
) -> Decision {
    claim::decide(
        attempt,
        key.map(KeyForClaim::row),
        device.map(|device| claim::DeviceRow {
            public_key: &device.public_key,
            key_id: device.key_id,
            lapsed: device.not_after < lapsed_before,
        }),
        now,
    )
}

/// Checks keys (a dry run of an enrollment): each key row and the device row read inside `tx`,
/// each key decided as an enrollment presenting it alone would be ([`decide`]), and nothing
/// applied: no key consumed, no device recorded, no audit line (the caller writes one line for
/// the whole check). The backend opens `tx` read-only and takes no row locks, so a check never
/// holds up an enrollment.
/// Lifetimes are judged at `now`, the moment of the check, as an enrollment now would judge them.
pub(crate) async fn check<T: Tx>(
    tx: &mut T,
    check: &KeyCheck,
    now: OffsetDateTime,
) -> Result<Vec<CheckedKey>, StoreError> {
    let device = tx.device_for_update(&check.unit_id).await?;
    let attempt = claim::Attempt {
        unit_id: &check.unit_id,
        public_key: &check.public_key,
    };
    let mut checked = Vec::with_capacity(check.lookups.len());
    for lookup in &check.lookups {
        let key = tx.key_for_claim(lookup).await?;
        checked.push(CheckedKey {
            key_id: key.as_ref().map(|key| key.id),
            decision: decide(
                attempt,
                key.as_ref(),
                device.as_ref(),
                check.lapsed_before,
                now,
            ),
        });
    }
    Ok(checked)
}

/// One key of an attempt: the rows read, [`claim::decide`], and the decision applied and audited.
/// A refusal writes only its audit line; a repeat answers from the device row; a consumption
/// counts one use through the consume guard, and only then signs and records the device (a
/// lapsed record of the unit ID, which the rule let through, is replaced whole).
async fn enroll_key<T: Tx>(
    tx: &mut T,
    attempt: &EnrollAttempt,
    lookup: &LookupDigest,
    issue: &mut Option<IssueOnce>,
    now: OffsetDateTime,
) -> Result<EnrollOutcome, StoreError> {
    let mut audit = AuditEntry::new("enroll", &Actor::device(&attempt.unit_id, &attempt.source));
    audit.at = now;
    audit.unit_id = Some(attempt.unit_id.to_string());
    let key = tx.key_for_claim(lookup).await?;
    let device = tx.device_for_update(&attempt.unit_id).await?;
    let decision = decide(
        claim::Attempt {
            unit_id: &attempt.unit_id,
            public_key: &attempt.public_key,
        },
        key.as_ref(),
        device.as_ref(),
        attempt.lapsed_before,
        now,
    );
    audit.key_id = key.as_ref().map(|key| key.id);
    let outcome = match decision {
        Decision::Refuse(code) => {
            audit.outcome = code.as_str().to_owned();
            EnrollOutcome::Refused(code)
        }
        Decision::Repeat => {
            let device = device.ok_or_else(|| tx.corrupt("a repeat with no device".to_owned()))?;
            audit.detail = format!("repeated answer, certificate {}", device.serial);
            EnrollOutcome::Issued {
                device: Box::new(device),
                repeated: true,
                key: 0,
                refused: Vec::new(),
            }
        }
        Decision::Consume => {
            let Some(key) = key else {
                return Err(tx.corrupt("a consumption with no key".to_owned()));
            };
            let status = claim::stored_status(key.kind, key.active, key.usage_count + 1);
            if !tx.consume_key(key.id, status, now).await? {
                tracing::error!(
                    key_id = key.id,
                    "the consume guard refused a key the claim rule allowed; refusing it as used"
                );
                audit.outcome = ProblemCode::KeyUsed.as_str().to_owned();
                tx.audit(&audit).await?;
                return Ok(EnrollOutcome::Refused(ProblemCode::KeyUsed));
            }
            // Signed only once the key is consumed: a guard refusal leaves the certificate to the
            // next key of the attempt.
            let issue = issue
                .take()
                .ok_or_else(|| tx.corrupt("a second consumption in one attempt".to_owned()))?;
            let issued = issue().map_err(StoreError::Issue)?;
            let device = DeviceRecord {
                unit_id: attempt.unit_id.clone(),
                public_key: attempt.public_key.clone(),
                certificate: issued.der,
                serial: issued.serial,
                not_after: issued.not_after,
                key_id: Some(key.id),
                key_kind: key.kind,
                // Copied: a later edit or deletion of the key does not move the device.
                folder: key.folder.clone(),
                enrolled_at: now,
                last_seen: now,
                inventory: None,
                previous_serial: None,
                online_server: None,
            };
            tx.put_device(&device).await?;
            audit.detail = format!("certificate {}", device.serial);
            EnrollOutcome::Issued {
                device: Box::new(device),
                repeated: false,
                key: 0,
                refused: Vec::new(),
            }
        }
    };
    tx.audit(&audit).await?;
    Ok(outcome)
}

/// The keys of one attempt tried in order inside one transaction (the Basic key, then the
/// alternates), and what they came to: [`enroll`] tries each key [`KeyTries::new`] lists and
/// hands its outcome to [`KeyTries::take`].
#[derive(Debug, Default)]
struct KeyTries {
    refused: Vec<(usize, ProblemCode)>,
    alternates: bool,
}

impl KeyTries {
    /// Tries for `attempt`, and its keys in the order to try them.
    fn new(attempt: &EnrollAttempt) -> (KeyTries, impl Iterator<Item = (usize, &LookupDigest)>) {
        let tries = KeyTries {
            refused: Vec::new(),
            alternates: !attempt.alternates.is_empty(),
        };
        let lookups = std::iter::once(&attempt.lookup)
            .chain(&attempt.alternates)
            .enumerate();
        (tries, lookups)
    }

    /// What key `index` came to; the attempt's outcome when it ends here (a certificate, or a
    /// refusal final for the device), `None` to try the next key.
    fn take(&mut self, index: usize, outcome: EnrollOutcome) -> Option<EnrollOutcome> {
        match outcome {
            EnrollOutcome::Issued {
                device, repeated, ..
            } => Some(EnrollOutcome::Issued {
                device,
                repeated,
                key: index,
                refused: std::mem::take(&mut self.refused),
            }),
            EnrollOutcome::Refused(code) => {
                self.refused.push((index, code));
                (!code.is_final_for_key()).then(|| self.finish())
            }
            EnrollOutcome::RefusedEach(each) => {
                self.refused.extend(each);
                None
            }
        }
    }

    /// Every key tried was refused.
    fn finish(&mut self) -> EnrollOutcome {
        let refused = std::mem::take(&mut self.refused);
        match refused.as_slice() {
            [(0, code)] if !self.alternates => EnrollOutcome::Refused(*code),
            _ => EnrollOutcome::RefusedEach(refused),
        }
    }
}

/// Decides a renewal with [`renewal::decide`] over the device row read inside `tx`, and applies
/// it: a refusal writes nothing, a repeat is audited, a renewal signs (`issue`), replaces the
/// certificate and is audited.
pub(crate) async fn renew<T: Tx>(
    tx: &mut T,
    request: RenewalRequest,
    actor: &Actor,
    issue: IssueOnce,
    now: OffsetDateTime,
) -> Result<RenewOutcome, StoreError> {
    let Some(mut device) = tx.device_for_update(&request.unit_id).await? else {
        return Ok(RenewOutcome::Refused(renewal::Refusal::NotCurrent));
    };
    let decision = renewal::decide(
        renewal::Presented {
            serial: &request.serial,
            not_after: request.not_after,
        },
        &request.public_key,
        &renewal::Record {
            serial: &device.serial,
            previous_serial: device.previous_serial.as_deref(),
            public_key: &device.public_key,
        },
        request.grace,
        now,
    );
    let mut entry = AuditEntry::new("reenroll", actor);
    entry.at = now;
    entry.unit_id = Some(request.unit_id.to_string());
    let previous = match decision {
        renewal::Renewal::Refuse(refusal) => return Ok(RenewOutcome::Refused(refusal)),
        renewal::Renewal::Repeat => {
            entry.detail = format!(
                "repeated answer, certificate {} (presented {})",
                device.serial, request.serial
            );
            tx.audit(&entry).await?;
            return Ok(RenewOutcome::Repeated(device));
        }
        renewal::Renewal::Issue { previous } => previous,
    };
    let issued = issue().map_err(StoreError::Issue)?;
    tx.replace_certificate(
        &request.unit_id,
        &request.public_key,
        &issued,
        &previous,
        now,
    )
    .await?;
    entry.detail = format!(
        "certificate {} replaces {} (presented {})",
        issued.serial, device.serial, request.serial
    );
    tx.audit(&entry).await?;
    device.public_key = request.public_key;
    device.certificate = issued.der;
    device.serial = issued.serial;
    device.not_after = issued.not_after;
    device.previous_serial = Some(previous);
    device.last_seen = now;
    Ok(RenewOutcome::Renewed(device))
}

/// Records that `unit_id` was heard from when the certificate it presented (`serial`) is its
/// current or previous one ([`renewal::held`]); the current one seen, the previous is forgotten.
/// Whether it was either.
pub(crate) async fn touch<T: Tx>(
    tx: &mut T,
    unit_id: &UnitId,
    serial: &str,
    inventory: Option<&str>,
    session: Option<SessionRef<'_>>,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let Some(device) = tx.device_for_update(unit_id).await? else {
        return Ok(false);
    };
    let record = renewal::Record {
        serial: &device.serial,
        previous_serial: device.previous_serial.as_deref(),
        public_key: &device.public_key,
    };
    let forget_previous = match renewal::held(serial, &record) {
        renewal::Held::Current => true,
        renewal::Held::Previous => false,
        renewal::Held::Neither => return Ok(false),
    };
    let seen = Seen {
        at: now,
        inventory,
        forget_previous,
        session,
    };
    tx.seen(unit_id, seen).await?;
    Ok(true)
}

/// Forgets the device `unit_id`, has the server holding its connector session close it, and
/// audits it.
pub(crate) async fn delete_device<T: Tx>(
    tx: &mut T,
    unit_id: &UnitId,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let Some(online) = tx.delete_device(unit_id).await? else {
        return Err(StoreError::NotFound(Missing::Device(unit_id.clone())));
    };
    if let Some(server) = online {
        tx.queue_command(&server, unit_id, DISCONNECT, now).await?;
    }
    let mut entry = AuditEntry::new("devices.delete", actor);
    entry.unit_id = Some(unit_id.to_string());
    tx.audit(&entry).await
}

/// Queues `command` for `unit_id` on the server holding its session and audits it (outcome
/// `offline`, nothing queued, when no server holds one); that server.
pub(crate) async fn queue_command<T: Tx>(
    tx: &mut T,
    unit_id: &UnitId,
    command: &str,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<Option<String>, StoreError> {
    let Some(device) = tx.device_for_update(unit_id).await? else {
        return Err(StoreError::NotFound(Missing::Device(unit_id.clone())));
    };
    let online = device.online_server;
    if let Some(server) = &online {
        tx.queue_command(server, unit_id, command, now).await?;
    }
    let mut entry = AuditEntry::new("devices.command", actor);
    entry.unit_id = Some(unit_id.to_string());
    if online.is_none() {
        "offline".clone_into(&mut entry.outcome);
    }
    command.clone_into(&mut entry.detail);
    tx.audit(&entry).await?;
    Ok(online)
}

/// An administrator's change to keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyEdit {
    /// A new comment (one key).
    Comment(String),
    /// Activate (`true`) or deactivate.
    Active(bool),
    /// A comment, terms or both (one key).
    Patch(KeyPatch),
    /// Delete.
    Delete,
}

impl KeyEdit {
    /// The audit event.
    fn event(&self) -> &'static str {
        match self {
            KeyEdit::Comment(_) | KeyEdit::Patch(_) => "keys.edit",
            KeyEdit::Active(true) => "keys.activate",
            KeyEdit::Active(false) => "keys.deactivate",
            KeyEdit::Delete => "keys.delete",
        }
    }
}

/// Applies `edit` to every key of `ids` (a new stored status from [`claim::stored_status`], new
/// terms merged over the key's) and audits it: all of them, or none when one is unknown
/// ([`Missing::Keys`]).
pub(crate) async fn change_keys<T: Tx>(
    tx: &mut T,
    ids: &[KeyId],
    edit: &KeyEdit,
    actor: &Actor,
) -> Result<(), StoreError> {
    let found: HashMap<KeyId, _> = tx
        .keys_for_change(ids)
        .await?
        .into_iter()
        .map(|key| (key.id, key))
        .collect();
    let missing: Vec<KeyId> = ids
        .iter()
        .copied()
        .filter(|id| !found.contains_key(id))
        .collect();
    if !missing.is_empty() {
        return Err(StoreError::NotFound(Missing::Keys(missing)));
    }
    let mut detail = id_list(ids);
    for id in ids {
        let key = &found[id];
        let change = match edit {
            KeyEdit::Comment(comment) => KeyChange::Comment(comment),
            KeyEdit::Active(active) => KeyChange::Active {
                active: *active,
                status: claim::stored_status(key.kind, *active, key.usage_count),
            },
            KeyEdit::Patch(patch) => {
                if let Some(comment) = &patch.comment {
                    tx.change_key(key.id, KeyChange::Comment(comment)).await?;
                }
                detail = patch.describe();
                if !patch.changes_terms() {
                    continue;
                }
                let limits = claim::Limits {
                    not_before: patch.not_before.unwrap_or(key.limits.not_before),
                    expires_at: patch.expires_at.unwrap_or(key.limits.expires_at),
                    usage_limit: patch.usage_limit.unwrap_or(key.limits.usage_limit),
                };
                let folder = match &patch.folder {
                    Some(folder) => folder.as_ref(),
                    None => key.folder.as_ref(),
                };
                tx.change_key(key.id, KeyChange::Terms { limits, folder })
                    .await?;
                continue;
            }
            KeyEdit::Delete => KeyChange::Delete,
        };
        tx.change_key(key.id, change).await?;
    }
    let mut entry = AuditEntry::new(edit.event(), actor);
    entry.key_id = (ids.len() == 1).then(|| ids[0]);
    if !matches!(edit, KeyEdit::Comment(_)) {
        entry.detail = detail;
    }
    tx.audit(&entry).await
}

/// Inserts `count` keys made by `make` and audits them, in chunks of [`INSERT_CHUNK`]: a key
/// whose value another key has is made again or refused as [`claim::after_clash`] says (the
/// whole insertion then fails). The new numbers, in the order the keys were made; `progress` is
/// told after each chunk.
pub(crate) async fn insert_keys<T: Tx>(
    tx: &mut T,
    count: usize,
    make: &mut MakeKey,
    progress: &Progress,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<Vec<KeyId>, StoreError> {
    let mut ids = Vec::with_capacity(count);
    let mut start = 0;
    while start < count {
        let end = (start + INSERT_CHUNK).min(count);
        let mut chunk: Vec<Option<KeyId>> = vec![None; end - start];
        // The indexes still to insert, with how many values each has drawn so far.
        let mut pending: Vec<(usize, u32)> = (start..end).map(|index| (index, 1)).collect();
        while !pending.is_empty() {
            let keys: Vec<KeyInsert> = pending
                .iter()
                .map(|&(index, _)| {
                    let key = make(index);
                    let status = claim::stored_status(key.kind, true, 0);
                    KeyInsert { key, status }
                })
                .collect();
            let inserted = tx.insert_keys(&keys, now).await?;
            if inserted.len() != keys.len() {
                return Err(tx.corrupt(format!(
                    "{} keys inserted of {}",
                    inserted.len(),
                    keys.len()
                )));
            }
            let mut clashed = Vec::new();
            for ((&(index, draws), insert), id) in pending.iter().zip(&keys).zip(inserted) {
                match id {
                    Some(id) => chunk[index - start] = Some(id),
                    None => {
                        claim::after_clash(insert.key.generated, draws)
                            .map_err(|clash| StoreError::Conflict(clash.to_string()))?;
                        clashed.push((index, draws + 1));
                    }
                }
            }
            pending = clashed;
        }
        ids.extend(chunk.into_iter().flatten());
        progress(end as u64);
        start = end;
    }
    let mut entry = AuditEntry::new("keys.create", actor);
    entry.key_id = (ids.len() == 1).then(|| ids[0]);
    entry.detail = id_list(&ids);
    tx.audit(&entry).await?;
    Ok(ids)
}

/// Key numbers as an audit line's detail: all of them, or the first and last of a long list.
fn id_list(ids: &[KeyId]) -> String {
    match ids {
        [] => String::new(),
        [first, .., last] if ids.len() > 8 => format!("{} keys, IDs {first} to {last}", ids.len()),
        _ => format!(
            "IDs {}",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Applies [`crate::rights::leaves_no_admin`] for a backend: `before` is `name`'s rights and
/// `admins` the number of accounts with server:admin, both read inside the transaction that
/// changes `name` to `after` (`None`: deletes it), under a lock no other such change passes.
pub(crate) fn keep_an_admin(
    name: &str,
    before: &[Right],
    after: Option<&[Right]>,
    admins: u64,
) -> Result<(), StoreError> {
    use crate::rights::{self, CredentialError, Rights};
    let admins = usize::try_from(admins).unwrap_or(usize::MAX);
    if rights::leaves_no_admin(Rights::of(before), after.map(Rights::of), admins) {
        return Err(StoreError::Conflict(
            CredentialError::LastAdmin(name.to_owned()).to_string(),
        ));
    }
    Ok(())
}
