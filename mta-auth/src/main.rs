//! The `mailid-mta-auth` binary: see [`mailid_mta_auth::cli`]. Allocates
//! with mimalloc, as `mailid-ca` does (docs/BENCHMARKS.md, issue 16).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mailid_mta_auth::cli::main()
}
