//! End-to-end tests over the real binaries, the fleet simulator, the demo and benchmarks.
//!
//! Not built yet: these need the agent and the server, which land with their own issues.

pub use onboard_protocol as protocol;
