//! `cargo fuzz run record`: see tailor_server::fuzzing::record.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailor_server::fuzzing::record(data));
