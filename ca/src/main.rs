//! The `mailid-ca` binary: see [`mailid_ca::cli`]. Allocates with
//! mimalloc: glibc's malloc was 8% of the CA's CPU per enrollment
//! (docs/BENCHMARKS.md, issue 16).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(mailid_ca::cli::main());
}
