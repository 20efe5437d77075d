//! Which keys of an enrollment request are tried, pure: what the guess budget said
//! ([`crate::rate_limit::RateLimiter::admit`]) and what one read of the store told of the keys
//! come to the keys handed to the store, the answers for the others, and how the guesses are kept.
//!
//! [`crate::http::est`] asks the limiter, reads what [`look_up`] names, calls [`decide`], and
//! applies the [`Decision`]; after the store's enrollment, [`Decision::in_request`] and
//! [`guesses`] turn its answer back into the request's. Nothing else decides these.
//!
//! Why it is so:
//! - **Guesses are reserved before anything is read**, one a key, as many as the budget has
//!   left; the keys past that are answered `rate_limited` untried.
//! - **Several keys cost one read**: which are unknown is found at once, those stay counted as
//!   guesses and are audited in one line, and only the real ones go to the store. When none is
//!   real the request is answered `key_unknown` with nothing written.
//! - **One key costs no read**: the store's answer tells whether it was a guess.
//! - **A limited request** tries its Basic key only, and only if it is a random one-time or
//!   device-bound key ([`crate::rate_limit::passes_when_limited`]); otherwise every key is
//!   answered `rate_limited`, an unknown key and a mass-deployment key alike, so a dictionary
//!   learns nothing more.

use onboard_protocol::{KeyKind, ProblemCode};

use crate::rate_limit::passes_when_limited;

/// What the guess budget said of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Guesses were reserved for the first this many keys.
    Granted(usize),
    /// The source or the unit ID has used up its guesses for this window.
    Limited,
}

/// What to read of the store before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookUp {
    /// Nothing: the one key tried goes to the store as it is.
    Nothing,
    /// Which of the first `keys` keys exist, in one read.
    Known {
        /// How many, from the Basic key on.
        keys: usize,
    },
    /// The type of the Basic key (a limited request).
    BasicKind,
}

/// What the read named by [`look_up`] told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Looked {
    /// Nothing was read.
    Nothing,
    /// Whether each key asked about exists, in their order.
    Known(Vec<bool>),
    /// The Basic key's type (`None`: no key has its value).
    BasicKind(Option<KeyKind>),
}

/// How the request's reserved guesses are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guesses {
    /// Nothing was reserved (a limited request): each key the store refuses as unknown is
    /// counted as a guess then.
    Unreserved,
    /// The reservation is settled now, these guesses kept (the unknown keys found by the read)
    /// and the rest given back; a key the store refuses as unknown later is counted then.
    SettleNow(usize),
    /// The reservation is settled with the store's answer: its unknown keys are the guesses.
    WithTheStore,
}

/// What becomes of a request's keys, by their places in it (0 is the Basic key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The places handed to the store, in order; empty when the request is answered now.
    pub tried: Vec<usize>,
    /// The places answered without the store, in order: not tried (`rate_limited`) or found
    /// unknown by the read (`key_unknown`).
    pub answered: Vec<(usize, ProblemCode)>,
    /// The answer to the request when nothing is tried.
    pub refusal: Option<ProblemCode>,
    /// How the reserved guesses are kept.
    pub guesses: Guesses,
    /// The places the read found unknown: audited in one line, since the store never sees them.
    pub unknown: Vec<usize>,
}

impl Decision {
    /// The place in the request of the store's key `index` (an index into [`Decision::tried`]).
    pub fn place(&self, index: usize) -> usize {
        self.tried.get(index).copied().unwrap_or(index)
    }

    /// Every refusal of the request, in order: the store's `refused` (indexes into
    /// [`Decision::tried`]) at their places, with those answered before it was asked.
    pub fn in_request(&self, refused: &[(usize, ProblemCode)]) -> Vec<(usize, ProblemCode)> {
        let mut all = self.answered.clone();
        all.extend(
            refused
                .iter()
                .map(|(index, code)| (self.place(*index), *code)),
        );
        all.sort_by_key(|(place, _)| *place);
        all
    }
}

/// What to read before deciding on a request of `presented` keys (at least the Basic one).
pub fn look_up(budget: Budget, presented: usize) -> LookUp {
    match budget {
        Budget::Limited => LookUp::BasicKind,
        Budget::Granted(granted) => match granted.clamp(1, presented.max(1)) {
            1 => LookUp::Nothing,
            keys => LookUp::Known { keys },
        },
    }
}

