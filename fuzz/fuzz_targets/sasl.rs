//! The SASL decoders: the proxy's PLAIN/LOGIN, the library's challenge and gs2 header.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::sasl(data);
    mailoauth_cli::proxy::fuzzing::sasl(data);
});
