//! The fault plan, pure and seeded: per route class, a list of faults each with a probability;
//! one draw per request picks at most one of them. Each route class draws from its own seeded
//! stream, so the n-th request of a class meets the same fault in every run with the same seed,
//! however requests of other classes interleave with it.
//!
//! A plan is what rigs write (JSON, as the control listener and `fleet-sim --faults` read it):
//!
//! ```json
//! { "seed": 7,
//!   "routes": { "enrollment": [
//!       { "probability": 0.3, "fault": { "kind": "drop_after_commit" } },
//!       { "probability": 0.1, "fault": { "kind": "refuse", "status": 503, "retry_after_seconds": 1 } } ] },
//!   "close_sessions_every_seconds": 5 }
//! ```

use std::collections::BTreeMap;

use onboard_protocol::ProblemCode;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// The routes faults are planned for, by who calls them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RouteClass {
    /// EST enrollment (`simpleenroll`) and the key check before a rollout.
    Enrollment,
    /// EST renewal (`simplereenroll`) over mutual TLS.
    Renewal,
    /// What enrolled devices send over mutual TLS besides renewal (inventory and the like).
    Inventory,
    /// The device connector's WebSocket (`/device/v1/connect`).
    Connector,
    /// The admin API and the Web App.
    Admin,
}

impl RouteClass {
    /// Every class, in order.
    pub const ALL: [RouteClass; 5] = [
        RouteClass::Enrollment,
        RouteClass::Renewal,
        RouteClass::Inventory,
        RouteClass::Connector,
        RouteClass::Admin,
    ];

    /// The stream of seeded draws this class takes.
    fn stream(self) -> u64 {
        self as u64
    }
}

/// What a request meets when a fault is drawn for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Refused before the route runs, with `status` (400 to 599) and a problem body naming `code`
    /// (`unavailable` when left out); 429 and 503 carry `Retry-After`.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// The problem code of the body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        code: Option<ProblemCode>,
        /// `Retry-After` in seconds (429 and 503 only; 1 when left out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<u64>,
    },
    /// The request runs after a delay.
    Delay {
        /// How long, in milliseconds.
        millis: u64,
    },
    /// The request waits until the rig releases held requests (or the server stops).
    Hold,
    /// The request runs and commits, then its connection is closed without the answer: the lost
    /// answer a device on a flaky network meets.
    DropAfterCommit,
}

/// One fault of a route class and how often it is drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteFault {
    /// The share of requests that meet it, 0 to 1.
    pub probability: f64,
    /// What they meet.
    pub fault: FaultKind,
}

/// The faults in force: off by default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// The seed of the draws.
    #[serde(default)]
    pub seed: u64,
    /// Per route class, its faults; their probabilities add up to at most 1.
    #[serde(default)]
    pub routes: BTreeMap<RouteClass, Vec<RouteFault>>,
    /// Close every connector session this often (devices reconnect), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_sessions_every_seconds: Option<u64>,
}

/// Why a plan cannot be put in force; names the route class and fault at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A probability outside 0 to 1, or not a number.
    #[error("routes.{route}[{index}].probability: must be between 0 and 1")]
    Probability {
        /// The route class, as written.
        route: &'static str,
        /// The fault's place in its list.
        index: usize,
    },
    /// The probabilities of a route class add up to more than 1.
    #[error("routes.{route}: the probabilities add up to more than 1")]
    Sum {
        /// The route class, as written.
        route: &'static str,
    },
    /// A refusal status that is not a client or server error.
    #[error("routes.{route}[{index}].fault.status: must be between 400 and 599")]
    Status {
        /// The route class, as written.
        route: &'static str,
        /// The fault's place in its list.
        index: usize,
    },
    /// Sessions closed every 0 seconds.
    #[error("close_sessions_every_seconds: must be at least 1")]
    SessionsEvery,
}

impl RouteClass {
    /// The name plans use.
    pub const fn as_str(self) -> &'static str {
        match self {
            RouteClass::Enrollment => "enrollment",
            RouteClass::Renewal => "renewal",
            RouteClass::Inventory => "inventory",
            RouteClass::Connector => "connector",
            RouteClass::Admin => "admin",
        }
    }
}

