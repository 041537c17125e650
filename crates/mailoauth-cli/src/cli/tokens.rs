//! The token commands: `token`, `login`, `refresh`, `status`, `logout`.
//!
//! Owns: turning each command's arguments into one library call and its
//! rendering. Must not: decide anything about tokens (the broker does) or ask
//! the daemon in its own way (the library's [`mailoauth::client::token`] does).

use std::path::Path;
use std::time::Duration;

use mailoauth::{Error, LoginOptions, TokenRequest, ipc};

use super::args::{LoginArgs, LogoutArgs, RefreshArgs, StatusArgs, TokenArgs};
use super::{Cli, client, config_path, print_stdout, report};

/// `token`: config → store → print (a running daemon answers from memory). No
/// HTTP client or TLS unless a refresh is due.
pub fn token(config: &Path, a: &TokenArgs) -> Result<(), Error> {
    let req = TokenRequest {
        resource: a.resource.as_deref(),
        sasl: a.sasl.map(|m| m.mechanism()),
    };
    print_stdout(&mailoauth::client::token(config, &a.name, req)?)
}

/// `login`: the account's flow, then tell a running daemon.
pub fn login(cli: &Cli, a: &LoginArgs) -> Result<(), Error> {
    let broker = client(cli)?.broker(&a.name)?;
    let opts = LoginOptions {
        open_browser: !a.no_browser && !mailoauth::flows::over_ssh(),
        paste: true,
        timeout: Duration::from_secs(a.timeout),
        port: a.port,
        on_device_code: Some(super::qr::show),
    };
    let out = broker.login(&opts)?;
    ipc::daemon_forget(&config_path(cli), &a.name);
    if let Some(p) = &out.set_aside {
        eprintln!("mailoauth: the unreadable old token record was kept as {p}");
    }
    report::login(cli.json, &a.name, &broker.account().user, &out)
}

/// `refresh`: renew now, even if the token is still valid.
pub fn refresh(cli: &Cli, a: &RefreshArgs) -> Result<(), Error> {
    let broker = client(cli)?.broker(&a.name)?;
    broker.renew(a.resource.as_deref(), true)?;
    ipc::daemon_forget(&config_path(cli), &a.name);
    report::status(cli.json, &[report::account_status(&broker)?])
}

/// `status`: one account, or all of them.
pub fn status(cli: &Cli, a: &StatusArgs) -> Result<(), Error> {
    let client = client(cli)?;
    let names: Vec<String> = match &a.name {
        Some(n) => vec![n.clone()],
        None => client.config().accounts.keys().cloned().collect(),
    };
    let rows = names
        .iter()
        .map(|n| report::account_status(&client.broker(n)?))
        .collect::<Result<Vec<_>, Error>>()?;
    report::status(cli.json, &rows)
}

/// `logout`: delete (and revoke), then tell a running daemon.
pub fn logout(cli: &Cli, a: &LogoutArgs) -> Result<(), Error> {
    let out = client(cli)?.broker(&a.name)?.logout()?;
    ipc::daemon_forget(&config_path(cli), &a.name);
    report::logout(cli.json, &a.name, &out)
}
