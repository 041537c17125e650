//! The IMAP login machine and tagged-response reader, fed a server's lines.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::imap_login(data);
});
