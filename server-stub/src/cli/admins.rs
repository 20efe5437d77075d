//! `ums-stub admins` and `ums-stub tokens`: administrator accounts and their API tokens, on the
//! server machine. The first account can only come from here; after that, accounts with
//! `server:admin` manage the others over the admin API too.

use std::io::Write;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Subcommand};
use onboard_protocol::admin::{EditAccount, NewAccount, NewToken, Right};

use super::table::{self, DEFAULT_LIMIT, print_table};
use crate::accounts::Granter;
use crate::store::{Actor, PageRequest};
use crate::stub::Stub;

#[derive(Debug, Subcommand)]
pub(super) enum AdminsCommand {
    /// Create an account. Without --password-stdin a password is generated and printed once.
    Create {
        /// The account's name (letters, digits, . _ @ -).
        name: String,
        /// Its rights, comma-separated: keys:read, keys:write, keys:reveal, keys:export,
        /// devices:read, devices:write, audit:read, server:admin.
        #[arg(long, value_delimiter = ',', required = true, value_name = "RIGHT,...")]
        rights: Vec<Right>,
        /// Read the password (at least 12 characters) from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts with their rights.
    List {
        /// Print JSON: {items: [{name, rights, created_at, changed_at}], next_after, total}.
        #[arg(long)]
        json: bool,
    },
    /// Change an account's rights or password; its sessions end.
    Edit {
        /// The account.
        name: String,
        /// Its new rights, comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "RIGHT,...")]
        rights: Option<Vec<Right>>,
        /// Read a new password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account with its tokens and sessions.
    Delete {
        /// The account.
        name: String,
    },
    /// Seal the account and token rows that carry no MAC, so that they grant what they say.
    ///
    /// Rows without a MAC grant nothing: rows from before row MACs that the upgrade did not seal
    /// (the server that migrated the database was not in sync), or rows whoever can write the
    /// database wrote or stripped. The server never seals them on its own after the upgrade.
    /// This lists each row with its rights, then gives it a MAC, and writes an audit line naming
    /// them all (admin-rows.seal). Check the list first with --dry-run: whatever it shows becomes
    /// valid. Runs on the server machine only; it needs the data directory and, on PostgreSQL,
    /// the cluster secret (--cluster-secret FILE).
    Seal {
        /// Only list the rows, seal nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum TokensCommand {
    /// Create an API token for an account and print it once (the server keeps only its SHA-256).
    Create(CreateTokenArgs),
    /// List tokens (never the tokens themselves).
    List {
        /// Only the tokens of this account.
        #[arg(long, value_name = "NAME")]
        admin: Option<String>,
        /// Print JSON: {items: [{id, name, account, rights, created_at, expires_at}], next_after}.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once.
    Revoke {
        /// The token's ID (the part after umst_, as `tokens list` shows it).
        id: String,
    },
}

#[derive(Debug, Args)]
pub(super) struct CreateTokenArgs {
    /// The account it acts for.
    #[arg(long, value_name = "NAME")]
    admin: String,
    /// A subset of the account's rights, comma-separated [default: all of them].
    #[arg(long, value_delimiter = ',', value_name = "RIGHT,...")]
    rights: Option<Vec<Right>>,
    /// Days until it expires [default: never].
    #[arg(long, value_name = "N")]
    expires_days: Option<u32>,
    /// A name to tell it by.
    #[arg(long, default_value = "")]
    name: String,
    /// Write the token to this file (mode 0600) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn rights_text(rights: &[Right]) -> String {
    rights
        .iter()
        .map(|right| right.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs an `admins` command.
pub(super) async fn run_admins(
    command: AdminsCommand,
    stub: Stub,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let accounts = stub.accounts();
    let cli = Actor::cli();
    match command {
        AdminsCommand::Create {
            name,
            rights,
            password_stdin,
        } => {
            let (password, generated) = if password_stdin {
                (read_password()?, false)
            } else {
                let bytes = crate::random::bytes::<15>();
                (
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
                    true,
                )
            };
            let request = NewAccount {
                name,
                password: password.clone(),
                rights,
            };
            let created = accounts.create(request, &Granter::cli()).await?;
            writeln!(
                out,
                "Created account {} with {}.",
                created.name,
                rights_text(&created.rights)
            )?;
            if generated {
                writeln!(out, "Its password (shown once): {password}")?;
            }
        }
        AdminsCommand::List { json } => {
            let listed = accounts.list(&PageRequest::first(DEFAULT_LIMIT)).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&listed)?)?;
                return Ok(());
            }
            let mut rows = vec![["Name", "Rights", "Created", "Changed"].map(String::from)];
            for account in &listed.items {
                rows.push([
                    account.name.clone(),
                    rights_text(&account.rights),
                    table::time(account.created_at),
                    table::time(account.changed_at),
                ]);
            }
            print_table(out, &rows)?;
            table::footer(
                out,
                listed.items.len(),
                listed.total.unwrap_or(listed.items.len() as u64),
                ("account", "accounts"),
                listed.next_after,
            )?;
        }
        AdminsCommand::Edit {
            name,
            rights,
            password_stdin,
        } => {
            if rights.is_none() && !password_stdin {
                anyhow::bail!("name --rights, --password-stdin or both");
            }
            let password = password_stdin.then(read_password).transpose()?;
            let new_password = password.is_some();
            let edited = accounts
                .edit(&name, EditAccount { rights, password }, &Granter::cli())
                .await?;
            writeln!(
                out,
                "Account {}: {}; its sessions{} ended.",
                edited.name,
                rights_text(&edited.rights),
                if new_password { " and tokens" } else { "" }
            )?;
        }
        AdminsCommand::Delete { name } => {
            accounts.delete(&name, &cli).await?;
            writeln!(out, "Deleted account {name} with its tokens and sessions.")?;
        }
        AdminsCommand::Seal { dry_run } => seal(&stub, dry_run, out).await?,
    }
    Ok(())
}

/// `admins seal`: lists the rows without a MAC and (unless `dry_run`) seals them.
async fn seal(stub: &Stub, dry_run: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if stub.sync == crate::cluster::SyncStatus::NotInSync {
        anyhow::bail!(
            "this server is not in sync with the Main UMS ID, so it does not hold the key rows are \
             sealed under: run it with the cluster secret (--cluster-secret FILE)"
        );
    }
    let rows = if dry_run {
        stub.store.unsealed_admin_rows().await?
    } else {
        stub.store
            .seal_admin_rows(stub.rows.clone(), "by ums-stub admins seal", &Actor::cli())
            .await?
    };
    if rows.is_empty() {
        writeln!(
            out,
            "Every account and token row carries its MAC: nothing to seal."
        )?;
        return Ok(());
    }
    let mut table = vec![["Row", "Name", "Account", "Rights"].map(String::from)];
    for account in &rows.accounts {
        table.push([
            "account".to_owned(),
            account.name.clone(),
            account.name.clone(),
            rights_text(&account.rights),
        ]);
    }
    for token in &rows.tokens {
        table.push([
            "token".to_owned(),
            token.id.clone(),
            token.account.clone(),
            rights_text(&token.rights),
        ]);
    }
    print_table(out, &table)?;
    if dry_run {
        writeln!(
            out,
            "{} account(s) and {} token(s) without a MAC grant nothing; `ums-stub admins seal` \
             seals them.",
            rows.accounts.len(),
            rows.tokens.len()
        )?;
    } else {
        writeln!(
            out,
            "Sealed {} account(s) and {} token(s); recorded in the audit log.",
            rows.accounts.len(),
            rows.tokens.len()
        )?;
    }
    Ok(())
}

/// Runs a `tokens` command.
pub(super) async fn run_tokens(
    command: TokensCommand,
    stub: Stub,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let accounts = stub.accounts();
    let cli = Actor::cli();
    match command {
        TokensCommand::Create(args) => {
            let created = accounts
                .create_token(
                    NewToken {
                        account: args.admin,
                        name: args.name,
                        rights: args.rights,
                        expires_days: args.expires_days,
                    },
                    &Granter::cli(),
                )
                .await?;
            let view = &created.view;
            let expiry = view.expires_at.map_or_else(
                || "never expires".to_owned(),
                |at| format!("expires {}", table::time(at)),
            );
            match args.out {
                Some(path) => {
                    crate::files::write_private(
                        &path,
                        format!("{}\n", created.token).as_bytes(),
                        false,
                    )?;
                    writeln!(
                        out,
                        "Created token {} for {} with {}; it {expiry}. Written to {} (mode 0600).",
                        view.id,
                        view.account,
                        rights_text(&view.rights),
                        path.display()
                    )?;
                }
                None => {
                    eprintln!(
                        "Created token {} for {} with {}; it {expiry}. It is shown once:",
                        view.id,
                        view.account,
                        rights_text(&view.rights)
                    );
                    writeln!(out, "{}", created.token)?;
                }
            }
        }
        TokensCommand::List { admin, json } => {
            let listed = accounts
                .list_tokens(admin.as_deref(), &PageRequest::first(DEFAULT_LIMIT))
                .await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&listed)?)?;
                return Ok(());
            }
            let mut rows =
                vec![["ID", "Account", "Name", "Rights", "Created", "Expires"].map(String::from)];
            for token in &listed.items {
                rows.push([
                    token.id.clone(),
                    token.account.clone(),
                    token.name.clone(),
                    rights_text(&token.rights),
                    table::time(token.created_at),
                    token
                        .expires_at
                        .map_or_else(|| "never".to_owned(), table::time),
                ]);
            }
            print_table(out, &rows)?;
        }
        TokensCommand::Revoke { id } => {
            accounts.revoke_token(&id, &cli).await?;
            writeln!(out, "Revoked token {id}.")?;
        }
    }
    Ok(())
}
