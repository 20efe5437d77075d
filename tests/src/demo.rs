//! `onboard-demo`: the main job in one command, on the embedded SQLite default.
//!
//! In a temporary folder it starts `ums-stub serve` on loopback, creates one-time, device-bound
//! and mass-deployment keys, exports them to a folder standing in for a USB stick, starts several
//! `onboard-agent run` processes (each with its own unit ID and state directory) watching a mount
//! root, "plugs in" the stick by moving it under the root, and shows each device enrolling; then
//! the key list with statuses and usage counts and the device list. It cleans up after itself,
//! also on Ctrl-C (SIGINT) or SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::programs::{Programs, stop_child};

/// How long the demo waits for all devices before it gives up.
const ENROLL_DEADLINE: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How many devices (agents).
    pub devices: usize,
    /// Keep the temporary folder (and print where it is).
    pub keep: bool,
    /// How to start the programs.
    pub programs: Programs,
}

/// An `onboard-agent run` process and what it said.
struct AgentProcess {
    child: Child,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A line an agent logged, by device number.
struct Said {
    device: usize,
    line: String,
}

/// The value of `name=value` in a log line (quotes taken off).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    rest.split_whitespace().next()
}

/// Runs the demo; the exit code is 0 when every device enrolled.
pub fn run(options: &DemoOptions) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    watch_for_stop(stop.clone())?;
    let started = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("onboard-demo-")
        .tempdir()
        .context("cannot make a temporary folder")?;
    let root = temp.path().to_owned();
    println!(
        "onboard-demo: first-authentication onboarding, end to end, in {}",
        root.display()
    );
    let result = demo(options, &root, &stop);
    // Processes are stopped before the folder goes (their guards are dropped inside `demo`).
    if options.keep {
        let kept = temp.keep();
        println!("kept {}", kept.display());
    } else {
        drop(temp);
        println!("cleaned up {}", root.display());
    }
    let enrolled = result?;
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(if enrolled {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// SIGINT or SIGTERM sets `stop`; the demo checks it at every wait.
fn watch_for_stop(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ready, armed) = mpsc::channel();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut interrupt), Ok(mut terminate)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = ready.send(false);
                return;
            };
            let _ = ready.send(true);
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            stop.store(true, Ordering::SeqCst);
        });
    });
    anyhow::ensure!(armed.recv()?, "cannot catch SIGINT and SIGTERM");
    Ok(())
}

fn check(stop: &AtomicBool) -> anyhow::Result<()> {
    anyhow::ensure!(
        !stop.load(Ordering::SeqCst),
        "interrupted; stopping and cleaning up"
    );
    Ok(())
}

