//! `ums-stub keys`: create, list, edit, (de)activate, delete and export first-authentication keys.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::ProgressBar;
use onboard_protocol::admin::{CreateKeys, EditKey, KeyId, KeyStatus};
use onboard_protocol::{Folder, Format, KeyKind, UnitId};
use time::OffsetDateTime;

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
    /// Change a key's comment, lifetime, usage limit (mass keys) or folder; what is not named
    /// stays. Devices enrolled already stay in the folder they landed in.
    Edit(EditArgs),
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
        #[command(flatten)]
        terms: TermsArgs,
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
        #[command(flatten)]
        terms: TermsArgs,
    },
    /// A mass-deployment key any number of devices may use (up to --usage-limit).
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
        #[command(flatten)]
        terms: TermsArgs,
        /// Enroll at most N devices, then refuse (key_exhausted) [default: no limit].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        usage_limit: Option<u64>,
    },
}

/// The lifetime and folder of new keys, each optional.
#[derive(Debug, Args)]
pub(super) struct TermsArgs {
    /// Expire this long after now: a number and s, m, h, d or w (30d, 12h) [default: never].
    #[arg(long, value_name = "DURATION", value_parser = duration, conflicts_with = "expires_at")]
    expires_in: Option<time::Duration>,
    /// Expire at this time (RFC 3339, 2026-12-31T23:59:59Z) [default: never].
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    expires_at: Option<OffsetDateTime>,
    /// Refuse enrollments before this time (RFC 3339) [default: valid at once].
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    not_before: Option<OffsetDateTime>,
    /// The folder devices enrolled with the keys land in (/Sites/Berlin).
    #[arg(long, value_name = "PATH", value_parser = folder)]
    folder: Option<Folder>,
}

impl TermsArgs {
    /// The expiry asked for, `--expires-in` counted from `now`.
    fn expires_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.expires_at.or(self.expires_in.map(|after| now + after))
    }
}

#[derive(Debug, Args)]
// The usage is written out: clap's own renders the required group as one word, `<--comment|…>`,
// wider than a manual page's line (groff, and lintian after it, complain).
#[command(
    group = clap::ArgGroup::new("change").required(true).multiple(true),
    override_usage = "ums-stub keys edit [OPTIONS] CHANGE... ID\n\n\
        CHANGE: --comment, --expires-in, --expires-at, --never-expires, --not-before,\n\
        --no-not-before, --usage-limit, --no-usage-limit, --folder, --no-folder (at least one)"
)]
pub(super) struct EditArgs {
    /// The key.
    id: KeyId,
    /// The new comment.
    #[arg(long, group = "change")]
    comment: Option<String>,
    /// Expire this long after now: a number and s, m, h, d or w (30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = duration, group = "change",
        conflicts_with_all = ["expires_at", "never_expires"])]
    expires_in: Option<time::Duration>,
    /// Expire at this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = rfc3339, group = "change",
        conflicts_with = "never_expires")]
    expires_at: Option<OffsetDateTime>,
    /// Never expire.
    #[arg(long, group = "change")]
    never_expires: bool,
    /// Refuse enrollments before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = rfc3339, group = "change",
        conflicts_with = "no_not_before")]
    not_before: Option<OffsetDateTime>,
    /// Valid at once: drop the start of its lifetime.
    #[arg(long, group = "change")]
    no_not_before: bool,
    /// Enroll at most N devices (mass-deployment keys only).
    #[arg(long, value_name = "N", group = "change", conflicts_with = "no_usage_limit",
        value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    usage_limit: Option<u64>,
    /// No usage limit.
    #[arg(long, group = "change")]
    no_usage_limit: bool,
    /// The folder devices enrolled with it from now on land in.
    #[arg(long, value_name = "PATH", value_parser = folder, group = "change",
        conflicts_with = "no_folder")]
    folder: Option<Folder>,
    /// No folder.
    #[arg(long, group = "change")]
    no_folder: bool,
}

impl EditArgs {
    /// The change it asks for, `--expires-in` counted from `now`.
    fn edit(&self, now: OffsetDateTime) -> EditKey {
        /// A member set, cleared by its `--no-…` flag, or left as it is.
        fn change<T: Clone>(set: Option<&T>, clear: bool) -> Option<Option<T>> {
            match (set, clear) {
                (Some(value), _) => Some(Some(value.clone())),
                (None, true) => Some(None),
                (None, false) => None,
            }
        }
        let expires_at = self.expires_at.or(self.expires_in.map(|after| now + after));
        EditKey {
            comment: self.comment.clone(),
            expires_at: change(expires_at.as_ref(), self.never_expires),
            not_before: change(self.not_before.as_ref(), self.no_not_before),
            usage_limit: change(self.usage_limit.as_ref(), self.no_usage_limit),
            folder: change(self.folder.as_ref(), self.no_folder),
        }
    }
}

/// A duration on the command line: a whole number and a unit, s, m, h, d or w (`30d`).
pub(super) fn duration(text: &str) -> Result<time::Duration, String> {
    let bad = || format!("{text:?} is not a duration: expected a number and s, m, h, d or w (30d)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => time::Duration::SECOND,
        "m" => time::Duration::MINUTE,
        "h" => time::Duration::HOUR,
        "d" => time::Duration::DAY,
        "w" => time::Duration::WEEK,
        _ => return Err(bad()),
    };
    // Bounded well inside what a time can hold: a hundred years.
    if number == 0 || number.saturating_mul(unit.whole_seconds()) > 100 * 366 * 86_400 {
        return Err(format!(
            "{text:?}: a duration is from 1 second to 100 years"
        ));
    }
    Ok(unit * i32::try_from(number).map_err(|_| bad())?)
}

