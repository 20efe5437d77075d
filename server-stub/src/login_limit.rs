//! Limits on failed logins (the Web App's name and password), built so that nobody can use them
//! to lock an administrator out.
//!
//! Only **failures** count. Each login reserves one failure before its password is checked, so
//! parallel attempts cannot all slip under a limit while argon2 runs, and a successful login gives
//! its reservation back ([`LoginTicket::succeeded`]).
//!
//! - **Per account and source network** (an IPv4 address, an IPv6 /64): after
//!   [`LoginLimits::per_account_source`] failures in a window, that account's logins from that
//!   network get 429 until the window ends. Someone guessing `admin`'s password from one network
//!   blocks only themselves: the right password from another network signs in at once.
//! - **Per source network**, whatever the name: after [`LoginLimits::per_source`] failures, every
//!   login from it gets 429 (one address spraying names).
//! - **Per account, from everywhere**: past [`LoginLimits::account_slows_after`] failures in a
//!   window, logins to that account from networks that have already failed against it go one at a
//!   time through the account's lane ([`LoginAdmission::Check::lane`]), each waiting before its
//!   password is checked, longer the more failures there were (at most [`MAX_SLOWING`]). So a
//!   guesser spread over many networks gets at most one check of that account per wait, however
//!   many it sends at once, and is never refused: a network that has not failed against the
//!   account is not slowed at all.
//! - **Globally**: past [`LoginLimits::hashed_decoys`] failures in a window, a login naming no
//!   account no longer costs an argon2 hash (run so that such a login takes as long as a real
//!   one): it waits about as long instead ([`DecoyCost::Wait`]). A flood of made-up names costs
//!   the server no CPU beyond that bound.
//!
//! The rule is [`decide`], a pure function of the counts; [`LoginLimiter`] keeps the counts (in
//! the bounded two-generation maps of [`crate::rate_limit`]) and applies it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rate_limit::{Counter, GENERATION, Window, source_group};

/// Limits on failed logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures one account may see from one source network per window before that network's
    /// logins to it get 429.
    pub per_account_source: u32,
    /// Failures one source network may make per window, whatever the names, before all its logins
    /// get 429.
    pub per_source: u32,
    /// Failures one account may see from everywhere per window before logins to it from networks
    /// that failed against it are slowed.
    pub account_slows_after: u32,
    /// Failures from everywhere per window after which a login naming no account waits instead of
    /// hashing.
    pub hashed_decoys: u32,
    /// The window.
    pub window: Duration,
}

impl LoginLimits {
    /// The limits for `max_failed_logins` failures per account and network within `window` (the
    /// config file's two settings); the other bounds follow from it.
    pub fn new(max_failed_logins: u32, window: Duration) -> Self {
        Self {
            per_account_source: max_failed_logins,
            per_source: max_failed_logins.saturating_mul(3),
            account_slows_after: max_failed_logins.saturating_mul(5),
            hashed_decoys: max_failed_logins.saturating_mul(30),
            window,
        }
    }
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self::new(10, Duration::from_secs(60))
    }
}

/// The longest a login to a much-guessed account waits.
pub const MAX_SLOWING: Duration = Duration::from_secs(5);

/// How long a login waits for each failure beyond [`LoginLimits::account_slows_after`].
const SLOWING_PER_FAILURE: Duration = Duration::from_millis(50);

/// The counts a login is decided on, each within its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures {
    /// Of this account from this source network.
    pub account_source: u32,
    /// Of this source network, whatever the names.
    pub source: u32,
    /// Of this account, from everywhere.
    pub account: u32,
    /// Of every login, from everywhere.
    pub all: u32,
}

/// What a login naming no account costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoyCost {
    /// An argon2 check against a decoy hash, as a real account's would.
    Hash,
    /// A wait about as long as a check, with no CPU spent.
    Wait,
}

/// What happens to a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Its password is checked, after waiting this long (zero for most).
    Check {
        /// The wait first.
        wait: Duration,
        /// What it costs if it names no account.
        decoy: DecoyCost,
    },
    /// Refused with 429: this account from this network, or this network, failed too often.
    Refuse,
}

/// The rule: what happens to a login, given the failures counted so far.
pub fn decide(failures: Failures, limits: &LoginLimits) -> Decision {
    if failures.account_source >= limits.per_account_source || failures.source >= limits.per_source
    {
        return Decision::Refuse;
    }
    // A network that never failed against the account is never slowed.
    let wait = if failures.account_source > 0 && failures.account >= limits.account_slows_after {
        let beyond = failures.account - limits.account_slows_after + 1;
        SLOWING_PER_FAILURE.saturating_mul(beyond).min(MAX_SLOWING)
    } else {
        Duration::ZERO
    };
    let decoy = if failures.all >= limits.hashed_decoys {
        DecoyCost::Wait
    } else {
        DecoyCost::Hash
    };
    Decision::Check { wait, decoy }
}

