//! The SMTP login machine and reply reader, fed a server's lines.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::smtp_login(data);
});
