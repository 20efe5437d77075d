//! The SQLite side of administrator accounts, API tokens and Web App sessions (migrations 0005,
//! 0008). Only hashes are stored: argon2id for passwords, SHA-256 for tokens and session cookies,
//! each row with its MAC ([`crate::row_mac`]). The last-admin rule is applied inside the write
//! transaction that changes or deletes an account, so two racing deletions cannot both pass it.

use onboard_protocol::admin::Right;
use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use super::{Inner, SqliteStore, audit_in, count};
use crate::cluster::MainUmsId;
use crate::store::apply::keep_an_admin;
use crate::store::error::{Missing, StoreError};
use crate::store::query::{self, ACCOUNT_COLUMNS, Dialect, IS_ADMIN, PageRequest, TOKEN_COLUMNS};
use crate::store::rows::{
    AccountChange, AccountRow, Actor, AuditEntry, RowMac, RowSealer, ServerBeat, ServerRow,
    SessionRow, TokenRow, UnsealedRows, rights_text,
};

fn time_at(inner: &Inner, seconds: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| inner.corrupt(format!("a time out of range ({seconds})")))
}

fn parse_rights(inner: &Inner, text: &str) -> Result<Vec<Right>, StoreError> {
    text.split(',')
        .map(|name| {
            name.parse()
                .map_err(|_| inner.corrupt(format!("an unknown right {name:?}")))
        })
        .collect()
}

/// The account and token rows without a MAC, read on `connection` (inside a write transaction
/// when they are to be sealed).
fn unsealed_in(
    inner: &Inner,
    connection: &rusqlite::Connection,
) -> Result<UnsealedRows, StoreError> {
    let accounts: Vec<RawAccount> = connection
        .prepare(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE mac IS NULL ORDER BY name"
        ))
        .and_then(|mut statement| statement.query_map([], raw_account)?.collect())
        .map_err(|e| inner.db(e))?;
    let tokens: Vec<RawToken> = connection
        .prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE mac IS NULL ORDER BY id"
        ))
        .and_then(|mut statement| statement.query_map([], raw_token)?.collect())
        .map_err(|e| inner.db(e))?;
    Ok(UnsealedRows {
        accounts: accounts
            .into_iter()
            .map(|raw| account_from(inner, raw))
            .collect::<Result<_, _>>()?,
        tokens: tokens
            .into_iter()
            .map(|raw| token_from(inner, raw))
            .collect::<Result<_, _>>()?,
    })
}

type RawAccount = (String, String, String, i64, i64, Option<Vec<u8>>);
type RawToken = (
    String,
    Vec<u8>,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<Vec<u8>>,
);

/// A stored MAC; the schema allows only 32 bytes or none.
fn mac_from(inner: &Inner, mac: Option<Vec<u8>>) -> Result<Option<RowMac>, StoreError> {
    mac.map(|mac| {
        mac.try_into()
            .map_err(|_| inner.corrupt("a row MAC that is not 32 bytes".to_owned()))
    })
    .transpose()
}

fn account_from(inner: &Inner, raw: RawAccount) -> Result<AccountRow, StoreError> {
    let (name, password_hash, rights, created_at, changed_at, mac) = raw;
    Ok(AccountRow {
        rights: parse_rights(inner, &rights)?,
        created_at: time_at(inner, created_at)?,
        changed_at: time_at(inner, changed_at)?,
        mac: mac_from(inner, mac)?,
        name,
        password_hash,
    })
}

fn token_from(inner: &Inner, raw: RawToken) -> Result<TokenRow, StoreError> {
    let (id, digest, account, name, rights, created_at, expires_at, mac) = raw;
    Ok(TokenRow {
        digest: digest
            .try_into()
            .map_err(|_| inner.corrupt(format!("token {id} with a malformed digest")))?,
        rights: parse_rights(inner, &rights)?,
        created_at: time_at(inner, created_at)?,
        expires_at: expires_at.map(|at| time_at(inner, at)).transpose()?,
        mac: mac_from(inner, mac)?,
        id,
        account,
        name,
    })
}

