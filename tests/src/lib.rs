//! End-to-end pieces over the agent and the server: the fleet simulator and the demo, and what
//! the end-to-end tests share.
//!
//! # Layout
//! - [`fleet`]: many simulated devices enrolling from one key file, the handshake ceiling, and
//!   the summary `fleet-sim` prints.
//! - [`programs`]: the `onboard-agent` and `ums-stub` programs as processes: found beside the
//!   running executable (or built), or carried by it.
//! - [`postgres`]: a throwaway PostgreSQL cluster for tests and benchmarks.
//! - [`demo`]: `onboard-demo`, the main job in one command.
//! - Binaries: `src/bin/fleet-sim.rs`, `src/bin/onboard-demo.rs`.

pub mod demo;
pub mod fleet;
pub mod postgres;
pub mod programs;

pub use onboard_protocol as protocol;
