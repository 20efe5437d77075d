//! `ums-stub cluster-secret` and `ums-stub servers`: the Distributed UMS on the command line.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use super::table::print_table;
use crate::cluster::ClusterSecret;
use crate::stub::Stub;

#[derive(Debug, Subcommand)]
pub(super) enum ClusterSecretCommand {
    /// Make a new cluster secret (mode 0600) to give every server sharing one database.
    Create {
        /// The file to write (it must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum ServersCommand {
    /// The servers sharing this server's database: host name, server status (Running / Not
    /// running by heartbeat), UMS ID status (Main UMS ID / In sync / Not in sync, please restart
    /// server), UMS ID short and fingerprint.
    List {
        /// Print JSON: [{host_name, server_status, ums_id_status, ums_id_short, fingerprint}].
        #[arg(long)]
        json: bool,
    },
}

/// Runs `cluster-secret`.
pub(super) fn run_secret(
    command: ClusterSecretCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        ClusterSecretCommand::Create { out: path } => {
            ClusterSecret::create(&path)?;
            writeln!(
                out,
                "Wrote a cluster secret to {} (mode 0600). Give it to every server sharing the \
                 database: --cluster-secret FILE, or cluster_secret_file in the config.",
                path.display()
            )?;
        }
    }
    Ok(())
}

/// Runs `servers`.
pub(super) async fn run_servers(
    command: ServersCommand,
    stub: Stub,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        ServersCommand::List { json } => {
            let servers = crate::servers::list(&stub).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&servers)?)?;
                return Ok(());
            }
            let mut rows = vec![
                [
                    "Host name",
                    "Server status",
                    "UMS ID status",
                    "UMS ID",
                    "UMS ID fingerprint",
                ]
                .map(String::from),
            ];
            for server in servers {
                rows.push([
                    server.host_name,
                    server.server_status,
                    server.ums_id_status,
                    server.ums_id_short,
                    server.fingerprint.to_string(),
                ]);
            }
            print_table(out, &rows)?;
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(super) enum DatabaseCommand {
    /// Copy this server's database (keys still sealed, devices, the audit log, accounts and
    /// tokens) into an empty PostgreSQL database, and make this server's UMS ID the Main UMS ID
    /// there. Stop `serve` first (the copy refuses while it runs). Needs the cluster secret
    /// (--cluster-secret). Then point every server at the new database (database =
    /// "postgres://..." in the config) and start them.
    Copy {
        /// The PostgreSQL database to copy into (it must hold nothing yet).
        #[arg(
            long,
            value_name = "postgres://...",
            env = "UMS_STUB_COPY_TO",
            hide_env_values = true
        )]
        to: String,
    },
}

/// Runs `database`.
pub(super) async fn run_database(
    command: DatabaseCommand,
    stub: Stub,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let DatabaseCommand::Copy { to } = command;
    let target = match crate::store::Database::parse(&to).context("--to")? {
        crate::store::Database::Postgres(url) => url,
        crate::store::Database::Sqlite => {
            anyhow::bail!("--to: name a postgres:// URL; the embedded database is the source")
        }
    };
    let secret_file = stub.settings.cluster_secret.clone().context(
        "the copy makes this server's UMS ID the Main UMS ID, sealed under the cluster secret: \
         make one with ums-stub cluster-secret create --out FILE and name it with \
         --cluster-secret FILE",
    )?;
    let secret = ClusterSecret::load(&secret_file)?;
    let store = &stub.store;
    // A server still enrolling on the source would use keys the copy already read as unused.
    let running: Vec<String> = store
        .servers(crate::cluster::RUNNING_WITHIN)
        .await?
        .into_iter()
        .filter(|server| server.running)
        .map(|server| server.beat.name)
        .collect();
    if !running.is_empty() {
        anyhow::bail!(
            "a server still runs on this database ({}): stop ums-stub serve first, wait {} s, \
             and copy again",
            running.join(", "),
            crate::cluster::RUNNING_WITHIN.as_secs()
        );
    }
    use crate::store::PageRequest;
    let dump = crate::store::Dump {
        ums_id: Some(stub.ums_id.fingerprint()),
        main: Some(secret.seal(&stub.ums_id)),
        keys: store
            .keys(&crate::store::KeyFilter::default(), &PageRequest::all())
            .await?,
        devices: store.devices(&PageRequest::all()).await?,
        audit: store
            .audit(&crate::store::AuditFilter::default(), &PageRequest::all())
            .await?,
        accounts: store.accounts(&PageRequest::all()).await?,
        tokens: store.tokens(None, &PageRequest::all()).await?,
    };
    let rows = (dump.keys.len() + dump.devices.len() + dump.audit.len()) as u64;
    let bar = super::table::progress(rows, "copying");
    let target_store = crate::store::PostgresStore::open_with(
        target.expose(),
        stub.settings.database_ca.as_deref(),
    )
    .await?;
    let moved = bar.clone();
    target_store
        .import(
            &dump,
            &(Box::new(move |done| moved.set_position(done)) as crate::store::Progress),
        )
        .await?;
    bar.finish_and_clear();
    writeln!(
        out,
        "Copied {} keys, {} devices, {} audit lines, {} accounts and {} tokens into {target}. \
         The Main UMS ID there is this server's, {}. Now set database = \"postgres://...\" and \
         cluster_secret_file in every server's config, and restart them.",
        dump.keys.len(),
        dump.devices.len(),
        dump.audit.len(),
        dump.accounts.len(),
        dump.tokens.len(),
        stub.ums_id.fingerprint().short()
    )?;
    Ok(())
}
