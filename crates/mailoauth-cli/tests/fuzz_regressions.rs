//! The proxy's fuzz corpus and crash inputs (`fuzz/corpus/T`,
//! `fuzz/regressions/T`), replayed through the entry points its targets call
//! (`mailoauth_cli::proxy::fuzzing`), so the stable `cargo test` keeps them.

#[path = "../../../fuzz/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn proxy_imap_client_inputs_never_trace_a_password() {
    replay("proxy_imap", mailoauth_cli::proxy::fuzzing::imap_client);
}

#[test]
fn proxy_pop_client_inputs_never_trace_a_password() {
    replay("proxy_pop", mailoauth_cli::proxy::fuzzing::pop_client);
}

#[test]
fn proxy_smtp_client_inputs_never_trace_a_password() {
    replay("proxy_smtp", mailoauth_cli::proxy::fuzzing::smtp_client);
}

#[test]
fn proxy_sasl_inputs_decode_back_to_what_was_encoded() {
    replay("sasl", mailoauth_cli::proxy::fuzzing::sasl);
}
