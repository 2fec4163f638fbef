#![no_main]
//! Fuzz target `address`: see [`mailid_fuzz::address`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailid_fuzz::address(data));
