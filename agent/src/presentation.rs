//! The presentation state of one enrollment pass, pure: how many keys go in one request, what
//! the servers' answers to a request ([`Round`]) do to the keys still to present, which keys were
//! limited, and when the pass ends and how ([`Presentation`]). `Enroller::pass` ([`crate::enroll`])
//! talks to the servers, remembers refusals and applies this; nothing else decides these.
//!
//! Why it is so:
//! - **Up to eight keys a request** ([`onboard_protocol::alternates`]) until a server limits this
//!   device: a limited server looks at the Basic key only, so the keys then go one a request, and
//!   a real key further down still goes through.
//! - **What a server answered for leaves the queue**; what it did not try (a server that takes
//!   only the Basic key) is presented next. An answer that speaks for no key of the request drops
//!   the first, so a pass never loops on the same request.
//! - **A 429 is not a refusal**: the key may be real once the budget refills, so it is not
//!   remembered, but the next keys are tried now, so that junk sent under this unit ID cannot
//!   hold a device with a good key further down its list. Only when no key is left but limited
//!   ones does the pass end in a fault that waits for the longest `Retry-After` asked.
//! - **One server's fault or odd answer does not speak for the others**: they are tried first;
//!   a request that no server answered for ends the pass (a fault, retried by the caller's
//!   backoff, or a rejection when no server was merely unavailable).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use onboard_protocol::ProblemCode;
use onboard_protocol::alternates::MAX_KEYS_PER_REQUEST;

use crate::lifecycle::Failure;

/// How one pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Enrolled; the certificates and the state are stored.
    Issued {
        /// The index (into the source's keys) of the key that enrolled it.
        key: usize,
    },
    /// No server answered usefully: back off and retry the same key.
    Fault {
        /// The longest `Retry-After` a server asked for.
        retry_after: Option<Duration>,
        /// What went wrong on each server (never a key).
        detail: String,
        /// Whether a server was refused because its chain is not the pinned UMS ID.
        pin_refused: bool,
    },
    /// Nothing more can be done with this source.
    Refused(Failure),
}

/// What the servers said of one request, gathered answer by answer, each server in turn.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// The places in the request a server answered for (refused, or limited); an answer that
    /// lists them ends the round.
    answered: Option<Vec<usize>>,
    /// The places answered `rate_limited` by the answer that speaks for the request.
    limited: BTreeSet<usize>,
    /// Whether a server limited this device (it then looks at the Basic key only).
    limited_by_a_server: bool,
    /// The longest `Retry-After` asked for.
    retry_after: Option<Duration>,
    /// Each unavailable server's fault (never a key).
    faults: Vec<String>,
    /// The first odd answer of a server (a 404 from the wrong service, say).
    rejected: Option<Failure>,
    /// Whether a server was refused because its chain is not the pinned UMS ID.
    pin_refused: bool,
}

impl Round {
    /// A server refused keys, each listed by its place in the request (its `rate_limited` ones
    /// may be real). This answer speaks for the keys it lists; a 429 from a server tried before
    /// does not. It ends the round.
    pub fn refused(&mut self, each: &[(usize, ProblemCode)]) {
        self.limited = each
            .iter()
            .filter(|(_, code)| *code == ProblemCode::RateLimited)
            .map(|(place, _)| *place)
            .collect();
        self.answered = Some(each.iter().map(|(place, _)| *place).collect());
    }

    /// A server limited this device (429): it looked at the Basic key only; the others were not
    /// tried.
    pub fn limited(&mut self, retry_after: Option<Duration>) {
        self.limited.insert(0);
        self.limited_by_a_server = true;
        self.retry_after = self.retry_after.max(retry_after);
    }

    /// A server could not be reached or did not answer usefully (`detail` names it).
    pub fn fault(&mut self, detail: String, retry_after: Option<Duration>, pin_refused: bool) {
        self.pin_refused |= pin_refused;
        self.retry_after = self.retry_after.max(retry_after);
        self.faults.push(detail);
    }

    /// A server answered oddly; the first such answer is kept.
    pub fn rejected(&mut self, failure: Failure) {
        self.rejected.get_or_insert(failure);
    }
}

/// Where one pass stands: the size of its requests and the keys limited so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// Keys presented in one request.
    per_request: usize,
    /// Keys answered 429, not remembered.
    limited_keys: usize,
    /// The longest wait asked for by the answers that limited keys.
    limited_wait: Option<Duration>,
}

impl Default for Presentation {
    fn default() -> Self {
        Self::new()
    }
}

impl Presentation {
    /// A pass that has presented nothing yet.
    pub fn new() -> Self {
        Self {
            per_request: MAX_KEYS_PER_REQUEST,
            limited_keys: 0,
            limited_wait: None,
        }
    }

    /// How many keys the next request presents: the first ones of the queue.
    pub fn per_request(&self) -> usize {
        self.per_request
    }

