#![no_main]
//! Fuzz target `upload`: see [`mailid_fuzz::upload`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailid_fuzz::upload(data));
