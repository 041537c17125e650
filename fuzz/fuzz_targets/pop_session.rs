//! fetch/check over POP3 against a loopback peer playing the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::pop_session(data);
});