/// What [`LoginLimiter::admit`] answers.
#[derive(Debug)]
pub enum LoginAdmission {
    /// Check the password (after `wait`), then tell the ticket how it went.
    Check {
        /// The failure reserved for this login.
        ticket: LoginTicket,
        /// How long to wait before checking.
        wait: Duration,
        /// What a login naming no account costs.
        decoy: DecoyCost,
        /// For a slowed login, the lane of its account: held from before the wait until the
        /// password is checked, so slowed logins to one account go one at a time.
        lane: Option<Arc<tokio::sync::Mutex<()>>>,
    },
    /// Refused until the window ends.
    Refused {
        /// How long until then.
        retry_after: Duration,
    },
}

/// The failure reserved for one login: kept when it fails, given back when it succeeds.
#[derive(Debug)]
#[must_use = "a successful login gives its reserved failure back"]
pub struct LoginTicket {
    account_source: ((String, IpAddr), Instant),
    source: (IpAddr, Instant),
    account: (String, Instant),
    all: Instant,
}

impl LoginTicket {
    /// The login succeeded (or was never decided): its reserved failure is given back.
    pub fn succeeded(self, limiter: &LoginLimiter) {
        let (key, started) = self.account_source;
        limiter.account_sources.refund(&key, started, 1);
        limiter.sources.refund(&self.source.0, self.source.1, 1);
        limiter.accounts.refund(&self.account.0, self.account.1, 1);
        limiter.all.refund(&(), self.all, 1);
    }
}

/// How many lanes slowed logins share out by account name: a fixed number, so they cost no memory
/// per account (two slowed accounts may share one).
const LANES: usize = 64;

/// The failure counts of one server.
#[derive(Debug)]
pub struct LoginLimiter {
    limits: LoginLimits,
    account_sources: Counter<(String, IpAddr)>,
    sources: Counter<IpAddr>,
    accounts: Counter<String>,
    all: Counter<()>,
    lanes: Vec<Arc<tokio::sync::Mutex<()>>>,
}

