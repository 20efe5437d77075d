//! Administrator accounts, API tokens and Web App sessions: the operations the command line
//! (`ums-stub admins`, `ums-stub tokens`) and the admin API run, and the checks that turn a bearer
//! token or a session cookie into a [`Caller`] with rights.
//!
//! Secrets never reach the store in the clear: passwords become argon2id PHC strings, tokens and
//! session cookies their SHA-256. The rules (names, lengths, which rights a token holds, which
//! rights a caller may give, expiry) are [`crate::rights`]'; this module applies them.
//!
//! Every account, token and session row is written with its MAC and checked on every use
//! ([`crate::row_mac`]): a row that fails the check grants nothing and is reported in a log line
//! naming the row (never a secret). A server not in sync refuses logins and every change.

use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use onboard_protocol::admin::{
    AccountView, CallerView, CreatedToken, EditAccount, Login, NewAccount, NewToken, Page,
    TokenView,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::login_limit::DecoyCost;
use crate::random;
use crate::rights::{self, CredentialError, Rights};
use crate::row_mac::RowKey;
use crate::store::{
    self, AccountChange, AccountRow, Actor, Missing, PageRequest, SessionRow, Store, StoreError,
    TokenRow,
};

/// Every token starts with this, so a leaked one is easy to find in a scan.
pub const TOKEN_PREFIX: &str = "umst_";

/// The name of the Web App's session cookie.
pub const SESSION_COOKIE: &str = "__Host-ums_session";

/// Why an account or token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A field breaks a rule; the message names it.
    #[error(transparent)]
    Invalid(#[from] CredentialError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing a password failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The account's row fails its MAC check: written or changed outside the server.
    #[error(
        "the account {0} was not written by a server of this database (its row fails the \
         integrity check): delete it and create it again"
    )]
    Tampered(String),
    /// The server is not in sync: it cannot tell an authentic row from a forged one.
    #[error(
        "this server is not in sync with the Main UMS ID (no or a wrong cluster secret): it \
         changes no account or token; restart it with the cluster's secret"
    )]
    NotInSync,
}

/// Why a request carries no usable credentials. Deliberately says nothing more to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown, expired, revoked or malformed credentials, or a wrong password.
    #[error("credentials missing or not valid")]
    Unauthorized,
    /// The server is not in sync and logs nobody in.
    #[error(
        "this server is not in sync with the Main UMS ID (no or a wrong cluster secret): it logs \
         nobody in; restart it with the cluster's secret"
    )]
    NotInSync,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a caller proved who it is. Its `Debug` never shows the CSRF token.
#[derive(Clone, PartialEq, Eq)]
pub enum Proof {
    /// An API token, by its public ID, with its name.
    Token {
        /// Its public ID.
        id: String,
        /// Its name.
        name: String,
    },
    /// A Web App session.
    Session {
        /// SHA-256 of the cookie.
        digest: [u8; 32],
        /// The CSRF token writes must carry.
        csrf: String,
        /// When it ends.
        expires_at: OffsetDateTime,
    },
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proof::Token { id, .. } => write!(f, "Token({id})"),
            Proof::Session { expires_at, .. } => write!(f, "Session(until {expires_at})"),
        }
    }
}

/// An authenticated caller of the admin API.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account.
    pub account: String,
    /// The rights this request holds now.
    pub rights: Rights,
    /// How it proved it.
    pub proof: Proof,
}

impl Caller {
    /// The view `GET /api/v1/session` answers with.
    pub fn view(&self) -> CallerView {
        let (csrf_token, expires_at) = match &self.proof {
            Proof::Token { .. } => (None, None),
            Proof::Session {
                csrf, expires_at, ..
            } => (Some(csrf.clone()), Some(*expires_at)),
        };
        CallerView {
            account: self.account.clone(),
            rights: self.rights.to_vec(),
            csrf_token,
            expires_at,
        }
    }
}

/// Who makes an account or token change: the actor the audit log names, and the rights it holds,
/// which bound what it may give ([`rights::check_grant`]).
#[derive(Debug, Clone)]
pub struct Granter {
    /// Who, for the audit log.
    pub actor: Actor,
    /// The rights it holds now.
    pub rights: Rights,
}

impl Granter {
    /// The command line on the server machine: whoever runs it holds the data directory, and
    /// with it every right.
    pub fn cli() -> Self {
        Self {
            actor: Actor::cli(),
            rights: Rights::all(),
        }
    }

    fn check(&self, granted: Rights) -> Result<(), CredentialError> {
        rights::check_grant(&self.actor.name, self.rights, granted)
    }
}

