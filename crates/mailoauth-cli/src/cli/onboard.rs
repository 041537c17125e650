//! `mailoauth add EMAIL`: discover the account from the address, say what was
//! found and why, ask only for what discovery cannot know, and write the
//! account with a comment naming each value's source.
//!
//! Owns: the wording of the decision, asking for what discovery cannot know,
//! and RFC 7591 registration at `add` time. Must not: decide anything or
//! choose keys (the library's `discover` and `discover::account` do), or write a discovery override
//! (`MAILOAUTH_DISCOVERY_*`, `MAILOAUTH_DNS_SERVER`) into the account: only
//! what the signals say goes into the file.

use std::io::{IsTerminal, Write};
use std::path::Path;

use mailoauth::Error;
use mailoauth::config::ProviderKind;
use mailoauth::config::edit::{self, Noted, Value};
use mailoauth::discover::steps::registration_steps;
use mailoauth::discover::{self, Decision, Finding, Verdict};
use mailoauth::store::file::write_atomic;

use super::add::AddArgs;

/// Run onboarding for `args.name` (an address).
pub fn run(path: &Path, args: &AddArgs, json: bool) -> Result<(), Error> {
    let options = options(args)?;
    if !json {
        eprintln!("mailoauth: looking up {} …", args.name.trim());
    }
    let d = discover::discover(&args.name, &options).map_err(|e| Error::Usage(e.to_string()))?;
    let name = account_name(args, &d)?;
    if json {
        let mut v = d.to_json();
        v["account"] = name.clone().into();
        v["dry_run"] = args.dry_run.into();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
    } else {
        eprint!("{}", report(&d));
    }
    if let Some(msg) = discover::account::undecided(&d) {
        return Err(Error::Usage(msg));
    }
    if args.dry_run {
        if !json {
            eprintln!("mailoauth: --dry-run: nothing written (account would be `{name}`)");
        }
        return Ok(());
    }
    write(path, args, &d, &name)
}

/// Discovery's options: the environment's (tests), then the flags.
fn options(args: &AddArgs) -> Result<discover::Options, Error> {
    let mut options = discover::Options::from_env().map_err(|e| Error::Usage(e.to_string()))?;
    if let Some(p) = &args.provider {
        options.provider = Some(discover::parse_provider(p).ok_or_else(|| {
            Error::Usage(format!(
                "--provider `{}` is not one of microsoft, google, yahoo, aol, custom",
                p.escape_debug()
            ))
        })?);
    }
    options.tenant = args.tenant.clone();
    Ok(options)
}

/// `--name`, or one derived from the address; within the config's alphabet.
fn account_name(args: &AddArgs, d: &Decision) -> Result<String, Error> {
    let name = args
        .account
        .clone()
        .unwrap_or_else(|| discover::account_name(&d.email));
    if !mailoauth::config::is_safe_name(&name) {
        return Err(Error::Usage(format!(
            "account name `{}` has characters outside A-Z a-z 0-9 . _ @ -; pass --name, e.g. --name {}",
            name.escape_debug(),
            mailoauth::config::suggest_name(&name)
        )));
    }
    Ok(name)
}

