//! The onboarding agent for endpoint devices.
//!
//! Not built yet: unit ID discovery, USB stick detection, pinned EST enrollment and the persisted
//! state land with their own issues (see the README's feature table). Until then this crate only
//! checks that the shared protocol crate links into the device side.

pub use onboard_protocol as protocol;
