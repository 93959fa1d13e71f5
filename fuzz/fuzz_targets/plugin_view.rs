//! `cargo fuzz run plugin_view`: see tailor_server::fuzzing::plugin_view.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailor_server::fuzzing::plugin_view(data));
