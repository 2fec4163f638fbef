#![no_main]
//! Fuzz target `csr`: see [`mailid_fuzz::csr`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailid_fuzz::csr(data));
