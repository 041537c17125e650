//! The IMAP proxy's client command reader (quoted strings, literals, budgets).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth_cli::proxy::fuzzing::imap_client(data);
});
