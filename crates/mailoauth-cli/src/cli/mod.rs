//! Command-line interface: parse → one typed request per command → library
//! call → render.
//!
//! Owns: the grammar ([`args`]), rendering of results and errors (stdout only for
//! results, everything for people on stderr), and exit codes. Must not: contain
//! token or mail logic — each command in [`tokens`] and [`mail`] is a short call
//! into the library and a call into [`report`].

mod add;
pub mod args;
mod doctor;
mod mail;
mod onboard;
mod qr;
pub mod render;
mod report;
mod serve;
mod tokens;

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use mailoauth::error::exit;
use mailoauth::{Client, Error, paths};

pub use args::{Cli, Command};

struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // The max level may be raised later (`daemon --debug`).
        m.level() <= self.0.max(log::max_level()) && m.target().starts_with("mailoauth")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let _ = writeln!(
                std::io::stderr(),
                "mailoauth: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn install_panic_hook() {
    // A panic message could be built from anything; print only literal messages
    // (which we wrote) and the location, never formatted payloads that might hold a token.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&'static str>()
            .copied()
            .unwrap_or("(details withheld)");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("mailoauth: internal error{at}: {msg}; please report it");
    }));
}

/// Entry point of the binary.
pub fn main() -> i32 {
    install_panic_hook();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Hot path: what mail clients run on every connection skips clap's tree.
    if let Some(t) = args::fast_token(&args) {
        set_logger(log::LevelFilter::Warn);
        return finish(tokens::token(&paths::default_config_file(), &t).map(|()| exit::OK));
    }
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    set_logger(level);
    finish(run(&cli))
}

fn set_logger(level: log::LevelFilter) {
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger(level)));
    let _ = log::set_logger(logger).map(|()| log::set_max_level(level));
}

/// Render an error (and its fix) on stderr; the process's exit code.
fn finish(result: Result<i32, Error>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            render::error(&e);
            e.exit_code()
        }
    }
}

/// One command, dispatched to its handler; the exit code (`check` reports
/// failures itself and only gives its code).
pub fn run(cli: &Cli) -> Result<i32, Error> {
    let done = match &cli.command {
        Command::Check(a) => return mail::check(cli, a),
        Command::Doctor(a) => return doctor::run(&config_path(cli), &a.name, a.timeout, cli.json),
        Command::Token(a) => tokens::token(&config_path(cli), a),
        Command::Login(a) => tokens::login(cli, a),
        Command::RefreshToken(a) => print_stdout(&client(cli)?.broker(&a.name)?.refresh_token()?),
        Command::Refresh(a) => tokens::refresh(cli, a),
        Command::Status(a) => tokens::status(cli, a),
        Command::Inspect(a) => report::inspect(
            cli.json,
            &client(cli)?.broker(&a.name)?,
            a.resource.as_deref(),
        ),
        Command::Logout(a) => tokens::logout(cli, a),
        Command::Send(a) => mail::send(cli, a),
        Command::Fetch(a) => mail::fetch(cli, a),
        Command::Snippet(a) => mail::snippet(cli, a),
        // An address alone is onboarding: discovery writes the account.
        Command::Add(a) if a.is_address() => onboard::run(&config_path(cli), a, cli.json),
        Command::Add(a) => add::run(&config_path(cli), a),
        Command::Daemon(a) => {
            if a.debug {
                crate::proxy::trace::enable();
                log::set_max_level(log::LevelFilter::Debug);
            }
            crate::daemon::run(&config_path(cli))
        }
        Command::Serve(a) => serve::hand_over(cli, a),
        Command::Completions(a) => {
            let out = &mut std::io::stdout();
            clap_complete::generate(a.shell, &mut Cli::command(), "mailoauth", out);
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| Error::io("man page", e)),
    };
    done.map(|()| exit::OK)
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(paths::default_config_file)
}

fn client(cli: &Cli) -> Result<Client, Error> {
    Client::with_config_file(&config_path(cli))
}

/// A result on stdout, alone on its line.
fn print_stdout(s: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (e.g. `| head -c0`) is the reader's choice, not our error.
    match writeln!(out, "{s}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("stdout", e)),
        _ => Ok(()),
    }
}
