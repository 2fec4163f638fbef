//! The `mailid-mta-auth` binary: see [`mailid_mta_auth::cli`].

fn main() -> std::process::ExitCode {
    mailid_mta_auth::cli::main()
}
