//! The PostgreSQL side of administrator accounts, API tokens, Web App sessions, the Main UMS ID
//! and the servers' heartbeats. Only hashes are stored, each row with its MAC
//! ([`crate::row_mac`]). The last-admin rule is applied inside the transaction that changes or
//! deletes an account, under an advisory lock every such change takes first.

use std::sync::Arc;

use onboard_protocol::admin::Right;
use time::OffsetDateTime;
use tokio_postgres::Row;

use super::{PostgresStore, audit_in};
use crate::cluster::MainUmsId;
use crate::store::apply::keep_an_admin;
use crate::store::error::{Missing, StoreError};
use crate::store::query::{self, ACCOUNT_COLUMNS, Dialect, IS_ADMIN, PageRequest, TOKEN_COLUMNS};
use crate::store::rows::{
    AccountChange, AccountRow, Actor, AuditEntry, RowMac, RowSealer, ServerBeat, ServerRow,
    SessionRow, TokenRow, UnsealedRows, rights_text,
};

/// The advisory lock every account change and deletion takes first, so that the last-admin rule
/// reads and acts without another such change in between.
const ACCOUNTS_LOCK: i64 = 0x756d_735f_6163_6374; // "ums_acct"

impl PostgresStore {
    /// The account and token rows without a MAC, read through `client` (`lock`: a locking
    /// clause, inside the transaction that seals them).
    async fn unsealed_in(
        &self,
        client: &deadpool_postgres::Transaction<'_>,
        lock: &str,
    ) -> Result<UnsealedRows, StoreError> {
        let accounts = client
            .query(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE mac IS NULL ORDER BY name{lock}"
                ),
                &[],
            )
            .await
            .map_err(|e| self.db(e))?;
        let tokens = client
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE mac IS NULL ORDER BY id{lock}"),
                &[],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(UnsealedRows {
            accounts: accounts
                .iter()
                .map(|row| self.account_from_row(row))
                .collect::<Result<_, _>>()?,
            tokens: tokens
                .iter()
                .map(|row| self.token_from_row(row))
                .collect::<Result<_, _>>()?,
        })
    }

    fn main_from_row(&self, row: &Row) -> Result<MainUmsId, StoreError> {
        Ok(MainUmsId {
            fingerprint: row.get::<_, String>(0).parse().map_err(|_| {
                self.corrupt("a Main UMS ID with a malformed fingerprint".to_owned())
            })?,
            certificate_pem: row.get(1),
            sealed: row.get(2),
        })
    }

    fn parse_rights(&self, text: &str) -> Result<Vec<Right>, StoreError> {
        text.split(',')
            .map(|name| {
                name.parse()
                    .map_err(|_| self.corrupt(format!("an unknown right {name:?}")))
            })
            .collect()
    }

    /// A stored MAC; the schema allows only 32 bytes or none.
    fn mac(&self, mac: Option<Vec<u8>>) -> Result<Option<RowMac>, StoreError> {
        mac.map(|mac| {
            mac.try_into()
                .map_err(|_| self.corrupt("a row MAC that is not 32 bytes".to_owned()))
        })
        .transpose()
    }

    fn account_from_row(&self, row: &Row) -> Result<AccountRow, StoreError> {
        Ok(AccountRow {
            name: row.get(0),
            password_hash: row.get(1),
            rights: self.parse_rights(row.get(2))?,
            created_at: self.time(row.get(3))?,
            changed_at: self.time(row.get(4))?,
            mac: self.mac(row.get(5))?,
        })
    }

    /// Applies the last-admin rule to a change of `name` to `after` (`None`: its deletion), in
    /// `tx`, which holds [`ACCOUNTS_LOCK`].
    async fn guard_last_admin(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        name: &str,
        after: Option<&[Right]>,
    ) -> Result<(), StoreError> {
        let before = tx
            .query_opt("SELECT rights FROM accounts WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.db(e))?
            .ok_or_else(|| StoreError::NotFound(Missing::Account(name.to_owned())))?;
        let admins: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM accounts WHERE {IS_ADMIN}"),
                &[],
            )
            .await
            .map_err(|e| self.db(e))?
            .get(0);
        keep_an_admin(
            name,
            &self.parse_rights(before.get(0))?,
            after,
            u64::try_from(admins).unwrap_or(0),
        )
    }

    fn token_from_row(&self, row: &Row) -> Result<TokenRow, StoreError> {
        let id: String = row.get(0);
        Ok(TokenRow {
            digest: row
                .get::<_, Vec<u8>>(1)
                .try_into()
                .map_err(|_| self.corrupt(format!("token {id} with a malformed digest")))?,
            account: row.get(2),
            name: row.get(3),
            rights: self.parse_rights(row.get(4))?,
            created_at: self.time(row.get(5))?,
            expires_at: row
                .get::<_, Option<i64>>(6)
                .map(|at| self.time(at))
                .transpose()?,
            mac: self.mac(row.get(7))?,
            id,
        })
    }

    pub(super) async fn insert_account(
        &self,
        account: &AccountRow,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (name) DO NOTHING"
                ),
                &[
                    &account.name,
                    &account.password_hash,
                    &rights_text(&account.rights),
                    &account.created_at.unix_timestamp(),
                    &account.changed_at.unix_timestamp(),
                    &account.mac.map(|mac| mac.to_vec()),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "an account named {:?} exists",
                account.name
            )));
        }
        audit_in(&tx, &account.created_entry(actor))
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    pub(super) async fn select_accounts(
        &self,
        page: &PageRequest<String>,
    ) -> Result<Vec<AccountRow>, StoreError> {
        let rows = self
            .select(query::accounts_page(Dialect::Postgres, page))
            .await?;
        rows.iter().map(|row| self.account_from_row(row)).collect()
    }

    pub(super) async fn count_account_rows(&self) -> Result<u64, StoreError> {
        self.count_of(query::count_all(Dialect::Postgres, "accounts"))
            .await
    }

    pub(super) async fn select_account(
        &self,
        name: &str,
    ) -> Result<Option<AccountRow>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"),
                &vec![Box::new(name.to_owned())],
            )
            .await?;
        rows.first()
            .map(|row| self.account_from_row(row))
            .transpose()
    }

    pub(super) async fn change_account(
        &self,
        name: &str,
        change: AccountChange,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])
            .await
            .map_err(|e| self.db(e))?;
        if change.rights.is_some() {
            self.guard_last_admin(&tx, name, change.rights.as_deref())
                .await?;
        }
        let rights = change.rights.as_deref().map(rights_text);
        let changed = tx
            .execute(
                "UPDATE accounts SET rights = coalesce($2, rights),
                     password_hash = coalesce($3, password_hash), changed_at = $4, mac = $5
                 WHERE name = $1 AND mac IS NOT DISTINCT FROM $6",
                &[
                    &name,
                    &rights,
                    &change.password_hash,
                    &self.now(),
                    &change.mac.to_vec(),
                    &change.previous.map(|mac| mac.to_vec()),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        if changed == 0 {
            let exists = tx
                .query_opt("SELECT 1 FROM accounts WHERE name = $1", &[&name])
                .await
                .map_err(|e| self.db(e))?
                .is_some();
            return Err(if exists {
                StoreError::Conflict(format!(
                    "the account {name} changed meanwhile; read it again and retry"
                ))
            } else {
                StoreError::NotFound(Missing::Account(name.to_owned()))
            });
        }
        let ended = tx
            .execute("DELETE FROM sessions WHERE account = $1", &[&name])
            .await
            .map_err(|e| self.db(e))?;
        // Whoever knew the old password may have made tokens with it.
        let revoked = if change.password_hash.is_some() {
            tx.execute("DELETE FROM tokens WHERE account = $1", &[&name])
                .await
                .map_err(|e| self.db(e))?
        } else {
            0
        };
        let entry = change.audit_entry(name, ended, revoked, actor);
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    pub(super) async fn remove_account(&self, name: &str, actor: &Actor) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])
            .await
            .map_err(|e| self.db(e))?;
        self.guard_last_admin(&tx, name, None).await?;
        let changed = tx
            .execute("DELETE FROM accounts WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.db(e))?;
        if changed == 0 {
            return Err(StoreError::NotFound(Missing::Account(name.to_owned())));
        }
        audit_in(&tx, &AccountRow::deleted_entry(name, actor))
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    pub(super) async fn unsealed_rows(&self) -> Result<UnsealedRows, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        self.unsealed_in(&tx, "").await
    }

    pub(super) async fn seal_rows(
        &self,
        key: Arc<dyn RowSealer>,
        why: &str,
        actor: &Actor,
    ) -> Result<UnsealedRows, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])
            .await
            .map_err(|e| self.db(e))?;
        let unsealed = self.unsealed_in(&tx, " FOR UPDATE").await?;
        if unsealed.is_empty() {
            return Ok(unsealed);
        }
        let (accounts, tokens) = key.macs(&unsealed);
        for (name, mac) in accounts {
            tx.execute(
                "UPDATE accounts SET mac = $2 WHERE name = $1",
                &[&name, &mac.to_vec()],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        for (id, mac) in tokens {
            tx.execute(
                "UPDATE tokens SET mac = $2 WHERE id = $1",
                &[&id, &mac.to_vec()],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        audit_in(&tx, &unsealed.audit_entry(why, actor))
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(unsealed)
    }

    pub(super) async fn insert_token(
        &self,
        token: &TokenRow,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        // The account row, locked, so a deletion cannot slip in between.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM accounts WHERE name = $1 FOR UPDATE",
                &[&token.account],
            )
            .await
            .map_err(|e| self.db(e))?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound(Missing::Account(
                token.account.clone(),
            )));
        }
        tx.execute(
            &format!(
                "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &token.id,
                &token.digest.to_vec(),
                &token.account,
                &token.name,
                &rights_text(&token.rights),
                &token.created_at.unix_timestamp(),
                &token.expires_at.map(OffsetDateTime::unix_timestamp),
                &token.mac.map(|mac| mac.to_vec()),
            ],
        )
        .await
        .map_err(|e| self.db(e))?;
        audit_in(&tx, &token.created_entry(actor))
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    pub(super) async fn select_tokens(
        &self,
        account: Option<&str>,
        page: &PageRequest<String>,
    ) -> Result<Vec<TokenRow>, StoreError> {
        let rows = self
            .select(query::tokens_page(Dialect::Postgres, account, page))
            .await?;
        rows.iter().map(|row| self.token_from_row(row)).collect()
    }

    pub(super) async fn select_token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
                &vec![Box::new(id.to_owned())],
            )
            .await?;
        rows.first().map(|row| self.token_from_row(row)).transpose()
    }

    pub(super) async fn delete_token(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let row = tx
            .query_opt("DELETE FROM tokens WHERE id = $1 RETURNING account", &[&id])
            .await
            .map_err(|e| self.db(e))?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(Missing::Token(id.to_owned())));
        };
        let account: String = row.get(0);
        audit_in(&tx, &TokenRow::revoked_entry(id, &account, actor))
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    pub(super) async fn insert_session(
        &self,
        session: &SessionRow,
        verified: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let inserted = tx
            .execute(
                "INSERT INTO sessions (digest, account, created_at, expires_at, mac)
                 SELECT $1, name, $3, $4, $6 FROM accounts WHERE name = $2 AND password_hash = $5",
                &[
                    &session.digest.to_vec(),
                    &session.account,
                    &session.created_at.unix_timestamp(),
                    &session.expires_at.unix_timestamp(),
                    &verified,
                    &session.mac.map(|mac| mac.to_vec()),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        if inserted == 0 {
            return Err(StoreError::NotFound(Missing::Account(
                session.account.clone(),
            )));
        }
        audit_in(&tx, &AuditEntry::new("session.login", actor))
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    pub(super) async fn select_session(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<SessionRow>, StoreError> {
        let rows = self
            .rows(
                "SELECT account, created_at, expires_at, mac FROM sessions WHERE digest = $1",
                &vec![Box::new(digest.to_vec())],
            )
            .await?;
        rows.first()
            .map(|row| {
                Ok(SessionRow {
                    digest: *digest,
                    account: row.get(0),
                    created_at: self.time(row.get(1))?,
                    expires_at: self.time(row.get(2))?,
                    mac: self.mac(row.get(3))?,
                })
            })
            .transpose()
    }

    pub(super) async fn delete_session(
        &self,
        digest: &[u8; 32],
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let ended = tx
            .execute(
                "DELETE FROM sessions WHERE digest = $1",
                &[&digest.to_vec()],
            )
            .await
            .map_err(|e| self.db(e))?;
        if ended > 0 {
            audit_in(&tx, &AuditEntry::new("session.logout", actor))
                .await
                .map_err(|e| self.db(e))?;
        }
        tx.commit().await.map_err(|e| self.db(e))
    }

    pub(super) async fn delete_ended_sessions(
        &self,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM sessions WHERE expires_at <= $1",
                &[&now.unix_timestamp()],
            )
            .await
            .map_err(|e| self.db(e))
    }

    pub(super) async fn select_main_ums_id(&self) -> Result<Option<MainUmsId>, StoreError> {
        let rows = self
            .rows(
                "SELECT fingerprint, certificate_pem, sealed FROM main_ums_id",
                &Vec::new(),
            )
            .await?;
        rows.first().map(|row| self.main_from_row(row)).transpose()
    }

    pub(super) async fn offer_main(&self, main: &MainUmsId) -> Result<MainUmsId, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO main_ums_id (fingerprint, certificate_pem, sealed) VALUES ($1, $2, $3)
                 ON CONFLICT (one) DO NOTHING",
                &[
                    &main.fingerprint.to_string(),
                    &main.certificate_pem,
                    &main.sealed,
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        drop(client);
        self.select_main_ums_id()
            .await?
            .ok_or_else(|| self.corrupt("no Main UMS ID after offering one".to_owned()))
    }

    pub(super) async fn put_main_ums_id(
        &self,
        main: &MainUmsId,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        tx.execute(
            "INSERT INTO main_ums_id (fingerprint, certificate_pem, sealed) VALUES ($1, $2, $3)
             ON CONFLICT (one) DO UPDATE SET fingerprint = excluded.fingerprint,
               certificate_pem = excluded.certificate_pem, sealed = excluded.sealed",
            &[
                &main.fingerprint.to_string(),
                &main.certificate_pem,
                &main.sealed,
            ],
        )
        .await
        .map_err(|e| self.db(e))?;
        let mut entry = AuditEntry::new("ums-id.restore", actor);
        entry.detail = format!("Main UMS ID {}", main.fingerprint.short());
        audit_in(&tx, &entry).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    pub(super) async fn put_heartbeat(&self, beat: &ServerBeat) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO servers (name, fingerprint, status, heartbeat_at)
                 VALUES ($1, $2, $3, extract(epoch FROM now())::bigint + $4)
                 ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint,
                   status = excluded.status, heartbeat_at = excluded.heartbeat_at",
                &[
                    &beat.name,
                    &beat.fingerprint.to_string(),
                    &beat.status.label(),
                    &self.offset_seconds(),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    pub(super) async fn select_servers(
        &self,
        within: std::time::Duration,
    ) -> Result<Vec<ServerRow>, StoreError> {
        let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
        let rows = self
            .rows(
                "SELECT name, fingerprint, status,
                        heartbeat_at >= extract(epoch FROM now())::bigint + $2 - $1
                 FROM servers ORDER BY name",
                &vec![Box::new(within), Box::new(self.offset_seconds())],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.get(2);
                Ok(ServerRow {
                    beat: ServerBeat {
                        name: row.get(0),
                        fingerprint: row.get::<_, String>(1).parse().map_err(|_| {
                            self.corrupt("a server row with a malformed fingerprint".to_owned())
                        })?,
                        status: crate::cluster::SyncStatus::from_label(&status).ok_or_else(
                            || self.corrupt(format!("a server row with status {status:?}")),
                        )?,
                    },
                    running: row.get(3),
                })
            })
            .collect()
    }
}
