#![no_main]
//! Fuzz target `pem`: see [`mailid_fuzz::pem`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailid_fuzz::pem(data));
