//! `mailoauth doctor NAME`: the library's checklist ([`mailoauth::doctor`])
//! printed with the fix for each failed line, or as JSON.
//!
//! Owns: the checklist's layout and the words of each typed fix. Must not:
//! check anything itself or choose a fix (the library does both).

use std::path::Path;
use std::time::Duration;

use mailoauth::Error;
use mailoauth::doctor::{Check, Fix, State};

use super::render;

/// Run the checklist; the exit code (0 when nothing failed, 1 otherwise).
pub fn run(path: &Path, name: &str, timeout: u64, json: bool) -> Result<i32, Error> {
    let config = mailoauth::Config::load(path)?;
    let options =
        mailoauth::discover::Options::from_env().map_err(|e| Error::Usage(e.to_string()))?;
    let checks = mailoauth::doctor::run(&config, name, &options, Duration::from_secs(timeout))?;
    let failed = checks.iter().any(|c| c.state == State::Fail);
    if json {
        let v = serde_json::json!({
            "account": name,
            "ok": !failed,
            "checks": checks.iter().map(|c| serde_json::json!({
                "check": c.what, "state": c.state.as_str(), "detail": c.detail, "fix": fix_lines(c),
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        print!("{}", checklist(name, &checks));
    }
    Ok(if failed { 1 } else { 0 })
}

/// A check's fix in words, one step a line.
fn fix_lines(c: &Check) -> Vec<String> {
    c.fix
        .iter()
        .flat_map(|f| match f {
            Fix::Remedy(r) => render::lines(r),
            Fix::Say(s) => vec![s.clone()],
        })
        .collect()
}

fn checklist(name: &str, checks: &[Check]) -> String {
    let mut out = format!("mailoauth doctor {name}\n");
    for c in checks {
        out.push_str(&format!(
            "  [{:<4}] {:<11} {}\n",
            c.state.as_str(),
            c.what,
            c.detail
        ));
        for f in fix_lines(c) {
            out.push_str(&format!("         fix: {f}\n"));
        }
    }
    out
}
