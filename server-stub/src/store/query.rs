//! What the lists of the store ask for (the filters of keys and audit lines, keyset pages) and
//! the SQL text both backends list with: the column lists, the filters and the keyset pages,
//! written once and numbered in each backend's parameter style (`Dialect`).

use onboard_protocol::UnitId;
use onboard_protocol::admin::{KeyId, KeyStatus};
use onboard_protocol::{Folder, KeyKind};
use time::OffsetDateTime;

/// Which keys to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only this kind.
    pub kind: Option<KeyKind>,
    /// Only this status, as [`crate::claim::status`] decides it at [`KeyFilter::at`].
    pub status: Option<KeyStatus>,
    /// Only keys bound to this unit ID.
    pub unit_id: Option<UnitId>,
    /// Only these keys.
    pub ids: Option<Vec<KeyId>>,
    /// Only keys whose comment holds this text (case ignored for ASCII letters).
    pub comment: Option<String>,
    /// Only keys that expire before this instant (those expired already included); a key that
    /// never expires does not.
    pub expires_before: Option<OffsetDateTime>,
    /// Only keys that expire after this instant; a key that never expires does not.
    pub expires_after: Option<OffsetDateTime>,
    /// The instant a status filter decides statuses at (Expired and Not yet valid depend on it);
    /// now when `None`.
    pub at: Option<OffsetDateTime>,
}

/// Which devices to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Only devices in this folder or a folder under it (`/Sites` holds `/Sites/Berlin`).
    pub folder: Option<Folder>,
}

/// The column the key list is sorted by (the Web App's sortable columns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeySort {
    /// The key's number (the default).
    #[default]
    Id,
    /// When it was created.
    Created,
    /// When it last enrolled a device; keys never used come after every used one.
    UsageDate,
    /// Its status, by name.
    Status,
}

/// A sorted, offset-paged view of the keys a filter matches: what the Web App's key table asks
/// for (sort by a column either way, jump to the last page, a unit ID typed in part).
#[derive(Debug, Clone, Default)]
pub struct KeyListing {
    /// Which keys.
    pub filter: KeyFilter,
    /// Only keys bound to a unit ID starting with this (normalised: uppercase letters and
    /// digits, [`crate::unit_ids::prefix`]).
    pub unit_id_prefix: Option<String>,
    /// By which column.
    pub sort: KeySort,
    /// Largest first.
    pub descending: bool,
    /// Only keys numbered above this (below it when `descending`): keyset paging, in ID order.
    pub after: Option<KeyId>,
}

/// Which audit lines to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only lines at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only lines about this unit ID.
    pub unit_id: Option<UnitId>,
    /// Only lines with this outcome (`ok` or a problem code).
    pub outcome: Option<String>,
    /// Only lines by this actor.
    pub actor: Option<String>,
    /// Newest first (pages then start after the line named, going back in time).
    pub newest_first: bool,
}

/// Where a page of a list starts and how long it is (keyset paging: rows after `after`, in list
/// order). A limit of 0 gives an empty page with no next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<A> {
    /// The most rows to return.
    pub limit: usize,
    /// Start after this row (its ID, or unit ID for devices); `None` for the first page.
    pub after: Option<A>,
}

impl<A> PageRequest<A> {
    /// The first `limit` rows.
    pub fn first(limit: usize) -> Self {
        Self { limit, after: None }
    }

    /// Every row: for callers that need the whole list (an export, a test).
    pub fn all() -> Self {
        Self {
            limit: usize::MAX,
            after: None,
        }
    }
}

/// Turns rows fetched with one more than `limit` into a page: the extra row only says that a next
/// page exists, which starts after the last row kept.
pub(crate) fn paged<R, T, A, E>(
    mut rows: Vec<R>,
    limit: usize,
    cursor: impl Fn(&R) -> A,
    view: impl FnMut(R) -> Result<T, E>,
) -> Result<onboard_protocol::admin::Page<T, A>, E> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_after = if more { rows.last().map(cursor) } else { None };
    Ok(onboard_protocol::admin::Page {
        items: rows.into_iter().map(view).collect::<Result<_, _>>()?,
        next_after,
        total: None,
    })
}

