//! The POP3 login machine and multi-line reader, fed a server's lines.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::pop_login(data);
});