/// A new session: the cookie value (shown once, to the browser) and who it is for.
pub struct NewSession {
    /// The cookie value.
    pub cookie: String,
    /// The caller it makes.
    pub caller: Caller,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The CSRF token of a session: derived from its cookie, so it is never stored and a page that
/// cannot read the cookie cannot compute it.
fn csrf_of(cookie: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"ums-stub csrf\0");
    hasher.update(cookie.as_bytes());
    base64url(&hasher.finalize())
}

/// argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's first choice).
fn argon2() -> Argon2<'static> {
    Argon2::default()
}

fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::encode_b64(&random::bytes::<16>())
        .map_err(|error| AccountError::Hash(error.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| AccountError::Hash(error.to_string()))
}

/// Whether `password` matches `hash`; a hash that does not parse matches nothing.
fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// How many password checks run at once.
const ARGON2_AT_ONCE: usize = 4;

fn argon2_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(ARGON2_AT_ONCE))
}

/// How long the last password check took, in microseconds (0 before the first).
static CHECK_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// About as long as a password check takes: the last one's time, or 50 ms before the first.
fn check_duration() -> std::time::Duration {
    match CHECK_MICROS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => std::time::Duration::from_millis(50),
        micros => std::time::Duration::from_micros(micros),
    }
}

/// A hash no password was ever given for, verified against when the account does not exist so
/// that a login takes as long either way.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&base64url(&random::bytes::<32>())).unwrap_or_default())
}

fn account_view(row: AccountRow) -> AccountView {
    AccountView {
        rights: Rights::of(&row.rights).to_vec(),
        name: row.name,
        created_at: row.created_at,
        changed_at: row.changed_at,
    }
}

fn token_view(row: TokenRow) -> TokenView {
    TokenView {
        rights: Rights::of(&row.rights).to_vec(),
        id: row.id,
        name: row.name,
        account: row.account,
        created_at: row.created_at,
        expires_at: row.expires_at,
    }
}

/// Runs the argon2 work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AccountError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| AccountError::Hash(error.to_string()))
}

/// Account, token and session operations over one store.
#[derive(Debug, Clone)]
pub struct AccountAdmin {
    store: Arc<dyn Store>,
    session_lifetime: time::Duration,
    rows: Arc<RowKey>,
    in_sync: bool,
}

impl AccountAdmin {
    /// Operations on `store`, its rows authenticated under `rows`; sessions last
    /// `session_lifetime`.
    pub fn new(store: Arc<dyn Store>, session_lifetime: time::Duration, rows: Arc<RowKey>) -> Self {
        Self {
            store,
            session_lifetime,
            rows,
            in_sync: true,
        }
    }

    /// The same, on a server not in sync: it refuses logins and every change.
    pub fn refusing(mut self) -> Self {
        self.in_sync = false;
        self
    }

    fn usable(&self) -> Result<(), AccountError> {
        if self.in_sync {
            Ok(())
        } else {
            Err(AccountError::NotInSync)
        }
    }

    /// The account named `name`, if its row passes its MAC check; a row that fails is reported
    /// and taken as absent.
    async fn verified_account(&self, name: &str) -> Result<Option<AccountRow>, StoreError> {
        let Some(row) = self.store.account(name).await? else {
            return Ok(None);
        };
        if self.rows.account_ok(&row) {
            Ok(Some(row))
        } else {
            tracing::warn!(
                account = %row.name,
                "an account row fails its integrity check (written outside the server?): it grants nothing"
            );
            Ok(None)
        }
    }

    /// Creates an account, with rights `by` holds itself.
    pub async fn create(
        &self,
        request: NewAccount,
        by: &Granter,
    ) -> Result<AccountView, AccountError> {
        self.usable()?;
        rights::check_account_name(&request.name)?;
        rights::check_password(&request.password)?;
        let held = rights::account_rights(&request.rights)?;
        by.check(held)?;
        let password = request.password;
        let password_hash = blocking(move || hash_password(&password)).await??;
        let now = self.store.clock().await?;
        let row = AccountRow {
            mac: Some(
                self.rows
                    .account(&request.name, &password_hash, &held.to_vec()),
            ),
            name: request.name,
            password_hash,
            rights: held.to_vec(),
            created_at: now,
            changed_at: now,
        };
        self.store.create_account(&row, &by.actor).await?;
        Ok(account_view(row))
    }

    /// One page of the accounts.
    pub async fn list(
        &self,
        page: &PageRequest<String>,
    ) -> Result<Page<AccountView, String>, AccountError> {
        let rows = self.store.accounts(&page.probe()).await?;
        let mut listed = store::paged(
            rows,
            page.limit,
            |row| row.name.clone(),
            |row| Ok::<_, AccountError>(account_view(row)),
        )?;
        listed.total = Some(self.store.count_accounts().await?);
        Ok(listed)
    }

