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
