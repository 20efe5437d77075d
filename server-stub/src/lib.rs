//! The UMS stub server.
//!
//! Not built yet: the UMS ID, the key store, EST enrollment and the admin command line land with
//! their own issues (see the README's feature table). Until then this crate only checks that the
//! shared protocol crate links into the server side.

pub use onboard_protocol as protocol;
