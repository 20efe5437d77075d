//! What a change to many keys did, for the Web App's message after each action ("Deactivated 0
//! of 3: 3 keys were already used"): the keys' statuses read before and after the change,
//! compared. Which status a change gives a key stays the claim rule's ([`crate::claim`]); this
//! only counts what happened.

use std::collections::{BTreeMap, HashMap};

use onboard_protocol::admin::{KeyAction, KeyId, KeyStatus, KeysChanged, KeysUnchanged};

/// The outcome of `action` on keys whose statuses were `before` and are `after` (a deleted key is
/// missing from `after`). A key is unchanged when its status is the same; those are counted by
/// that status, in the order of [`KeyStatus::ALL`].
pub fn summarize(
    action: KeyAction,
    before: &HashMap<KeyId, KeyStatus>,
    after: &HashMap<KeyId, KeyStatus>,
) -> KeysChanged {
    let mut unchanged: BTreeMap<usize, u64> = BTreeMap::new();
    let mut changed = 0;
    for (id, status) in before {
        match after.get(id) {
            Some(now) if now == status => {
                let rank = KeyStatus::ALL
                    .iter()
                    .position(|known| known == status)
                    .unwrap_or(usize::MAX);
                *unchanged.entry(rank).or_default() += 1;
            }
            _ => changed += 1,
        }
    }
    KeysChanged {
        action,
        matched: before.len() as u64,
        changed,
        unchanged: unchanged
            .into_iter()
            .filter_map(|(rank, count)| {
                KeyStatus::ALL.get(rank).map(|status| KeysUnchanged {
                    status: *status,
                    count,
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyStatus::{Active, Inactive, Used};

    /// An action, the statuses before and after, how many changed, and the unchanged by status.
    type Case = (
        KeyAction,
        &'static [(KeyId, KeyStatus)],
        &'static [(KeyId, KeyStatus)],
        u64,
        &'static [(KeyStatus, u64)],
    );

    fn statuses(list: &[(KeyId, KeyStatus)]) -> HashMap<KeyId, KeyStatus> {
        list.iter().copied().collect()
    }

    #[test]
    fn a_change_counts_what_changed_and_names_what_stayed_by_status() {
        let table: &[Case] = &[
            // Deactivating three used keys does nothing, and says why.
            (
                KeyAction::Deactivate,
                &[(1, Used), (2, Used), (3, Used)],
                &[(1, Used), (2, Used), (3, Used)],
                0,
                &[(Used, 3)],
            ),
            (
                KeyAction::Deactivate,
                &[(1, Active), (2, Inactive), (3, Used)],
                &[(1, Inactive), (2, Inactive), (3, Used)],
                1,
                &[(Inactive, 1), (Used, 1)],
            ),
            (
                KeyAction::Activate,
                &[(1, Inactive), (2, Active)],
                &[(1, Active), (2, Active)],
                1,
                &[(Active, 1)],
            ),
            // Deleted keys are gone afterwards: all changed.
            (KeyAction::Delete, &[(1, Used), (2, Active)], &[], 2, &[]),
            (KeyAction::Activate, &[], &[], 0, &[]),
        ];
        for (action, before, after, changed, unchanged) in table {
            let outcome = summarize(*action, &statuses(before), &statuses(after));
            assert_eq!(outcome.action, *action);
            assert_eq!(outcome.matched, before.len() as u64, "{before:?}");
            assert_eq!(outcome.changed, *changed, "{before:?} -> {after:?}");
            let counted: Vec<(KeyStatus, u64)> = outcome
                .unchanged
                .iter()
                .map(|group| (group.status, group.count))
                .collect();
            assert_eq!(counted, *unchanged, "{before:?} -> {after:?}");
        }
    }
}
