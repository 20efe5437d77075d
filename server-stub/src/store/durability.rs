//! Which writes must be on the disk before they are answered: the rule lives here, pure, and the
//! backends apply it (SQLite's writer syncs its WAL file after a batch holding a
//! [`Durability::Synced`] write, PostgreSQL commits the others with `synchronous_commit` off).

use super::rows::{AuditEntry, EnrollOutcome};

/// When a committed write must be on the disk: before it is answered, or with whatever write
/// syncs next. The rule of which writes may wait lives here; the backends apply it (SQLite's writer
/// syncs its WAL file after a batch holding a [`Durability::Synced`] write, PostgreSQL commits the
/// others with `synchronous_commit` off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On the disk before it is answered: it changed what a key or a device is, or it records
    /// something done (an export, a reveal).
    Synced,
    /// Only an audit line of a refusal, or of a retry answered from what is stored: a killed
    /// process keeps it, a power cut may lose it, and no key or device depends on it. It costs
    /// no fsync of its own.
    Deferred,
}

impl Durability {
    /// What a batch of writes needs: synced if any one of them does.
    pub fn of_all(each: impl IntoIterator<Item = Durability>) -> Durability {
        if each.into_iter().any(|one| one == Durability::Synced) {
            Durability::Synced
        } else {
            Durability::Deferred
        }
    }
}

impl EnrollOutcome {
    /// Only a new certificate (a key consumed, a device recorded) must be synced before the
    /// device hears of it; a refusal or a repeated answer changes nothing a device relies on.
    pub fn durability(&self) -> Durability {
        match self {
            EnrollOutcome::Issued {
                repeated: false, ..
            } => Durability::Synced,
            EnrollOutcome::Issued { repeated: true, .. }
            | EnrollOutcome::Refused(_)
            | EnrollOutcome::RefusedEach(_) => Durability::Deferred,
        }
    }
}

impl AuditEntry {
    /// A refusal's line (an outcome other than `ok`) may wait for the next sync; a line recording
    /// something done (an export, a reveal: audited before it is shown) may not.
    pub fn durability(&self) -> Durability {
        if self.outcome == "ok" {
            Durability::Synced
        } else {
            Durability::Deferred
        }
    }
}

#[cfg(test)]
mod tests {
    use onboard_protocol::{KeyKind, ProblemCode};
    use time::OffsetDateTime;

    use super::*;
    use crate::store::rows::{Actor, DeviceRecord};

    fn issued(repeated: bool) -> EnrollOutcome {
        let now = OffsetDateTime::UNIX_EPOCH;
        EnrollOutcome::Issued {
            device: Box::new(DeviceRecord {
                unit_id: "0A0000000001".parse().unwrap(),
                public_key: Vec::new(),
                certificate: Vec::new(),
                serial: String::new(),
                not_after: now,
                previous_serial: None,
                key_id: Some(1),
                key_kind: KeyKind::OneTime,
                enrolled_at: now,
                last_seen: now,
                inventory: None,
                online_server: None,
                folder: None,
            }),
            repeated,
            key: 0,
            refused: Vec::new(),
        }
    }

    #[test]
    fn only_a_new_certificate_must_be_synced_before_it_is_answered() {
        use Durability::{Deferred, Synced};
        let table = [
            (issued(false), Synced),
            (issued(true), Deferred),
            (EnrollOutcome::Refused(ProblemCode::KeyUsed), Deferred),
            (
                EnrollOutcome::Refused(ProblemCode::UnitIdConflict),
                Deferred,
            ),
            (
                EnrollOutcome::RefusedEach(vec![
                    (0, ProblemCode::KeyUsed),
                    (1, ProblemCode::KeyUnknown),
                ]),
                Deferred,
            ),
        ];
        for (outcome, durability) in table {
            assert_eq!(outcome.durability(), durability, "{outcome:?}");
        }
    }

    #[test]
    fn only_a_refusal_s_audit_line_may_wait_for_the_next_sync() {
        use Durability::{Deferred, Synced};
        let actor = Actor::cli();
        let with = |event: &str, outcome: &str| {
            let mut entry = AuditEntry::new(event, &actor);
            entry.outcome = outcome.to_owned();
            entry
        };
        let table = [
            (with("keys.export", "ok"), Synced),
            (with("keys.reveal", "ok"), Synced),
            (with("enroll", "key_unknown"), Deferred),
            (with("enroll", "rate_limited"), Deferred),
            (with("session.login", "unauthorized"), Deferred),
        ];
        for (entry, durability) in table {
            assert_eq!(entry.durability(), durability, "{entry:?}");
        }
    }

    #[test]
    fn a_batch_is_synced_when_any_of_its_writes_must_be() {
        use Durability::{Deferred, Synced};
        let table: [(&[Durability], Durability); 5] = [
            (&[], Deferred),
            (&[Deferred], Deferred),
            (&[Deferred, Deferred, Deferred], Deferred),
            (&[Synced], Synced),
            (&[Deferred, Synced, Deferred], Synced),
        ];
        for (each, all) in table {
            assert_eq!(Durability::of_all(each.iter().copied()), all, "{each:?}");
        }
    }
}
