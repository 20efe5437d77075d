//! What the lists of the store ask for: the filters of keys and audit lines, and keyset pages.

use onboard_protocol::KeyKind;
use onboard_protocol::UnitId;
use onboard_protocol::admin::{KeyId, KeyStatus};
use time::OffsetDateTime;

/// Which keys to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only this kind.
    pub kind: Option<KeyKind>,
    /// Only this status.
    pub status: Option<KeyStatus>,
    /// Only keys bound to this unit ID.
    pub unit_id: Option<UnitId>,
    /// Only these keys.
    pub ids: Option<Vec<KeyId>>,
    /// Only keys whose comment holds this text (case ignored for ASCII letters).
    pub comment: Option<String>,
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
