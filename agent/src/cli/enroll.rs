//! `enroll`: one enrollment from the command line, with the keys of a file, a folder or the
//! mounted sticks, and the exit code it ends with ([`EnrollExit`]).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use onboard_protocol::{FirstAuthKey, KeyEntry, Server};

use super::{EnrollArgs, runtime};
use crate::config::Settings;
use crate::daemon::{self};
use crate::driver::{Driver, Step};
use crate::enroll::{Enroller, KeySource};
use crate::identity::{self, Persist};
use crate::lifecycle::Failure;
use crate::pin::Pin;
use crate::state::{self, AgentState};

/// The pin `enroll` was given on the command line.
pub(super) fn command_line_pin(args: &EnrollArgs) -> anyhow::Result<Option<Pin>> {
    if let Some(text) = &args.fingerprint {
        let fingerprint = text
            .parse::<onboard_protocol::Fingerprint>()
            .map_err(|error| anyhow::anyhow!("--fingerprint: {error}"))?;
        return Ok(Some(Pin::Fingerprint(fingerprint)));
    }
    if let Some(text) = &args.token {
        return Ok(Some(
            Pin::token(text).map_err(|error| anyhow::anyhow!("--token: {error}"))?,
        ));
    }
    Ok(None)
}

/// What `enroll` ended with, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollExit {
    /// Enrolled, or already was.
    Enrolled = 0,
    /// No key to present.
    NoKey = 3,
    /// The pin was refused, or the stick names another UMS ID.
    PinRefused = 4,
    /// `unit_id_conflict`.
    UnitIdConflict = 5,
    /// No server reachable on any try.
    Unreachable = 6,
    /// The server rejected the request.
    Rejected = 7,
}

impl EnrollExit {
    fn of(failure: &Failure) -> EnrollExit {
        match failure {
            Failure::UnitIdConflict => EnrollExit::UnitIdConflict,
            Failure::KeysExhausted { .. } => EnrollExit::NoKey,
            Failure::PinMismatch { .. } => EnrollExit::PinRefused,
            Failure::Rejected { .. } => EnrollExit::Rejected,
        }
    }
}

