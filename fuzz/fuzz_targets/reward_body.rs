//! `cargo fuzz run reward_body`: see tailor_server::fuzzing::reward_body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailor_server::fuzzing::reward_body(data));
