//! `ums-stub keys`: create, list, edit, (de)activate, delete and export first-authentication keys.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::ProgressBar;
use onboard_protocol::admin::{CreateKeys, KeyId, KeyStatus};
use onboard_protocol::{Format, KeyKind, UnitId};

use super::table::{self, DEFAULT_LIMIT, print_table, progress};
use super::target::Target;
use crate::files;
use crate::store::{KeyFilter, PageRequest, Progress};
use crate::unit_ids;

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// Create keys.
    #[command(subcommand)]
    Create(CreateCommand),
    /// List keys as the UMS does: Unit ID, Key (masked unless --show), Status, Usage date, Usage
    /// count, Type, Comment.
    List(ListArgs),
    /// Change a key's comment.
    Edit {
        /// The key.
        id: KeyId,
        /// The new comment.
        #[arg(long)]
        comment: String,
    },
    /// Activate keys (a used one-time key stays used).
    Activate {
        /// The keys.
        #[arg(required = true)]
        ids: Vec<KeyId>,
    },
    /// Deactivate keys: devices presenting them are refused.
    Deactivate {
        /// The keys.
        #[arg(required = true)]
        ids: Vec<KeyId>,
    },
    /// Delete keys.
    Delete {
        /// The keys.
        #[arg(required = true)]
        ids: Vec<KeyId>,
    },
    /// Export keys to a file for a USB stick (mode 0600), with the servers and the UMS ID
    /// fingerprint.
    Export(ExportArgs),
}

