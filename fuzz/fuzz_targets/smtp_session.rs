//! send/check over SMTP against a loopback peer playing the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::smtp_session(data);
});