impl<A: Clone> PageRequest<A> {
    /// The same page asking for one row more, so [`paged`] can tell whether another page follows.
    pub(crate) fn probe(&self) -> Self {
        Self {
            limit: self.limit.saturating_add(1),
            after: self.after.clone(),
        }
    }
}

macro_rules! device_columns {
    () => {
        "unit_id, public_key, certificate, serial, not_after, key_id, key_kind, enrolled_at, \
         last_seen, inventory, previous_serial, folder"
    };
}

/// `SELECT` of every column a device is read with (its own, and the server holding its
/// session) `FROM devices`, as a literal for `concat!`.
macro_rules! device_select {
    () => {
        concat!(
            "SELECT ",
            $crate::store::query::device_columns!(),
            ", online_server FROM devices"
        )
    };
}

pub(crate) use {device_columns, device_select};

/// A key row's columns, in the order the backends read and copy them.
pub(crate) const KEY_COLUMNS: &str = "id, kind, lookup, sealed, unit_id, active, status, usage_count, usage_date, comment, created_at, not_before, expires_at, usage_limit, folder";

/// A device row's own columns, in the order the backends write and read them (a read adds
/// `online_server`: [`device_select`]).
pub(crate) const DEVICE_COLUMNS: &str = device_columns!();

/// An audit line's columns.
pub(crate) const AUDIT_COLUMNS: &str =
    "id, at, event, actor, source, unit_id, key_id, outcome, detail";

/// An account row's columns.
pub(crate) const ACCOUNT_COLUMNS: &str = "name, password_hash, rights, created_at, changed_at, mac";

/// A token row's columns.
pub(crate) const TOKEN_COLUMNS: &str =
    "id, digest, account, name, rights, created_at, expires_at, mac";

/// The accounts holding server:admin, as a condition.
pub(crate) const IS_ADMIN: &str = "',' || rights || ',' LIKE '%,server:admin,%'";

/// Where the two backends' SQL differs in the lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Parameters `?1`, `?2`…; JSON for lists of values.
    Sqlite,
    /// Parameters `$1`, `$2`…; arrays for lists of values.
    Postgres,
}

/// A value bound to a parameter of a list's SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// An integer.
    Int(i64),
    /// A text.
    Text(String),
    /// Key numbers (a JSON array on SQLite, an array on PostgreSQL).
    Ids(Vec<KeyId>),
}

/// A `SELECT` being written: its text and the values of its parameters, in order.
#[derive(Debug)]
pub(crate) struct Select {
    dialect: Dialect,
    sql: String,
    values: Vec<Value>,
    conditions: usize,
}

impl Select {
    /// `SELECT {what} FROM {table}`, to be narrowed.
    pub(crate) fn new(dialect: Dialect, what: &str, table: &str) -> Self {
        Self {
            dialect,
            sql: format!("SELECT {what} FROM {table}"),
            values: Vec::new(),
            conditions: 0,
        }
    }

    /// Narrows it by `clause`, whose one `?` is `value`.
    pub(crate) fn and(&mut self, clause: &str, value: Value) {
        self.and_each(clause, vec![value]);
    }

    /// Narrows it by `clause`, whose `?`s are `values` in order.
    pub(crate) fn and_each(&mut self, clause: &str, values: Vec<Value>) {
        // Each `?` of the clause as written becomes the next parameter (SQLite's own `?N`
        // would be found again by a plain replace).
        let mut pieces = clause.split('?');
        let mut clause = pieces.next().unwrap_or_default().to_owned();
        for (value, piece) in values.into_iter().zip(pieces) {
            self.values.push(value);
            match self.dialect {
                Dialect::Sqlite => clause.push('?'),
                Dialect::Postgres => clause.push('$'),
            }
            clause.push_str(&self.values.len().to_string());
            clause.push_str(piece);
        }
        self.sql.push_str(if self.conditions == 0 {
            " WHERE "
        } else {
            " AND "
        });
        self.sql.push_str(&clause);
        self.conditions += 1;
    }