impl FaultPlan {
    /// Checks the plan: probabilities between 0 and 1 adding up to at most 1 per class, refusal
    /// statuses between 400 and 599, sessions closed every second at most.
    pub fn validate(&self) -> Result<(), PlanError> {
        for (&route, faults) in &self.routes {
            let name = route.as_str();
            let mut sum = 0.0;
            for (index, fault) in faults.iter().enumerate() {
                if !(0.0..=1.0).contains(&fault.probability) {
                    return Err(PlanError::Probability { route: name, index });
                }
                if let FaultKind::Refuse { status, .. } = fault.fault
                    && !(400..=599).contains(&status)
                {
                    return Err(PlanError::Status { route: name, index });
                }
                sum += fault.probability;
            }
            // A little slack for sums like 0.7 + 0.2 + 0.1 in floating point.
            if sum > 1.0 + 1e-9 {
                return Err(PlanError::Sum { route: name });
            }
        }
        if self.close_sessions_every_seconds == Some(0) {
            return Err(PlanError::SessionsEvery);
        }
        Ok(())
    }

    /// Whether any fault is planned.
    pub fn is_off(&self) -> bool {
        self.routes
            .values()
            .all(|faults| faults.iter().all(|fault| fault.probability == 0.0))
            && self.close_sessions_every_seconds.is_none()
    }
}

/// Which fault, if any, a draw `u` (uniform in 0 to 1) picks from `faults`: the first whose
/// running sum of probabilities exceeds `u`.
pub fn pick(faults: &[RouteFault], u: f64) -> Option<&FaultKind> {
    let mut below = 0.0;
    for fault in faults {
        below += fault.probability;
        if u < below {
            return Some(&fault.fault);
        }
    }
    None
}

/// A plan and its seeded streams, one per route class.
#[derive(Debug)]
pub struct Draws {
    plan: FaultPlan,
    streams: BTreeMap<RouteClass, ChaCha8Rng>,
}

impl Draws {
    /// The draws of `plan`, from its seed.
    pub fn new(plan: FaultPlan) -> Draws {
        let streams = RouteClass::ALL
            .into_iter()
            .map(|route| {
                let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
                rng.set_stream(route.stream());
                (route, rng)
            })
            .collect();
        Draws { plan, streams }
    }