/// The rule: which of `presented` keys (at least the Basic one) are tried, given the budget's
/// answer and what the read named by [`look_up`] told.
pub fn decide(budget: Budget, presented: usize, looked: &Looked) -> Decision {
    let presented = presented.max(1);
    let limited =
        |places: std::ops::Range<usize>| places.map(|place| (place, ProblemCode::RateLimited));
    match budget {
        Budget::Limited => {
            let basic_passes =
                matches!(looked, Looked::BasicKind(kind) if passes_when_limited(*kind));
            if basic_passes {
                Decision {
                    tried: vec![0],
                    answered: limited(1..presented).collect(),
                    refusal: None,
                    guesses: Guesses::Unreserved,
                    unknown: Vec::new(),
                }
            } else {
                // Unknown, or a mass-deployment key: the same answer either way.
                Decision {
                    tried: Vec::new(),
                    answered: limited(0..presented).collect(),
                    refusal: Some(ProblemCode::RateLimited),
                    guesses: Guesses::Unreserved,
                    unknown: Vec::new(),
                }
            }
        }
        Budget::Granted(granted) => {
            let granted = granted.clamp(1, presented);
            let untried = limited(granted..presented);
            let Looked::Known(found) = looked else {
                return Decision {
                    tried: (0..granted).collect(),
                    answered: untried.collect(),
                    refusal: None,
                    guesses: Guesses::WithTheStore,
                    unknown: Vec::new(),
                };
            };
            let (tried, unknown): (Vec<usize>, Vec<usize>) =
                (0..granted).partition(|place| found.get(*place) == Some(&true));
            let mut answered: Vec<(usize, ProblemCode)> = unknown
                .iter()
                .map(|place| (*place, ProblemCode::KeyUnknown))
                .chain(untried)
                .collect();
            answered.sort_by_key(|(place, _)| *place);
            Decision {
                refusal: tried.is_empty().then_some(ProblemCode::KeyUnknown),
                tried,
                answered,
                guesses: Guesses::SettleNow(unknown.len()),
                unknown,
            }
        }
    }
}