pub(super) fn enroll(
    settings: &Settings,
    args: EnrollArgs,
    pin: Option<Pin>,
) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let code = runtime.block_on(async {
        let shutdown = daemon::stop_signals()?;
        tokio::select! {
            code = enroll_once(settings, args, pin) => code,
            () = shutdown => Ok(ExitCode::from(130)),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

async fn enroll_once(
    settings: &Settings,
    args: EnrollArgs,
    pin: Option<Pin>,
) -> anyhow::Result<ExitCode> {
    let _lock = state::lock(&settings.state_dir)?;
    let mut state = AgentState::load(&settings.state_dir)?;
    if state.phase.is_enrolled() {
        println!(
            "already enrolled with {} (certificate until {}); `onboard-agent reset` to enroll again",
            state.server.as_deref().unwrap_or("-"),
            state.certificate_not_after.as_deref().unwrap_or("-")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let resolved = identity::resolve(
        settings.unit_id.as_ref(),
        &settings.state_dir,
        &args.sysfs_root,
        Persist::Yes,
    )?;
    let sources = match &args.server {
        Some(host) => {
            let key = match (&args.key, args.key_stdin) {
                (Some(key), _) => key.clone(),
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .take(4096)
                        .read_to_string(&mut line)
                        .context("cannot read the key from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
                (None, false) => anyhow::bail!("-s needs a key: -a KEY or --key-stdin"),
            };
            let key =
                FirstAuthKey::new(key).map_err(|error| anyhow::anyhow!("the key: {error}"))?;
            let server = Server::new(host.clone(), args.port)
                .map_err(|error| anyhow::anyhow!("-s: {error}"))?;
            let Some(pin) = pin.clone() else {
                anyhow::bail!("-s needs --fingerprint FP or --token PART3");
            };
            // A key typed for this device is presented as its own, whatever its kind on the server.
            vec![KeySource::new(
                "the command line",
                vec![server],
                pin,
                vec![KeyEntry::mass(key)],
            )]
        }
        None => key_sources(settings, args.path.as_deref())?,
    };
    let enroller = Enroller {
        state_dir: settings.state_dir.clone(),
        unit_id: resolved.unit_id.clone(),
        configured_pin: settings.pin.clone(),
        clock: crate::clock::system(),
        timeouts: settings.timeouts,
        key_algorithm: settings.device_key,
        unknown_key_retry: settings.unknown_key_retry,
        on_change: Arc::new(|_| {}),
    };
    let mut driver = Driver::new(enroller, settings.backoff);
    let step = driver
        .until_done(
            &mut state,
            &sources,
            args.tries,
            |_| 0.5,
            |step| {
                if let Step::BackOff {
                    attempt,
                    delay,
                    detail,
                    ..
                } = step
                {
                    eprintln!(
                        "onboard-agent: try {attempt} of {}: {detail}; again in {:.1} s",
                        args.tries,
                        delay.as_secs_f64()
                    );
                }
            },
        )
        .await?;
    match step {
        Step::Enrolled { .. } => {
            if let Ok(inventory) = tokio::task::spawn_blocking(crate::inventory::gather).await
                && let Err(error) = driver
                    .enroller
                    .report_inventory(&mut state, &inventory)
                    .await
            {
                tracing::warn!(%error, "inventory not reported");
            }
            println!(
                "enrolled as {} with {} (UMS ID {}); certificate until {}",
                resolved.unit_id,
                state.server.as_deref().unwrap_or("-"),
                state.pin.as_ref().map(Pin::short).unwrap_or_default(),
                state.certificate_not_after.as_deref().unwrap_or("-")
            );
            Ok(ExitCode::SUCCESS)
        }
        Step::Refused(failure) => {
            eprintln!("onboard-agent: {failure}");
            Ok(ExitCode::from(EnrollExit::of(&failure) as u8))
        }
        Step::BackOff {
            detail,
            pin_refused,
            ..
        } => {
            eprintln!("onboard-agent: {detail}");
            let code = if pin_refused {
                EnrollExit::PinRefused
            } else {
                EnrollExit::Unreachable
            };
            Ok(ExitCode::from(code as u8))
        }
        Step::NoKeys => {
            eprintln!(
                "onboard-agent: no key file with a key for unit {} (found {} key file(s))",
                resolved.unit_id,
                sources.len()
            );
            Ok(ExitCode::from(EnrollExit::NoKey as u8))
        }
    }
}

/// The key files of `path` (a file, or a folder read as a stick), or of the sticks under the
/// mount roots; problems are printed and skipped.
fn key_sources(settings: &Settings, path: Option<&Path>) -> anyhow::Result<Vec<KeySource>> {
    let limits = settings.key_file_limits();
    let (found, problems) = match path {
        Some(path) if path.is_dir() => {
            let discovery = crate::discovery::discover(path, &limits);
            (discovery.key_files, discovery.problems)
        }
        Some(path) => {
            // The same checks as a file on a stick: a regular file, no link, bounded size.
            let found = crate::discovery::read_key_file(path, None, &limits)
                .map_err(|problem| anyhow::anyhow!("{problem}"))?;
            return Ok(vec![KeySource::from_key_file(
                path.display().to_string(),
                &found.key_file,
            )]);
        }
        None => {
            let scan = crate::sticks::scan_roots(&settings.mount_roots, &limits);
            for problem in scan.all_problems().filter(|problem| problem.notable) {
                eprintln!(
                    "onboard-agent: skipped {}: {}",
                    problem.path.display(),
                    problem.reason()
                );
            }
            let sources = scan
                .key_files()
                .map(|found| {
                    KeySource::from_key_file(found.path.display().to_string(), &found.key_file)
                })
                .collect();
            return Ok(sources);
        }
    };
    for problem in problems {
        if problem.notable {
            eprintln!(
                "onboard-agent: skipped {}: {}",
                problem.path.display(),
                problem.reason()
            );
        }
    }
    Ok(found
        .iter()
        .map(|found| KeySource::from_key_file(found.path.display().to_string(), &found.key_file))
        .collect())
}
