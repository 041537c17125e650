//! The config file: parse and resolve every account.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::config(data);
});