/// How many of the store's `refused` keys were guesses: those it does not know.
pub fn guesses(refused: &[(usize, ProblemCode)]) -> usize {
    refused
        .iter()
        .filter(|(_, code)| *code == ProblemCode::KeyUnknown)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    use KeyKind::{DeviceBound, MassDeployment, OneTime};
    use ProblemCode::{KeyUnknown, RateLimited};

    #[test]
    fn what_is_read_follows_the_budget() {
        let table = [
            (Budget::Granted(1), 1, LookUp::Nothing),
            (Budget::Granted(8), 1, LookUp::Nothing),
            (Budget::Granted(1), 8, LookUp::Nothing),
            (Budget::Granted(3), 8, LookUp::Known { keys: 3 }),
            (Budget::Granted(8), 8, LookUp::Known { keys: 8 }),
            (Budget::Limited, 1, LookUp::BasicKind),
            (Budget::Limited, 8, LookUp::BasicKind),
        ];
        for (budget, presented, read) in table {
            assert_eq!(look_up(budget, presented), read, "{budget:?} {presented}");
        }
    }

    #[test]
    fn the_keys_tried_and_the_answers_for_the_others() {
        struct Row {
            budget: Budget,
            presented: usize,
            looked: Looked,
            tried: &'static [usize],
            answered: &'static [(usize, ProblemCode)],
            refusal: Option<ProblemCode>,
            guesses: Guesses,
        }
        fn row(
            budget: Budget,
            presented: usize,
            looked: Looked,
            tried: &'static [usize],
            answered: &'static [(usize, ProblemCode)],
            refusal: Option<ProblemCode>,
            guesses: Guesses,
        ) -> Row {
            Row {
                budget,
                presented,
                looked,
                tried,
                answered,
                refusal,
                guesses,
            }
        }
        let known = |found: &[bool]| Looked::Known(found.to_vec());
        let kind = Looked::BasicKind;
        #[rustfmt::skip]
        let table = [
            // One key within the budget: to the store, whose answer settles the guess.
            row(Budget::Granted(1), 1, Looked::Nothing, &[0], &[], None, Guesses::WithTheStore),
            // More keys than the budget has left, one granted: the rest untried.
            row(Budget::Granted(1), 3, Looked::Nothing, &[0], &[(1, RateLimited), (2, RateLimited)], None, Guesses::WithTheStore),
            // Several keys: the unknown ones answered and kept as guesses, the real ones tried.
            row(Budget::Granted(3), 3, known(&[false, true, true]), &[1, 2], &[(0, KeyUnknown)], None, Guesses::SettleNow(1)),
            row(Budget::Granted(3), 3, known(&[true, true, true]), &[0, 1, 2], &[], None, Guesses::SettleNow(0)),
            row(Budget::Granted(2), 4, known(&[true, false]), &[0], &[(1, KeyUnknown), (2, RateLimited), (3, RateLimited)], None, Guesses::SettleNow(1)),
            // Every key unknown: answered at once, nothing tried.
            row(Budget::Granted(3), 3, known(&[false, false, false]), &[], &[(0, KeyUnknown), (1, KeyUnknown), (2, KeyUnknown)], Some(KeyUnknown), Guesses::SettleNow(3)),
            row(Budget::Granted(2), 3, known(&[false, false]), &[], &[(0, KeyUnknown), (1, KeyUnknown), (2, RateLimited)], Some(KeyUnknown), Guesses::SettleNow(2)),
            // Limited: a random Basic key alone goes through, the others untried.
            row(Budget::Limited, 1, kind(Some(OneTime)), &[0], &[], None, Guesses::Unreserved),
            row(Budget::Limited, 3, kind(Some(DeviceBound)), &[0], &[(1, RateLimited), (2, RateLimited)], None, Guesses::Unreserved),
            // Limited: an unknown or a mass-deployment Basic key is answered alike, every key
            // rate_limited.
            row(Budget::Limited, 1, kind(None), &[], &[(0, RateLimited)], Some(RateLimited), Guesses::Unreserved),
            row(Budget::Limited, 1, kind(Some(MassDeployment)), &[], &[(0, RateLimited)], Some(RateLimited), Guesses::Unreserved),
            row(Budget::Limited, 2, kind(Some(MassDeployment)), &[], &[(0, RateLimited), (1, RateLimited)], Some(RateLimited), Guesses::Unreserved),
            row(Budget::Limited, 2, kind(None), &[], &[(0, RateLimited), (1, RateLimited)], Some(RateLimited), Guesses::Unreserved),
        ];
        for (n, row) in table.iter().enumerate() {
            let decision = decide(row.budget, row.presented, &row.looked);
            assert_eq!(decision.tried, row.tried, "row {n}: tried");
            assert_eq!(decision.answered, row.answered, "row {n}: answered");
            assert_eq!(decision.refusal, row.refusal, "row {n}: refusal");
            assert_eq!(decision.guesses, row.guesses, "row {n}: guesses");
            let unknown: Vec<usize> = row
                .answered
                .iter()
                .filter(|(_, code)| *code == KeyUnknown)
                .map(|(place, _)| *place)
                .collect();
            assert_eq!(decision.unknown, unknown, "row {n}: audited as unknown");
            // The request's every key is either tried or answered, once.
            let mut places: Vec<usize> = decision
                .tried
                .iter()
                .copied()
                .chain(decision.answered.iter().map(|(place, _)| *place))
                .collect();
            places.sort_unstable();
            assert_eq!(places, (0..row.presented).collect::<Vec<_>>(), "row {n}");
        }
    }

    #[test]
    fn the_stores_answer_is_told_at_the_requests_places() {
        let decision = decide(
            Budget::Granted(3),
            4,
            &Looked::Known(vec![true, false, true]),
        );
        assert_eq!(decision.tried, [0, 2]);
        assert_eq!(decision.place(1), 2);
        assert_eq!(
            decision.in_request(&[(1, ProblemCode::KeyUsed)]),
            [(1, KeyUnknown), (2, ProblemCode::KeyUsed), (3, RateLimited)]
        );
        let refused = [
            (0, KeyUnknown),
            (1, ProblemCode::KeyInactive),
            (2, KeyUnknown),
        ];
        assert_eq!(guesses(&refused), 2);
        assert_eq!(guesses(&[(0, ProblemCode::KeyUsed)]), 0);
    }
}
