//! A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` in a temporary folder (as the
//! `postgres` user when run as root), `pg_ctl start` on a free loopback port, a fresh database per
//! store (`createdb`), stopped and removed when dropped. `ums-stub`'s own tests include this file.
//!
//! The server programs come from Debian's `postgresql` package (`scripts/test` installs it):
//! `$ONBOARD_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A running cluster.
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    /// The server's options (`pg_ctl -o`), for starting it again.
    options: String,
    _root: tempfile::TempDir,
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ONBOARD_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server programs: install Debian's postgresql package (scripts/test \
             does) or name their folder in ONBOARD_PG_BIN"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Initialises and starts a cluster.
    pub fn start() -> PgCluster {
        Self::start_inner(None)
    }

    /// The same, serving TLS as well with this certificate and key (PEM).
    pub fn start_tls(certificate_pem: &str, key_pem: &str) -> PgCluster {
        Self::start_inner(Some((certificate_pem, key_pem)))
    }

    fn start_inner(tls: Option<(&str, &str)>) -> PgCluster {
        let bin = bin_dir();
        let root = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            // initdb refuses to run as root; the cluster belongs to the postgres user.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(root.path())
                .status()
                .unwrap();
            assert!(status.success());
            let _ = Command::new("chmod").arg("755").arg(root.path()).status();
        }
        let data = root.path().join("data");
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut cluster = PgCluster {
            bin,
            data,
            port,
            as_postgres,
            options: String::new(),
            _root: root,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            cluster.data.display()
        );
        if let Some((certificate, key)) = tls {
            // The server reads its key only when it is private to it.
            std::fs::write(cluster.data.join("server.crt"), certificate).unwrap();
            std::fs::write(cluster.data.join("server.key"), key).unwrap();
            if cluster.as_postgres {
                let status = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(cluster.data.join("server.crt"))
                    .arg(cluster.data.join("server.key"))
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                cluster.data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        cluster.options = options;
        cluster.start_again();
        cluster
    }

    /// Starts the cluster (again, after [`PgCluster::stop`]) with its options, and waits until it
    /// takes connections.
    pub fn start_again(&self) {
        let log = self.data.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-o",
                &self.options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the cluster (fast: connections are closed), as an outage would; the data stays.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let output = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        }
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", path.display()));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The URL of database `name` in this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", &name],
        );
        self.url(&name)
    }

    /// The single value `sql` gives in the database at `url` (one of [`PgCluster::database`]'s),
    /// as psql prints it.
    pub fn query(&self, url: &str, sql: &str) -> String {
        let name = url
            .rsplit('/')
            .next()
            .unwrap_or("postgres")
            .split('?')
            .next()
            .unwrap_or("postgres");
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", name, "-Atc", sql])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The data folder.
    pub fn data(&self) -> &Path {
        &self.data
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let data = self.data.to_str().unwrap().to_owned();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        };
    }
}