impl LoginLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            account_sources: Counter::new(GENERATION),
            sources: Counter::new(GENERATION),
            accounts: Counter::new(GENERATION),
            all: Counter::new(1),
            lanes: (0..LANES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
        }
    }

    /// The lane of the account `name`.
    fn lane(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % LANES as u64).unwrap_or(0);
        self.lanes[index].clone()
    }

    /// Decides a login to `name` from `source` now and, unless it is refused, reserves one failure
    /// for it in every count: in one step, so that logins in flight together are all counted.
    pub fn admit(&self, source: IpAddr, name: &str, now: Instant) -> LoginAdmission {
        let window = self.limits.window;
        let group = source_group(source);
        let pair = (name.to_owned(), group);
        let name = name.to_owned();
        // Always in this order.
        let mut account_sources = self.account_sources.lock();
        let mut sources = self.sources.lock();
        let mut accounts = self.accounts.lock();
        let mut all = self.all.lock();
        let mut by_pair = Counter::peek(&account_sources, &pair, window, now);
        let mut by_source = Counter::peek(&sources, &group, window, now);
        let mut by_account = Counter::peek(&accounts, &name, window, now);
        let mut by_all = Counter::peek(&all, &(), window, now);
        let failures = Failures {
            account_source: by_pair.guesses,
            source: by_source.guesses,
            account: by_account.guesses,
            all: by_all.guesses,
        };
        match decide(failures, &self.limits) {
            Decision::Refuse => {
                let ends = |entry: &Window| (entry.started + window).saturating_duration_since(now);
                let retry_after = if failures.account_source >= self.limits.per_account_source {
                    ends(&by_pair)
                } else {
                    ends(&by_source)
                };
                LoginAdmission::Refused { retry_after }
            }
            Decision::Check { wait, decoy } => {
                for entry in [&mut by_pair, &mut by_source, &mut by_account, &mut by_all] {
                    entry.guesses = entry.guesses.saturating_add(1);
                }
                self.account_sources
                    .put(&mut account_sources, &pair, by_pair);
                self.sources.put(&mut sources, &group, by_source);
                self.accounts.put(&mut accounts, &name, by_account);
                self.all.put(&mut all, &(), by_all);
                let lane = (!wait.is_zero()).then(|| self.lane(&name));
                LoginAdmission::Check {
                    ticket: LoginTicket {
                        account_source: (pair, by_pair.started),
                        source: (group, by_source.started),
                        account: (name, by_account.started),
                        all: by_all.started,
                    },
                    wait,
                    decoy,
                    lane,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(account_source: u32, source: u32, account: u32, all: u32) -> Failures {
        Failures {
            account_source,
            source,
            account,
            all,
        }
    }

    fn check(wait_ms: u64, decoy: DecoyCost) -> Decision {
        Decision::Check {
            wait: Duration::from_millis(wait_ms),
            decoy,
        }
    }

    #[test]
    fn the_rule_refuses_a_network_slows_a_guessed_account_and_spares_clean_networks() {
        let limits = LoginLimits::default();
        assert_eq!(
            (
                limits.per_account_source,
                limits.per_source,
                limits.account_slows_after
            ),
            (10, 30, 50)
        );
        let table = [
            // Nothing failed yet.
            (failures(0, 0, 0, 0), check(0, DecoyCost::Hash)),
            // This network used up its tries at this account, or its tries at all.
            (failures(10, 10, 10, 10), Decision::Refuse),
            (failures(0, 30, 0, 30), Decision::Refuse),
            (failures(9, 29, 9, 29), check(0, DecoyCost::Hash)),
            // The account is guessed at from everywhere: a clean network is not slowed ...
            (failures(0, 0, 1_000, 1_000), check(0, DecoyCost::Wait)),
            // ... one that failed against it is, more the more failures, up to the cap.
            (failures(1, 1, 49, 49), check(0, DecoyCost::Hash)),
            (failures(1, 1, 50, 50), check(50, DecoyCost::Hash)),
            (failures(3, 3, 69, 69), check(1_000, DecoyCost::Hash)),
            (
                failures(9, 9, 100_000, 100_000),
                check(5_000, DecoyCost::Wait),
            ),
            // Past the global bound, a login naming no account costs a wait, not a hash.
            (failures(0, 0, 0, 299), check(0, DecoyCost::Hash)),
            (failures(0, 0, 0, 300), check(0, DecoyCost::Wait)),
        ];
        for (counts, expected) in table {
            assert_eq!(decide(counts, &limits), expected, "{counts:?}");
        }
    }

    fn admitted(limiter: &LoginLimiter, source: IpAddr, name: &str, now: Instant) -> LoginTicket {
        match limiter.admit(source, name, now) {
            LoginAdmission::Check { ticket, .. } => ticket,
            LoginAdmission::Refused { retry_after } => panic!("refused for {retry_after:?}"),
        }
    }

    #[test]
    fn failures_from_one_network_never_block_another_and_successes_do_not_count() {
        let limiter = LoginLimiter::new(LoginLimits::default());
        let now = Instant::now();
        let attacker: IpAddr = "127.0.0.2".parse().unwrap();
        let admin: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            let _failed = admitted(&limiter, attacker, "admin", now);
        }
        assert!(matches!(
            limiter.admit(attacker, "admin", now),
            LoginAdmission::Refused { .. }
        ));
        // Successes give their reservation back: a hundred of them block nothing.
        for _ in 0..100 {
            admitted(&limiter, admin, "admin", now).succeeded(&limiter);
        }
        let ticket = admitted(&limiter, admin, "admin", now);
        ticket.succeeded(&limiter);
        // The attacker's window ends.
        let later = now + Duration::from_secs(60);
        admitted(&limiter, attacker, "admin", later).succeeded(&limiter);
    }

    #[test]
    fn slowed_logins_to_one_account_share_its_lane_and_clean_networks_skip_it() {
        let limiter = LoginLimiter::new(LoginLimits::default());
        let now = Instant::now();
        // Fifty failures against admin from five networks, ten each.
        for network in 1..=5u8 {
            for _ in 0..10 {
                let _failed = admitted(&limiter, IpAddr::from([192, 0, 2, network]), "admin", now);
            }
        }
        let slowed = |source: IpAddr| match limiter.admit(source, "admin", now) {
            LoginAdmission::Check { wait, lane, .. } => (wait, lane),
            LoginAdmission::Refused { .. } => panic!("refused"),
        };
        // A sixth network fails once; its next login waits in the account's lane.
        let sixth = IpAddr::from([198, 51, 100, 6]);
        let _failed = admitted(&limiter, sixth, "admin", now);
        let (wait, lane) = slowed(sixth);
        assert!(wait > Duration::ZERO);
        let lane = lane.expect("a slowed login takes the account's lane");
        let seventh = IpAddr::from([198, 51, 100, 7]);
        let _failed = admitted(&limiter, seventh, "admin", now);
        let (_, other) = slowed(seventh);
        assert!(Arc::ptr_eq(&lane, &other.unwrap()), "one lane an account");
        // A network that never failed is neither slowed nor queued.
        let (wait, lane) = slowed(IpAddr::from([203, 0, 113, 1]));
        assert_eq!((wait, lane.is_none()), (Duration::ZERO, true));
    }

    #[test]
    fn logins_in_flight_together_are_all_counted() {
        let limiter = LoginLimiter::new(LoginLimits::default());
        let now = Instant::now();
        let source: IpAddr = "192.0.2.7".parse().unwrap();
        // Ten checks not yet finished hold the whole budget: the eleventh is refused at once.
        let pending: Vec<LoginTicket> = (0..10)
            .map(|_| admitted(&limiter, source, "admin", now))
            .collect();
        assert!(matches!(
            limiter.admit(source, "admin", now),
            LoginAdmission::Refused { .. }
        ));
        drop(pending);
    }
}