    /// Applies the answers `round` to the request of `batch` (the first keys of `queue`, by their
    /// indexes into the source): the keys answered for leave `queue`. `None` when the pass goes
    /// on with what is left, else how it ends.
    pub fn after(
        &mut self,
        round: Round,
        batch: &[usize],
        queue: &mut VecDeque<usize>,
    ) -> Option<Pass> {
        if round.limited_by_a_server {
            self.per_request = 1;
        }
        let leaving = match round.answered {
            Some(places) => places,
            None if !round.limited.is_empty()
                && round.faults.is_empty()
                && round.rejected.is_none() =>
            {
                round.limited.iter().copied().collect()
            }
            None => {
                return Some(match round.rejected {
                    Some(failure) if round.faults.is_empty() => Pass::Refused(failure),
                    _ => Pass::Fault {
                        retry_after: round.retry_after,
                        detail: round.faults.join("; "),
                        pin_refused: round.pin_refused,
                    },
                });
            }
        };
        for place in &leaving {
            if let Some(index) = batch.get(*place) {
                queue.retain(|queued| queued != index);
            }
        }
        if leaving.iter().all(|place| *place >= batch.len()) {
            // Nothing answered for: never present the same request again.
            queue.pop_front();
        }
        if !round.limited.is_empty() {
            self.limited_keys += round.limited.len();
            self.limited_wait = self.limited_wait.max(round.retry_after);
        }
        None
    }

