//! The administrator rules, pure: which right each admin operation needs, what a token holds,
//! which rights a caller may give, what an account name and password must be, when a session or
//! token stops working, and which requests must carry the CSRF token. The admin API, the command
//! line and every store backend apply these decisions; nothing else makes them.

use onboard_protocol::admin::{ACCOUNT_NAME_PATTERN, Right};
use time::OffsetDateTime;

/// The fewest characters of a password.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The most characters of a password (argon2 would take more; a limit bounds the work a login
/// costs).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// The most characters of an account name.
pub const MAX_ACCOUNT_NAME_CHARS: usize = 64;
/// The most characters of a token's name.
pub const MAX_TOKEN_NAME_CHARS: usize = 100;
/// The longest a token may live, in days.
pub const MAX_TOKEN_DAYS: u32 = 3650;
/// How long a Web App session lasts by default.
pub const SESSION_LIFETIME: time::Duration = time::Duration::hours(8);
/// Names that already mean something in the audit log's actor column.
const RESERVED_NAMES: [&str; 2] = ["cli", "-"];

/// A set of rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights(u8);

impl Rights {
    /// No right.
    pub const NONE: Rights = Rights(0);

    fn bit(right: Right) -> u8 {
        1 << Right::ALL.iter().position(|r| *r == right).expect("in ALL")
    }

    /// The set of `rights`.
    pub fn of(rights: &[Right]) -> Self {
        Rights(rights.iter().fold(0, |set, right| set | Self::bit(*right)))
    }

    /// Every right.
    pub fn all() -> Self {
        Self::of(&Right::ALL)
    }

    /// Whether the set holds `right`.
    pub fn contains(self, right: Right) -> bool {
        self.0 & Self::bit(right) != 0
    }

    /// The rights both sets hold.
    pub fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// The rights either set holds.
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// The rights this set holds and `other` does not.
    pub fn difference(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }

    /// Whether the set holds no right.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The rights, in the order of [`Right::ALL`].
    pub fn to_vec(self) -> Vec<Right> {
        Right::ALL
            .into_iter()
            .filter(|right| self.contains(*right))
            .collect()
    }
}

/// Everything the admin API lets an administrator do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// List keys, masked.
    ListKeys,
    /// One key, masked.
    GetKey,
    /// Create keys of any type.
    CreateKeys,
    /// Change a key's comment.
    EditKey,
    /// Activate keys.
    ActivateKeys,
    /// Deactivate keys.
    DeactivateKeys,
    /// Delete keys.
    DeleteKeys,
    /// Export keys as a key file: a reveal to a file.
    ExportKeys,
    /// Show keys in the clear.
    RevealKeys,
    /// List enrolled devices.
    ListDevices,
    /// One enrolled device.
    GetDevice,
    /// Forget an enrolled device.
    DeleteDevice,
    /// Send a command to a connected device.
    SendDeviceCommand,
    /// Read the audit log.
    ReadAudit,
    /// Show the UMS ID and download its certificate.
    ShowUmsId,
    /// List, show, create, edit and delete accounts; list, create and revoke any token. What
    /// it may give is bounded by [`check_grant`].
    ManageAccounts,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 16] = [
        Operation::ListKeys,
        Operation::GetKey,
        Operation::CreateKeys,
        Operation::EditKey,
        Operation::ActivateKeys,
        Operation::DeactivateKeys,
        Operation::DeleteKeys,
        Operation::ExportKeys,
        Operation::RevealKeys,
        Operation::ListDevices,
        Operation::GetDevice,
        Operation::DeleteDevice,
        Operation::SendDeviceCommand,
        Operation::ReadAudit,
        Operation::ShowUmsId,
        Operation::ManageAccounts,
    ];

    /// The right it needs.
    pub const fn right(self) -> Right {
        match self {
            Operation::ListKeys | Operation::GetKey => Right::KeysRead,
            Operation::CreateKeys
            | Operation::EditKey
            | Operation::ActivateKeys
            | Operation::DeactivateKeys
            | Operation::DeleteKeys => Right::KeysWrite,
            Operation::RevealKeys => Right::KeysReveal,
            Operation::ExportKeys => Right::KeysExport,
            Operation::ListDevices | Operation::GetDevice => Right::DevicesRead,
            Operation::DeleteDevice | Operation::SendDeviceCommand => Right::DevicesWrite,
            Operation::ReadAudit => Right::AuditRead,
            Operation::ShowUmsId | Operation::ManageAccounts => Right::ServerAdmin,
        }
    }
}

