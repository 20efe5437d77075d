//! The agent's integration tests: the library on temporary folders and the `onboard-agent` binary
//! on fake sysfs trees, stand-in sticks and, where the machine allows, a real mount.
//!
//! - `unit_id`: the IGEL OS 12 rule over fake sysfs trees, persistence, configured unit IDs.
//! - `connector`: the device connector: online, restarts, commands, deletion, shutdown.
//! - `discovery`: key files on one stick: order, links, FIFOs, folders, sizes, damage, vanishing.
//! - `watch`: `run` in-process: sticks appearing and going after start, no wake-up while idle.
//! - `check`: `check STICK_OR_FILE` against real servers: per server and key, a wrong pin, a
//!   server down, nothing consumed, keys masked, exit codes.
//! - `scan`: `scan PATH`: contents masked, this device's key order, exit codes, config errors.
//! - `run`: `run` as a process: log lines, SIGTERM and SIGINT, a real mount in a namespace.
//! - `enroll`: enrollment in-process against a real `ums-stub`: key types, refusals, pins, a
//!   server down at first, a lost answer, a clock at 1970, renewal, no looping.
//! - `process`: the binary's `enroll`, `status`, `reset` and `run` against an in-process
//!   `ums-stub`: exit codes, no key in any log line, kills at random points, SIGTERM.
//! - `rig`: an in-process `ums-stub` with exported keys, and the daemon in a task.
//! - `help`: help texts and exit codes.
//! - `system`: the systemd unit, checked by `systemd-analyze verify`.
//! - `util`: key files, fake sysfs, sandboxes and waiting with deadlines.

mod check;
mod connector;
mod discovery;
mod enroll;
mod help;
mod process;
mod rig;
mod run;
mod scan;
mod system;
mod unit_id;
mod util;
mod watch;
