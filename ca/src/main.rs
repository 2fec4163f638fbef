//! The `mailid-ca` binary: see [`mailid_ca::cli`].

fn main() {
    std::process::exit(mailid_ca::cli::main());
}
