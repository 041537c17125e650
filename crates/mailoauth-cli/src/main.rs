//! The `mailoauth` command: argument parsing, output and exit codes over the
//! library — nothing else. Stdout carries only results (a token, `--json`);
//! everything for people goes to stderr.

// `mailoauth token` runs on every mail-client connection, so start-up is the hot
// path. Rust's default entry (`lang_start`) sets up a main-thread stack guard,
// which makes glibc parse /proc/self/maps: ~18% of the cached path's
// instructions. A plain C `main` skips it; std works the same (arguments and
// environment come from glibc). What we give up: SIGPIPE stays at its default
// (a closed stdout ends us quietly, as with any Unix tool) and a stack overflow
// is a plain SIGSEGV rather than a message.
#![no_main]

#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // Unwinding out of an `extern "C"` function aborts; turn a panic into exit 1.
    std::panic::catch_unwind(mailoauth_cli::cli::main).unwrap_or(mailoauth::error::exit::ERROR)
}
