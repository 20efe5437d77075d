//! `lossy-fs MOUNTPOINT`: serves the lossy filesystem on MOUNTPOINT, driven over standard input
//! and output by the tests' `lossy_fs::LossyFs`; unmounts when standard input closes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(mountpoint) = std::env::args_os().nth(1) else {
        eprintln!("usage: lossy-fs MOUNTPOINT");
        return ExitCode::from(2);
    };
    match lossy_fs::server::run(std::path::Path::new(&mountpoint)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lossy-fs: {error}");
            ExitCode::FAILURE
        }
    }
}
