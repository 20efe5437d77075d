//! Records when the agent was built, as the floor of a plausible device clock: a thin client that
//! boots with its clock at 1970 must not judge certificate validity periods by it.
//!
//! `SOURCE_DATE_EPOCH` (reproducible builds) wins over the time of the build.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs())
        });
    println!("cargo:rustc-env=ONBOARD_AGENT_BUILD_TIME={seconds}");
}
