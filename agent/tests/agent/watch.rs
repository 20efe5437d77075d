//! The watcher in-process (`daemon::run` with an [`Observer`]): sticks appearing, changing and
//! going after start-up, and no wake-up at all while nothing happens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use onboard_agent::config::{Overrides, RawConfig, Settings};
use onboard_agent::daemon::{self, Observer};
use onboard_agent::sticks::Scan;
use onboard_agent::watcher::{StickWatcher, Wake};
use onboard_protocol::Format;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use onboard_agent::pin::Pin;
use onboard_protocol::Fingerprint;

use crate::util::{DEADLINE, MY_UNIT, write_key_file};

/// Settings for watching `roots` with state in `state_dir`. The device is pinned to another UMS
/// ID than the test key files name, so the sticks are refused without a pass: these tests are
/// about looking, not enrolling.
fn settings(roots: &[&Path], state_dir: &Path) -> Settings {
    RawConfig::default()
        .validate(
            None,
            Overrides {
                mount_roots: roots.iter().map(|root| root.to_path_buf()).collect(),
                state_dir: Some(state_dir.to_owned()),
                unit_id: Some(MY_UNIT.parse().unwrap()),
                pin: Some(Pin::Fingerprint(Fingerprint::of_der(b"another UMS ID"))),
                ..Overrides::default()
            },
        )
        .unwrap()
}

/// `run` in a task, stopped through a oneshot.
struct Agent {
    observer: Observer,
    scans: watch::Receiver<Option<Arc<Scan>>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    _state: tempfile::TempDir,
}

impl Agent {
    fn start(roots: &[&Path]) -> Agent {
        let state = tempfile::tempdir().unwrap();
        let settings = settings(roots, state.path());
        let observer = Observer::new();
        let scans = observer.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let observer = observer.clone();
            async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                daemon::run(&settings, shutdown, observer).await.unwrap();
            }
        });
        Agent {
            observer,
            scans,
            stop,
            task,
            _state: state,
        }
    }

    /// Waits (at most [`DEADLINE`]) for a look whose key files are exactly `paths`.
    async fn wait_for_key_files(&mut self, paths: &[PathBuf]) {
        let found = tokio::time::timeout(
            DEADLINE,
            self.scans.wait_for(|scan| {
                scan.as_ref().is_some_and(|scan| {
                    let found: Vec<&PathBuf> = scan.key_files().map(|file| &file.path).collect();
                    found == paths.iter().collect::<Vec<_>>()
                })
            }),
        )
        .await
        .map(|result| result.is_ok());
        assert!(
            found == Ok(true),
            "no look found exactly {paths:?} within {DEADLINE:?}; last: {:?}",
            self.scans.borrow().as_ref().map(|scan| scan
                .key_files()
                .map(|file| file.path.clone())
                .collect::<Vec<_>>())
        );
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("run did not stop")
            .unwrap();
    }
}

#[tokio::test]
async fn a_stick_that_appears_after_start_is_noticed() {
    let mount_root = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&[mount_root.path()]);
    agent.wait_for_key_files(&[]).await;
    let wakeups_before = agent.observer.wakeups();

    // Like a mount, the stick appears whole: made elsewhere, then moved in.
    write_key_file(&staging.path().join("STICK/icg.xml"), Format::Xml);
    std::fs::rename(
        staging.path().join("STICK"),
        mount_root.path().join("STICK"),
    )
    .unwrap();
    let key_file = mount_root.path().join("STICK/icg.xml");
    agent
        .wait_for_key_files(std::slice::from_ref(&key_file))
        .await;
    assert!(agent.observer.wakeups() > wakeups_before);

    // A second key file copied onto the stick, then the stick pulled.
    write_key_file(&mount_root.path().join("STICK/keys/icg.txt"), Format::Text);
    let second = mount_root.path().join("STICK/keys/icg.txt");
    agent.wait_for_key_files(&[key_file, second]).await;
    std::fs::remove_dir_all(mount_root.path().join("STICK")).unwrap();
    agent.wait_for_key_files(&[]).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_user_folder_and_its_stick_made_one_after_the_other_are_noticed() {
    let mount_root = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&[mount_root.path()]);
    agent.wait_for_key_files(&[]).await;
    // udisks makes /run/media/USER, then /run/media/USER/LABEL, then mounts; here the files are
    // written into the new folders as they come.
    let stick = mount_root.path().join("user/LABEL");
    std::fs::create_dir_all(&stick).unwrap();
    write_key_file(&stick.join("icg.html"), Format::Html);
    agent.wait_for_key_files(&[stick.join("icg.html")]).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_stick_present_at_start_is_found_by_the_first_look() {
    let mount_root = tempfile::tempdir().unwrap();
    let stick = mount_root.path().join("STICK");
    write_key_file(&stick.join("ICG.XML"), Format::Xml);
    let missing = mount_root.path().join("not-there-yet");
    let mut agent = Agent::start(&[&missing, mount_root.path()]);
    agent.wait_for_key_files(&[stick.join("ICG.XML")]).await;
    assert_eq!(agent.observer.rescans(), 1);
    agent.stop().await;
}

