//! The SMTP proxy's client command reader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth_cli::proxy::fuzzing::smtp_client(data);
});
