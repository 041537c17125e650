//! A request at the loopback redirect listener, and a pasted redirect URL.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::redirect_request(data);
});
