//! `mailid`: the account holder's command line (SPEC §6), a thin shell over
//! the `mailid_client` library. Results go to stdout; a failure is one line
//! on stderr and exit status 1; a usage error exits with 2.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // A bug must still end as one line, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unexpected failure".into());
        eprintln!("mailid: internal error: {msg}");
    }));
    match std::panic::catch_unwind(real_main) {
        Ok(code) => code,
        Err(_) => ExitCode::from(1),
    }
}

fn real_main() -> ExitCode {
    let cli: Cli = mailid_shared::cli::parse_or_exit("mailid");
    let login = match &cli.command {
        Command::Enroll(a) => Some(&a.login),
        Command::Revoke(a) => Some(&a.login),
        Command::Upload(a) => Some(&a.login),
        Command::Backup(a) => Some(&a.login),
        Command::Recover(a) => Some(&a.login),
        _ => None,
    };
    let creds = match login.map(commands::credentials) {
        None => None,
        Some(Ok(Some(c))) => Some(c),
        Some(Ok(None)) => mailid_shared::cli::usage_exit(
            "mailid",
            &Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "no MTA credentials: give --password-stdin, set MAILID_PASSWORD, \
                 or give --client-cert and --client-key",
            ),
        ),
        Some(Err(e)) => return fail(&e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailid: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(commands::run(cli, creds)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &mailid_client::Error) -> ExitCode {
    mailid_shared::cli::error_line("mailid", e);
    ExitCode::from(1)
}