    /// One account.
    pub async fn get(&self, name: &str) -> Result<AccountView, AccountError> {
        self.store
            .account(name)
            .await?
            .map(account_view)
            .ok_or_else(|| StoreError::NotFound(Missing::Account(name.to_owned())).into())
    }

    /// Changes an account's rights or password; its sessions end, and with a new password its
    /// tokens too. `by` may add only rights it holds, and set the password only of an account
    /// whose every right it holds ([`rights::granted_by_edit`]). The store refuses, atomically,
    /// to take server:admin from the last account holding it.
    pub async fn edit(
        &self,
        name: &str,
        request: EditAccount,
        by: &Granter,
    ) -> Result<AccountView, AccountError> {
        self.usable()?;
        if request.rights.is_none() && request.password.is_none() {
            return Err(CredentialError::NothingToChange.into());
        }
        let after = request
            .rights
            .as_deref()
            .map(rights::account_rights)
            .transpose()?;
        if let Some(password) = &request.password {
            rights::check_password(password)?;
        }
        let Some(account) = self.store.account(name).await? else {
            return Err(StoreError::NotFound(Missing::Account(name.to_owned())).into());
        };
        // A change keeps the fields it does not name: from a forged row, it would launder them.
        if !self.rows.account_ok(&account) {
            tracing::warn!(account = %account.name, "an account row fails its integrity check: not changed");
            return Err(AccountError::Tampered(account.name));
        }
        let before = Rights::of(&account.rights);
        by.check(rights::granted_by_edit(
            before,
            after,
            request.password.is_some(),
        ))?;
        let password_hash = match request.password {
            Some(password) => Some(blocking(move || hash_password(&password)).await??),
            None => None,
        };
        let rights = after.map(Rights::to_vec);
        let mac = self.rows.account(
            name,
            password_hash.as_deref().unwrap_or(&account.password_hash),
            rights.as_deref().unwrap_or(&account.rights),
        );
        self.store
            .update_account(
                name,
                AccountChange {
                    rights,
                    password_hash,
                    mac,
                    previous: account.mac,
                },
                &by.actor,
            )
            .await?;
        self.get(name).await
    }

    /// Deletes an account with its tokens and sessions. The store refuses, atomically, to delete
    /// the last account with server:admin.
    pub async fn delete(&self, name: &str, actor: &Actor) -> Result<(), AccountError> {
        self.usable()?;
        Ok(self.store.delete_account(name, actor).await?)
    }

    /// Creates a token for an account, with rights `by` holds itself; the answer is the only
    /// time the token is shown.
    pub async fn create_token(
        &self,
        request: NewToken,
        by: &Granter,
    ) -> Result<CreatedToken, AccountError> {
        self.usable()?;
        rights::check_token_name(&request.name)?;
        let account = self
            .verified_account(&request.account)
            .await?
            .ok_or_else(|| StoreError::NotFound(Missing::Account(request.account.clone())))?;
        let held = Rights::of(&account.rights);
        let asked = rights::new_token_rights(&account.name, held, request.rights.as_deref())?;
        by.check(asked)?;
        let now = self.store.clock().await?;
        let expires_at = rights::token_expiry(now, request.expires_days)?;
        let id = hex(&random::bytes::<6>());
        let token = format!("{TOKEN_PREFIX}{id}_{}", base64url(&random::bytes::<32>()));
        let mut row = TokenRow {
            id,
            digest: sha256(&token),
            account: account.name,
            name: request.name,
            rights: asked.to_vec(),
            created_at: now,
            expires_at,
            mac: None,
        };
        row.mac = Some(self.rows.token(&row));
        self.store.create_token(&row, &by.actor).await?;
        Ok(CreatedToken {
            token,
            view: token_view(row),
        })
    }

    /// One page of the tokens, of one account or all.
    pub async fn list_tokens(
        &self,
        account: Option<&str>,
        page: &PageRequest<String>,
    ) -> Result<Page<TokenView, String>, AccountError> {
        let rows = self.store.tokens(account, &page.probe()).await?;
        store::paged(
            rows,
            page.limit,
            |row| row.id.clone(),
            |row| Ok(token_view(row)),
        )
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, id: &str, actor: &Actor) -> Result<(), AccountError> {
        self.usable()?;
        Ok(self.store.revoke_token(id, actor).await?)
    }

