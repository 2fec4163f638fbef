//! The `mailid-mta-auth` binary: see [`mailid_mta_auth::cli`].

/// mimalloc: glibc malloc was a tenth of the CPU time of an enrollment
/// (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mailid_mta_auth::cli::main()
}