/// A time on the command line, RFC 3339.
pub(super) fn rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time (2026-12-31T23:59:59Z)"))
}

/// A folder on the command line.
pub(super) fn folder(text: &str) -> Result<Folder, String> {
    text.parse()
        .map_err(|error: onboard_protocol::FolderError| error.to_string())
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
    Expired,
    NotYetValid,
    Exhausted,
}

impl From<StatusArg> for KeyStatus {
    fn from(arg: StatusArg) -> Self {
        match arg {
            StatusArg::Active => KeyStatus::Active,
            StatusArg::Inactive => KeyStatus::Inactive,
            StatusArg::Used => KeyStatus::Used,
            StatusArg::Expired => KeyStatus::Expired,
            StatusArg::NotYetValid => KeyStatus::NotYetValid,
            StatusArg::Exhausted => KeyStatus::Exhausted,
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
    /// Only keys that expire before this time (RFC 3339; expired ones included).
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    expires_before: Option<OffsetDateTime>,
    /// Only keys that expire after this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    expires_after: Option<OffsetDateTime>,
    /// Print at most N keys.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT, value_parser = table::page_limit)]
    limit: usize,
    /// Start after this key ID (the footer of the previous page names it).
    #[arg(long, value_name = "ID")]
    after: Option<KeyId>,
    /// Print JSON: {items: [{id, type, key, shown, unit_id, status, usage_count, usage_date,
    /// comment, created_at, expires_at, not_before, usage_limit, folder}], next_after, total}.
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
    /// The keys to export [default: all active keys and those not valid yet; never expired,
    /// exhausted, used or inactive ones].
    ids: Vec<KeyId>,
}

/// Runs a `keys` command.
pub(super) async fn run(
    command: KeysCommand,
    target: Target,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(CreateCommand::OneTime {
            quantity,
            comment,
            terms,
        }) => {
            let bar = progress(quantity as u64, "creating one-time keys");
            let request = CreateKeys::OneTime {
                quantity,
                comment,
                expires_at: terms.expires_at(OffsetDateTime::now_utc()),
                not_before: terms.not_before,
                folder: terms.folder,
            };
            let ids = target.create(request, on_progress(&bar)).await?;
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
            terms,
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
            let request = CreateKeys::DeviceBound {
                unit_ids,
                comment,
                expires_at: terms.expires_at(OffsetDateTime::now_utc()),
                not_before: terms.not_before,
                folder: terms.folder,
            };
            let ids = target.create(request, on_progress(&bar)).await?;
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
            terms,
            usage_limit,
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
            let request = CreateKeys::Mass {
                password,
                comment,
                expires_at: terms.expires_at(OffsetDateTime::now_utc()),
                not_before: terms.not_before,
                folder: terms.folder,
                usage_limit,
            };
            let ids = target.create(request, Box::new(|_| {})).await?;
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
        KeysCommand::Edit(args) => {
            let edit = args.edit(OffsetDateTime::now_utc());
            let view = target.edit(args.id, &edit).await?;
            writeln!(out, "Key {}: {}.", args.id, changed(&edit, &view))?;
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
        expires_before: args.expires_before,
        expires_after: args.expires_after,
        at: None,
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
            "Expires",
            "Folder",
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
            match view.usage_limit {
                Some(limit) => format!("{} of {limit}", view.usage_count),
                None => view.usage_count.to_string(),
            },
            view.kind.as_str().to_owned(),
            view.expires_at.map(table::time).unwrap_or_default(),
            view.folder
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
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

/// What an edit set, as the key now has it.
fn changed(edit: &EditKey, view: &onboard_protocol::admin::KeyView) -> String {
    let time = |at: Option<OffsetDateTime>| at.map_or_else(|| "none".to_owned(), table::time);
    let mut parts = Vec::new();
    if edit.comment.is_some() {
        parts.push("comment set".to_owned());
    }
    if edit.expires_at.is_some() {
        parts.push(format!(
            "expires {}",
            time(view.expires_at).replace("none", "never")
        ));
    }
    if edit.not_before.is_some() {
        parts.push(format!(
            "valid from {}",
            time(view.not_before).replace("none", "now")
        ));
    }
    if edit.usage_limit.is_some() {
        parts.push(match view.usage_limit {
            Some(limit) => format!("usage limit {limit}"),
            None => "no usage limit".to_owned(),
        });
    }
    if edit.folder.is_some() {
        parts.push(match &view.folder {
            Some(folder) => format!("folder {folder}"),
            None => "no folder".to_owned(),
        });
    }
    format!("{}; status {}", parts.join(", "), view.status.label())
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
    fn durations_read_as_a_number_and_a_unit() {
        let table = [
            ("30d", Ok(time::Duration::days(30))),
            ("12h", Ok(time::Duration::hours(12))),
            ("90m", Ok(time::Duration::minutes(90))),
            ("45s", Ok(time::Duration::seconds(45))),
            ("2w", Ok(time::Duration::weeks(2))),
        ];
        for (text, expected) in table {
            assert_eq!(duration(text), expected, "{text}");
        }
        for bad in [
            "",
            "30",
            "d",
            "30x",
            "-1d",
            "1.5d",
            "0d",
            "40000d",
            "99999999999999999999d",
        ] {
            assert!(duration(bad).is_err(), "{bad} was read");
        }
    }

    #[test]
    fn id_ranges_read_well() {
        assert_eq!(id_ranges(&[3]), "ID 3");
        assert_eq!(id_ranges(&[1, 2, 3]), "IDs 1 to 3");
        assert_eq!(id_ranges(&[1, 5]), "IDs 1, 5");
    }
}
