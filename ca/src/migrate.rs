//! `mailid-ca db migrate --to URL`: moves a data directory's SQLite
//! database into an empty PostgreSQL database (the service stopped),
//! checks the copy and points `config.json` at it. A refusal or failure
//! changes nothing: the copy is one transaction, and the configuration is
//! rewritten only after the copy checked out.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;

use mailid_shared::db::OpenMode;

use crate::config::Config;
use crate::ops::{self, Location};

/// `db` subcommands.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy this data directory's SQLite database into an empty PostgreSQL
    /// database and use that from now on (stop the service first).
    Migrate {
        /// The PostgreSQL database (postgres:// or postgresql:// URL).
        #[arg(long)]
        to: String,
    },
}

/// Runs a `db` subcommand.
pub fn run(dir: &Path, database: Option<&str>, cmd: &DbCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        DbCommand::Migrate { to } => migrate(dir, database, to, json),
    }
}

fn migrate(dir: &Path, database: Option<&str>, to: &str, json: bool) -> anyhow::Result<()> {
    let url = ops::parse_database(to)?;
    let source = match ops::location(dir, database)? {
        Location::Sqlite(path) => path,
        Location::Postgres(on) => {
            anyhow::bail!("this data directory already uses the PostgreSQL database {on}")
        }
    };
    let src = ops::open_location(&Location::Sqlite(source.clone()), OpenMode::Existing)?;
    let dst = ops::open_location(&Location::Postgres(Box::new(url.clone())), OpenMode::Create)?;
    if !dst.is_empty_blocking()? {
        anyhow::bail!("the database {url} is not empty; db migrate needs an empty database");
    }
    let before = src.counts_blocking()?;
    src.copy_into_blocking(&dst)
        .with_context(|| format!("copying into {url}"))?;
    let after = dst.counts_blocking()?;
    if after != before {
        anyhow::bail!("the copy in {url} does not match: {before:?} copied as {after:?}");
    }
    let mut cfg = Config::load(dir)?;
    cfg.database = Some(to.to_string());
    cfg.save(dir)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"database": url.to_string(), "copied": after})
        );
    } else {
        println!(
            "copied {} certificates ({} revoked), {} compromised keys and {} MTA routes into {url}; \
             this data directory now uses it ({} is no longer used)",
            after.certificates,
            after.revoked,
            after.compromised_keys,
            after.routes,
            source.display()
        );
    }
    Ok(())
}
