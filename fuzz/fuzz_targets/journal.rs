//! libFuzzer target: ironpop_fuzz::journal (see fuzz/src/lib.rs for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ironpop_fuzz::journal(data));