#[derive(Debug, Subcommand)]
pub(super) enum CreateCommand {
    /// One-time keys any one device may use.
    OneTime {
        /// How many.
        #[arg(long, value_name = "N")]
        quantity: usize,
        /// A comment for all of them.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// One-time keys bound to devices, one per unit ID.
    DeviceBound {
        /// A unit ID (a MAC in any common spelling, or a UD Pocket serial); repeat for more.
        #[arg(
            long = "unit-id",
            value_name = "ID",
            required_unless_present = "import",
            conflicts_with = "import"
        )]
        unit_ids: Vec<String>,
        /// A CSV file with one unit ID per row in the first column (header optional, ; or ,).
        #[arg(long, value_name = "FILE.csv")]
        import: Option<PathBuf>,
        /// A comment for all of them.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// A mass-deployment key any number of devices may use.
    Mass {
        /// Use this password instead of a random key (no other key may have it): at least 16
        /// characters and not easily guessed. Other local users can read a command line: prefer
        /// --password-stdin.
        #[arg(long)]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
        /// A comment.
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    OneTime,
    DeviceBound,
    Mass,
}

impl From<TypeArg> for KeyKind {
    fn from(arg: TypeArg) -> Self {
        match arg {
            TypeArg::OneTime => KeyKind::OneTime,
            TypeArg::DeviceBound => KeyKind::DeviceBound,
            TypeArg::Mass => KeyKind::MassDeployment,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Active,
    Inactive,
    Used,
}

impl From<StatusArg> for KeyStatus {
    fn from(arg: StatusArg) -> Self {
        match arg {
            StatusArg::Active => KeyStatus::Active,
            StatusArg::Inactive => KeyStatus::Inactive,
            StatusArg::Used => KeyStatus::Used,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Xml,
    Html,
    Text,
}

impl From<FormatArg> for Format {
    fn from(arg: FormatArg) -> Self {
        match arg {
            FormatArg::Xml => Format::Xml,
            FormatArg::Html => Format::Html,
            FormatArg::Text => Format::Text,
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Show the keys instead of masking them.
    #[arg(long)]
    show: bool,
    /// Only keys of this type.
    #[arg(long = "type", value_enum)]
    kind: Option<TypeArg>,
    /// Only keys with this status.
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// Only keys bound to this unit ID.
    #[arg(long = "unit-id", value_name = "ID")]
    unit_id: Option<String>,
    /// Only keys whose comment holds this text.
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
    /// Print at most N keys.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT, value_parser = table::page_limit)]
    limit: usize,
    /// Start after this key ID (the footer of the previous page names it).
    #[arg(long, value_name = "ID")]
    after: Option<KeyId>,
    /// Print JSON: {items: [{id, type, key, shown, unit_id, status, usage_count, usage_date,
    /// comment, created_at}], next_after, total}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    /// The file format.
    #[arg(long, value_enum, default_value = "xml")]
    format: FormatArg,
    /// The file to write (for example /media/stick/icg.xml).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// A server devices should contact, HOST or HOST:PORT; repeat for more, in order
    /// [default: the configured public host, port 8443].
    #[arg(long = "server", value_name = "HOST:PORT")]
    servers: Vec<String>,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
    /// The keys to export [default: all active keys].
    ids: Vec<KeyId>,
}

/// Runs a `keys` command.
pub(super) async fn run(
    command: KeysCommand,
    target: Target,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(CreateCommand::OneTime { quantity, comment }) => {
            let bar = progress(quantity as u64, "creating one-time keys");
            let ids = target
                .create(CreateKeys::OneTime { quantity, comment }, on_progress(&bar))
                .await?;
            bar.finish_and_clear();
            writeln!(
                out,
                "Created {} one-time {}: {}.",
                ids.len(),
                plural(ids.len()),
                id_ranges(&ids)
            )?;
        }
        KeysCommand::Create(CreateCommand::DeviceBound {
            unit_ids,
            import,
            comment,
        }) => {
            let unit_ids: Vec<UnitId> = match import {
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    unit_ids::from_csv(&bytes).with_context(|| format!("{}", path.display()))?
                }
                None => unit_ids::check(
                    unit_ids
                        .iter()
                        .enumerate()
                        .map(|(i, text)| (i + 1, text.as_str())),
                )
                .context("--unit-id (line = position on the command line)")?,
            };
            let bar = progress(unit_ids.len() as u64, "creating device-bound keys");
            let ids = target
                .create(
                    CreateKeys::DeviceBound { unit_ids, comment },
                    on_progress(&bar),
                )
                .await?;
            bar.finish_and_clear();
            writeln!(
                out,
                "Created {} device-bound {}: {}.",
                ids.len(),
                plural(ids.len()),
                id_ranges(&ids)
            )?;
        }
        KeysCommand::Create(CreateCommand::Mass {
            password,
            password_stdin,
            comment,
        }) => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password from standard input")?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                password
            };
            let ids = target
                .create(CreateKeys::Mass { password, comment }, Box::new(|_| {}))
                .await?;
            let id = ids.first().copied().unwrap_or_default();
            let masked = target
                .keys(
                    &KeyFilter {
                        ids: Some(vec![id]),
                        ..KeyFilter::default()
                    },
                    &PageRequest::first(1),
                    false,
                )
                .await?
                .items
                .pop()
                .map(|view| view.key)
                .unwrap_or_default();
            writeln!(
                out,
                "Created mass-deployment key {id}: {masked} (keys list --show reveals it)."
            )?;
        }
        KeysCommand::List(args) => list(&target, args, out).await?,
        KeysCommand::Edit { id, comment } => {
            target.edit(id, &comment).await?;
            writeln!(out, "Key {id}: comment set.")?;
        }
        KeysCommand::Activate { ids } => {
            target.change("activate", &ids).await?;
            writeln!(out, "Activated {}.", id_ranges(&ids))?;
        }
        KeysCommand::Deactivate { ids } => {
            target.change("deactivate", &ids).await?;
            writeln!(out, "Deactivated {}.", id_ranges(&ids))?;
        }
        KeysCommand::Delete { ids } => {
            target.change("delete", &ids).await?;
            writeln!(out, "Deleted {}.", id_ranges(&ids))?;
        }
        KeysCommand::Export(args) => export(&target, args, out).await?,
    }
    Ok(())
}

async fn list(target: &Target, args: ListArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let unit_id = args
        .unit_id
        .as_deref()
        .map(str::parse::<UnitId>)
        .transpose()
        .context("--unit-id")?;
    let filter = KeyFilter {
        kind: args.kind.map(KeyKind::from),
        status: args.status.map(KeyStatus::from),
        unit_id,
        ids: None,
        comment: args.comment,
    };
    let page = PageRequest {
        limit: args.limit,
        after: args.after,
    };
    let page = target.keys(&filter, &page, args.show).await?;
    let total = page.total.unwrap_or_default();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&page)?)?;
        return Ok(());
    }
    let mut rows = vec![
        [
            "ID",
            "Unit ID",
            "Key",
            "Status",
            "Usage date",
            "Usage count",
            "Type",
            "Comment",
        ]
        .map(str::to_owned),
    ];
    for view in &page.items {
        rows.push([
            view.id.to_string(),
            view.unit_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            view.key.clone(),
            view.status.label().to_owned(),
            view.usage_date.map(table::time).unwrap_or_default(),
            view.usage_count.to_string(),
            view.kind.as_str().to_owned(),
            view.comment.clone(),
        ]);
    }
    print_table(out, &rows)?;
    table::footer(
        out,
        page.items.len(),
        total,
        ("key", "keys"),
        page.next_after.map(|id| id.to_string()),
    )
}