/// Write the decided account `name` (refusing one that is another address's).
fn write(path: &Path, args: &AddArgs, d: &Decision, name: &str) -> Result<(), Error> {
    let target = mailoauth::paths::through_symlinks(path);
    let text = match std::fs::read_to_string(&target) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(format!("cannot read {}", target.display()), e)),
    };
    if let Ok(c) = mailoauth::Config::parse(&text, path)
        && let Some(old) = c.accounts.get(name)
        && !old.user.eq_ignore_ascii_case(&d.email)
    {
        return Err(Error::Usage(format!(
            "account `{name}` already exists for {}; pass --name to choose another name",
            old.user
        )));
    }
    let provider = d.provider.unwrap_or(ProviderKind::Custom);
    let (client_id, secret) = client(args, d, name, provider)?;
    let mut values = discover::account::values(d);
    values.extend(flag_values(args));
    let registered = client_id.is_some();
    for (key, v) in [
        ("client_id", client_id.map(|(c, why)| (Value::Str(c), why))),
        ("client_secret", secret),
    ] {
        if let Some((value, note)) = v {
            values.push(Noted { key, value, note });
        }
    }
    let header = vec![format!(
        "discovered from {} by `mailoauth add` ({} lookups, {} ms)",
        d.email,
        d.lookups,
        d.elapsed.as_millis()
    )];
    let new_text = edit::set_account_keys_noted(&text, path, name, &header, &values)?;
    write_atomic(&target, new_text.as_bytes())?;
    eprintln!("mailoauth: account `{name}` saved in {}", path.display());
    if registered {
        eprintln!("next: mailoauth login {name}   then: mailoauth check {name}");
    } else {
        eprint!("{}", registration_steps(provider, d, name, None));
        eprintln!(
            "then: mailoauth add {name} --client-id <the id>; mailoauth login {name}; mailoauth check {name}"
        );
    }
    Ok(())
}

/// A value and the reason it is what it is (the comment above its key).
type Sourced<T> = Option<(T, String)>;

/// What discovery cannot know — the client id (and Google's secret) — from
/// the flags, an RFC 7591 registration, or the person at a terminal.
fn client(
    args: &AddArgs,
    d: &Decision,
    name: &str,
    provider: ProviderKind,
) -> Result<(Sourced<String>, Sourced<Value>), Error> {
    let mut client_id = args
        .client_id
        .clone()
        .map(|c| (c, "--client-id".to_owned()));
    let mut secret = secret_value(args)?;
    if client_id.is_none()
        && let Some(reg) = d.auth.as_ref().and_then(|a| a.registration_url.clone())
    {
        let http = mailoauth::http::Http::new(std::time::Duration::from_secs(10));
        match discover::register::register(&http, &reg, "http://127.0.0.1/") {
            Ok(r) => {
                eprintln!(
                    "mailoauth: registered a client at {reg} (RFC 7591): client id {}",
                    r.client_id
                );
                if let Some(s) = r.client_secret {
                    secret = Some((
                        keep_secret(name, &s)?,
                        format!("issued by {reg}; kept 0600 in the state directory"),
                    ));
                }
                client_id = Some((r.client_id, format!("registered at {reg} (RFC 7591)")));
            }
            Err(e) => eprintln!("mailoauth: {e}; a client id is needed instead"),
        }
    }
    if client_id.is_none() && std::io::stdin().is_terminal() {
        eprint!("{}", registration_steps(provider, d, name, None));
        if let Some(c) = ask("client id of your app registration (Enter: add it later)")? {
            client_id = Some((c, "entered at `mailoauth add`".into()));
        }
        if provider == ProviderKind::Google
            && secret.is_none()
            && client_id.is_some()
            && let Some(s) = ask("client secret of the Google Desktop app client")?
        {
            secret = Some((
                Value::Str(s),
                "entered at `mailoauth add` (the config is 0600)".into(),
            ));
        }
    }
    Ok((client_id, secret))
}

/// Choices discovery does not make, given as flags.
fn flag_values(args: &AddArgs) -> Vec<Noted> {
    let mut values: Vec<Noted> = [
        ("flow", &args.flow),
        ("store", &args.store),
        ("redirect_uri", &args.redirect_uri),
        ("notify_command", &args.notify_command),
    ]
    .into_iter()
    .filter_map(|(key, v)| {
        v.as_ref().map(|v| Noted {
            key,
            value: Value::Str(v.clone()),
            note: format!("--{}", key.replace('_', "-")),
        })
    })
    .collect();
    if !args.services.is_empty() {
        values.push(Noted {
            key: "services",
            value: Value::List(args.services.clone()),
            note: "--services".into(),
        });
    }
    values
}

