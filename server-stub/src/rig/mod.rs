//! Test-rig mode: what integration rigs (and the project's own tests) use to make a server
//! misbehave on purpose, and to move its clock. Absent from a normal `serve`: a server has a
//! [`Rig`] only when started with `serve --test-rig` or by `ums_stub::testing`.
//!
//! # Layout
//! - [`faults`]: the fault plan (per route class: a probability and a kind), pure and seeded: the
//!   same seed gives the same faults in the same order.
//! - [`layer`]: the middleware that applies the plan to requests (refuse, delay, hold, drop the
//!   connection after the commit), and the closing of connector sessions every N seconds.
//! - [`actions`]: one-shot actions: expire every device certificate, replace the UMS ID, make
//!   the store unavailable for a while.
//! - [`clock`]: the server's notion of now, which a rig can move forward without sleeping.
//!
//! The [`Rig`] handle is what the control listener (`serve --test-rig`) and the in-process
//! builder drive: set the plan, move the clock, release held requests, run one-shot actions.

pub mod actions;
pub mod clock;
pub mod control;
pub mod faults;
pub mod layer;
pub mod strict;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use clock::Clock;
pub use faults::{FaultKind, FaultPlan, RouteClass, RouteFault};

/// The controls of a server in test-rig mode, shared by its routes and its control surfaces.
#[derive(Debug)]
pub struct Rig {
    /// The clock the server reads; the same one [`crate::stub::Stub::clock`] holds.
    pub clock: Clock,
    /// The fault plan in force and the seeded draws it makes.
    faults: Mutex<faults::Draws>,
    /// Told whenever a plan is put in force (the session closer reads its period again).
    plan_changed: tokio::sync::Notify,
    /// Requests a `hold` fault holds now.
    held: AtomicUsize,
    /// Bumped by [`Rig::release_held`]: every request held before it goes on.
    releases: tokio::sync::watch::Sender<u64>,
    /// Until when the store answers as unreachable ([`actions::store_unavailable`]).
    unavailable_until: Mutex<Option<tokio::time::Instant>>,
    /// Serials of device certificates the server sees as expired ([`actions::expire_certificates`]).
    expired: Mutex<HashSet<String>>,
    /// The TLS leaf the server presents (set when it starts serving), for the rotation drill.
    leaf: OnceLock<Arc<crate::tls::ServerLeaf>>,
}

impl Rig {
    /// Controls with no faults, over `clock`.
    pub fn new(clock: Clock) -> Rig {
        Rig {
            clock,
            faults: Mutex::new(faults::Draws::new(FaultPlan::default())),
            plan_changed: tokio::sync::Notify::new(),
            held: AtomicUsize::new(0),
            releases: tokio::sync::watch::channel(0).0,
            unavailable_until: Mutex::new(None),
            expired: Mutex::new(HashSet::new()),
            leaf: OnceLock::new(),
        }
    }

    /// Puts `plan` in force from the next request on, its draws starting again from its seed.
    /// (Check it first with [`FaultPlan::validate`].)
    pub fn set_faults(&self, plan: FaultPlan) {
        *lock(&self.faults) = faults::Draws::new(plan);
        self.plan_changed.notify_one();
    }

    /// The plan in force.
    pub fn faults(&self) -> FaultPlan {
        lock(&self.faults).plan().clone()
    }

    /// The fault, if any, the next request of `route` meets (one seeded draw).
    pub fn draw(&self, route: RouteClass) -> Option<FaultKind> {
        lock(&self.faults).draw(route)
    }

    /// Lets every request a `hold` fault holds go on; returns how many there were.
    pub fn release_held(&self) -> usize {
        let held = self.held();
        self.releases.send_modify(|release| *release += 1);
        held
    }

    /// How many requests a `hold` fault holds now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Holds the calling request until the next [`Rig::release_held`]; counted in
    /// [`Rig::held`] meanwhile (and no longer once the request is dropped).
    async fn hold(&self) {
        let mut released = self.releases.subscribe();
        self.held.fetch_add(1, Ordering::SeqCst);
        let _counted = Counted(&self.held);
        let _ = released.changed().await;
    }

    /// How much longer the store answers as unreachable, if it does now.
    pub fn store_unavailable_for(&self) -> Option<Duration> {
        let until = (*lock(&self.unavailable_until))?;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Whether the server sees the device certificate with `serial` (hex) as expired.
    pub fn is_expired(&self, serial: &str) -> bool {
        let expired = lock(&self.expired);
        !expired.is_empty() && expired.contains(serial)
    }

    /// Whether any certificate was expired by the rig (so requests need their serial read).
    fn expires_any(&self) -> bool {
        !lock(&self.expired).is_empty()
    }

    /// Hands the rig the TLS leaf the server presents (done once, as it starts serving).
    pub fn serve_leaf(&self, leaf: Arc<crate::tls::ServerLeaf>) {
        let _ = self.leaf.set(leaf);
    }
}

/// Decrements a count when dropped.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A rig lock: a panic elsewhere leaves the data usable (each field is set whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
