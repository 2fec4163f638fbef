//! The `mailid-ca` binary: see [`mailid_ca::cli`].

/// mimalloc: glibc malloc was a tenth of the CPU time of an enrollment
/// (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(mailid_ca::cli::main());
}