/// Whether a caller holding `rights` may perform `operation`.
pub fn allows(rights: Rights, operation: Operation) -> bool {
    rights.contains(operation.right())
}

/// What a token holds: the rights it asks for that its account holds now. An account that loses a
/// right takes it from its tokens at once.
pub fn token_rights(account: Rights, token: Rights) -> Rights {
    account.intersection(token)
}

/// Why an account or token request cannot be taken as it is. The messages name the field and
/// never hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The account name does not fit [`ACCOUNT_NAME_PATTERN`].
    #[error(
        "name: an account name is 1 to {MAX_ACCOUNT_NAME_CHARS} letters, digits, '.', '_', '@' or \
         '-', starting with a letter or digit"
    )]
    Name,
    /// The name is one the audit log uses for something else.
    #[error("name: {0:?} is reserved")]
    Reserved(String),
    /// The password is too short or too long.
    #[error("password: a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")]
    PasswordLength,
    /// No right.
    #[error("rights: an account or token needs at least one right")]
    NoRights,
    /// The caller would give a right it does not hold itself.
    #[error("rights: the caller {caller} does not hold {right}, so it cannot give it")]
    NotYours {
        /// The calling account.
        caller: String,
        /// The right.
        right: Right,
    },
    /// A token asks for a right its account lacks.
    #[error("rights: the account {account} does not hold {right}, so its token cannot")]
    NotHeld {
        /// The account.
        account: String,
        /// The right.
        right: Right,
    },
    /// A token's name is too long.
    #[error("name: a token's name has at most {MAX_TOKEN_NAME_CHARS} characters")]
    TokenName,
    /// An account change that changes nothing.
    #[error("rights, password: name new rights, a new password, or both")]
    NothingToChange,
    /// The change would leave no account able to manage accounts.
    #[error(
        "rights: {0} is the last account with server:admin; give another account server:admin \
         first (ums-stub admins create on the server machine)"
    )]
    LastAdmin(String),
    /// A token's lifetime is out of range.
    #[error("expires_days: a token lives 1 to {MAX_TOKEN_DAYS} days")]
    TokenDays,
}

/// Checks that a caller holding `caller` may give `granted` (to a new or changed account, or to
/// a token): nobody gives a right it does not hold itself, `server:admin` included. Without this,
/// a caller holding only `server:admin` could make an account with every right and log in as it.
pub fn check_grant(
    caller_name: &str,
    caller: Rights,
    granted: Rights,
) -> Result<(), CredentialError> {
    match granted.difference(caller).to_vec().first() {
        None => Ok(()),
        Some(right) => Err(CredentialError::NotYours {
            caller: caller_name.to_owned(),
            right: *right,
        }),
    }
}

/// What an account change gives, for [`check_grant`]: the rights it adds, and with a new password
/// every right the account holds before or after (whoever sets a password can log in with it).
/// Taking rights away gives nothing.
pub fn granted_by_edit(before: Rights, after: Option<Rights>, new_password: bool) -> Rights {
    let after_or_same = after.unwrap_or(before);
    if new_password {
        before.union(after_or_same)
    } else {
        after_or_same.difference(before)
    }
}

