#![no_main]
//! Fuzz target `keyid`: see [`mailid_fuzz::keyid`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailid_fuzz::keyid(data));
