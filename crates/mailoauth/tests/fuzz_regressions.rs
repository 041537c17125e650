//! The fuzz corpus and every crash input the fuzzers found (`fuzz/corpus/T`,
//! `fuzz/regressions/T`), replayed through the entry points the targets call,
//! so the stable `cargo test` keeps what the fuzzers checked. The proxy's
//! targets replay in mailoauth-cli's `fuzz_regressions`.

#[path = "../../../fuzz/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn imap_login_inputs_keep_secrets_out_and_replies_whole() {
    replay("imap_login", mailoauth::fuzzing::imap_login);
}

#[test]
fn pop_login_inputs_keep_secrets_out_and_replies_whole() {
    replay("pop_login", mailoauth::fuzzing::pop_login);
}

#[test]
fn smtp_login_inputs_keep_secrets_out_and_replies_whole() {
    replay("smtp_login", mailoauth::fuzzing::smtp_login);
}

#[test]
fn imap_session_inputs_deliver_only_whole_messages_within_the_limit() {
    replay("imap_session", mailoauth::fuzzing::imap_session);
}

#[test]
fn pop_session_inputs_deliver_only_whole_messages_within_the_limit() {
    replay("pop_session", mailoauth::fuzzing::pop_session);
}

#[test]
fn smtp_session_inputs_end_in_a_result_without_secrets() {
    replay("smtp_session", mailoauth::fuzzing::smtp_session);
}

#[test]
fn sasl_inputs_decode_back_to_what_was_encoded() {
    replay("sasl", mailoauth::fuzzing::sasl);
}

#[test]
fn token_endpoint_answers_never_show_the_request_secrets() {
    replay("token_endpoint", mailoauth::fuzzing::token_endpoint);
}

#[test]
fn config_inputs_never_show_a_secret_value_in_errors() {
    replay("config", mailoauth::fuzzing::config);
}

#[test]
fn token_record_inputs_round_trip_and_decide_freshness() {
    replay("token_record", mailoauth::fuzzing::token_record);
}

#[test]
fn redirect_requests_get_well_formed_pages_without_their_markup() {
    replay("redirect_request", mailoauth::fuzzing::redirect_request);
}

#[test]
fn ipc_lines_round_trip() {
    replay("ipc", mailoauth::fuzzing::ipc);
}