fn raw_account(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawAccount> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn raw_token(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawToken> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

/// Applies the last-admin rule to a change of `name` to `after` (`None`: its deletion), reading
/// inside the write transaction `tx` (IMMEDIATE: no other writer runs until it ends).
fn guard_last_admin(
    inner: &Inner,
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    after: Option<&[Right]>,
) -> Result<(), StoreError> {
    let before: Option<String> = tx
        .query_row(
            "SELECT rights FROM accounts WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| inner.db(e))?;
    let Some(before) = before else {
        return Err(StoreError::NotFound(Missing::Account(name.to_owned())));
    };
    let admins: i64 = tx
        .query_row(
            &format!("SELECT count(*) FROM accounts WHERE {IS_ADMIN}"),
            [],
            |row| row.get(0),
        )
        .map_err(|e| inner.db(e))?;
    keep_an_admin(name, &parse_rights(inner, &before)?, after, count(admins))
}

impl SqliteStore {
    pub(super) async fn insert_account(
        &self,
        account: &AccountRow,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let (account, actor) = (account.clone(), actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                let inserted = tx
                    .execute(
                        &format!(
                            "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (name) DO NOTHING"
                        ),
                        params![
                            account.name,
                            account.password_hash,
                            rights_text(&account.rights),
                            account.created_at.unix_timestamp(),
                            account.changed_at.unix_timestamp(),
                            account.mac.as_ref().map(|mac| &mac[..]),
                        ],
                    )
                    .map_err(|e| inner.db(e))?;
                if inserted == 0 {
                    return Err(StoreError::Conflict(format!(
                        "an account named {:?} exists",
                        account.name
                    )));
                }
                audit_in(tx, &account.created_entry(&actor)).map_err(|e| inner.db(e))?;
                Ok(())
            })
        })
        .await
    }

    pub(super) async fn select_accounts(
        &self,
        page: &PageRequest<String>,
    ) -> Result<Vec<AccountRow>, StoreError> {
        let raw = self
            .select(query::accounts_page(Dialect::Sqlite, page), raw_account)
            .await?;
        raw.into_iter()
            .map(|raw| account_from(&self.inner, raw))
            .collect()
    }

    pub(super) async fn count_account_rows(&self) -> Result<u64, StoreError> {
        self.count_of(query::count_all(Dialect::Sqlite, "accounts"))
            .await
    }

    pub(super) async fn select_account(
        &self,
        name: &str,
    ) -> Result<Option<AccountRow>, StoreError> {
        let name = name.to_owned();
        self.call(move |inner| {
            let raw = inner
                .lock()
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"
                ))
                .map_err(|e| inner.db(e))?
                .query_row([&name], raw_account)
                .optional()
                .map_err(|e| inner.db(e))?;
            raw.map(|raw| account_from(inner, raw)).transpose()
        })
        .await
    }

    pub(super) async fn change_account(
        &self,
        name: &str,
        change: AccountChange,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let (name, actor) = (name.to_owned(), actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                if change.rights.is_some() {
                    guard_last_admin(inner, tx, &name, change.rights.as_deref())?;
                }
                let changed = tx
                    .execute(
                        "UPDATE accounts SET rights = coalesce(?2, rights),
                         password_hash = coalesce(?3, password_hash), changed_at = ?4, mac = ?5
                     WHERE name = ?1 AND mac IS ?6",
                        params![
                            name,
                            change.rights.as_deref().map(rights_text),
                            change.password_hash,
                            inner.now(),
                            &change.mac[..],
                            change.previous.as_ref().map(|mac| &mac[..]),
                        ],
                    )
                    .map_err(|e| inner.db(e))?;
                if changed == 0 {
                    let exists: bool = tx
                        .query_row(
                            "SELECT EXISTS (SELECT 1 FROM accounts WHERE name = ?1)",
                            [&name],
                            |row| row.get(0),
                        )
                        .map_err(|e| inner.db(e))?;
                    return Err(if exists {
                        StoreError::Conflict(format!(
                            "the account {name} changed meanwhile; read it again and retry"
                        ))
                    } else {
                        StoreError::NotFound(Missing::Account(name))
                    });
                }
                let ended = tx
                    .execute("DELETE FROM sessions WHERE account = ?1", [&name])
                    .map_err(|e| inner.db(e))?;
                // Whoever knew the old password may have made tokens with it.
                let revoked = if change.password_hash.is_some() {
                    tx.execute("DELETE FROM tokens WHERE account = ?1", [&name])
                        .map_err(|e| inner.db(e))?
                } else {
                    0
                };
                let entry = change.audit_entry(&name, ended as u64, revoked as u64, &actor);
                audit_in(tx, &entry).map_err(|e| inner.db(e))?;
                Ok(())
            })
        })
        .await
    }

    pub(super) async fn remove_account(&self, name: &str, actor: &Actor) -> Result<(), StoreError> {
        let (name, actor) = (name.to_owned(), actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                guard_last_admin(inner, tx, &name, None)?;
                // Tokens and sessions go with it (ON DELETE CASCADE).
                let changed = tx
                    .execute("DELETE FROM accounts WHERE name = ?1", [&name])
                    .map_err(|e| inner.db(e))?;
                if changed == 0 {
                    return Err(StoreError::NotFound(Missing::Account(name)));
                }
                audit_in(tx, &AccountRow::deleted_entry(&name, &actor)).map_err(|e| inner.db(e))?;
                Ok(())
            })
        })
        .await
    }

    pub(super) async fn insert_token(
        &self,
        token: &TokenRow,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let (token, actor) = (token.clone(), actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                let exists: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM accounts WHERE name = ?1)",
                        [&token.account],
                        |row| row.get(0),
                    )
                    .map_err(|e| inner.db(e))?;
                if !exists {
                    return Err(StoreError::NotFound(Missing::Account(token.account)));
                }
                tx.execute(
                    &format!(
                        "INSERT INTO tokens ({TOKEN_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                    ),
                    params![
                        token.id,
                        &token.digest[..],
                        token.account,
                        token.name,
                        rights_text(&token.rights),
                        token.created_at.unix_timestamp(),
                        token.expires_at.map(OffsetDateTime::unix_timestamp),
                        token.mac.as_ref().map(|mac| &mac[..]),
                    ],
                )
                .map_err(|e| inner.db(e))?;
                audit_in(tx, &token.created_entry(&actor)).map_err(|e| inner.db(e))?;
                Ok(())
            })
        })
        .await
    }

    pub(super) async fn select_tokens(
        &self,
        account: Option<&str>,
        page: &PageRequest<String>,
    ) -> Result<Vec<TokenRow>, StoreError> {
        let raw = self
            .select(
                query::tokens_page(Dialect::Sqlite, account, page),
                raw_token,
            )
            .await?;
        raw.into_iter()
            .map(|raw| token_from(&self.inner, raw))
            .collect()
    }

    pub(super) async fn select_token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        let id = id.to_owned();
        self.call(move |inner| {
            let raw = inner
                .lock()
                .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"))
                .map_err(|e| inner.db(e))?
                .query_row([&id], raw_token)
                .optional()
                .map_err(|e| inner.db(e))?;
            raw.map(|raw| token_from(inner, raw)).transpose()
        })
        .await
    }

    pub(super) async fn delete_token(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        let (id, actor) = (id.to_owned(), actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                let account: Option<String> = tx
                    .query_row(
                        "DELETE FROM tokens WHERE id = ?1 RETURNING account",
                        [&id],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(|e| inner.db(e))?;
                let Some(account) = account else {
                    return Err(StoreError::NotFound(Missing::Token(id)));
                };
                audit_in(tx, &TokenRow::revoked_entry(&id, &account, &actor))
                    .map_err(|e| inner.db(e))?;
                Ok(())
            })
        })
        .await
    }

    pub(super) async fn insert_session(
        &self,
        session: &SessionRow,
        verified: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let (session, verified, actor) = (session.clone(), verified.to_owned(), actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                // Only while the account still has the password the login was checked against.
                let inserted = tx
                    .execute(
                        "INSERT INTO sessions (digest, account, created_at, expires_at, mac)
                     SELECT ?1, name, ?3, ?4, ?6 FROM accounts WHERE name = ?2 AND password_hash = ?5",
                        params![
                            &session.digest[..],
                            session.account,
                            session.created_at.unix_timestamp(),
                            session.expires_at.unix_timestamp(),
                            verified,
                            session.mac.as_ref().map(|mac| &mac[..]),
                        ],
                    )
                    .map_err(|e| inner.db(e))?;
                if inserted == 0 {
                    return Err(StoreError::NotFound(Missing::Account(session.account)));
                }
                audit_in(tx, &AuditEntry::new("session.login", &actor)).map_err(|e| inner.db(e))?;
                Ok(())
            })
        })
        .await
    }

    pub(super) async fn select_session(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<SessionRow>, StoreError> {
        let digest = *digest;
        self.call(move |inner| {
            type RawSession = (String, i64, i64, Option<Vec<u8>>);
            let raw: Option<RawSession> = inner
                .lock()
                .prepare_cached(
                    "SELECT account, created_at, expires_at, mac FROM sessions WHERE digest = ?1",
                )
                .map_err(|e| inner.db(e))?
                .query_row([&digest[..]], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()
                .map_err(|e| inner.db(e))?;
            raw.map(|(account, created_at, expires_at, mac)| {
                Ok(SessionRow {
                    digest,
                    account,
                    created_at: time_at(inner, created_at)?,
                    expires_at: time_at(inner, expires_at)?,
                    mac: mac_from(inner, mac)?,
                })
            })
            .transpose()
        })
        .await
    }

    pub(super) async fn delete_session(
        &self,
        digest: &[u8; 32],
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let (digest, actor) = (*digest, actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                let ended = tx
                    .execute("DELETE FROM sessions WHERE digest = ?1", [&digest[..]])
                    .map_err(|e| inner.db(e))?;
                if ended > 0 {
                    audit_in(tx, &AuditEntry::new("session.logout", &actor))
                        .map_err(|e| inner.db(e))?;
                }
                Ok(())
            })
        })
        .await
    }

    pub(super) async fn delete_ended_sessions(
        &self,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.call(move |inner| {
            let deleted = inner
                .lock()
                .execute(
                    "DELETE FROM sessions WHERE expires_at <= ?1",
                    [now.unix_timestamp()],
                )
                .map_err(|e| inner.db(e))?;
            Ok(deleted as u64)
        })
        .await
    }

    pub(super) async fn unsealed_rows(&self) -> Result<UnsealedRows, StoreError> {
        self.call(move |inner| unsealed_in(inner, &inner.lock()))
            .await
    }

    pub(super) async fn seal_rows(
        &self,
        key: std::sync::Arc<dyn RowSealer>,
        why: &str,
        actor: &Actor,
    ) -> Result<UnsealedRows, StoreError> {
        let (why, actor) = (why.to_owned(), actor.clone());
        self.call(move |inner| {
            inner.write(|tx| {
                let unsealed = unsealed_in(inner, tx)?;
                if unsealed.is_empty() {
                    return Ok(unsealed);
                }
                let (accounts, tokens) = key.macs(&unsealed);
                for (name, mac) in accounts {
                    tx.execute(
                        "UPDATE accounts SET mac = ?2 WHERE name = ?1",
                        params![name, &mac[..]],
                    )
                    .map_err(|e| inner.db(e))?;
                }
                for (id, mac) in tokens {
                    tx.execute(
                        "UPDATE tokens SET mac = ?2 WHERE id = ?1",
                        params![id, &mac[..]],
                    )
                    .map_err(|e| inner.db(e))?;
                }
                audit_in(tx, &unsealed.audit_entry(&why, &actor)).map_err(|e| inner.db(e))?;
                Ok(unsealed)
            })
        })
        .await
    }

    pub(super) async fn select_main_ums_id(&self) -> Result<Option<MainUmsId>, StoreError> {
        self.call(|inner| {
            let row: Option<(String, String, Vec<u8>)> = inner
                .lock()
                .query_row(
                    "SELECT fingerprint, certificate_pem, sealed FROM main_ums_id",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(|e| inner.db(e))?;
            row.map(|(fingerprint, certificate_pem, sealed)| {
                Ok(MainUmsId {
                    fingerprint: fingerprint.parse().map_err(|_| {
                        inner.corrupt("a Main UMS ID with a malformed fingerprint".to_owned())
                    })?,
                    certificate_pem,
                    sealed,
                })
            })
            .transpose()
        })
        .await
    }

    /// Offers (`actor` none: kept if one exists) or replaces (audited as `actor`) the Main UMS ID.
    pub(super) async fn put_main_ums_id(
        &self,
        main: &MainUmsId,
        actor: Option<&Actor>,
    ) -> Result<(), StoreError> {
        let (main, actor) = (main.clone(), actor.cloned());
        self.call(move |inner| {
            inner.write(|tx| {
                let conflict = if actor.is_some() {
                    "DO UPDATE SET fingerprint = excluded.fingerprint,
                   certificate_pem = excluded.certificate_pem, sealed = excluded.sealed"
                } else {
                    "DO NOTHING"
                };
                tx.execute(
                    &format!(
                        "INSERT INTO main_ums_id (one, fingerprint, certificate_pem, sealed)
                     VALUES (1, ?1, ?2, ?3) ON CONFLICT (one) {conflict}"
                    ),
                    params![
                        main.fingerprint.to_string(),
                        main.certificate_pem,
                        main.sealed
                    ],
                )
                .map_err(|e| inner.db(e))?;
                if let Some(actor) = &actor {
                    let mut entry = AuditEntry::new("ums-id.restore", actor);
                    entry.detail = format!("Main UMS ID {}", main.fingerprint.short());
                    audit_in(tx, &entry).map_err(|e| inner.db(e))?;
                }
                Ok(())
            })
        })
        .await
    }

    pub(super) async fn put_heartbeat(&self, beat: &ServerBeat) -> Result<(), StoreError> {
        let beat = beat.clone();
        self.call(move |inner| {
            inner
                .lock()
                .execute(
                    "INSERT INTO servers (name, fingerprint, status, heartbeat_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint,
                       status = excluded.status, heartbeat_at = excluded.heartbeat_at",
                    params![
                        beat.name,
                        beat.fingerprint.to_string(),
                        beat.status.label(),
                        inner.now()
                    ],
                )
                .map(drop)
                .map_err(|e| inner.db(e))
        })
        .await
    }

    pub(super) async fn select_servers(
        &self,
        within: std::time::Duration,
    ) -> Result<Vec<ServerRow>, StoreError> {
        let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX / 2);
        self.call(move |inner| {
            let since = inner.now() - within;
            let connection = inner.lock();
            let mut statement = connection
                .prepare_cached(
                    "SELECT name, fingerprint, status, heartbeat_at >= ?1 FROM servers ORDER BY name",
                )
                .map_err(|e| inner.db(e))?;
            let rows: Vec<(String, String, String, bool)> = statement
                .query_map([since], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(|e| inner.db(e))?
                .collect::<Result<_, _>>()
                .map_err(|e| inner.db(e))?;
            rows.into_iter()
                .map(|(name, fingerprint, status, running)| {
                    Ok(ServerRow {
                        beat: ServerBeat {
                            name,
                            fingerprint: fingerprint.parse().map_err(|_| {
                                inner.corrupt("a server row with a malformed fingerprint".to_owned())
                            })?,
                            status: crate::cluster::SyncStatus::from_label(&status).ok_or_else(
                                || inner.corrupt(format!("a server row with status {status:?}")),
                            )?,
                        },
                        running,
                    })
                })
                .collect()
        })
        .await
    }
}