    /// The rows after `after` (before it when `descending`) by `column`, in that order, at most
    /// `limit` of them.
    pub(crate) fn page(
        mut self,
        column: &str,
        after: Option<Value>,
        descending: bool,
        limit: usize,
    ) -> (String, Vec<Value>) {
        if let Some(after) = after {
            let clause = format!("{column} {} ?", if descending { "<" } else { ">" });
            self.and(&clause, after);
        }
        self.values
            .push(Value::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        let parameter = match self.dialect {
            Dialect::Sqlite => format!("?{}", self.values.len()),
            Dialect::Postgres => format!("${}", self.values.len()),
        };
        let order = if descending { " DESC" } else { "" };
        self.sql
            .push_str(&format!(" ORDER BY {column}{order} LIMIT {parameter}"));
        (self.sql, self.values)
    }

    /// The text and values as they are.
    pub(crate) fn done(self) -> (String, Vec<Value>) {
        (self.sql, self.values)
    }

    /// Narrowed by a key filter.
    fn keys(mut self, filter: &KeyFilter) -> Self {
        if let Some(kind) = filter.kind {
            self.and("kind = ?", Value::Text(kind.as_str().to_owned()));
        }
        if let Some(status) = filter.status {
            let at = filter.at.unwrap_or_else(OffsetDateTime::now_utc);
            self.status_at(status, at.unix_timestamp());
        }
        if let Some(before) = filter.expires_before {
            self.and("expires_at < ?", Value::Int(before.unix_timestamp()));
        }
        if let Some(after) = filter.expires_after {
            self.and("expires_at > ?", Value::Int(after.unix_timestamp()));
        }
        if let Some(unit_id) = &filter.unit_id {
            self.and("unit_id = ?", Value::Text(unit_id.as_str().to_owned()));
        }
        if let Some(text) = &filter.comment {
            let clause = match self.dialect {
                Dialect::Sqlite => "instr(lower(comment), lower(?)) > 0",
                Dialect::Postgres => "strpos(lower(comment), lower(?)) > 0",
            };
            self.and(clause, Value::Text(text.clone()));
        }
        if let Some(ids) = &filter.ids {
            // Any number of IDs is one parameter.
            let clause = match self.dialect {
                Dialect::Sqlite => "id IN (SELECT value FROM json_each(?))",
                Dialect::Postgres => "id = ANY(?)",
            };
            self.and(clause, Value::Ids(ids.clone()));
        }
        self
    }

    /// Narrowed to the keys whose status at `at` (seconds) is `status`. This is
    /// [`crate::claim::status`] written in SQL, so that lists filter and page on it: the stored
    /// column holds [`crate::claim::stored_status`] (Used, then Inactive, then Active), and an
    /// Active one is Expired from `expires_at` on, else Not yet valid before `not_before`, else
    /// Exhausted at its usage limit. The conformance suite holds the two against each other.
    fn status_at(&mut self, status: KeyStatus, at: i64) {
        const STORED: &str = "status = ?";
        const EXPIRED: &str = "expires_at <= ?";
        const NOT_EXPIRED: &str = "(expires_at IS NULL OR expires_at > ?)";
        const EARLY: &str = "not_before > ?";
        const STARTED: &str = "(not_before IS NULL OR not_before <= ?)";
        const AT_LIMIT: &str = "usage_limit IS NOT NULL AND usage_count >= usage_limit";
        const WITHIN_LIMIT: &str = "(usage_limit IS NULL OR usage_count < usage_limit)";
        let stored = |status: KeyStatus| Value::Text(status.as_str().to_owned());
        match status {
            KeyStatus::Used | KeyStatus::Inactive => self.and(STORED, stored(status)),
            KeyStatus::Active => {
                self.and(STORED, stored(KeyStatus::Active));
                self.and(NOT_EXPIRED, Value::Int(at));
                self.and(STARTED, Value::Int(at));
                self.and_each(WITHIN_LIMIT, Vec::new());
            }
            KeyStatus::Expired => {
                self.and(STORED, stored(KeyStatus::Active));
                self.and(EXPIRED, Value::Int(at));
            }
            KeyStatus::NotYetValid => {
                self.and(STORED, stored(KeyStatus::Active));
                self.and(NOT_EXPIRED, Value::Int(at));
                self.and(EARLY, Value::Int(at));
            }
            KeyStatus::Exhausted => {
                self.and(STORED, stored(KeyStatus::Active));
                self.and(NOT_EXPIRED, Value::Int(at));
                self.and(STARTED, Value::Int(at));
                self.and_each(AT_LIMIT, Vec::new());
            }
        }
    }

    /// Narrowed by a device filter.
    fn devices(mut self, filter: &DeviceFilter) -> Self {
        if let Some(folder) = &filter.folder {
            // The folder itself, or one whose path starts with it and a `/` (a prefix position
            // test rather than LIKE, whose wildcards a folder name may hold).
            let clause = match self.dialect {
                Dialect::Sqlite => "(folder = ? OR instr(folder, ?) = 1)",
                Dialect::Postgres => "(folder = ? OR strpos(folder, ?) = 1)",
            };
            self.and_each(
                clause,
                vec![
                    Value::Text(folder.as_str().to_owned()),
                    Value::Text(format!("{folder}/")),
                ],
            );
        }
        self
    }

    /// Narrowed by an audit filter.
    fn audit(mut self, filter: &AuditFilter) -> Self {
        if let Some(since) = filter.since {
            self.and("at >= ?", Value::Int(since.unix_timestamp()));
        }
        if let Some(unit_id) = &filter.unit_id {
            self.and("unit_id = ?", Value::Text(unit_id.as_str().to_owned()));
        }
        if let Some(outcome) = &filter.outcome {
            self.and("outcome = ?", Value::Text(outcome.clone()));
        }
        if let Some(actor) = &filter.actor {
            self.and("actor = ?", Value::Text(actor.clone()));
        }
        self
    }
}

/// One page of the keys `filter` matches, by ID.
pub(crate) fn keys_page(
    dialect: Dialect,
    filter: &KeyFilter,
    page: &PageRequest<KeyId>,
) -> (String, Vec<Value>) {
    Select::new(dialect, KEY_COLUMNS, "keys").keys(filter).page(
        "id",
        page.after.map(Value::Int),
        false,
        page.limit,
    )
}

/// How many keys `filter` matches.
pub(crate) fn keys_count(dialect: Dialect, filter: &KeyFilter) -> (String, Vec<Value>) {
    Select::new(dialect, "count(*)", "keys").keys(filter).done()
}

/// One page of the audit lines `filter` matches, by number (newest first when it says so).
pub(crate) fn audit_page(
    dialect: Dialect,
    filter: &AuditFilter,
    page: &PageRequest<i64>,
) -> (String, Vec<Value>) {
    Select::new(dialect, AUDIT_COLUMNS, "audit")
        .audit(filter)
        .page(
            "id",
            page.after.map(Value::Int),
            filter.newest_first,
            page.limit,
        )
}

/// `offset` rows into the keys `listing` matches, in its order, at most `limit` of them. Ties
/// (and keys never used, which come last either way) are ordered by ID.
pub(crate) fn key_listing_page(
    dialect: Dialect,
    listing: &KeyListing,
    offset: u64,
    limit: usize,
) -> (String, Vec<Value>) {
    let direction = if listing.descending { " DESC" } else { "" };
    let order = match listing.sort {
        KeySort::Id => format!("id{direction}"),
        KeySort::Created => format!("created_at{direction}, id{direction}"),
        KeySort::UsageDate => {
            format!("(usage_date IS NULL), usage_date{direction}, id{direction}")
        }
        KeySort::Status => format!("status{direction}, id{direction}"),
    };
    let mut select = key_listing_select(dialect, KEY_COLUMNS, listing);
    let limit_at = select.values.len() + 1;
    select
        .values
        .push(Value::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    select
        .values
        .push(Value::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
    let (limit, offset) = match dialect {
        Dialect::Sqlite => (format!("?{limit_at}"), format!("?{}", limit_at + 1)),
        Dialect::Postgres => (format!("${limit_at}"), format!("${}", limit_at + 1)),
    };
    select
        .sql
        .push_str(&format!(" ORDER BY {order} LIMIT {limit} OFFSET {offset}"));
    select.done()
}

/// How many keys `listing` matches.
pub(crate) fn key_listing_count(dialect: Dialect, listing: &KeyListing) -> (String, Vec<Value>) {
    key_listing_select(dialect, "count(*)", listing).done()
}

fn key_listing_select(dialect: Dialect, what: &str, listing: &KeyListing) -> Select {
    let mut select = Select::new(dialect, what, "keys").keys(&listing.filter);
    if let Some(prefix) = &listing.unit_id_prefix {
        // Letters and digits only (checked where it is parsed): no LIKE wildcard in it.
        select.and("unit_id LIKE ?", Value::Text(format!("{prefix}%")));
    }
    if let Some(after) = listing.after {
        let clause = if listing.descending {
            "id < ?"
        } else {
            "id > ?"
        };
        select.and(clause, Value::Int(after));
    }
    select
}

/// How many audit lines `filter` matches.
pub(crate) fn audit_count(dialect: Dialect, filter: &AuditFilter) -> (String, Vec<Value>) {
    Select::new(dialect, "count(*)", "audit")
        .audit(filter)
        .done()
}

/// One page of the devices `filter` matches, by unit ID. The unit ID condition is there only with
/// a start, so the planner seeks the primary key to it.
pub(crate) fn devices_page(
    dialect: Dialect,
    filter: &DeviceFilter,
    page: &PageRequest<UnitId>,
) -> (String, Vec<Value>) {
    Select::new(
        dialect,
        concat!(device_columns!(), ", online_server"),
        "devices",
    )
    .devices(filter)
    .page(
        "unit_id",
        page.after
            .as_ref()
            .map(|unit| Value::Text(unit.as_str().to_owned())),
        false,
        page.limit,
    )
}

/// How many devices `filter` matches.
pub(crate) fn devices_count(dialect: Dialect, filter: &DeviceFilter) -> (String, Vec<Value>) {
    Select::new(dialect, "count(*)", "devices")
        .devices(filter)
        .done()
}

/// One page of the accounts, by name.
pub(crate) fn accounts_page(dialect: Dialect, page: &PageRequest<String>) -> (String, Vec<Value>) {
    Select::new(dialect, ACCOUNT_COLUMNS, "accounts").page(
        "name",
        page.after.clone().map(Value::Text),
        false,
        page.limit,
    )
}

/// One page of the tokens (of `account`, or all), by ID.
pub(crate) fn tokens_page(
    dialect: Dialect,
    account: Option<&str>,
    page: &PageRequest<String>,
) -> (String, Vec<Value>) {
    let mut select = Select::new(dialect, TOKEN_COLUMNS, "tokens");
    if let Some(account) = account {
        select.and("account = ?", Value::Text(account.to_owned()));
    }
    select.page("id", page.after.clone().map(Value::Text), false, page.limit)
}

/// How many rows `table` has.
pub(crate) fn count_all(dialect: Dialect, table: &str) -> (String, Vec<Value>) {
    Select::new(dialect, "count(*)", table).done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_list_reads_alike_on_both_backends_but_for_its_parameters() {
        let filter = KeyFilter {
            kind: Some(KeyKind::OneTime),
            status: None,
            unit_id: None,
            ids: Some(vec![4, 5]),
            comment: Some("Shelf".to_owned()),
            ..KeyFilter::default()
        };
        let page = PageRequest {
            limit: 10,
            after: Some(3),
        };
        let (sqlite, values) = keys_page(Dialect::Sqlite, &filter, &page);
        assert_eq!(
            sqlite,
            format!(
                "SELECT {KEY_COLUMNS} FROM keys WHERE kind = ?1 AND instr(lower(comment), \
                 lower(?2)) > 0 AND id IN (SELECT value FROM json_each(?3)) AND id > ?4 \
                 ORDER BY id LIMIT ?5"
            )
        );
        assert_eq!(
            values,
            [
                Value::Text("one-time".to_owned()),
                Value::Text("Shelf".to_owned()),
                Value::Ids(vec![4, 5]),
                Value::Int(3),
                Value::Int(10)
            ]
        );
        let (postgres, same) = keys_page(Dialect::Postgres, &filter, &page);
        assert_eq!(same, values);
        assert_eq!(
            postgres,
            format!(
                "SELECT {KEY_COLUMNS} FROM keys WHERE kind = $1 AND strpos(lower(comment), \
                 lower($2)) > 0 AND id = ANY($3) AND id > $4 ORDER BY id LIMIT $5"
            )
        );
    }

    #[test]
    fn a_listing_sorts_either_way_with_ties_by_id_and_pages_by_offset() {
        let listing = KeyListing {
            filter: KeyFilter {
                kind: Some(KeyKind::OneTime),
                ..KeyFilter::default()
            },
            unit_id_prefix: Some("00E0".to_owned()),
            sort: KeySort::UsageDate,
            descending: true,
            after: None,
        };
        let (sql, values) = key_listing_page(Dialect::Sqlite, &listing, 9900, 100);
        assert_eq!(
            sql,
            format!(
                "SELECT {KEY_COLUMNS} FROM keys WHERE kind = ?1 AND unit_id LIKE ?2 ORDER BY \
                 (usage_date IS NULL), usage_date DESC, id DESC LIMIT ?3 OFFSET ?4"
            )
        );
        assert_eq!(
            values,
            [
                Value::Text("one-time".to_owned()),
                Value::Text("00E0%".to_owned()),
                Value::Int(100),
                Value::Int(9900)
            ]
        );
        let created = KeyListing {
            sort: KeySort::Created,
            ..KeyListing::default()
        };
        assert_eq!(
            key_listing_page(Dialect::Postgres, &created, 0, 5).0,
            format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, id LIMIT $1 OFFSET $2")
        );
        assert_eq!(
            key_listing_count(Dialect::Postgres, &listing).0,
            "SELECT count(*) FROM keys WHERE kind = $1 AND unit_id LIKE $2"
        );
    }

    #[test]
    fn a_folder_filter_numbers_both_its_parameters_and_a_status_filter_takes_its_instant() {
        let filter = DeviceFilter {
            folder: Some("/Sites".parse().unwrap()),
        };
        let (sqlite, values) = devices_page(Dialect::Sqlite, &filter, &PageRequest::first(5));
        assert_eq!(
            sqlite,
            format!(
                "SELECT {DEVICE_COLUMNS}, online_server FROM devices WHERE (folder = ?1 OR \
                 instr(folder, ?2) = 1) ORDER BY unit_id LIMIT ?3"
            )
        );
        assert_eq!(
            values,
            [
                Value::Text("/Sites".to_owned()),
                Value::Text("/Sites/".to_owned()),
                Value::Int(5)
            ]
        );
        let (postgres, _) = devices_count(Dialect::Postgres, &filter);
        assert_eq!(
            postgres,
            "SELECT count(*) FROM devices WHERE (folder = $1 OR strpos(folder, $2) = 1)"
        );
        let at = time::macros::datetime!(2026-11-30 12:00 UTC);
        let expired = KeyFilter {
            status: Some(KeyStatus::Expired),
            at: Some(at),
            ..KeyFilter::default()
        };
        let (sql, values) = keys_count(Dialect::Sqlite, &expired);
        assert_eq!(
            sql,
            "SELECT count(*) FROM keys WHERE status = ?1 AND expires_at <= ?2"
        );
        assert_eq!(
            values,
            [
                Value::Text("active".to_owned()),
                Value::Int(at.unix_timestamp())
            ]
        );
    }

    #[test]
    fn pages_go_back_in_time_when_asked_and_every_row_has_no_limit_to_overflow() {
        let newest = AuditFilter {
            actor: Some("cli".to_owned()),
            newest_first: true,
            ..AuditFilter::default()
        };
        let (sql, values) = audit_page(
            Dialect::Postgres,
            &newest,
            &PageRequest {
                limit: 2,
                after: Some(9),
            },
        );
        assert_eq!(
            sql,
            format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE actor = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            )
        );
        assert_eq!(values[1..], [Value::Int(9), Value::Int(2)]);
        let (sql, values) = devices_page(
            Dialect::Sqlite,
            &DeviceFilter::default(),
            &PageRequest::all(),
        );
        assert_eq!(
            sql,
            format!(
                "SELECT {DEVICE_COLUMNS}, online_server FROM devices ORDER BY unit_id LIMIT ?1"
            )
        );
        assert_eq!(values, [Value::Int(i64::MAX)]);
        let (sql, _) = tokens_page(Dialect::Sqlite, Some("ops"), &PageRequest::first(5));
        assert_eq!(
            sql,
            format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE account = ?1 ORDER BY id LIMIT ?2")
        );
        assert_eq!(
            keys_count(Dialect::Sqlite, &KeyFilter::default()).0,
            "SELECT count(*) FROM keys"
        );
        assert_eq!(
            device_select!(),
            format!("SELECT {DEVICE_COLUMNS}, online_server FROM devices")
        );
    }
}
