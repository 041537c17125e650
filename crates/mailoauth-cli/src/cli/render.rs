//! The CLI's words for the library's remedies and errors.
//!
//! Owns: how a [`Remedy`] reads on a terminal — "sign in again" is `mailoauth
//! login NAME` here, where a web page would show a re-consent link — and the one
//! printer every failed command goes through. Must not: decide what the fix is
//! (the library's errors and catalog do).

use mailoauth::Error;
use mailoauth::remedy::Remedy;

/// One remedy step as a command or sentence.
fn step(r: &Remedy) -> String {
    match r {
        Remedy::Login { account } => format!("run `mailoauth login {account}`"),
        Remedy::LoginWithoutBrowser { account } => format!(
            "run `mailoauth login {account} --no-browser` and open the URL it prints on any device"
        ),
        Remedy::Inspect { account } => {
            format!("run `mailoauth inspect {account}` to see the token's audience, scopes and user")
        }
        Remedy::Refresh { account } => format!("run `mailoauth refresh {account}` and retry"),
        Remedy::AddService { account, service } => format!(
            "add `{}` to `services` of account `{account}`, then run `mailoauth login {account}`",
            service.name()
        ),
        Remedy::AddScope { account, scope } => format!(
            "add `{scope}` to `scopes` of account `{account}`, then run `mailoauth login {account}`"
        ),
        Remedy::RetryLater => {
            "retry later: nothing needs changing here; if it lasts, tell the mail server's administrator"
                .into()
        }
        Remedy::AddAccount => {
            "add an account with `mailoauth add NAME --provider …` (or point MAILOAUTH_CONFIG / --config at your config)"
                .into()
        }
        Remedy::ChooseAccount { known } => format!("configured accounts: {}", known.join(", ")),
        Remedy::CheckNetwork => {
            "check the network (and HTTPS_PROXY); a still-valid token is served while the provider is down"
                .into()
        }
        Remedy::ReportBug { account } => format!(
            "this is a mailoauth bug: please report it with the output of `mailoauth -v check {account}`"
        ),
        Remedy::SetConfig { key, to } => format!("set `{key}` in the config file to {to}"),
        Remedy::Steps(s) => s.clone(),
        Remedy::All(v) => lines(&Remedy::All(v.clone())).join("; "),
    }
}

/// The remedy's steps, one per line; steps after the first read "then …".
pub fn lines(r: &Remedy) -> Vec<String> {
    r.lines(step)
}

/// The remedy as one line (protocol replies, JSON fields).
pub fn line(r: &Remedy) -> String {
    lines(r).join("; ")
}

/// Print a failed command's error, its cause and its fix on stderr.
pub fn error(e: &Error) {
    eprintln!("mailoauth: error: {e}");
    if let Some(c) = e.cause() {
        eprintln!("  cause: {c}");
    }
    if let Some(r) = e.remedy() {
        for (i, l) in lines(&r)
            .iter()
            .flat_map(|l| l.lines().map(str::to_owned).collect::<Vec<_>>())
            .enumerate()
        {
            eprintln!("{} {l}", if i == 0 { "  fix:" } else { "      " });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailoauth::service::Service;

    #[test]
    fn remedies_read_as_cli_commands_in_order() {
        let r = Remedy::Steps("grant admin consent".into()).then(Remedy::Login {
            account: "work".into(),
        });
        assert_eq!(
            lines(&r),
            ["grant admin consent", "then run `mailoauth login work`"]
        );
        let r = Remedy::AddService {
            account: "w".into(),
            service: Service::Pop,
        };
        assert!(line(&r).contains("add `pop` to `services`"), "{}", line(&r));
    }
}
