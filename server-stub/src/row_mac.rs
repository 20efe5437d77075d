//! Authentication of the account, token and session rows: "the database is not the admin".
//!
//! Each row carries an HMAC-SHA256 over the fields that grant something (an account's name,
//! password hash and rights; a token's ID, digest, account, rights and expiry; a session's digest,
//! account and expiry) under a key derived with HKDF-SHA256 from the private key of the UMS ID the
//! database is bound to. On PostgreSQL that is the Main UMS ID, which only the cluster secret
//! opens; on SQLite it is the server's own UMS ID, whose key already seals the key values
//! ([`crate::vault`]). Whoever can write the database but holds neither makes no row that grants
//! anything, and a server not in sync, holding only its Local UMS ID, verifies none.
//!
//! A MAC cannot tell an old row from a new one: a row put back from an older copy of the same
//! database (a rollback) passes. Deleting rows needs no key at all.

use aws_lc_rs::{hkdf, hmac};
use onboard_protocol::admin::Right;

use crate::rights::Rights;
use crate::store::rows::{
    AccountRow, KeyedMac, RowMac, RowSealer, SessionRow, TokenRow, UnsealedRows,
};

const SALT: &[u8] = b"ums-stub admin rows v1";

/// The key account, token and session rows are authenticated under.
pub struct RowKey {
    key: hmac::Key,
}

impl std::fmt::Debug for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowKey(..)")
    }
}

/// The fields of one row, each length-prefixed so that no two rows encode alike.
struct Fields(Vec<u8>);

impl Fields {
    fn new(kind: &str) -> Self {
        let mut fields = Fields(Vec::new());
        fields.push(kind.as_bytes());
        fields
    }

    fn push(&mut self, field: &[u8]) -> &mut Self {
        self.0
            .extend_from_slice(&(field.len() as u64).to_be_bytes());
        self.0.extend_from_slice(field);
        self
    }

    /// Rights as a set: the order they are stored in does not matter.
    fn rights(&mut self, rights: &[Right]) -> &mut Self {
        let names: Vec<&str> = Rights::of(rights)
            .to_vec()
            .into_iter()
            .map(Right::as_str)
            .collect();
        self.push(names.join(",").as_bytes())
    }

    fn time(&mut self, at: Option<time::OffsetDateTime>) -> &mut Self {
        match at {
            Some(at) => self.push(&at.unix_timestamp().to_be_bytes()),
            None => self.push(b"never"),
        }
    }
}

impl RowKey {
    /// Derives the key from secret material (the private key of the UMS ID in use).
    pub fn derive(secret: &[u8]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
        let okm = prk
            .expand(&[b"admin row mac"], hmac::HMAC_SHA256)
            .expect("HKDF length");
        Self {
            key: hmac::Key::from(okm),
        }
    }

