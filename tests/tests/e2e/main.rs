//! End-to-end tests over the real binaries (`ums-stub`, `onboard-agent`, `onboard-demo`) as
//! processes, on loopback.
//!
//! - `demo`: `onboard-demo` enrolls every device and cleans up, also when interrupted.
//! - `distributed`: two servers on one PostgreSQL database enroll one fleet from a stick naming
//!   both, one of them SIGKILLed meanwhile; every key used once, counted in the database.
//! - `faults`: `fleet-sim` against its own server in test-rig mode: 1,000 devices under lost
//!   answers and 503s, connector sessions closed every few seconds, a rotation drill, a plan
//!   from a file.
//! - `fleet`: 200 devices share a stick of 200 one-time keys; 150 devices share 100.
//! - `restart`: the server killed and restarted in the middle of a fleet; an agent killed and
//!   restarted in the middle of enrolling.
//! - `limits`: 500 devices behind one address with the default guess limits (in-process fleet).
//! - `soak`: a fleet on one-time keys while the server is SIGKILLed again and again; devices per
//!   key and the integrity check read from the database.
//! - `power_cut`: the server's data directory on the lossy filesystem, a fleet enrolling, the
//!   server SIGKILLed and its unsynced writes dropped again and again; the database knows every
//!   certificate a device holds.
//! - `mitm`: a TLS server with another UMS ID on the server's address never sees a key.
//! - `rig`: the documentation's example rig in Python drives `ums-stub serve --test-rig`.
//! - `web`: the Web App in Debian's chromium, driven by Playwright for Python.
//! - `util`: the server as a process, keys through its command line, agents in parallel.

mod demo;
mod distributed;
mod faults;
mod fleet;
mod limits;
mod mitm;
mod power_cut;
mod restart;
mod rig;
mod soak;
mod util;
mod web;
