//! Database URLs: parsing the libpq URL form, taking the password from
//! the environment as libpq does, and never showing it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::describe;
use crate::db::DbError;

/// A `postgres://` or `postgresql://` URL (libpq form). [`fmt::Display`]
/// and [`fmt::Debug`] show it with the password replaced by `***`; only
/// [`PgUrl::secret_text`] gives the original (for `config.json`).
#[derive(Clone)]
pub struct PgUrl {
    text: String,
    config: tokio_postgres::Config,
}

impl PgUrl {
    /// Parses a database URL. A URL without a password takes it from
    /// `PGPASSWORD` or the password file (`PGPASSFILE`, else
    /// `~/.pgpass`), as libpq does.
    pub fn parse(text: &str) -> Result<PgUrl, DbError> {
        let text = text.trim();
        let scheme = text.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("postgres") | Some("postgresql") => {}
            Some(other) => {
                return Err(DbError::BadUrl(format!(
                    "unsupported database URL scheme '{}' (use postgres:// or postgresql://)",
                    other.chars().take(32).collect::<String>()
                )))
            }
            None => {
                return Err(DbError::BadUrl(
                    "a database URL starts with postgres:// or postgresql://".into(),
                ))
            }
        }
        let mut config = tokio_postgres::Config::from_str(text)
            .map_err(|e| DbError::BadUrl(format!("bad database URL: {}", describe(&e))))?;
        if config.get_password().is_none() {
            if let Some(pw) = password_from_env(&config) {
                config.password(pw);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        if config.get_application_name().is_none() {
            config.application_name("mailid");
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        Ok(PgUrl {
            text: text.to_string(),
            config,
        })
    }

    /// The URL as given, password included: only for `config.json` (0600).
    pub fn secret_text(&self) -> &str {
        &self.text
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.text)
    }

    /// The parsed connection settings.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgUrl {
        let mut config = self.config.clone();
        config.dbname(dbname);
        PgUrl {
            text: replace_dbname(&self.text, dbname),
            config,
        }
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.redacted())
    }
}

/// `text` with the password of the user-info part and any `password=`
/// parameter replaced by `***`.
pub fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn replace_dbname(text: &str, dbname: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let query = tail.split_once('?').map(|(_, q)| q);
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'-')
        .remove(b'.');
    let encoded = percent_encoding::utf8_percent_encode(dbname, SET);
    match query {
        Some(q) => format!("{scheme}://{authority}/{encoded}?{q}"),
        None => format!("{scheme}://{authority}/{encoded}"),
    }
}

/// The password libpq would use when the URL has none: `PGPASSWORD`, else
/// the first matching line of the password file.
fn password_from_env(config: &tokio_postgres::Config) -> Option<String> {
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        return Some(pw);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default().to_string();
    let db = config.get_dbname().unwrap_or(&user).to_string();
    let wanted = [host, port, db, user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_passfile_line(line);
            if fields.len() != 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(&wanted)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4].clone())
        })
}

/// The colon-separated fields of a password-file line (`\:` and `\\` are
/// escapes).
pub(super) fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}
