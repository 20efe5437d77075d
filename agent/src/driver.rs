//! The enrollment driver: the one loop logic that `run`, `enroll` and the fleet simulator share.
//!
//! It owns what the three used to decide each on their own: which key file (and so which servers)
//! to use, the pass over its keys, the backoff after a fault, and every lifecycle transition of
//! enrollment. A [`Driver::step`] looks at the key files it is given in order and makes a pass with
//! the first whose UMS ID agrees with the pin held and which has keys left to present; a key file
//! whose keys are all refused during that pass hands over to the next one at once. An event the
//! lifecycle does not allow is an error ([`EnrollError::Lifecycle`]), never logged and saved.
//!
//! The caller owns time: the daemon waits for a backoff, a stick or a stop signal between steps;
//! [`Driver::until_done`] (the `enroll` command and the fleet simulator) sleeps through backoffs.

use std::sync::Arc;
use std::time::Duration;

use crate::enroll::{EnrollError, Enroller, KeySource, Pass};
use crate::lifecycle::{BackoffPolicy, Event, Failure, Phase, backoff};
use crate::state::AgentState;

/// What one step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Enrolled; the certificates and the state are stored.
    Enrolled {
        /// The key file (index into the sources given) that enrolled it.
        source: usize,
        /// The key (index into that source's keys).
        key: usize,
    },
    /// No server answered usefully: wait `delay`, call [`Driver::retry_due`], step again.
    BackOff {
        /// Faults in a row, this one included.
        attempt: u32,
        /// How long to wait.
        delay: Duration,
        /// What went wrong on each server (never a key).
        detail: String,
        /// Whether a server was refused because its chain is not the pinned UMS ID.
        pin_refused: bool,
    },
    /// Nothing these key files hold can enroll this device; the reason says what would.
    Refused(Failure),
    /// No key file with a key for this device.
    NoKeys,
}

/// Drives one device's enrollment (see the module documentation).
#[derive(Clone)]
pub struct Driver {
    /// Makes the passes and applies the transitions.
    pub enroller: Enroller,
    /// How long to wait after faults.
    pub backoff: BackoffPolicy,
    /// Told before each pass (the daemon counts them).
    pub on_pass: Arc<dyn Fn() + Send + Sync>,
    /// Passes in a row that ended in a fault.
    faults: u32,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("enroller", &self.enroller)
            .field("backoff", &self.backoff)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for `enroller`, backing off by `backoff`.
    pub fn new(enroller: Enroller, backoff: BackoffPolicy) -> Driver {
        Driver {
            enroller,
            backoff,
            on_pass: Arc::new(|| {}),
            faults: 0,
        }
    }

    /// Faults in a row so far.
    pub fn faults(&self) -> u32 {
        self.faults
    }

    /// One step over `sources` (key files in the order they were found): a pass with the first
    /// usable one, then the next while keys run out. `jitter` in `[0, 1]` draws the backoff.
    /// The device must not be enrolled.
    pub async fn step(
        &mut self,
        state: &mut AgentState,
        sources: &[KeySource],
        jitter: f64,
    ) -> Result<Step, EnrollError> {
        let enroller = &self.enroller;
        let mut mismatch = None;
        let mut exhausted = 0usize;
        for (index, source) in sources.iter().enumerate() {
            if let Err(failure) = enroller.pin_for(state, &source.ums_id) {
                mismatch.get_or_insert(failure);
                continue;
            }
            let mut candidates = enroller.candidates(state, source);
            if candidates.fill(state, source, 1) == 0 {
                exhausted += candidates.refused;
                continue;
            }
            match &state.phase {
                Phase::Enrolling => {}
                // A wait that is over (or one a restart cut short): resume.
                Phase::BackingOff { .. } => enroller.transition(state, Event::RetryDue)?,
                Phase::Failed { reason } => {
                    tracing::info!(previous = %reason, key_file = %source.origin, "trying again with a key file");
                    enroller.transition(state, Event::KeysFound)?;
                }
                _ => enroller.transition(state, Event::KeysFound)?,
            }
            tracing::info!(key_file = %source.origin, servers = source.servers.len(), "enrolling");
            (self.on_pass)();
            match enroller.pass(source, state, candidates).await? {
                Pass::Issued { key } => {
                    self.faults = 0;
                    enroller.transition(state, Event::Issued)?;
                    return Ok(Step::Enrolled { source: index, key });
                }
                Pass::Refused(Failure::KeysExhausted { refused }) => {
                    // This key file is spent; the next one may still hold a key.
                    exhausted += refused;
                }
                Pass::Refused(failure) => {
                    self.faults = 0;
                    return self.refuse(state, failure);
                }
                Pass::Fault {
                    retry_after,
                    detail,
                    pin_refused,
                } => {
                    self.faults = self.faults.saturating_add(1);
                    let attempt = self.faults;
                    let delay = backoff(&self.backoff, attempt, retry_after, jitter);
                    tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, %detail, "backing off; the same key follows");
                    state.last_error = Some(detail.clone());
                    enroller.transition(state, Event::NetworkFault { attempt, delay })?;
                    return Ok(Step::BackOff {
                        attempt,
                        delay,
                        detail,
                        pin_refused,
                    });
                }
            }
        }
        self.faults = 0;
        let failure = if exhausted > 0 {
            Some(Failure::KeysExhausted { refused: exhausted })
        } else {
            mismatch
        };
        match failure {
            Some(failure) => self.refuse(state, failure),
            None => {
                if matches!(state.phase, Phase::Enrolling | Phase::BackingOff { .. }) {
                    enroller.transition(state, Event::KeysGone)?;
                }
                Ok(Step::NoKeys)
            }
        }
    }

    /// Records a refusal; reported once, so the same stick looked at again stays quiet.
    fn refuse(&self, state: &mut AgentState, failure: Failure) -> Result<Step, EnrollError> {
        let already = state.phase
            == Phase::Failed {
                reason: failure.clone(),
            };
        if !already {
            tracing::error!(reason = %failure, "cannot enroll");
            state.last_error = Some(failure.to_string());
            self.enroller
                .transition(state, Event::Refused(failure.clone()))?;
        }
        Ok(Step::Refused(failure))
    }

    /// A backoff is over.
    pub fn retry_due(&mut self, state: &mut AgentState) -> Result<(), EnrollError> {
        if matches!(state.phase, Phase::BackingOff { .. }) {
            self.enroller.transition(state, Event::RetryDue)?;
        }
        Ok(())
    }

    /// The key files went away before the work was done.
    pub fn keys_gone(&mut self, state: &mut AgentState) -> Result<(), EnrollError> {
        self.faults = 0;
        self.enroller.transition(state, Event::KeysGone)
    }

    /// Steps until enrolled or refused, sleeping through backoffs; after `max_faults` faults in a
    /// row the last [`Step::BackOff`] is returned instead of waiting. `jitter(attempt)` draws each
    /// backoff; `on_backoff` is told of each wait before it is waited.
    pub async fn until_done(
        &mut self,
        state: &mut AgentState,
        sources: &[KeySource],
        max_faults: u32,
        mut jitter: impl FnMut(u32) -> f64,
        mut on_backoff: impl FnMut(&Step),
    ) -> Result<Step, EnrollError> {
        loop {
            let draw = jitter(self.faults.saturating_add(1));
            let step = self.step(state, sources, draw).await?;
            let Step::BackOff { attempt, delay, .. } = &step else {
                return Ok(step);
            };
            if *attempt >= max_faults {
                return Ok(step);
            }
            on_backoff(&step);
            tokio::time::sleep(*delay).await;
            self.retry_due(state)?;
        }
    }
}
