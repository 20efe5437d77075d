//! Test-rig mode: what integration rigs (and the project's own tests) use to make a server
//! misbehave on purpose, and to move its clock. Absent from a normal `serve`: a server has a
//! [`Rig`] only when started with `serve --test-rig` or by [`crate::testing`].
//!
//! # Layout
//! - [`faults`]: the fault plan (per route class: a probability and a kind), pure and seeded: the
//!   same seed gives the same faults in the same order.
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
pub mod strict;

use std::sync::Mutex;

pub use clock::Clock;
pub use faults::{FaultKind, FaultPlan, RouteClass, RouteFault};

/// The controls of a server in test-rig mode, shared by its routes and its control surfaces.
#[derive(Debug)]
pub struct Rig {
    /// The clock the server reads; the same one [`crate::stub::Stub::clock`] holds.
    pub clock: Clock,
    /// The fault plan in force and the seeded draws it makes.
    faults: Mutex<faults::Draws>,
}

impl Rig {
    /// Controls with no faults, over `clock`.
    pub fn new(clock: Clock) -> Rig {
        Rig {
            clock,
            faults: Mutex::new(faults::Draws::new(FaultPlan::default())),
        }
    }

    /// Puts `plan` in force from the next request on, its draws starting again from its seed.
    pub fn set_faults(&self, plan: FaultPlan) {
        *self.faults.lock().expect("fault plan lock") = faults::Draws::new(plan);
    }

    /// The plan in force.
    pub fn faults(&self) -> FaultPlan {
        self.faults.lock().expect("fault plan lock").plan().clone()
    }

    /// The fault, if any, the next request of `route` meets (one seeded draw).
    pub fn draw(&self, route: RouteClass) -> Option<FaultKind> {
        self.faults.lock().expect("fault plan lock").draw(route)
    }

    /// Lets every request a `hold` fault holds go on; returns how many there were.
    /// (Skeleton: the fault-injection work fills it in.)
    pub fn release_held(&self) -> usize {
        0
    }

    /// How many requests a `hold` fault holds now.
    /// (Skeleton: the fault-injection work fills it in.)
    pub fn held(&self) -> usize {
        0
    }
}
