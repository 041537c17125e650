//! A stored token record: parse, round trip, freshness.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::token_record(data);
});