/// The idle measurement: over a quiet 2 s on tokio's paused clock, a watcher that polled (on any
/// timer at all) would wake and look again; this one must not wake once.
#[tokio::test(start_paused = true)]
async fn the_watcher_does_not_wake_while_nothing_happens() {
    let mount_root = tempfile::tempdir().unwrap();
    write_key_file(&mount_root.path().join("STICK/icg.xml"), Format::Xml);
    let mut agent = Agent::start(&[mount_root.path()]);
    agent
        .wait_for_key_files(&[mount_root.path().join("STICK/icg.xml")])
        .await;
    let start = tokio::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let quiet = start.elapsed();
    let (rescans, wakeups) = (agent.observer.rescans(), agent.observer.wakeups());
    println!(
        "idle over {quiet:?} of tokio time: {wakeups} wake-ups, {} rescans after the first",
        rescans - 1
    );
    assert!(quiet >= std::time::Duration::from_secs(2));
    assert_eq!(wakeups, 0, "the watcher woke while nothing happened");
    assert_eq!(rescans, 1, "only the look at start-up");
    agent.stop().await;
}

#[tokio::test]
async fn without_the_mount_table_file_events_still_wake_it() {
    let root = tempfile::tempdir().unwrap();
    let mut watcher =
        StickWatcher::with_mount_table(vec![root.path().to_owned()], Path::new("/nonexistent"))
            .unwrap();
    assert!(!watcher.watches_mount_table());
    assert_eq!(watcher.watched_roots(), [root.path().to_owned()]);
    std::fs::create_dir(root.path().join("STICK")).unwrap();
    let wake = tokio::time::timeout(DEADLINE, watcher.changed()).await;
    assert_eq!(wake.expect("no wake-up for a new folder"), Wake::Files);
}

#[tokio::test]
async fn a_root_that_appears_or_is_replaced_is_watched_from_the_next_wake_up() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("media");
    let mut watcher = StickWatcher::new(vec![root.clone()]).unwrap();
    assert!(watcher.watched_roots().is_empty());

    std::fs::create_dir(&root).unwrap();
    watcher.rewatch();
    assert_eq!(watcher.watched_roots(), std::slice::from_ref(&root));
    std::fs::create_dir(root.join("STICK")).unwrap();
    let wake = tokio::time::timeout(DEADLINE, watcher.changed()).await;
    assert_eq!(wake.expect("no wake-up in a new root"), Wake::Files);

    // Replaced: the old watch went with the old folder; the new one is watched afresh.
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::create_dir(&root).unwrap();
    let _ = tokio::time::timeout(DEADLINE, watcher.changed()).await;
    watcher.discard_pending().await;
    watcher.rewatch();
    assert_eq!(watcher.watched_roots(), std::slice::from_ref(&root));
    std::fs::write(root.join("icg.xml"), b"").unwrap();
    let wake = tokio::time::timeout(DEADLINE, watcher.changed()).await;
    assert_eq!(wake.expect("no wake-up in a replaced root"), Wake::Files);
}
