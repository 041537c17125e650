//! A line of the daemon's socket protocol, as request and reply.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailoauth::fuzzing::ipc(data);
});
