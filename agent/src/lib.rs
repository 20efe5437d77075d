//! The onboarding agent for endpoint devices (ARCHITECTURE §6): the unit ID, USB stick detection
//! and key-file discovery, pinned EST enrollment with the keys found, the persisted state,
//! renewal and the inventory report over mutual TLS.
//!
//! # Layout
//! - [`cli`]: the command line (`run`, `enroll`, `status`, `reset`, `unit-id`, `scan`, `check`)
//!   and what each command prints.
//! - [`config`]: the optional TOML file and the global options, validated into
//!   [`config::Settings`]; every option and its default is documented there.
//! - [`nic`]: the network interfaces sysfs shows, and the IGEL OS 12 rule that picks one.
//! - [`identity`]: the unit ID: configured, else persisted, else detected and persisted.
//! - [`state`]: the state directory: atomic writes, the state file, the device key and
//!   certificates.
//! - [`monitoring`]: the state as Prometheus text (`status --prometheus`, `metrics_textfile`).
//! - [`lifecycle`]: the phases and their named transitions, and the backoff policy (pure).
//! - [`clock`]: the device clock, injectable, and whether it can be believed.
//! - [`pin`]: the UMS ID a device trusts, as a fingerprint or a communication token, and the
//!   pure trust decision between a held pin and a stick's.
//! - [`device_key`]: the device key pair, the CSR made with it, and the checks of a certificate
//!   issued for it.
//! - [`tls`]: the pinned verifier and the HTTPS clients built on it.
//! - [`est_client`]: the EST client: `cacerts` before any key, `simpleenroll`, what answers mean.
//! - [`enroll`]: where keys come from, which this device presents, and one pass over them.
//! - [`presentation`]: the pure state of a pass: keys a request, what answers do to the keys
//!   left, which were limited, and when the pass ends.
//! - [`driver`]: the enrollment driver `run`, `enroll` and the fleet simulator share: the choice
//!   of key file, the passes, backoff and every lifecycle transition.
//! - [`enrolled`]: the enrolled side over mutual TLS: renewal, the inventory report and the
//!   device connector.
//! - [`inventory`]: the device's facts, read from /proc, /etc/os-release and sysfs.
//! - [`discovery`]: finding and safely reading the key files on one stick.
//! - [`sticks`]: finding the sticks under the mount roots.
//! - [`key_choice`]: which keys this device would present, in order.
//! - [`inspect`]: the `scan` report: a key file's contents (keys masked) and the order.
//! - [`check`]: the `check` report: each server of a stick asked, pinned, whether each key would
//!   be accepted, consuming none.
//! - [`watcher`]: waiting without polling for mount-table changes and file events.
//! - [`daemon`]: `run`: look, step the driver, wait, look again; once enrolled renew, report and
//!   stay connected; stop on SIGINT or SIGTERM.

pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod device_key;
pub mod discovery;
pub mod driver;
pub mod enroll;
pub mod enrolled;
pub mod est_client;
pub mod identity;
pub mod inspect;
pub mod inventory;
pub mod key_choice;
pub mod lifecycle;
pub mod monitoring;
pub mod nic;
pub mod pin;
pub mod presentation;
pub mod state;
pub mod sticks;
pub mod tls;
pub mod watcher;

pub use onboard_protocol as protocol;
