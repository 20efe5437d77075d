//! What the commands share for printing: padded tables, times, page footers, progress bars.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The most rows one list command prints unless `--limit` says otherwise.
pub(super) const DEFAULT_LIMIT: usize = 1000;

/// The most rows `--limit` may ask for.
pub(super) const MAX_LIMIT: usize = 1_000_000;

/// Prints rows as columns padded to their widest cell.
pub(super) fn print_table<const N: usize>(
    out: &mut impl Write,
    table: &[[String; N]],
) -> anyhow::Result<()> {
    let mut widths = [0usize; N];
    for row in table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut buffer = std::io::BufWriter::new(out);
    for row in table {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(buffer, "{}", line.join("  ").trim_end())?;
    }
    buffer.flush()?;
    Ok(())
}

/// A time as RFC 3339.
pub(super) fn time(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The line under a list: how many rows were shown of how many, and how to see the next page.
pub(super) fn footer(
    out: &mut impl Write,
    shown: usize,
    total: u64,
    noun: (&str, &str),
    next_after: Option<String>,
) -> anyhow::Result<()> {
    let name = |count: u64| if count == 1 { noun.0 } else { noun.1 };
    match next_after {
        Some(after) => writeln!(
            out,
            "{shown} of {total} {} shown; the next page: --after {after}",
            name(total)
        )?,
        None if (shown as u64) < total => {
            writeln!(out, "{shown} of {total} {} shown", name(total))?
        }
        None => writeln!(out, "{total} {}", name(total))?,
    }
    Ok(())
}

/// Checks a `--limit`.
pub(super) fn page_limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(format!("expected a number from 1 to {MAX_LIMIT}")),
    }
}

/// A progress bar on standard error when it is a terminal; hidden otherwise.
pub(super) fn progress(total: u64, message: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total < 1000 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({eta})") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footers_say_what_was_left_out() {
        let text = |shown, total, next: Option<&str>| {
            let mut out = Vec::new();
            footer(
                &mut out,
                shown,
                total,
                ("key", "keys"),
                next.map(str::to_owned),
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(1, 1, None), "1 key\n");
        assert_eq!(text(3, 3, None), "3 keys\n");
        assert_eq!(
            text(2, 5, Some("7")),
            "2 of 5 keys shown; the next page: --after 7\n"
        );
        assert!(page_limit("0").is_err() && page_limit("x").is_err());
        assert_eq!(page_limit("100"), Ok(100));
    }
}
