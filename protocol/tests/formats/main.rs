//! Key-file formats end to end: fixtures, round trips, hostile input and secrecy.
//!
//! - `fixtures`: the committed example files (and their CRLF, BOM and UTF-16 variants) read back to
//!   the expected model, the writers reproduce them byte for byte, and the examples in docs/key-files.md parse.
//! - `roundtrip`: property tests, write then read gives back the same model, in every format.
//! - `hostile`: a table of hostile inputs, each refused with the expected reason and position, and
//!   arbitrary bytes never panic.
//! - `secrets`: no `Debug` or `Display` of a key, key file or refusal shows a key value.
//! - `scale`: the key-count bound, and 1,000,000 keys read.

mod fixtures;
mod hostile;
mod roundtrip;
mod scale;
mod secrets;
mod util;