fn ask(prompt: &str) -> Result<Option<String>, Error> {
    eprint!("{prompt}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::io("stdin", e))?;
    let t = line.trim();
    Ok((!t.is_empty()).then(|| t.to_owned()))
}

fn secret_value(args: &AddArgs) -> Result<Option<(Value, String)>, Error> {
    let src = |kind, v: &String| Value::Source {
        kind,
        value: v.clone(),
    };
    Ok(if let Some(v) = &args.client_secret_env {
        Some((src("env", v), "--client-secret-env".into()))
    } else if let Some(v) = &args.client_secret_command {
        Some((src("command", v), "--client-secret-command".into()))
    } else if args.client_secret_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::io("stdin", e))?;
        Some((
            Value::Str(line.trim_end_matches(['\r', '\n']).to_owned()),
            "--client-secret-stdin (the config is 0600)".into(),
        ))
    } else {
        None
    })
}

/// A secret a registration handed back: a 0600 file in the state directory,
/// read by a command at run time, so the config never holds it in plain text.
fn keep_secret(name: &str, secret: &str) -> Result<Value, Error> {
    let file = mailoauth::paths::state_dir()
        .join("client-secrets")
        .join(format!("{name}.secret"));
    write_atomic(&file, secret.as_bytes())?;
    let quoted = file.display().to_string().replace('\'', "'\\''");
    Ok(Value::Source {
        kind: "command",
        value: format!("cat '{quoted}'"),
    })
}

/// The decision in plain words: each signal, then each value with its source.
pub fn report(d: &Decision) -> String {
    let mut s = format!(
        "Discovery for {} ({} lookups in parallel, {} ms):\n",
        d.email,
        d.lookups,
        d.elapsed.as_millis()
    );
    for sig in &d.signals {
        let mark = match sig.finding {
            Finding::Failed => "!",
            Finding::Nothing => "-",
            _ => "+",
        };
        s.push_str(&format!(
            "  {mark} {:<28} {}: {}\n",
            sig.kind.label(),
            sig.asked,
            sig.why
        ));
    }
    match d.verdict {
        Verdict::Decided => s.push_str("Decided:\n"),
        Verdict::Conflict => s.push_str("Conflict — not decided:\n"),
        Verdict::Unknown => s.push_str("Not decided:\n"),
    }
    s.push_str(&decided_values(d));
    for c in &d.conflicts {
        s.push_str(&format!("  conflict: {c}\n"));
    }
    s
}

/// Each decided value with its source.
fn decided_values(d: &Decision) -> String {
    let mut s = String::new();
    let line = |s: &mut String, k: &str, v: &str| {
        let why = d
            .sources
            .get(k)
            .map(|w| format!("  ← {w}"))
            .unwrap_or_default();
        s.push_str(&format!("  {k:<9} {v}{why}\n"));
    };
    if let Some(p) = d.provider {
        line(&mut s, "provider", p.as_str());
    }
    if let Some(t) = &d.tenant {
        line(&mut s, "tenant", t);
    }
    if let Some(c) = d.cloud {
        line(&mut s, "cloud", c.as_str());
    }
    for f in &d.servers {
        let v = format!("{}:{} {}", f.host, f.port, discover::tls_str(f.tls));
        line(&mut s, f.service.name(), &v);
    }
    if let Some(a) = &d.auth {
        for (k, u) in [
            ("authorize_url", &a.authorize_url),
            ("token_url", &a.token_url),
            ("device_url", &a.device_url),
        ] {
            if let Some(u) = u {
                line(&mut s, k, u);
            }
        }
        if let Some(r) = &a.registration_url {
            s.push_str(&format!(
                "  registration {r} (RFC 7591: a client id is registered for you)\n"
            ));
        }
        line(&mut s, "scopes", &a.scopes.join(" "));
    }
    s
}
