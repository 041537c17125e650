//! A token endpoint's answer: classification, token JSON, the error shown.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::token_endpoint(data);
});