/// Checks an account name against [`ACCOUNT_NAME_PATTERN`].
pub fn check_account_name(name: &str) -> Result<(), CredentialError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if !first_ok || !rest_ok || name.len() > MAX_ACCOUNT_NAME_CHARS {
        return Err(CredentialError::Name);
    }
    debug_assert!(ACCOUNT_NAME_PATTERN.contains("{0,63}"));
    if RESERVED_NAMES
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
    {
        return Err(CredentialError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// Whether a refusal is about the caller's own rights (403).
pub fn is_forbidden(error: &CredentialError) -> bool {
    matches!(error, CredentialError::NotYours { .. })
}

/// Whether a refusal depends on what exists (the account's rights, reserved names) rather than
/// on the request alone: such refusals are conflicts (409), the others invalid requests (422).
pub fn is_conflict(error: &CredentialError) -> bool {
    matches!(
        error,
        CredentialError::NotHeld { .. }
            | CredentialError::Reserved(_)
            | CredentialError::LastAdmin(_)
    )
}

/// Whether taking `account`'s server:admin away (a change to `after`, or `None` for a deletion)
/// leaves no account with it, given how many accounts hold it now.
pub fn leaves_no_admin(before: Rights, after: Option<Rights>, admins_now: usize) -> bool {
    let loses = before.contains(Right::ServerAdmin)
        && !after.is_some_and(|rights| rights.contains(Right::ServerAdmin));
    loses && admins_now <= 1
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), CredentialError> {
    let count = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&count) {
        return Err(CredentialError::PasswordLength);
    }
    Ok(())
}

/// Checks a token's name.
pub fn check_token_name(name: &str) -> Result<(), CredentialError> {
    if name.chars().count() > MAX_TOKEN_NAME_CHARS {
        return Err(CredentialError::TokenName);
    }
    Ok(())
}

/// The rights of a new or changed account: at least one.
pub fn account_rights(rights: &[Right]) -> Result<Rights, CredentialError> {
    let set = Rights::of(rights);
    if set.is_empty() {
        return Err(CredentialError::NoRights);
    }
    Ok(set)
}

/// The rights a new token asks for: by default all of its account's, else a non-empty subset of
/// them.
pub fn new_token_rights(
    account: &str,
    held: Rights,
    asked: Option<&[Right]>,
) -> Result<Rights, CredentialError> {
    let Some(asked) = asked else {
        return Ok(held);
    };
    if asked.is_empty() {
        return Err(CredentialError::NoRights);
    }
    if let Some(right) = asked.iter().find(|right| !held.contains(**right)) {
        return Err(CredentialError::NotHeld {
            account: account.to_owned(),
            right: *right,
        });
    }
    Ok(Rights::of(asked))
}

/// When a new token expires, from its lifetime in days (`None`: never).
pub fn token_expiry(
    now: OffsetDateTime,
    days: Option<u32>,
) -> Result<Option<OffsetDateTime>, CredentialError> {
    match days {
        None => Ok(None),
        Some(days) if (1..=MAX_TOKEN_DAYS).contains(&days) => {
            Ok(Some(now + time::Duration::days(i64::from(days))))
        }
        Some(_) => Err(CredentialError::TokenDays),
    }
}

/// Whether a token or session that ends at `expires_at` still works at `now`.
pub fn live(now: OffsetDateTime, expires_at: Option<OffsetDateTime>) -> bool {
    expires_at.is_none_or(|end| now < end)
}

/// Whether a request may change something: anything but GET, HEAD and OPTIONS.
pub fn is_write(method: &axum::http::Method) -> bool {
    use axum::http::Method;
    ![Method::GET, Method::HEAD, Method::OPTIONS].contains(method)
}

/// Whether a request must carry the session's CSRF token: a write authenticated by the session
/// cookie. A bearer token is not sent by browsers on their own, so it needs none.
pub fn needs_csrf(method: &axum::http::Method, by_cookie: bool) -> bool {
    by_cookie && is_write(method)
}

/// Whether a server refuses an admin request outright: a server not in sync (no or a wrong
/// cluster secret) refuses every write and every login, since it cannot tell an authentic
/// account, token or session row from one written straight into the database.
pub fn refused_out_of_sync(in_sync: bool, method: &axum::http::Method) -> bool {
    !in_sync && is_write(method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;
    use time::macros::datetime;

    #[test]
    fn each_operation_needs_exactly_its_right() {
        let table = [
            (Operation::ListKeys, Right::KeysRead),
            (Operation::GetKey, Right::KeysRead),
            (Operation::CreateKeys, Right::KeysWrite),
            (Operation::EditKey, Right::KeysWrite),
            (Operation::ActivateKeys, Right::KeysWrite),
            (Operation::DeactivateKeys, Right::KeysWrite),
            (Operation::DeleteKeys, Right::KeysWrite),
            (Operation::ExportKeys, Right::KeysExport),
            (Operation::RevealKeys, Right::KeysReveal),
            (Operation::ListDevices, Right::DevicesRead),
            (Operation::GetDevice, Right::DevicesRead),
            (Operation::DeleteDevice, Right::DevicesWrite),
            (Operation::SendDeviceCommand, Right::DevicesWrite),
            (Operation::ReadAudit, Right::AuditRead),
            (Operation::ShowUmsId, Right::ServerAdmin),
            (Operation::ManageAccounts, Right::ServerAdmin),
        ];
        assert_eq!(table.len(), Operation::ALL.len());
        for (operation, needed) in table {
            assert_eq!(operation.right(), needed, "{operation:?}");
            for right in Right::ALL {
                assert_eq!(
                    allows(Rights::of(&[right]), operation),
                    right == needed,
                    "{operation:?} with only {right}"
                );
            }
            assert!(allows(Rights::all(), operation));
            assert!(!allows(Rights::NONE, operation));
        }
    }

    #[test]
    fn a_token_holds_what_it_asks_for_and_its_account_holds() {
        let read = Rights::of(&[Right::KeysRead]);
        let read_write = Rights::of(&[Right::KeysRead, Right::KeysWrite]);
        let table = [
            // account, token => held
            (read_write, read, read),
            (read, read_write, read),
            (Rights::NONE, read, Rights::NONE),
            (Rights::all(), Rights::all(), Rights::all()),
        ];
        for (account, token, held) in table {
            assert_eq!(token_rights(account, token), held, "{account:?} {token:?}");
        }
    }

    #[test]
    fn a_new_token_asks_only_for_rights_its_account_holds() {
        let held = Rights::of(&[Right::KeysRead, Right::AuditRead]);
        assert_eq!(new_token_rights("ops", held, None), Ok(held));
        assert_eq!(
            new_token_rights("ops", held, Some(&[Right::AuditRead])),
            Ok(Rights::of(&[Right::AuditRead]))
        );
        assert_eq!(
            new_token_rights("ops", held, Some(&[Right::KeysReveal])),
            Err(CredentialError::NotHeld {
                account: "ops".into(),
                right: Right::KeysReveal
            })
        );
        assert_eq!(
            new_token_rights("ops", held, Some(&[])),
            Err(CredentialError::NoRights)
        );
    }

    #[test]
    fn account_names_follow_their_pattern() {
        for good in [
            "admin",
            "a",
            "jane.doe@example.org",
            "ops_2",
            &"x".repeat(64),
        ] {
            assert_eq!(check_account_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".admin",
            "-x",
            "has space",
            "ümlaut",
            "a/b",
            &"x".repeat(65),
        ] {
            assert_eq!(check_account_name(bad), Err(CredentialError::Name), "{bad}");
        }
        assert_eq!(
            check_account_name("cli"),
            Err(CredentialError::Reserved("cli".into()))
        );
        assert_eq!(
            check_account_name("CLI"),
            Err(CredentialError::Reserved("CLI".into()))
        );
    }

    #[test]
    fn passwords_have_a_minimum_and_maximum_length() {
        let table = [
            ("", false),
            ("eleven char", false),
            ("twelve chars", true),
            ("äöüäöüäöüäöü", true),
            (&"p".repeat(1024), true),
            (&"p".repeat(1025), false),
        ];
        for (password, ok) in table {
            assert_eq!(
                check_password(password).is_ok(),
                ok,
                "{} chars",
                password.len()
            );
        }
        let message = check_password("too short").unwrap_err().to_string();
        assert!(!message.contains("too short"));
    }

    #[test]
    fn an_account_needs_a_right() {
        assert_eq!(account_rights(&[]), Err(CredentialError::NoRights));
        assert_eq!(
            account_rights(&[Right::AuditRead, Right::AuditRead]),
            Ok(Rights::of(&[Right::AuditRead]))
        );
    }

    #[test]
    fn tokens_and_sessions_end_when_they_expire() {
        let now = datetime!(2026-11-30 12:00 UTC);
        assert!(live(now, None));
        assert!(live(now, Some(now + time::Duration::SECOND)));
        assert!(!live(now, Some(now)));
        assert!(!live(now, Some(now - time::Duration::DAY)));
        assert_eq!(
            token_expiry(now, Some(30)),
            Ok(Some(datetime!(2026-12-30 12:00 UTC)))
        );
        assert_eq!(token_expiry(now, None), Ok(None));
        assert_eq!(token_expiry(now, Some(0)), Err(CredentialError::TokenDays));
        assert_eq!(
            token_expiry(now, Some(MAX_TOKEN_DAYS + 1)),
            Err(CredentialError::TokenDays)
        );
    }

    #[test]
    fn only_writes_with_the_session_cookie_need_the_csrf_token() {
        let table = [
            (Method::GET, true, false),
            (Method::HEAD, true, false),
            (Method::OPTIONS, true, false),
            (Method::POST, true, true),
            (Method::PATCH, true, true),
            (Method::PUT, true, true),
            (Method::DELETE, true, true),
            (Method::POST, false, false),
            (Method::DELETE, false, false),
        ];
        for (method, by_cookie, needed) in table {
            assert_eq!(
                needs_csrf(&method, by_cookie),
                needed,
                "{method} {by_cookie}"
            );
        }
    }

    #[test]
    fn the_last_account_with_server_admin_stays() {
        let admin = Rights::of(&[Right::ServerAdmin, Right::KeysRead]);
        let reader = Rights::of(&[Right::KeysRead]);
        let table = [
            // before, after (None: deleted), accounts with server:admin now => refused
            (admin, Some(reader), 1, true),
            (admin, None, 1, true),
            (admin, Some(reader), 2, false),
            (admin, None, 2, false),
            (admin, Some(admin), 1, false),
            (reader, None, 1, false),
            (reader, Some(admin), 0, false),
        ];
        for (before, after, admins, refused) in table {
            assert_eq!(
                leaves_no_admin(before, after, admins),
                refused,
                "{before:?} -> {after:?} with {admins}"
            );
        }
    }

    /// Every set of rights, as a caller's or as given.
    fn every_set() -> impl Iterator<Item = Rights> {
        let count = Right::ALL.len();
        (0u16..1 << count).map(move |mask| {
            let rights: Vec<Right> = (0..count)
                .filter(|bit| mask & (1 << bit) != 0)
                .map(|bit| Right::ALL[bit])
                .collect();
            Rights::of(&rights)
        })
    }

    #[test]
    fn a_caller_gives_only_rights_it_holds_for_every_pair() {
        let mut pairs = 0;
        for caller in every_set() {
            for granted in every_set() {
                pairs += 1;
                let held = Right::ALL
                    .into_iter()
                    .all(|right| !granted.contains(right) || caller.contains(right));
                let answer = check_grant("ops", caller, granted);
                assert_eq!(answer.is_ok(), held, "{caller:?} gives {granted:?}");
                if let Err(CredentialError::NotYours { right, .. }) = answer {
                    assert!(granted.contains(right) && !caller.contains(right));
                }
            }
        }
        assert_eq!(pairs, 256 * 256);
        // server:admin is no exception.
        let admin = Rights::of(&[Right::ServerAdmin]);
        assert_eq!(
            check_grant("ops", admin, Rights::of(&[Right::KeysReveal])),
            Err(CredentialError::NotYours {
                caller: "ops".into(),
                right: Right::KeysReveal
            })
        );
        assert_eq!(check_grant("ops", admin, admin), Ok(()));
    }

    #[test]
    fn an_edit_gives_what_it_adds_and_a_new_password_gives_the_whole_account() {
        let read = Rights::of(&[Right::KeysRead]);
        let reveal = Rights::of(&[Right::KeysReveal]);
        let both = read.union(reveal);
        let table = [
            // before, after, new password => given
            (read, Some(both), false, reveal),
            (both, Some(read), false, Rights::NONE),
            (both, None, false, Rights::NONE),
            (both, None, true, both),
            (read, Some(reveal), true, both),
            (both, Some(read), true, both),
            (read, Some(read), false, Rights::NONE),
        ];
        for (before, after, password, given) in table {
            assert_eq!(
                granted_by_edit(before, after, password),
                given,
                "{before:?} -> {after:?}, password {password}"
            );
        }
        // Every pair: what an edit by a caller may do, as the admin API applies it.
        for caller in every_set() {
            for before in every_set() {
                for after in [Some(read), Some(both), None] {
                    let given = granted_by_edit(before, after, false);
                    let allowed = check_grant("ops", caller, given).is_ok();
                    let adds_unheld = after.is_some_and(|after| {
                        !after.difference(before).difference(caller).is_empty()
                    });
                    assert_eq!(allowed, !adds_unheld, "{caller:?} {before:?} {after:?}");
                    let by_password =
                        check_grant("ops", caller, granted_by_edit(before, after, true)).is_ok();
                    let whole = before.union(after.unwrap_or(before));
                    assert_eq!(by_password, whole.difference(caller).is_empty());
                }
            }
        }
    }

    #[test]
    fn a_server_out_of_sync_refuses_every_write() {
        let table = [
            (true, Method::GET, false),
            (true, Method::POST, false),
            (true, Method::DELETE, false),
            (false, Method::GET, false),
            (false, Method::HEAD, false),
            (false, Method::POST, true),
            (false, Method::PATCH, true),
            (false, Method::PUT, true),
            (false, Method::DELETE, true),
        ];
        for (in_sync, method, refused) in table {
            assert_eq!(
                refused_out_of_sync(in_sync, &method),
                refused,
                "{method} in sync {in_sync}"
            );
        }
    }

    #[test]
    fn rights_list_in_a_fixed_order() {
        let set = Rights::of(&[Right::ServerAdmin, Right::KeysRead]);
        assert_eq!(set.to_vec(), vec![Right::KeysRead, Right::ServerAdmin]);
        assert_eq!(Rights::all().to_vec(), Right::ALL.to_vec());
    }
}
