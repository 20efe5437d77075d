//! `ums-stub audit`: the audit log, filtered and paged.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use onboard_protocol::UnitId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::table::{self, DEFAULT_LIMIT, print_table};
use super::target::Target;
use crate::store::{AuditFilter, PageRequest};

#[derive(Debug, Args)]
pub(super) struct AuditArgs {
    /// Only entries at or after this time (RFC 3339, for example 2026-11-22T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only entries about this unit ID.
    #[arg(long = "unit-id", value_name = "ID")]
    unit_id: Option<String>,
    /// Only entries with this outcome: ok, or a problem code such as key_used.
    #[arg(long, value_name = "OUTCOME")]
    outcome: Option<String>,
    /// Only entries by this actor: cli, an administrator, or a device's unit ID.
    #[arg(long, value_name = "NAME")]
    actor: Option<String>,
    /// Print at most N entries.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT, value_parser = table::page_limit)]
    limit: usize,
    /// Start after this entry number (the footer of the previous page names it).
    #[arg(long, value_name = "ID")]
    after: Option<i64>,
    /// Print JSON: {items: [{id, at, event, actor, source, unit_id, key_id, outcome, detail}],
    /// next_after, total}.
    #[arg(long)]
    json: bool,
}

/// Runs `audit`.
pub(super) async fn run(
    args: AuditArgs,
    target: Target,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(|text| {
            OffsetDateTime::parse(text, &Rfc3339)
                .with_context(|| format!("--since {text:?} is not an RFC 3339 time"))
        })
        .transpose()?;
    let unit_id = args
        .unit_id
        .as_deref()
        .map(str::parse::<UnitId>)
        .transpose()
        .context("--unit-id")?;
    let filter = AuditFilter {
        since,
        unit_id,
        outcome: args.outcome,
        actor: args.actor,
        newest_first: false,
    };
    let page = PageRequest {
        limit: args.limit,
        after: args.after,
    };
    let page = target.audit(&filter, &page).await?;
    let total = page.total.unwrap_or_default();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&page)?)?;
        return Ok(());
    }
    let mut rows = vec![
        [
            "ID", "Time", "Event", "Actor", "Source", "Unit ID", "Key ID", "Outcome", "Detail",
        ]
        .map(str::to_owned),
    ];
    for entry in &page.items {
        rows.push([
            entry.id.to_string(),
            table::time(entry.at),
            entry.event.clone(),
            entry.actor.clone(),
            entry.source.clone(),
            entry.unit_id.clone().unwrap_or_default(),
            entry.key_id.map(|id| id.to_string()).unwrap_or_default(),
            entry.outcome.clone(),
            entry.detail.clone(),
        ]);
    }
    print_table(out, &rows)?;
    table::footer(
        out,
        page.items.len(),
        total,
        ("entry", "entries"),
        page.next_after.map(|id| id.to_string()),
    )
}
