//! `mailoauth add EMAIL`: discover the account from the address, say what was
//! found and why, ask only for what discovery cannot know, and write the
//! account with a comment naming each value's source.
//!
//! Owns: the wording of the decision, the account name derived from the
//! address, the provider's app registration steps filled in (also printed by
//! `doctor`), and RFC 7591 registration at `add` time. Must not: decide
//! anything (the library's `discover` does), or write a discovery override
//! (`MAILOAUTH_DISCOVERY_*`, `MAILOAUTH_DNS_SERVER`) into the account: only
//! what the signals say goes into the file.

use std::io::{IsTerminal, Write};
use std::path::Path;

use mailoauth::Error;
use mailoauth::config::edit::{self, Noted, Value};
use mailoauth::config::{Cloud, ProviderKind};
use mailoauth::discover::{self, Decision, Finding, Verdict};
use mailoauth::store::file::write_atomic;

use super::add::AddArgs;

/// Run onboarding for `args.name` (an address).
pub fn run(path: &Path, args: &AddArgs, json: bool) -> Result<(), Error> {
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
    if !json {
        eprintln!("mailoauth: looking up {} …", args.name.trim());
    }
    let d = discover::discover(&args.name, &options).map_err(|e| Error::Usage(e.to_string()))?;
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
    if json {
        let mut v = d.to_json();
        v["account"] = name.clone().into();
        v["dry_run"] = args.dry_run.into();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
    } else {
        eprint!("{}", report(&d));
    }
    if d.verdict != Verdict::Decided {
        let mut msg = match d.verdict {
            Verdict::Conflict => format!("the signals for {} conflict", d.email),
            _ => format!("not enough was found to write an account for {}", d.email),
        };
        // The error alone (e.g. with --json) still says what was found.
        for sig in d.signals.iter().filter(|s| {
            s.kind == discover::SignalKind::Mx
                || !matches!(s.finding, Finding::Nothing | Finding::Failed)
        }) {
            msg.push_str(&format!("\n  found: {}: {}", sig.kind.label(), sig.why));
        }
        for c in &d.conflicts {
            msg.push_str(&format!("\n  conflict: {c}"));
        }
        for f in &d.fix {
            msg.push_str(&format!("\n  {f}"));
        }
        return Err(Error::Usage(msg));
    }
    if args.dry_run {
        if !json {
            eprintln!("mailoauth: --dry-run: nothing written (account would be `{name}`)");
        }
        return Ok(());
    }

    let target = mailoauth::paths::through_symlinks(path);
    let text = match std::fs::read_to_string(&target) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(format!("cannot read {}", target.display()), e)),
    };
    if let Ok(c) = mailoauth::Config::parse(&text, path)
        && let Some(old) = c.accounts.get(&name)
        && !old.user.eq_ignore_ascii_case(&d.email)
    {
        return Err(Error::Usage(format!(
            "account `{name}` already exists for {}; pass --name to choose another name",
            old.user
        )));
    }

    let mut values = account_values(&d);
    let provider = d.provider.unwrap_or(ProviderKind::Custom);
    // What discovery cannot know: the client id (and Google's secret).
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
                        keep_secret(&name, &s)?,
                        format!("issued by {reg}; kept 0600 in the state directory"),
                    ));
                }
                client_id = Some((r.client_id, format!("registered at {reg} (RFC 7591)")));
            }
            Err(e) => eprintln!("mailoauth: {e}; a client id is needed instead"),
        }
    }
    if client_id.is_none() && std::io::stdin().is_terminal() {
        eprint!("{}", registration_steps(provider, &d, &name, None));
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
    // Choices discovery does not make, given as flags.
    for (key, v) in [
        ("flow", &args.flow),
        ("store", &args.store),
        ("redirect_uri", &args.redirect_uri),
        ("notify_command", &args.notify_command),
    ] {
        if let Some(v) = v {
            values.push(Noted {
                key,
                value: Value::Str(v.clone()),
                note: format!("--{}", key.replace('_', "-")),
            });
        }
    }
    if !args.services.is_empty() {
        values.push(Noted {
            key: "services",
            value: Value::List(args.services.clone()),
            note: "--services".into(),
        });
    }
    let registered = client_id.is_some();
    if let Some((c, why)) = client_id {
        values.push(Noted {
            key: "client_id",
            value: Value::Str(c),
            note: why,
        });
    }
    if let Some((v, why)) = secret {
        values.push(Noted {
            key: "client_secret",
            value: v,
            note: why,
        });
    }
    let header = vec![format!(
        "discovered from {} by `mailoauth add` ({} lookups, {} ms)",
        d.email,
        d.lookups,
        d.elapsed.as_millis()
    )];
    let new_text = edit::set_account_keys_noted(&text, path, &name, &header, &values)?;
    write_atomic(&target, new_text.as_bytes())?;
    eprintln!("mailoauth: account `{name}` saved in {}", path.display());
    if registered {
        eprintln!("next: mailoauth login {name}   then: mailoauth check {name}");
    } else {
        eprint!("{}", registration_steps(provider, &d, &name, None));
        eprintln!(
            "then: mailoauth add {name} --client-id <the id>; mailoauth login {name}; mailoauth check {name}"
        );
    }
    Ok(())
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

/// The keys of the account and the source of each.
fn account_values(d: &Decision) -> Vec<Noted> {
    let src = |k: &str| d.sources.get(k).cloned().unwrap_or_default();
    let provider = d.provider.unwrap_or(ProviderKind::Custom);
    let mut v = vec![
        Noted {
            key: "provider",
            value: Value::Str(provider.as_str().into()),
            note: src("provider"),
        },
        Noted {
            key: "user",
            value: Value::Str(d.email.clone()),
            note: "the address given to `mailoauth add`".into(),
        },
    ];
    if provider == ProviderKind::Microsoft {
        if let Some(t) = &d.tenant {
            v.push(Noted {
                key: "tenant",
                value: Value::Str(t.clone()),
                note: src("tenant"),
            });
        }
        let cloud = d.cloud.unwrap_or_default();
        if cloud != Cloud::Global {
            v.push(Noted {
                key: "cloud",
                value: Value::Str(cloud.as_str().into()),
                note: src("cloud"),
            });
        }
    }
    if provider == ProviderKind::Custom {
        if let Some(a) = &d.auth {
            for (k, u) in [
                ("authorize_url", &a.authorize_url),
                ("token_url", &a.token_url),
                ("device_url", &a.device_url),
                ("revoke_url", &a.revoke_url),
            ] {
                if let Some(u) = u {
                    v.push(Noted {
                        key: k,
                        value: Value::Str(u.clone()),
                        note: src(k),
                    });
                }
            }
            if a.authorize_url.is_none() && a.device_url.is_some() {
                v.push(Noted {
                    key: "flow",
                    value: Value::Str("device".into()),
                    note: "the server names a device endpoint but no authorization endpoint".into(),
                });
            }
            v.push(Noted {
                key: "scopes",
                value: Value::List(a.scopes.clone()),
                note: src("scopes"),
            });
        }
        for f in &d.servers {
            v.push(Noted {
                key: f.service.name(),
                value: Value::Table(vec![
                    ("host", Value::Str(f.host.clone())),
                    ("port", Value::Int(i64::from(f.port))),
                    ("tls", Value::Str(discover::tls_str(f.tls).into())),
                ]),
                note: f.source.clone(),
            });
        }
    } else if let Some(first) = v.first_mut() {
        // Preset hosts are not written (the preset keeps them current); say them.
        let hosts = d
            .servers
            .iter()
            .map(|f| {
                format!(
                    "{} {}:{} {}",
                    f.service.name(),
                    f.host,
                    f.port,
                    discover::tls_str(f.tls)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if !hosts.is_empty() {
            first.note = format!("{}; its mail servers: {hosts}", first.note);
        }
    }
    v
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
    for c in &d.conflicts {
        s.push_str(&format!("  conflict: {c}\n"));
    }
    s
}

/// The portal of a Microsoft cloud, where apps are registered.
fn portal(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Global => "https://entra.microsoft.com",
        Cloud::Usgov | Cloud::UsgovDod => "https://portal.azure.us",
        Cloud::China => "https://portal.azure.cn",
    }
}

/// How to get a client id for this account, filled in with its values.
pub fn registration_steps(
    provider: ProviderKind,
    d: &Decision,
    name: &str,
    client_id: Option<&str>,
) -> String {
    let id = client_id.unwrap_or("<application (client) id>");
    match provider {
        ProviderKind::Microsoft => {
            let cloud = d.cloud.unwrap_or_default();
            let tenant = d.tenant.as_deref().unwrap_or("organizations");
            let login = match cloud {
                Cloud::Global => "https://login.microsoftonline.com",
                Cloud::Usgov | Cloud::UsgovDod => "https://login.microsoftonline.us",
                Cloud::China => "https://login.partner.microsoftonline.cn",
            };
            format!(
                "\nNo client id yet. Register an app for {email} (docs/client-id-microsoft.md):\n\
                 1. {portal} → App registrations → New registration (tenant {tenant}).\n\
                 2. Authentication → Add a platform → \"Mobile and desktop applications\" → redirect URI\n\
                 \x20  http://localhost (mailoauth listens on a free port; the port is not part of the match).\n\
                 3. Authentication → \"Allow public client flows\" → Yes (for the device code flow).\n\
                 4. API permissions → Add → Microsoft Graph → Delegated: IMAP.AccessAsUser.All,\n\
                 \x20  POP.AccessAsUser.All, SMTP.Send, offline_access. (They are listed under Microsoft Graph,\n\
                 \x20  yet the tokens are for the mail resource; mailoauth asks for the right one.)\n\
                 5. If users may not consent themselves, an administrator opens\n\
                 \x20  {login}/{tenant}/adminconsent?client_id={id}\n\
                 The same with the Azure CLI (az login --tenant {tenant}):\n\
                 \x20  az ad app create --display-name mailoauth --public-client-redirect-uris http://localhost \\\n\
                 \x20    --is-fallback-public-client true --query appId -o tsv\n\
                 \x20  then add the permissions (ids looked up, not guessed):\n\
                 \x20  for p in IMAP.AccessAsUser.All POP.AccessAsUser.All SMTP.Send offline_access; do\n\
                 \x20    az ad app permission add --id {id} --api 00000003-0000-0000-c000-000000000000 \\\n\
                 \x20      --api-permissions \"$(az ad sp show --id 00000003-0000-0000-c000-000000000000 \\\n\
                 \x20      --query \"oauth2PermissionScopes[?value=='$p'].id\" -o tsv)=Scope\"; done\n\
                 Then: mailoauth add {name} --client-id {id}\n",
                email = d.email,
                portal = portal(cloud),
            )
        }
        ProviderKind::Google => format!(
            "\nNo client id yet. Create a Google OAuth client for {email} (docs/client-id-google.md):\n\
             1. https://console.cloud.google.com → create (or pick) a project.\n\
             2. Google Auth Platform / OAuth consent screen: user type Internal (Workspace) or External;\n\
             \x20  add the scope https://mail.google.com/. External apps in \"Testing\" get refresh tokens\n\
             \x20  that expire after 7 days: publish the app (or re-login weekly).\n\
             3. Clients → Create client → application type \"Desktop app\"; note the client id and secret.\n\
             Then: mailoauth add {name} --client-id <id> --client-secret-command 'pass show google/mailoauth'\n",
            email = d.email,
        ),
        _ => format!(
            "\nNo client id yet. Ask the administrator of {domain}'s authorization server for an OAuth 2.0\n\
             client (public, PKCE, redirect URI http://127.0.0.1/ on any port) — docs/client-id-generic.md.\n\
             Then: mailoauth add {name} --client-id <id>\n",
            domain = d.domain,
        ),
    }
}
