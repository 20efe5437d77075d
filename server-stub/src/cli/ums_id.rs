//! `ums-stub ums-id`: show, export, back up and restore the UMS ID.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Settings;
use crate::files;
use crate::ums_id::UmsId;
use onboard_protocol::admin::UmsIdView;

use super::table;

#[derive(Debug, Subcommand)]
pub(super) enum UmsIdCommand {
    /// Print the UMS ID fingerprint: whole, in four parts, short, the communication token, and
    /// when it was created.
    Show {
        /// Print JSON: {fingerprint, parts, short, communication_token, created_at}.
        #[arg(long)]
        json: bool,
    },
    /// Write the UMS ID certificate as PEM (a .crt file) for devices and tools to trust.
    Export {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Write the whole UMS ID (private key included, mode 0600) to move it to another server.
    Backup {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Install a UMS ID from a backup.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace a different UMS ID already in place (devices pinning it will refuse this server,
        /// and the database made under it will no longer open: restore that UMS ID to use it).
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `ums-id` command.
pub(super) async fn run(
    command: UmsIdCommand,
    settings: Settings,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if let UmsIdCommand::Restore { file, force } = command {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let restored = UmsId::from_backup(&text, &file)?;
        // With --force a damaged identity in place is replaced, not reported.
        let before = match UmsId::load(&settings.data_dir) {
            Ok(existing) => existing.map(|id| id.fingerprint()),
            Err(_) if force => None,
            Err(error) => return Err(error.into()),
        };
        restored.install(&settings.data_dir, force)?;
        if before == Some(restored.fingerprint()) {
            writeln!(
                out,
                "The UMS ID {} is already in place; nothing changed.",
                restored.fingerprint().short()
            )?;
        } else {
            writeln!(out, "Restored UMS ID {}.", restored.fingerprint().short())?;
        }
        // In a Distributed UMS the restored UMS ID becomes the Main UMS ID of every server, each
        // adopting it at its next start.
        if let Some(secret) = &settings.cluster_secret {
            let secret = crate::cluster::ClusterSecret::load(secret)?;
            let store = crate::store::open(
                &settings.database,
                &settings.database_file(),
                settings.database_ca.as_deref(),
                &crate::rig::clock::Clock::system(),
            )
            .await?;
            // The keys stay sealed under the UMS ID the database is bound to: only that one may
            // be the Main UMS ID.
            if let Some(bound) = store.ums_id().await?
                && bound != restored.fingerprint()
            {
                anyhow::bail!(
                    "the database's keys are sealed under UMS ID {bound}; {} cannot be its Main \
                     UMS ID (restore the backup of {bound}). This server's own UMS ID was \
                     replaced; the Main UMS ID was not.",
                    restored.fingerprint()
                );
            }
            store
                .replace_main_ums_id(&secret.seal(&restored), &crate::store::Actor::cli())
                .await?;
            writeln!(
                out,
                "It is now the Main UMS ID of every server sharing the database; each adopts it \
                 at its next restart."
            )?;
        }
        return Ok(());
    }
    // The UMS ID lives apart from the database: showing or saving it never needs the store, so
    // it works also when the database belongs to another UMS ID.
    files::create_private_dir(&settings.data_dir)?;
    let (id, _created) = UmsId::load_or_create(&settings.data_dir).context("UMS ID")?;
    let id = &id;
    match command {
        UmsIdCommand::Show { json } => {
            let view = UmsIdView::new(id.fingerprint(), id.created_at());
            show(&view, json, out)?;
        }
        UmsIdCommand::Export { out: path, force } => {
            files::write_private(&path, id.certificate_pem().as_bytes(), force)?;
            writeln!(
                out,
                "Wrote the UMS ID certificate {} to {}.",
                id.fingerprint().short(),
                path.display()
            )?;
        }
        UmsIdCommand::Backup { out: path, force } => {
            files::write_private(&path, id.backup().as_bytes(), force)?;
            writeln!(
                out,
                "Wrote the UMS ID {} with its private key to {} (mode 0600): keep it secret.",
                id.fingerprint().short(),
                path.display()
            )?;
        }
        UmsIdCommand::Restore { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// Prints the UMS ID as `ums-id show` does.
pub(super) fn show(view: &UmsIdView, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(view)?)?;
    } else {
        writeln!(out, "UMS ID fingerprint (SHA-256): {}", view.fingerprint)?;
        for (index, part) in view.parts.iter().enumerate() {
            writeln!(out, "  Part {}: {part}", index + 1)?;
        }
        writeln!(out, "Short: {}", view.short)?;
        writeln!(out, "Communication token: {}", view.communication_token)?;
        writeln!(out, "Created: {}", table::time(view.created_at))?;
    }
    Ok(())
}
