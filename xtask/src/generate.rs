//! Manual pages and shell completions, generated from a program's clap command (clap_mangen,
//! clap_complete) at packaging time, so that neither program carries the generators.

use std::path::Path;

use anyhow::Context;
use clap_complete::Shell;

/// Writes into `dir` (emptied first) the manual pages of `name`, compressed as Debian has them
/// (`man/NAME.1.gz`, and one page per subcommand: `man/NAME-keys-create.1.gz`), and its completions: `NAME.bash`, `_NAME` (zsh) and
/// `NAME.fish`, the names the `[package.metadata.deb]` assets take them by.
pub(crate) fn man_and_completions(
    name: &'static str,
    command: clap::Command,
    dir: &Path,
) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    let man = dir.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("cannot make {}", man.display()))?;
    let command = command.name(name).bin_name(name);
    man_pages(command.clone(), &man)?;
    // gzip -9n: the best compression, no name or time inside (the same page gives the same bytes).
    let mut gzip = std::process::Command::new("gzip");
    gzip.args(["-9", "-n", "-f"]);
    for page in std::fs::read_dir(&man)? {
        gzip.arg(page?.path());
    }
    crate::run::status(&mut gzip)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command.clone(), name, dir)
            .with_context(|| format!("cannot write the {shell} completions of {name}"))?;
    }
    Ok(())
}

/// One page per command and subcommand, each in section 1 (both programs are in /usr/bin).
fn man_pages(command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    let version = command.get_version().unwrap_or_default().to_owned();
    let mut command = command.disable_help_subcommand(true);
    command.build();
    write_pages(&command, &version, dir)
}

fn write_pages(command: &clap::Command, version: &str, dir: &Path) -> anyhow::Result<()> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, version, dir)?;
    }
    // Subcommands carry no version of their own: the page footer names the program's.
    let name = command.get_name().to_owned();
    let page = clap_mangen::Man::new(command.clone())
        .source(format!("onboard {version}"))
        .manual("onboard");
    page.generate_to(dir)
        .with_context(|| format!("cannot write the manual page of {name}"))?;
    Ok(())
}
