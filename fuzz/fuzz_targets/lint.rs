#![no_main]
//! Fuzz target `lint`: see [`mailid_fuzz::lint`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailid_fuzz::lint(data));
