#![no_main]
//! Fuzz target `json`: see [`mailid_fuzz::json`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailid_fuzz::json(data));