/// Runs a `ums-stub` command to the end; its standard output.
fn ums_stub(programs: &Programs, data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = programs
        .ums_stub()
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run ums-stub {}", args.join(" ")))?;
    anyhow::ensure!(
        output.status.success(),
        "ums-stub {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Prints a line above the progress bar, or plainly when the bar is hidden (not a terminal).
fn say(bar: &indicatif::ProgressBar, text: String) {
    if bar.is_hidden() {
        println!("{text}");
    } else {
        bar.println(text);
    }
}

fn step(number: usize, text: &str) {
    println!("\n[{number}/6] {text}");
    let _ = std::io::stdout().flush();
}

fn demo(options: &DemoOptions, root: &Path, stop: &AtomicBool) -> anyhow::Result<bool> {
    let programs = &options.programs;
    let devices = options.devices.clamp(1, 50);
    let data = root.join("ums");
    let media = root.join("media");
    std::fs::create_dir_all(&media)?;

    step(
        1,
        "starting ums-stub on loopback (creates its UMS ID in a fresh data directory)",
    );
    let server = programs.serve().data_dir(&data).start()?;
    let shown = ums_stub(programs, &data, &["ums-id", "show"])?;
    println!("      listening on {}", server.addr());
    for line in shown.lines().filter(|line| !line.trim().is_empty()).take(6) {
        println!("      {line}");
    }
    check(stop)?;

    let units: Vec<String> = (1..=devices).map(|n| format!("00E0C5D0{n:04X}")).collect();
    let one_time = devices.saturating_sub(2).max(1);
    step(
        2,
        &format!(
            "creating keys: {one_time} one-time, 1 device-bound for {}, 1 mass-deployment",
            units[devices - 1]
        ),
    );
    ums_stub(
        programs,
        &data,
        &[
            "keys",
            "create",
            "one-time",
            "--quantity",
            &one_time.to_string(),
            "--comment",
            "demo",
        ],
    )?;
    ums_stub(
        programs,
        &data,
        &[
            "keys",
            "create",
            "device-bound",
            "--unit-id",
            &units[devices - 1],
            "--comment",
            "demo",
        ],
    )?;
    ums_stub(
        programs,
        &data,
        &["keys", "create", "mass", "--comment", "demo"],
    )?;
    check(stop)?;

    step(3, "exporting them to a folder standing in for a USB stick");
    let staging = root.join("STICK");
    std::fs::create_dir_all(&staging)?;
    let exported = ums_stub(
        programs,
        &data,
        &[
            "keys",
            "export",
            "--out",
            &staging.join("icg.xml").display().to_string(),
            "--server",
            &server.addr().to_string(),
        ],
    )?;
    println!("      {}", exported.trim());
    check(stop)?;

    step(
        4,
        &format!(
            "starting {devices} onboard-agent processes watching {}",
            media.display()
        ),
    );
    let (said, hear) = mpsc::channel::<Said>();
    let mut agents = Vec::with_capacity(devices);
    for (index, unit) in units.iter().enumerate() {
        let home = root.join(format!("device-{}", index + 1));
        std::fs::create_dir_all(&home)?;
        std::fs::write(
            home.join("agent.toml"),
            "backoff_first_ms = 200\nbackoff_max_seconds = 2\n",
        )?;
        let mut child = programs
            .agent()
            .arg("--config")
            .arg(home.join("agent.toml"))
            .arg("--state-dir")
            .arg(home.join("state"))
            .args(["--unit-id", unit, "run", "--mount-root"])
            .arg(&media)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start onboard-agent")?;
        let stderr = child.stderr.take().context("no standard error")?;
        let said = said.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if said
                    .send(Said {
                        device: index,
                        line,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        agents.push(AgentProcess { child });
    }
    drop(said);
    let mut watching = vec![false; devices];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !watching.iter().all(|ready| *ready) {
        check(stop)?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "the agents did not start watching in time"
        );
        if let Ok(said) = hear.recv_timeout(Duration::from_millis(100))
            && said.line.contains("watching for sticks")
        {
            watching[said.device] = true;
            println!(
                "      device {} ({}) is watching",
                said.device + 1,
                units[said.device]
            );
        }
    }

    step(5, "plugging in the stick");
    std::fs::rename(&staging, media.join("STICK"))?;
    let plugged = Instant::now();
    let bar = indicatif::ProgressBar::new(devices as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("      [{bar:30}] {pos}/{len} devices enrolled")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut enrolled = vec![false; devices];
    while !enrolled.iter().all(|done| *done) {
        check(stop)?;
        if plugged.elapsed() > ENROLL_DEADLINE {
            bar.abandon();
            println!("      not every device enrolled within {ENROLL_DEADLINE:?}");
            break;
        }
        let Ok(said) = hear.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let device = said.device;
        let who = format!("device {} ({})", device + 1, units[device]);
        let line = &said.line;
        if line.contains("key refused") {
            say(
                &bar,
                format!(
                    "      {who}: {} key {} refused ({}); trying its next key",
                    field(line, "key_type").unwrap_or("a"),
                    field(line, "key").unwrap_or("?"),
                    field(line, "code").unwrap_or("?"),
                ),
            );
        } else if line.contains("backing off") {
            say(
                &bar,
                format!(
                    "      {who}: server unavailable; retrying in {} ms",
                    field(line, "delay_ms").unwrap_or("?")
                ),
            );
        } else if line.contains(" enrolled ") && line.contains("serial=") {
            enrolled[device] = true;
            bar.inc(1);
            say(
                &bar,
                format!(
                    "      {who}: enrolled with a {} key after {} ms; certificate {} until {}",
                    field(line, "key_type").unwrap_or("?"),
                    plugged.elapsed().as_millis(),
                    field(line, "serial").unwrap_or("?"),
                    field(line, "not_after").unwrap_or("?"),
                ),
            );
        } else if line.contains("cannot enroll") {
            say(
                &bar,
                format!(
                    "      {who}: cannot enroll: {}",
                    field(line, "reason").unwrap_or(line)
                ),
            );
        }
    }
    bar.finish_and_clear();
    let all = enrolled.iter().all(|done| *done);
    println!(
        "      {} of {devices} devices enrolled in {:.0} ms after the stick appeared",
        enrolled.iter().filter(|done| **done).count(),
        plugged.elapsed().as_secs_f64() * 1000.0
    );
    // Let the agents' inventory reports land before the device list is read.
    std::thread::sleep(Duration::from_millis(300));
    check(stop)?;

    step(6, "what the server holds now");
    println!("      $ ums-stub keys list");
    for line in ums_stub(programs, &data, &["keys", "list"])?.lines() {
        println!("      {line}");
    }
    println!("      $ ums-stub devices list");
    for line in ums_stub(programs, &data, &["devices", "list"])?.lines() {
        println!("      {line}");
    }
    println!("      $ onboard-agent status   (device 1)");
    let status = programs
        .agent()
        .arg("--config")
        .arg(root.join("device-1/agent.toml"))
        .arg("--state-dir")
        .arg(root.join("device-1/state"))
        .arg("status")
        .output()?;
    for line in String::from_utf8_lossy(&status.stdout).lines() {
        println!("      {line}");
    }

    println!("\nstopping the agents and the server");
    drop(agents);
    drop(server);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_log_lines() {
        let line = "2026-11-23T17:55:40Z  INFO onboard_agent::enroll: enrolled server=\"127.0.0.1:1\" \
                    serial=35cb not_after=2027-11-23T17:55:40Z key_type=one-time";
        assert_eq!(field(line, "serial"), Some("35cb"));
        assert_eq!(field(line, "server"), Some("127.0.0.1:1"));
        assert_eq!(field(line, "key_type"), Some("one-time"));
        assert_eq!(field(line, "missing"), None);
    }
}
