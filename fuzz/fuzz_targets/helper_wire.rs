//! libFuzzer target: ironpop_fuzz::helper_wire (see fuzz/src/lib.rs for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ironpop_fuzz::helper_wire(data));
