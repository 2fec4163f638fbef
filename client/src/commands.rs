//! What each `mailid` command does and prints, over the library.

use std::io::Write;
use std::path::PathBuf;

use mailid_client::{
    backup, recover, BackedUp, BackupOptions, RecoverOptions, RecoverWith, Secret,
};
use mailid_client::{
    enroll, key_id_of_file, lookup, parse_address, publish, revoke, ClientCert, Credentials,
    EnrollOptions, Error, Http, Result, RevokeOptions, Service, Step, Store, StoredIdentity,
    TlsOptions,
};
use mailid_client::{logverify, secret, store, Endpoint};
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::{Cli, Command, Login};

/// Writes one line to stdout; a closed pipe is not an error worth a panic.
pub fn out(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn print_json(v: &serde_json::Value) {
    out(serde_json::to_string_pretty(v).unwrap_or_default());
}

/// The resolved global settings.
struct Ctx {
    json: bool,
    store: Option<PathBuf>,
    tls: TlsOptions,
    passphrase: Option<Zeroizing<Vec<u8>>>,
}

impl Ctx {
    fn store_dir(&self) -> Result<PathBuf> {
        match &self.store {
            Some(d) => Ok(d.clone()),
            None => store::default_dir(),
        }
    }

    fn tls_with(&self, login: &Login) -> TlsOptions {
        let mut tls = self.tls.clone();
        if let (Some(cert), Some(key)) = (&login.client_cert, &login.client_key) {
            tls.client_cert = Some(ClientCert {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        tls
    }
}

/// How the holder signs in: password from stdin or MAILID_PASSWORD, else
/// the client certificate. `None` when neither was given (a usage error).
pub fn credentials(login: &Login) -> Result<Option<Credentials>> {
    if login.password_stdin {
        let pw = secret::read_line(std::io::stdin().lock(), "password")?;
        return Ok(Some(Credentials::Password(pw)));
    }
    if let Some(pw) = std::env::var_os("MAILID_PASSWORD") {
        let pw = pw
            .into_string()
            .map_err(|_| Error::Invalid("MAILID_PASSWORD is not valid UTF-8".into()))?;
        if !pw.is_empty() {
            return Ok(Some(Credentials::Password(Zeroizing::new(pw))));
        }
    }
    if login.client_cert.is_some() {
        return Ok(Some(Credentials::ClientCertificate));
    }
    Ok(None)
}

fn passphrase(cli: &Cli) -> Result<Option<Zeroizing<Vec<u8>>>> {
    if let Some(path) = &cli.passphrase_file {
        return secret::read_passphrase_file(path).map(Some);
    }
    match std::env::var_os("MAILID_PASSPHRASE") {
        // Set but empty is a mistake, not a request for a clear-text key.
        Some(p) if p.is_empty() => Err(Error::Invalid("MAILID_PASSPHRASE is set but empty".into())),
        Some(p) => Ok(Some(Zeroizing::new(p.into_encoded_bytes()))),
        None => Ok(None),
    }
}

/// Runs the parsed command line. `creds` are the holder's credentials for
/// commands that sign in.
pub async fn run(cli: Cli, creds: Option<Credentials>) -> Result<()> {
    let ctx = Ctx {
        json: cli.json,
        store: cli.store.clone(),
        tls: TlsOptions {
            ca_bundle: cli.ca_bundle.clone(),
            client_cert: None,
        },
        passphrase: passphrase(&cli)?,
    };
    let need = || Error::Invalid("no MTA credentials".into());
    match &cli.command {
        Command::Enroll(a) => {
            let mut opts = EnrollOptions::new(
                &a.email,
                &a.mta,
                &a.ca,
                creds.ok_or_else(need)?,
                ctx.store_dir()?,
            );
            opts.key_type = a.key_type;
            opts.passphrase = ctx.passphrase.clone();
            opts.tls = ctx.tls_with(&a.login);
            run_enroll(&ctx, &opts).await
        }
        Command::Revoke(a) => {
            let opts = RevokeOptions {
                address: a.email.clone(),
                mta_url: a.mta.clone(),
                ca_url: a.ca.clone(),
                serial: a.serial.clone(),
                reason: a.reason,
                credentials: creds.ok_or_else(need)?,
                store_dir: Some(ctx.store_dir()?),
                tls: ctx.tls_with(&a.login),
            };
            let r = revoke(&opts).await?;
            if ctx.json {
                print_json(&json!(r));
            } else {
                out(format!(
                    "revoked serial {} (key ID {}) of {} at {}, reason {}{}",
                    r.serial,
                    r.key_id,
                    r.account,
                    r.revoked_at,
                    r.reason,
                    if r.in_store {
                        "; the store marks it revoked"
                    } else {
                        ""
                    }
                ));
            }
            Ok(())
        }
        Command::Upload(a) => {
            let account = parse_address(&a.email)?;
            let mta = Endpoint::parse(Service::Mta, &a.mta)?;
            let store = Store::open(&ctx.store_dir()?)?;
            let entry = store.account(&account)?;
            let id = entry.current().cloned().ok_or_else(|| {
                Error::Invalid(format!("the store holds no current identity for {account}"))
            })?;
            let http = Http::new(&ctx.tls_with(&a.login))?;
            let creds = creds.ok_or_else(need)?;
            let json = ctx.json;
            publish(
                &http,
                &store,
                &mta,
                &account,
                &creds,
                &id,
                &mut |s: &Step| {
                    if !json {
                        out(s)
                    }
                },
            )
            .await?;
            if json {
                print_json(
                    &json!({"account": account, "serial": id.serial, "key_id": id.key_id, "mta": mta.base()}),
                );
            }
            Ok(())
        }
        Command::Show(a) => show(&ctx, &a.email),
        Command::Lookup(a) => {
            let found = lookup(&a.mta, &a.address, &ctx.tls).await?;
            let verified = match a.verify {
                true => {
                    let mta = Endpoint::parse(Service::Mta, &a.mta)?;
                    let http = Http::new(&ctx.tls)?;
                    let store = Store::open(&ctx.store_dir()?)?;
                    let account = &found.requested.address;
                    Some(logverify::verify(&http, &mta, &store, account, &found.identity).await?)
                }
                false => None,
            };
            if let Some(path) = &a.out {
                std::fs::write(path, &found.identity.certificate)
                    .map_err(|e| Error::io(path, &e))?;
            }
            let s = &found.summary;
            if ctx.json {
                print_json(&json!({
                    "account": found.identity.account,
                    "serial": s.serial,
                    "key_id": s.key_id,
                    "key_type": s.key_type,
                    "subject": s.subject,
                    "issuer": s.issuer,
                    "not_before": s.not_before,
                    "not_after": s.not_after,
                    "certificate": found.identity.certificate,
                    "chain": found.identity.chain,
                    "verified": verified,
                }));
            } else {
                out(format!("account:  {}", found.identity.account));
                out(format!("serial:   {}", s.serial));
                out(format!("key ID:   {} ({})", s.key_id, s.key_type));
                out(format!("subject:  {}", s.subject));
                out(format!("issuer:   {}", s.issuer));
                out(format!("valid:    {} to {}", s.not_before, s.not_after));
                if let Some(v) = &verified {
                    print_verified(v);
                }
                if let Some(path) = &a.out {
                    out(format!("wrote the certificate to {}", path.display()));
                }
            }
            Ok(())
        }
        Command::Export(a) => {
            let password = mailid_client::export::password(a.p12_password_stdin)?;
            let done = mailid_client::export::export_p12(
                &Store::open(&ctx.store_dir()?)?,
                &mailid_client::export::ExportOptions {
                    address: &a.email,
                    serial: a.serial.as_deref(),
                    legacy: a.legacy,
                    out: &a.p12,
                    password: &password,
                    passphrase: ctx.passphrase.as_deref().map(|p| p.as_slice()),
                },
            )?;
            if ctx.json {
                print_json(&json!(done));
            } else {
                out(done);
            }
            Ok(())
        }
        Command::Backup(a) => {
            let opts = BackupOptions {
                address: a.email.clone(),
                mta_url: a.mta.clone(),
                credentials: creds.ok_or_else(need)?,
                store_dir: ctx.store_dir()?,
                passphrase: ctx.passphrase.clone(),
                tls: ctx.tls_with(&a.login),
                split: a.split,
                out_dir: a.out_dir.clone(),
                replace: a.replace,
            };
            let json = ctx.json;
            let done = backup(&opts, &mut |plan| deliver_backup(json, plan)).await?;
            if !json {
                backed_up(&done);
            }
            Ok(())
        }
        Command::Recover(a) => {
            let with = match &a.recovery_key_file {
                Some(f) => RecoverWith::KeyFile(f.clone()),
                None => RecoverWith::Shares(a.share_file.clone()),
            };
            let opts = RecoverOptions {
                address: a.email.clone(),
                mta_url: a.mta.clone(),
                credentials: creds.ok_or_else(need)?,
                store_dir: ctx.store_dir()?,
                passphrase: ctx.passphrase.clone(),
                tls: ctx.tls_with(&a.login),
                with,
            };
            let done = recover(&opts).await?;
            if ctx.json {
                print_json(&json!({
                    "account": done.account,
                    "store": done.store_dir,
                    "identities": done.identities,
                }));
            } else {
                for id in &done.identities {
                    out(format!(
                        "recovered serial {} (key ID {}, {}, valid to {}): {}",
                        id.serial,
                        id.key_id,
                        id.key_type,
                        id.not_after,
                        id.status.as_str()
                    ));
                }
                out(format!(
                    "rebuilt {} in the store at {}{}",
                    done.account,
                    done.store_dir.display(),
                    if ctx.passphrase.is_some() {
                        " (keys encrypted with the store passphrase)"
                    } else {
                        " (keys not encrypted: give MAILID_PASSPHRASE or --passphrase-file to \
                         encrypt them)"
                    }
                ));
            }
            Ok(())
        }
        Command::KeyId(a) => {
            let pass = ctx.passphrase.as_deref().map(|p| p.as_slice());
            let k = key_id_of_file(&a.file, pass)?;
            if ctx.json {
                print_json(&json!({
                    "key_id": k.key_id,
                    "kind": k.kind.to_string(),
                    "key_type": k.key_type,
                }));
            } else {
                out(&k.key_id);
            }
            Ok(())
        }
    }
}

async fn run_enroll(ctx: &Ctx, opts: &EnrollOptions) -> Result<()> {
    let json = ctx.json;
    let mut steps = Vec::new();
    let outcome = enroll(opts, &mut |s: &Step| {
        if json {
            steps.push(s.to_string());
        } else {
            out(s);
        }
    })
    .await?;
    if json {
        let mut v = json!(outcome);
        v["steps"] = json!(steps);
        print_json(&v);
    } else {
        out(format!(
            "enrolled {}: serial {}, key ID {}, {}, valid until {}",
            outcome.account, outcome.serial, outcome.key_id, outcome.key_type, outcome.not_after
        ));
    }
    Ok(())
}

fn describe(id: &StoredIdentity) -> String {
    let mut line = format!(
        "serial {}, key ID {}, {}, valid {} to {}, from the CA at {}",
        id.serial, id.key_id, id.key_type, id.not_before, id.not_after, id.ca_url
    );
    if let Some(at) = &id.revoked_at {
        line.push_str(&format!(", revoked {at}"));
        if let Some(r) = id.reason {
            line.push_str(&format!(" ({r})"));
        }
    }
    if let Some(m) = &id.published_at {
        line.push_str(&format!(", published at {m}"));
    }
    line
}

fn show(ctx: &Ctx, email: &str) -> Result<()> {
    let account = parse_address(email)?;
    let dir = ctx.store_dir()?;
    let store = Store::open(&dir)?;
    let entry = store.account(&account)?;
    // Nothing to show is a failure with or without --json.
    if entry.identities.is_empty() {
        return Err(Error::Invalid(format!(
            "the store {} holds no identity for {account}",
            dir.display()
        )));
    }
    if ctx.json {
        print_json(&json!({
            "account": account,
            "store": dir,
            "current": entry.current(),
            "identities": entry.identities,
        }));
        return Ok(());
    }
    out(format!("{account} (store {})", dir.display()));
    match entry.current() {
        Some(c) => {
            out(format!("current: {}", describe(c)));
            out(format!("  files: {}", store.path_of(c).display()));
        }
        None => out("current: none"),
    }
    for id in entry
        .identities
        .iter()
        .rev()
        .filter(|i| Some(*i) != entry.current())
    {
        out(format!("{}: {}", id.status.as_str(), describe(id)));
    }
    Ok(())
}

/// Writes to stdout and reports a failure: a recovery key that was not
/// delivered must not count as kept.
fn out_checked(text: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{text}")
        .and_then(|()| o.flush())
        .map_err(|e| Error::Invalid(format!("cannot write to standard output: {e}")))
}

/// Hands the recovery key (or the share files' names) to the holder before
/// `backup` changes anything at the MTA; with `--json` the whole result.
fn deliver_backup(json: bool, plan: &BackedUp) -> Result<()> {
    if json {
        let keys: Vec<_> = plan
            .keys
            .iter()
            .map(|(k, s)| json!({"key_id": k, "serial": s}))
            .collect();
        let mut v = json!({"account": plan.account, "keys": keys, "removed": plan.removed});
        match &plan.secret {
            Secret::Key { text, file } => {
                v["recovery_key"] = json!(text.as_str());
                v["recovery_key_file"] = json!(file);
            }
            Secret::Shares { k, n, files } => {
                v["split"] = json!(format!("{k}-of-{n}"));
                v["shares"] = json!(files);
            }
        }
        let text = Zeroizing::new(serde_json::to_string_pretty(&v).unwrap_or_default());
        return out_checked(&text);
    }
    match &plan.secret {
        Secret::Key { text, file } => {
            out_checked(&format!(
                "recovery key for {} (shown only this once; keep it safe, apart from your \
                 devices):\n{}",
                plan.account,
                text.as_str()
            ))?;
            if let Some(f) = file {
                out_checked(&format!("also written to {} (mode 0600)", f.display()))?;
            }
        }
        Secret::Shares { files, .. } => {
            for f in files {
                out_checked(&format!("wrote {} (mode 0600)", f.display()))?;
            }
        }
    }
    Ok(())
}

/// What `backup` stored, once it is stored.
fn backed_up(done: &BackedUp) {
    for (k, s) in &done.keys {
        out(format!("backed up key ID {k} (serial {s})"));
    }
    for k in &done.removed {
        out(format!(
            "removed the backup of key ID {k}, which this store does not hold"
        ));
    }
    if let Secret::Shares { k, n, .. } = &done.secret {
        out(format!(
            "any {k} of these {n} shares recover the keys; keep each in a different place"
        ));
    }
}

/// What `lookup --verify` established, a line per step.
fn print_verified(v: &logverify::Verified) {
    out(format!(
        "log key:  {} (pinned {})",
        v.log_key, v.log_key_pinned_at
    ));
    out(match v.consistent_with {
        Some(m) => format!(
            "log:      checkpoint {} verified, consistent with checkpoint {m} seen before",
            v.checkpoint_size
        ),
        None => format!(
            "log:      checkpoint {} verified (first seen from this MTA; pinned)",
            v.checkpoint_size
        ),
    });
    out(format!(
        "history:  {} entries, chain intact, newest included in the checkpoint",
        v.entries
    ));
    out(format!(
        "key ID:   first seen {} ({}), current {}",
        v.first_key_id, v.first_seen, v.current_key_id
    ));
    for c in &v.changes {
        let key = |k: &Option<mailid_shared::KeyId>| {
            k.as_ref().map_or("none".to_string(), |k| k.to_string())
        };
        out(format!(
            "changed:  {} {}: {} -> {}",
            c.at,
            c.event,
            key(&c.from),
            key(&c.to)
        ));
    }
}