    /// The plan drawn from.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// The fault the next request of `route` meets, if any. A class with no faults draws
    /// nothing, so adding faults to one class leaves another's sequence as it was.
    pub fn draw(&mut self, route: RouteClass) -> Option<FaultKind> {
        let faults = self.plan.routes.get(&route).filter(|f| !f.is_empty())?;
        let rng = self.streams.get_mut(&route)?;
        // 53 random bits: every double in 0 to 1 a uniform draw can give.
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        pick(faults, u).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(status: u16) -> FaultKind {
        FaultKind::Refuse {
            status,
            code: None,
            retry_after_seconds: None,
        }
    }

    fn plan(route: RouteClass, faults: Vec<(f64, FaultKind)>) -> FaultPlan {
        FaultPlan {
            seed: 7,
            routes: BTreeMap::from([(
                route,
                faults
                    .into_iter()
                    .map(|(probability, fault)| RouteFault { probability, fault })
                    .collect(),
            )]),
            close_sessions_every_seconds: None,
        }
    }

    #[test]
    fn a_draw_picks_the_fault_whose_running_sum_it_falls_under() {
        let faults = plan(
            RouteClass::Enrollment,
            vec![(0.3, FaultKind::DropAfterCommit), (0.1, refuse(503))],
        )
        .routes
        .remove(&RouteClass::Enrollment)
        .unwrap();
        let table = [
            (0.0, Some(FaultKind::DropAfterCommit)),
            (0.299, Some(FaultKind::DropAfterCommit)),
            (0.3, Some(refuse(503))),
            (0.399, Some(refuse(503))),
            (0.4, None),
            (0.999, None),
        ];
        for (u, expected) in table {
            assert_eq!(pick(&faults, u).cloned(), expected, "draw {u}");
        }
        assert_eq!(pick(&[], 0.0), None);
    }

    #[test]
    fn plans_out_of_bounds_are_refused_naming_the_field() {
        let table: [(FaultPlan, Result<(), PlanError>); 6] = [
            (FaultPlan::default(), Ok(())),
            (
                plan(RouteClass::Admin, vec![(1.0, FaultKind::Hold)]),
                Ok(()),
            ),
            (
                plan(RouteClass::Admin, vec![(1.5, FaultKind::Hold)]),
                Err(PlanError::Probability {
                    route: "admin",
                    index: 0,
                }),
            ),
            (
                plan(
                    RouteClass::Renewal,
                    vec![(0.5, FaultKind::Hold), (f64::NAN, FaultKind::Hold)],
                ),
                Err(PlanError::Probability {
                    route: "renewal",
                    index: 1,
                }),
            ),
            (
                plan(
                    RouteClass::Renewal,
                    vec![(0.6, FaultKind::Hold), (0.6, FaultKind::Hold)],
                ),
                Err(PlanError::Sum { route: "renewal" }),
            ),
            (
                plan(RouteClass::Enrollment, vec![(0.1, refuse(302))]),
                Err(PlanError::Status {
                    route: "enrollment",
                    index: 0,
                }),
            ),
        ];
        for (plan, expected) in table {
            assert_eq!(plan.validate(), expected, "{plan:?}");
        }
        let every_zero = FaultPlan {
            close_sessions_every_seconds: Some(0),
            ..FaultPlan::default()
        };
        assert_eq!(every_zero.validate(), Err(PlanError::SessionsEvery));
        assert_eq!(
            PlanError::Probability {
                route: "admin",
                index: 2
            }
            .to_string(),
            "routes.admin[2].probability: must be between 0 and 1"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_in_the_same_order_per_route() {
        let chosen = plan(
            RouteClass::Enrollment,
            vec![(0.3, FaultKind::DropAfterCommit), (0.1, refuse(503))],
        );
        let mut one = Draws::new(chosen.clone());
        let mut two = Draws::new(chosen.clone());
        let first: Vec<_> = (0..200).map(|_| one.draw(RouteClass::Enrollment)).collect();
        // Draws of other classes in between do not shift this class's sequence.
        let second: Vec<_> = (0..200)
            .map(|_| {
                two.draw(RouteClass::Admin);
                two.draw(RouteClass::Renewal);
                two.draw(RouteClass::Enrollment)
            })
            .collect();
        assert_eq!(first, second);
        // The shares are near the plan's: 30 % and 10 % of 200, within a wide margin.
        let dropped = first
            .iter()
            .filter(|f| **f == Some(FaultKind::DropAfterCommit))
            .count();
        let refused = first.iter().filter(|f| **f == Some(refuse(503))).count();
        assert!((40..=80).contains(&dropped), "{dropped} dropped");
        assert!((5..=40).contains(&refused), "{refused} refused");
        // Another seed gives another sequence.
        let mut other = Draws::new(FaultPlan { seed: 8, ..chosen });
        let third: Vec<_> = (0..200)
            .map(|_| other.draw(RouteClass::Enrollment))
            .collect();
        assert_ne!(first, third);
    }

    #[test]
    fn a_plan_reads_from_the_json_rigs_write() {
        let text = r#"{ "seed": 7,
          "routes": { "enrollment": [
              { "probability": 0.3, "fault": { "kind": "drop_after_commit" } },
              { "probability": 0.1, "fault": { "kind": "refuse", "status": 503, "retry_after_seconds": 1 } } ] },
          "close_sessions_every_seconds": 5 }"#;
        let read: FaultPlan = serde_json::from_str(text).unwrap();
        assert_eq!(read.seed, 7);
        assert_eq!(read.close_sessions_every_seconds, Some(5));
        assert_eq!(
            read.routes[&RouteClass::Enrollment][1].fault,
            FaultKind::Refuse {
                status: 503,
                code: None,
                retry_after_seconds: Some(1)
            }
        );
        assert!(!read.is_off());
        assert!(FaultPlan::default().is_off());
        let unknown = serde_json::from_str::<FaultPlan>(r#"{"routes":{"dns":[]}}"#);
        assert!(unknown.is_err());
    }
}