async fn export(target: &Target, args: ExportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let format = Format::from(args.format);
    let file = target.export(&args.ids, &args.servers, format).await?;
    let bar = progress(1, "writing the export");
    let text = file.write(format);
    files::write_private(&args.out, text.as_bytes(), args.force)?;
    bar.finish_and_clear();
    writeln!(
        out,
        "Exported {} to {} ({format}, mode 0600).",
        summary(&file),
        args.out.display()
    )?;
    Ok(())
}

fn summary(file: &onboard_protocol::KeyFile) -> String {
    format!(
        "{} {} ({} one-time, {} device-bound, {} mass) for {} with UMS ID {}",
        file.keys.len(),
        plural(file.keys.len()),
        file.count(KeyKind::OneTime),
        file.count(KeyKind::DeviceBound),
        file.count(KeyKind::MassDeployment),
        file.servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        file.ums_id.short()
    )
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "key" } else { "keys" }
}

/// `IDs 1 to 100` or `IDs 1, 5, 7` or `ID 3`.
fn id_ranges(ids: &[KeyId]) -> String {
    match ids {
        [] => "no keys".to_owned(),
        [one] => format!("ID {one}"),
        [first, .., last] if ids.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("IDs {first} to {last}")
        }
        _ => format!(
            "IDs {}",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Moves `bar` as keys are made.
fn on_progress(bar: &ProgressBar) -> Progress {
    let bar = bar.clone();
    Box::new(move |done| bar.set_position(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_and_without_port() {
        assert_eq!(
            crate::keys::parse_server("ums.example.com")
                .unwrap()
                .to_string(),
            "ums.example.com:8443"
        );
        assert_eq!(
            crate::keys::parse_server("ums:9443").unwrap().to_string(),
            "ums:9443"
        );
        assert_eq!(
            crate::keys::parse_server("[fd00::1]:9443")
                .unwrap()
                .to_string(),
            "[fd00::1]:9443"
        );
        assert_eq!(
            crate::keys::parse_server("fd00::1").unwrap().to_string(),
            "[fd00::1]:8443"
        );
        assert!(crate::keys::parse_server("ums:0").is_err());
        assert!(crate::keys::parse_server("ums:http").is_err());
    }

    #[test]
    fn id_ranges_read_well() {
        assert_eq!(id_ranges(&[3]), "ID 3");
        assert_eq!(id_ranges(&[1, 2, 3]), "IDs 1 to 3");
        assert_eq!(id_ranges(&[1, 5]), "IDs 1, 5");
    }
}