    /// How the pass ends once no key is left to present: waiting for the limited keys, or
    /// refused with every key (`refused` of them refused before or during it).
    pub fn finish(&self, refused: usize) -> Pass {
        if self.limited_keys > 0 {
            return Pass::Fault {
                retry_after: self.limited_wait,
                detail: format!("rate limited (429) on {} key(s)", self.limited_keys),
                pin_refused: false,
            };
        }
        Pass::Refused(Failure::KeysExhausted { refused })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ProblemCode::{KeyInactive, KeyUnknown, KeyUsed, RateLimited};

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    /// One server's answer, as [`crate::enroll::Enroller::pass`] tells the round of it.
    #[derive(Debug, Clone)]
    enum Said {
        Refused(&'static [(usize, ProblemCode)]),
        Limited(Option<Duration>),
        Fault(&'static str, Option<Duration>, bool),
        Rejected(&'static str),
    }

    fn round(answers: &[Said]) -> Round {
        let mut round = Round::default();
        for answer in answers {
            match answer {
                Said::Refused(each) => {
                    round.refused(each);
                    // The pass stops asking servers once one speaks for the keys.
                    break;
                }
                Said::Limited(wait) => round.limited(*wait),
                Said::Fault(detail, wait, pin) => round.fault((*detail).to_owned(), *wait, *pin),
                Said::Rejected(detail) => round.rejected(Failure::Rejected {
                    detail: (*detail).to_owned(),
                }),
            }
        }
        round
    }

    fn fault(wait: Option<Duration>, detail: &str, pin_refused: bool) -> Option<Pass> {
        Some(Pass::Fault {
            retry_after: wait,
            detail: detail.to_owned(),
            pin_refused,
        })
    }

    #[test]
    fn a_rounds_answers_move_the_queue_and_the_batch_size() {
        struct Row {
            name: &'static str,
            /// The queue before (keys by index); the batch is its first keys, up to the size.
            queue: &'static [usize],
            per_request: usize,
            answers: Vec<Said>,
            /// The queue after, the next batch size, and how the pass ends (`None`: it goes on).
            left: &'static [usize],
            next_per_request: usize,
            ends: Option<Pass>,
            limited_keys: usize,
        }
        use Said::{Fault, Limited, Refused, Rejected};
        let rows = [
            Row {
                name: "every key of the batch refused: the next batch follows",
                queue: &[3, 4, 5, 6],
                per_request: 2,
                answers: vec![Refused(&[(0, KeyUnknown), (1, KeyUsed)])],
                left: &[5, 6],
                next_per_request: 2,
                ends: None,
                limited_keys: 0,
            },
            Row {
                name: "a server that tried only the Basic key: the rest is presented next",
                queue: &[3, 4, 5, 6],
                per_request: 3,
                answers: vec![Refused(&[(0, KeyInactive)])],
                left: &[4, 5, 6],
                next_per_request: 3,
                ends: None,
                limited_keys: 0,
            },
            Row {
                name: "an answer for no key of the batch: the first key goes",
                queue: &[3, 4, 5],
                per_request: 2,
                answers: vec![Refused(&[(7, KeyUnknown)])],
                left: &[4, 5],
                next_per_request: 2,
                ends: None,
                limited_keys: 0,
            },
            Row {
                name: "an empty answer: the first key goes",
                queue: &[3, 4],
                per_request: 2,
                answers: vec![Refused(&[])],
                left: &[4],
                next_per_request: 2,
                ends: None,
                limited_keys: 0,
            },
            Row {
                name: "keys refused 429 in a list: they leave, counted as limited, not remembered",
                queue: &[3, 4, 5],
                per_request: 3,
                answers: vec![Refused(&[
                    (0, KeyUnknown),
                    (1, RateLimited),
                    (2, RateLimited),
                ])],
                left: &[],
                next_per_request: 3,
                ends: None,
                limited_keys: 2,
            },
            Row {
                name: "limited by the only server: the Basic key leaves, one key a request now",
                queue: &[3, 4, 5],
                per_request: 8,
                answers: vec![Limited(secs(30))],
                left: &[4, 5],
                next_per_request: 1,
                ends: None,
                limited_keys: 1,
            },
            Row {
                name: "limited by one server, keys refused by the next: the refusal speaks",
                queue: &[3, 4, 5],
                per_request: 8,
                answers: vec![
                    Limited(secs(30)),
                    Refused(&[(0, KeyUnknown), (1, KeyUnknown)]),
                ],
                left: &[5],
                next_per_request: 1,
                ends: None,
                limited_keys: 0,
            },
            Row {
                name: "limited by one server, the next unavailable: a fault, retried",
                queue: &[3, 4],
                per_request: 8,
                answers: vec![Limited(secs(30)), Fault("b: down", secs(60), false)],
                left: &[3, 4],
                next_per_request: 1,
                ends: fault(secs(60), "b: down", false),
                limited_keys: 0,
            },
            Row {
                name: "limited by one server, an odd answer from the next: not a limit alone",
                queue: &[3, 4],
                per_request: 8,
                answers: vec![Limited(secs(30)), Rejected("b: 404")],
                left: &[3, 4],
                next_per_request: 1,
                ends: Some(Pass::Refused(Failure::Rejected {
                    detail: "b: 404".to_owned(),
                })),
                limited_keys: 0,
            },
            Row {
                name: "every server unavailable: a fault with each, the longest wait, the pin",
                queue: &[3],
                per_request: 8,
                answers: vec![
                    Fault("a: refused", secs(5), false),
                    Fault("b: not the pinned UMS ID", None, true),
                ],
                left: &[3],
                next_per_request: 8,
                ends: fault(secs(5), "a: refused; b: not the pinned UMS ID", true),
                limited_keys: 0,
            },
            Row {
                name: "an odd answer and a fault: the fault is retried",
                queue: &[3],
                per_request: 8,
                answers: vec![Rejected("a: 404"), Fault("b: down", None, false)],
                left: &[3],
                next_per_request: 8,
                ends: fault(None, "b: down", false),
                limited_keys: 0,
            },
            Row {
                name: "odd answers only: the first ends the pass",
                queue: &[3],
                per_request: 8,
                answers: vec![Rejected("a: 404"), Rejected("b: 400")],
                left: &[3],
                next_per_request: 8,
                ends: Some(Pass::Refused(Failure::Rejected {
                    detail: "a: 404".to_owned(),
                })),
                limited_keys: 0,
            },
            Row {
                name: "no server at all: a fault saying nothing",
                queue: &[3],
                per_request: 8,
                answers: vec![],
                left: &[3],
                next_per_request: 8,
                ends: fault(None, "", false),
                limited_keys: 0,
            },
        ];
        for row in rows {
            let mut presentation = Presentation {
                per_request: row.per_request,
                ..Presentation::new()
            };
            let mut queue: VecDeque<usize> = row.queue.iter().copied().collect();
            let batch: Vec<usize> = queue.iter().take(row.per_request).copied().collect();
            let ends = presentation.after(round(&row.answers), &batch, &mut queue);
            assert_eq!(ends, row.ends, "{}", row.name);
            if ends.is_none() {
                assert_eq!(Vec::from(queue), row.left, "{}", row.name);
            }
            assert_eq!(
                presentation.per_request(),
                row.next_per_request,
                "{}",
                row.name
            );
            assert_eq!(presentation.limited_keys, row.limited_keys, "{}", row.name);
        }
    }

    #[test]
    fn a_pass_waits_only_when_nothing_but_limited_keys_is_left() {
        // Nothing limited: every key refused.
        let presentation = Presentation::new();
        assert_eq!(
            presentation.finish(4),
            Pass::Refused(Failure::KeysExhausted { refused: 4 })
        );
        // Junk ahead of a real key under a limited unit ID: each request after the first 429
        // presents one key, every 429 is counted, and the pass waits for the longest asked.
        let mut presentation = Presentation::new();
        let mut queue: VecDeque<usize> = (0..3).collect();
        let waits = [secs(20), secs(45), secs(10)];
        for wait in waits {
            let batch: Vec<usize> = queue
                .iter()
                .take(presentation.per_request())
                .copied()
                .collect();
            let mut round = Round::default();
            round.limited(wait);
            assert_eq!(presentation.after(round, &batch, &mut queue), None);
            assert_eq!(presentation.per_request(), 1);
        }
        assert!(queue.is_empty());
        assert_eq!(
            presentation.finish(0),
            Pass::Fault {
                retry_after: secs(45),
                detail: "rate limited (429) on 3 key(s)".to_owned(),
                pin_refused: false,
            }
        );
    }
}
