//! The onboarding agent for endpoint devices: the unit ID, USB stick detection and key-file
//! discovery (ARCHITECTURE §6). Pinned EST enrollment, its state and renewal come later.
//!
//! # Layout
//! - [`cli`]: the command line (`run`, `unit-id`, `scan`) and what each command prints.
//! - [`config`]: the optional TOML file and the global options, validated into
//!   [`config::Settings`]; every option and its default is documented there.
//! - [`nic`]: the network interfaces sysfs shows, and the IGEL OS 12 rule that picks one.
//! - [`identity`]: the unit ID: configured, else persisted, else detected and persisted.
//! - [`state`]: the state directory and atomic writes into it.
//! - [`discovery`]: finding and safely reading the key files on one stick.
//! - [`sticks`]: finding the sticks under the mount roots.
//! - [`key_choice`]: which keys this device would present, in order.
//! - [`inspect`]: the `scan` report: a key file's contents (keys masked) and the order.
//! - [`watcher`]: waiting without polling for mount-table changes and file events.
//! - [`daemon`]: `run`: look, wait, look again, log what changed; stop on SIGINT or SIGTERM.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod identity;
pub mod inspect;
pub mod key_choice;
pub mod nic;
pub mod state;
pub mod sticks;
pub mod watcher;

pub use onboard_protocol as protocol;