    fn sign(&self, fields: &Fields) -> RowMac {
        let tag = hmac::sign(&self.key, &fields.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn verify(&self, fields: &Fields, mac: Option<&RowMac>) -> bool {
        mac.is_some_and(|mac| hmac::verify(&self.key, &fields.0, mac).is_ok())
    }

    fn account_fields(name: &str, password_hash: &str, rights: &[Right]) -> Fields {
        let mut fields = Fields::new("account");
        fields
            .push(name.as_bytes())
            .push(password_hash.as_bytes())
            .rights(rights);
        fields
    }

    fn token_fields(token: &TokenRow) -> Fields {
        let mut fields = Fields::new("token");
        fields
            .push(token.id.as_bytes())
            .push(&token.digest)
            .push(token.account.as_bytes())
            .rights(&token.rights)
            .time(token.expires_at);
        fields
    }

    fn session_fields(session: &SessionRow) -> Fields {
        let mut fields = Fields::new("session");
        fields
            .push(&session.digest)
            .push(session.account.as_bytes())
            .time(Some(session.expires_at));
        fields
    }

    /// The MAC of an account with these fields.
    pub fn account(&self, name: &str, password_hash: &str, rights: &[Right]) -> RowMac {
        self.sign(&Self::account_fields(name, password_hash, rights))
    }

    /// The MAC of a token row.
    pub fn token(&self, token: &TokenRow) -> RowMac {
        self.sign(&Self::token_fields(token))
    }

    /// The MAC of a session row.
    pub fn session(&self, session: &SessionRow) -> RowMac {
        self.sign(&Self::session_fields(session))
    }

    /// The MACs to give `rows` under this key: accounts by name, tokens by ID.
    fn rows_macs(&self, rows: &UnsealedRows) -> (Vec<KeyedMac>, Vec<KeyedMac>) {
        let accounts = rows
            .accounts
            .iter()
            .map(|row| {
                let mac = self.account(&row.name, &row.password_hash, &row.rights);
                (row.name.clone(), mac)
            })
            .collect();
        let tokens = rows
            .tokens
            .iter()
            .map(|row| (row.id.clone(), self.token(row)))
            .collect();
        (accounts, tokens)
    }

    /// Whether an account row is one a holder of this key wrote.
    pub fn account_ok(&self, row: &AccountRow) -> bool {
        let fields = Self::account_fields(&row.name, &row.password_hash, &row.rights);
        self.verify(&fields, row.mac.as_ref())
    }

    /// Whether a token row is one a holder of this key wrote.
    pub fn token_ok(&self, row: &TokenRow) -> bool {
        self.verify(&Self::token_fields(row), row.mac.as_ref())
    }

    /// Whether a session row is one a holder of this key wrote.
    pub fn session_ok(&self, row: &SessionRow) -> bool {
        self.verify(&Self::session_fields(row), row.mac.as_ref())
    }
}

/// What a server does at start with account and token rows that carry no MAC (written before
/// row MACs existed, or by hand since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// Seal them: this very open of the store applied the migration that added row MACs, so
    /// every row without one is from before it.
    Seal,
    /// Leave them: they grant nothing until an administrator on the server machine seals them
    /// (`ums-stub admins seal`).
    Leave,
}

/// The sealing rule (pure). Rows are sealed automatically only by the store open that applied
/// the row-MAC migration itself (`migrated_now`, known to this process, not read from the
/// database) and only with the key at hand (`key_available`: the server is in sync). Nothing the
/// database holds (a mark, which rows carry MACs) takes part: all of it is forgeable by whoever
/// can write the database, who could otherwise strip the MACs, change a row and have the next
/// start sign it.
pub fn sealing(migrated_now: bool, key_available: bool) -> Sealing {
    if migrated_now && key_available {
        Sealing::Seal
    } else {
        Sealing::Leave
    }
}

/// One computation for both backends, which write the MACs in the transaction that read the rows.
impl RowSealer for RowKey {
    fn macs(&self, rows: &UnsealedRows) -> (Vec<KeyedMac>, Vec<KeyedMac>) {
        self.rows_macs(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn account() -> AccountRow {
        let now = datetime!(2026-12-01 12:00 UTC);
        AccountRow {
            name: "jane".into(),
            password_hash: "$argon2id$one".into(),
            rights: vec![Right::KeysRead, Right::AuditRead],
            created_at: now,
            changed_at: now,
            mac: None,
        }
    }

    #[test]
    fn a_row_verifies_only_as_written_and_only_under_its_key() {
        let key = RowKey::derive(b"ums id one");
        let mut row = account();
        assert!(!key.account_ok(&row), "no MAC, no grant");
        row.mac = Some(key.account(&row.name, &row.password_hash, &row.rights));
        assert!(key.account_ok(&row));
        // The order rights are stored in does not matter.
        let mut reordered = row.clone();
        reordered.rights.reverse();
        assert!(key.account_ok(&reordered));
        let changes: [fn(&mut AccountRow); 4] = [
            |row| row.rights.push(Right::ServerAdmin),
            |row| row.password_hash.push('x'),
            |row| row.name = "jan".into(),
            |row| row.mac.as_mut().unwrap()[0] ^= 1,
        ];
        for change in changes {
            let mut changed = row.clone();
            change(&mut changed);
            assert!(!key.account_ok(&changed), "{changed:?}");
        }
        assert!(!RowKey::derive(b"ums id two").account_ok(&row));
    }

    #[test]
    fn token_and_session_rows_bind_every_field_that_grants() {
        let key = RowKey::derive(b"ums id one");
        let at = datetime!(2026-12-01 12:00 UTC);
        let mut token = TokenRow {
            id: "0123456789ab".into(),
            digest: [7; 32],
            account: "jane".into(),
            name: "rig".into(),
            rights: vec![Right::KeysRead],
            created_at: at,
            expires_at: Some(at),
            mac: None,
        };
        token.mac = Some(key.token(&token));
        assert!(key.token_ok(&token));
        let changes: [fn(&mut TokenRow); 5] = [
            |row| row.id = "0123456789ac".into(),
            |row| row.digest[0] = 8,
            |row| row.account = "root".into(),
            |row| row.rights = vec![Right::KeysRead, Right::KeysReveal],
            |row| row.expires_at = None,
        ];
        for change in changes {
            let mut changed = token.clone();
            change(&mut changed);
            assert!(!key.token_ok(&changed), "{changed:?}");
        }
        let mut session = SessionRow {
            digest: [9; 32],
            account: "jane".into(),
            created_at: at,
            expires_at: at,
            mac: None,
        };
        assert!(!key.session_ok(&session));
        session.mac = Some(key.session(&session));
        assert!(key.session_ok(&session));
        let mut longer = session.clone();
        longer.expires_at += time::Duration::DAY;
        assert!(!key.session_ok(&longer));
        let mut other = session.clone();
        other.account = "root".into();
        assert!(!key.session_ok(&other));
    }

    #[test]
    fn rows_without_a_mac_are_sealed_only_by_the_migrating_open_holding_the_key() {
        let table = [
            // migrated in this open, key available => what
            (true, true, Sealing::Seal),
            // Not in sync: the key is missing; an administrator seals later.
            (true, false, Sealing::Leave),
            // Any later start: rows without a MAC were stripped or written by hand.
            (false, true, Sealing::Leave),
            (false, false, Sealing::Leave),
        ];
        for (migrated_now, key_available, expected) in table {
            assert_eq!(
                sealing(migrated_now, key_available),
                expected,
                "{migrated_now} {key_available}"
            );
        }
    }
}
