//! The Debian packages and the container image that `cargo xtask package` makes, tried as an
//! operator would on this machine (as root, which CI is):
//!
//! - `deb`: lintian over both packages; `dpkg -i`, the installed units verified, the installed
//!   programs' help, the installed server (started as its unit starts it) enrolling a device run
//!   by the installed agent with the shipped config, then `dpkg -r` and `dpkg -P` leaving nothing
//!   but the data directories.
//! - `image`: the image's configuration and its one layer (the binary, its libraries, nothing
//!   else); unpacked with umoci and run with runc as its non-root user, a device enrolling
//!   against it, stopped with SIGTERM.
//!
//! The packages are made once per test process, with the profile of this build (`dev` under
//! `cargo test`: the debug binaries the other tests build, so CI compiles nothing more for them;
//! see `cargo xtask package --help`). Missing tools (cargo-deb, lintian, umoci, runc) fail the
//! tests with their names; `scripts/test` installs them.

mod deb;
mod image;
mod util;