    /// The caller a bearer token makes: its account's current rights that the token asks for.
    pub async fn bearer(&self, token: &str, now: OffsetDateTime) -> Result<Caller, AuthError> {
        let id = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .ok_or(AuthError::Unauthorized)?;
        let row = self.store.token(id).await?.ok_or(AuthError::Unauthorized)?;
        let matches: bool = sha256(token).ct_eq(&row.digest).into();
        if !matches || !rights::live(now, row.expires_at) {
            return Err(AuthError::Unauthorized);
        }
        if !self.rows.token_ok(&row) {
            tracing::warn!(token = %row.id, account = %row.account, "a token row fails its integrity check (written outside the server?): refused");
            return Err(AuthError::Unauthorized);
        }
        let account = self
            .verified_account(&row.account)
            .await?
            .ok_or(AuthError::Unauthorized)?;
        Ok(Caller {
            rights: rights::token_rights(Rights::of(&account.rights), Rights::of(&row.rights)),
            account: account.name,
            proof: Proof::Token {
                id: row.id,
                name: row.name,
            },
        })
    }

    /// Checks a name and password and starts a session. A wrong name and a wrong password are
    /// refused alike, in about the same time: a name with no account is checked against a decoy
    /// hash, or, past the global bound on failed logins, waits about as long as a check takes
    /// ([`DecoyCost`]).
    pub async fn login(
        &self,
        login: Login,
        actor: &Actor,
        decoy: DecoyCost,
    ) -> Result<NewSession, AuthError> {
        if !self.in_sync {
            return Err(AuthError::NotInSync);
        }
        if login.password.chars().count() > rights::MAX_PASSWORD_CHARS {
            return Err(AuthError::Unauthorized);
        }
        // A forged row (a password hash written by hand) is checked like a missing account.
        let account = self.verified_account(&login.name).await?;
        if account.is_none() && decoy == DecoyCost::Wait {
            tokio::time::sleep(check_duration()).await;
            return Err(AuthError::Unauthorized);
        }
        let hash = account
            .as_ref()
            .map_or_else(|| decoy_hash().to_owned(), |row| row.password_hash.clone());
        let password = login.password;
        // argon2 takes 19 MiB and tens of milliseconds a check: a few at a time, the rest wait.
        let _permit = argon2_permits()
            .acquire()
            .await
            .map_err(|_| AuthError::Unauthorized)?;
        let verified = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let verified = verify_password(&password, &hash);
            CHECK_MICROS.store(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
            verified
        })
        .await
        .unwrap_or(false);
        let Some(account) = account.filter(|_| verified) else {
            return Err(AuthError::Unauthorized);
        };
        let cookie = base64url(&random::bytes::<32>());
        let now = self.store.clock().await?;
        let mut row = SessionRow {
            digest: sha256(&cookie),
            account: account.name.clone(),
            created_at: now,
            expires_at: now + self.session_lifetime,
            mac: None,
        };
        row.mac = Some(self.rows.session(&row));
        let session_actor = Actor::admin(&account.name, &actor.source);
        match self
            .store
            .create_session(&row, &account.password_hash, &session_actor)
            .await
        {
            Ok(()) => {}
            // Changed or deleted while the password was being checked.
            Err(StoreError::NotFound(_)) => return Err(AuthError::Unauthorized),
            Err(error) => return Err(error.into()),
        }
        Ok(NewSession {
            caller: Caller {
                account: account.name,
                rights: Rights::of(&account.rights),
                proof: Proof::Session {
                    digest: row.digest,
                    csrf: csrf_of(&cookie),
                    expires_at: row.expires_at,
                },
            },
            cookie,
        })
    }

    /// The caller a session cookie makes: its account's current rights.
    pub async fn session(&self, cookie: &str, now: OffsetDateTime) -> Result<Caller, AuthError> {
        let digest = sha256(cookie);
        let row = self
            .store
            .session(&digest)
            .await?
            .ok_or(AuthError::Unauthorized)?;
        if !rights::live(now, Some(row.expires_at)) {
            return Err(AuthError::Unauthorized);
        }
        if !self.rows.session_ok(&row) {
            tracing::warn!(account = %row.account, "a session row fails its integrity check (written outside the server?): refused");
            return Err(AuthError::Unauthorized);
        }
        let account = self
            .verified_account(&row.account)
            .await?
            .ok_or(AuthError::Unauthorized)?;
        Ok(Caller {
            account: account.name,
            rights: Rights::of(&account.rights),
            proof: Proof::Session {
                digest,
                csrf: csrf_of(cookie),
                expires_at: row.expires_at,
            },
        })
    }

    /// Ends a session.
    pub async fn logout(&self, digest: &[u8; 32], actor: &Actor) -> Result<(), AuthError> {
        Ok(self.store.end_session(digest, actor).await?)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether `presented` is the CSRF token of the session, compared in constant time.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}
