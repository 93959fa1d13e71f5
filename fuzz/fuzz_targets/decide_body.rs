//! `cargo fuzz run decide_body`: see tailor_server::fuzzing::decide_body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailor_server::fuzzing::decide_body(data));
