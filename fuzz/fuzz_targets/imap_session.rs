//! fetch/check over IMAP against a loopback peer playing the input (literals, Maildir).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::imap_session(data);
});
