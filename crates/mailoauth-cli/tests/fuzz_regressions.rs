//! The proxy's fuzz corpus and crash inputs (`fuzz/corpus/T`,
//! `fuzz/regressions/T`), replayed through the entry points its targets call
//! (`mailoauth_cli::proxy::fuzzing`), so the stable `cargo test` keeps them.

use std::path::Path;

/// Run every saved input of `target` through `run`, naming each file first.
fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            eprintln!("replaying {}", f.display());
            run(&std::fs::read(&f).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no saved inputs for fuzz target {target}");
}

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
