//! `mailoauth add EMAIL` against real parts: dnsmasq on a loopback port serving
//! MX, SRV and A records for test domains, and a local HTTPS server (a test CA
//! made here) answering in the shapes of Entra's OIDC metadata, Exchange
//! Online autodiscover, Mozilla autoconfig and the ISPDB; the test
//! authorization server (oidc-provider) offers RFC 8414 metadata and RFC 7591
//! registration. Each case asserts provider, tenant, cloud and hosts.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::discovery::*;
use common::*;
use serde_json::Value;

const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const GOV_TID: &str = "0b1d3c2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const DOD_TID: &str = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
const GATEWAY_TID: &str = "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f60";
const LITWARE_TID: &str = "3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6071";

/// The world every case runs in: DNS, the HTTPS stand-ins, the auth server.
struct World {
    dns: Dns,
    https: Https,
    auth: OAuthServer,
}

fn world() -> World {
    let auth = OAuthServer::start(&[("REGISTRATION", "1")]);
    let issuer = auth.issuer.clone();
    let dns = Dns::start(&[
        // commercial tenant, MX straight at Exchange Online Protection
        "mx-host=contoso.test,contoso-test.mail.protection.outlook.com,0",
        // GCC High and DoD tenants
        "mx-host=gov.test,gov-test.mail.protection.office365.us,0",
        "mx-host=dod.test,dod-test.mail.protection.office365.us,0",
        // a filtering gateway in front of Microsoft 365
        "mx-host=tailspin.test,eu-smtp-inbound-1.mimecast.com,10",
        "mx-host=tailspin.test,eu-smtp-inbound-2.mimecast.com,20",
        // Google Workspace MX, yet an Entra tenant with the mailbox in Exchange Online
        "mx-host=litware.test,aspmx.l.google.com,1",
        "mx-host=litware.test,alt1.aspmx.l.google.com,5",
        // a domain with its own mail servers, autoconfig and SRV (not Entra)
        "mx-host=fabrikam.test,mx.fabrikam.test,10",
        "host-record=autoconfig.fabrikam.test,127.0.0.1",
        "srv-host=_imaps._tcp.fabrikam.test,imap.fabrikam.test,993,0,1",
        "srv-host=_submission._tcp.fabrikam.test,smtp.fabrikam.test,587,0,1",
        // SRV only (RFC 6186), the authorization server from RFC 8414 metadata
        "mx-host=northwind.test,mail.northwind.test,10",
        "srv-host=_imaps._tcp.northwind.test,imap.northwind.test,993,0,1",
        "srv-host=_submissions._tcp.northwind.test,smtp.northwind.test,465,0,1",
        "srv-host=_pop3s._tcp.northwind.test,.,0,0,0",
        // known to the ISPDB only
        "mx-host=ispdb.test,mx.ispdb.test,10",
        // Entra answers HTML, then 500
        "mx-host=broken.test,contoso-test.mail.protection.outlook.com,0",
        "mx-host=broken500.test,broken500-test.mail.protection.outlook.com,0",
    ]);
    let mut r: HashMap<String, Reply> = HashMap::new();
    let e = |d: &str| format!("/entra/{d}/v2.0/.well-known/openid-configuration");
    r.insert(e("contoso.test"), entra(TID, None));
    r.insert(e("gov.test"), entra(GOV_TID, Some("DODCON")));
    r.insert(e("dod.test"), entra(DOD_TID, Some("DOD")));
    r.insert(e("tailspin.test"), entra(GATEWAY_TID, None));
    r.insert(e("litware.test"), entra(LITWARE_TID, None));
    for d in ["fabrikam.test", "northwind.test", "ispdb.test"] {
        r.insert(e(d), aadsts90002(d));
    }
    r.insert(
        e("broken.test"),
        reply(
            200,
            "text/html",
            "<!DOCTYPE html><html><body>Sign in to your account</body></html>",
        ),
    );
    r.insert(
        e("broken500.test"),
        reply(500, "application/json", r#"{"error":"server_error"}"#),
    );
    for who in [
        "alice@contoso.test",
        "bob@tailspin.test",
        "carol@litware.test",
    ] {
        r.insert(format!("/autodiscover/{who}"), exo_mailbox());
    }
    r.insert(
        "autoconfig.fabrikam.test/mail/config-v1.1.xml?emailaddress=dave@fabrikam.test".into(),
        reply(
            200,
            "text/xml",
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="fabrikam.test">
    <domain>fabrikam.test</domain>
    <displayName>Fabrikam Mail</displayName>
    <incomingServer type="imap">
      <hostname>imap.%EMAILDOMAIN%</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>OAuth2</authentication>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.fabrikam.test</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>OAuth2</authentication>
    </outgoingServer>
  </emailProvider>
  <oAuth2>
    <issuer>{issuer}</issuer>
    <scope>https://outlook.test/IMAP.AccessAsUser.All https://outlook.test/SMTP.Send openid email offline_access</scope>
  </oAuth2>
</clientConfig>"#
            ),
        ),
    );
    // The ISPDB's entry for a Google-hosted domain, with its dated endpoints.
    r.insert(
        "/ispdb/ispdb.test".into(),
        reply(
            200,
            "text/xml",
            r#"<?xml version="1.0"?>
<clientConfig version="1.1">
  <emailProvider id="googlemail.com">
    <domain>ispdb.test</domain>
    <displayName>Google Mail</displayName>
    <incomingServer type="imap">
      <hostname>imap.gmail.com</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>OAuth2</authentication>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.gmail.com</hostname>
      <port>465</port>
      <socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>OAuth2</authentication>
    </outgoingServer>
  </emailProvider>
  <oAuth2>
    <issuer>accounts.google.com</issuer>
    <scope>https://mail.google.com/ https://www.googleapis.com/auth/carddav</scope>
    <authURL>https://accounts.google.com/o/oauth2/auth</authURL>
    <tokenURL>https://www.googleapis.com/oauth2/v3/token</tokenURL>
  </oAuth2>
</clientConfig>"#,
        ),
    );
    // RFC 8414 metadata at the domain, naming the test server's endpoints.
    r.insert("/meta/northwind.test".into(), rfc8414(&issuer, false));
    let https = Https::start(&["autoconfig.fabrikam.test"], r);
    World { dns, https, auth }
}

impl World {
    /// The discovery environment: every base URL at the local stand-ins.
    fn env(&self, cmd: &mut Command) {
        let p = self.https.port;
        cmd.env("MAILOAUTH_DNS_SERVER", &self.dns.addr)
            .env("MAILOAUTH_DISCOVERY_CA_FILE", &self.https.ca_file)
            .env(
                "MAILOAUTH_DISCOVERY_ENTRA_URL",
                self.https
                    .url("/entra/{domain}/v2.0/.well-known/openid-configuration"),
            )
            .env(
                "MAILOAUTH_DISCOVERY_AUTODISCOVER_URL",
                self.https.url("/autodiscover/{email}"),
            )
            .env(
                "MAILOAUTH_DISCOVERY_AUTOCONFIG_URLS",
                format!(
                    "https://autoconfig.{{domain}}:{p}/mail/config-v1.1.xml?emailaddress={{email}}"
                ),
            )
            .env(
                "MAILOAUTH_DISCOVERY_ISPDB_URL",
                self.https.url("/ispdb/{domain}"),
            )
            .env(
                "MAILOAUTH_DISCOVERY_METADATA_URLS",
                self.https.url("/meta/{domain}"),
            );
    }

    fn add(&self, sb: &Sandbox, args: &[&str]) -> std::process::Output {
        let mut a = vec!["add"];
        a.extend_from_slice(args);
        let mut cmd = sb.cmd(&a);
        self.env(&mut cmd);
        run_with_timeout(cmd, Duration::from_secs(30))
    }

    fn doctor(&self, sb: &Sandbox, name: &str) -> std::process::Output {
        let mut cmd = sb.cmd(&["doctor", name, "--timeout", "5"]);
        self.env(&mut cmd);
        run_with_timeout(cmd, Duration::from_secs(60))
    }

    /// `add EMAIL --dry-run --json`: the decision.
    fn decide(&self, sb: &Sandbox, email: &str, extra: &[&str]) -> (Value, std::process::Output) {
        let mut args = vec![email, "--dry-run", "--json"];
        args.extend_from_slice(extra);
        let o = self.add(sb, &args);
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("JSON on stdout: {}\n{}", stdout(&o), stderr(&o)));
        (v, o)
    }
}

fn host(v: &Value, service: &str) -> String {
    v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service)
        .map(|s| {
            format!(
                "{}:{} {}",
                s["host"].as_str().unwrap(),
                s["port"],
                s["tls"].as_str().unwrap()
            )
        })
        .unwrap_or_default()
}

#[test]
fn discovery_decides_provider_tenant_cloud_and_hosts_for_each_kind_of_domain() {
    let w = world();
    let sb = Sandbox::new("");

    // Commercial tenant: MX at Exchange Online Protection, Entra tenant, EXO mailbox.
    let (v, o) = w.decide(&sb, "alice@contoso.test", &[]);
    assert_exit(&o, 0);
    assert_eq!(v["verdict"], "decided", "{v}");
    assert_eq!(v["provider"], "microsoft");
    assert_eq!(v["tenant"], TID);
    assert_eq!(v["cloud"], "global");
    assert_eq!(host(&v, "imap"), "outlook.office365.com:993 implicit");
    assert_eq!(host(&v, "smtp"), "smtp.office365.com:587 starttls");
    assert!(
        v["sources"]["tenant"].as_str().unwrap().contains("Entra"),
        "{v}"
    );
    let text = stderr(&o);
    assert!(text.is_empty() || !text.contains("error"), "{text}");
    // Lookups: MX, Entra, 5 SRV, 1 autoconfig, ISPDB, 1 metadata, then autodiscover.
    assert_eq!(v["lookups"], 11, "{v}");
    eprintln!(
        "FIGURE lookups in one discovery run: {} in {} ms",
        v["lookups"], v["elapsed_ms"]
    );

    // GCC High and DoD.
    let (v, _) = w.decide(&sb, "gina@gov.test", &[]);
    assert_eq!(
        (
            v["provider"].as_str(),
            v["tenant"].as_str(),
            v["cloud"].as_str()
        ),
        (Some("microsoft"), Some(GOV_TID), Some("usgov")),
        "{v}"
    );
    assert_eq!(host(&v, "imap"), "outlook.office365.us:993 implicit");
    assert_eq!(host(&v, "smtp"), "smtp.office365.us:587 starttls");
    let (v, _) = w.decide(&sb, "dan@dod.test", &[]);
    assert_eq!(
        (v["tenant"].as_str(), v["cloud"].as_str()),
        (Some(DOD_TID), Some("usgov-dod")),
        "{v}"
    );
    assert_eq!(host(&v, "imap"), "outlook-dod.office365.us:993 implicit");
    assert_eq!(host(&v, "smtp"), "outlook-dod.office365.us:587 starttls");

    // A filtering gateway as MX: Entra and autodiscover decide.
    let (v, _) = w.decide(&sb, "bob@tailspin.test", &[]);
    assert_eq!(
        (
            v["verdict"].as_str(),
            v["provider"].as_str(),
            v["tenant"].as_str()
        ),
        (Some("decided"), Some("microsoft"), Some(GATEWAY_TID)),
        "{v}"
    );
    assert!(
        v["signals"]
            .to_string()
            .contains("filtering gateway (Mimecast)"),
        "{v}"
    );

    // Consumer address: known without the network (nothing asked).
    let before = w.https.requests().len();
    let (v, _) = w.decide(&sb, "erin@outlook.com", &[]);
    assert_eq!(
        (
            v["provider"].as_str(),
            v["tenant"].as_str(),
            v["lookups"].as_u64()
        ),
        (Some("microsoft"), Some("consumers"), Some(0)),
        "{v}"
    );
    assert_eq!(w.https.requests().len(), before);

    // ISPDB entry for a Google-hosted domain: the preset, not the ISPDB's dated endpoints.
    let (v, _) = w.decide(&sb, "ivy@ispdb.test", &[]);
    assert_eq!(
        (v["verdict"].as_str(), v["provider"].as_str()),
        (Some("decided"), Some("google")),
        "{v}"
    );
    assert_eq!(host(&v, "smtp"), "smtp.gmail.com:587 starttls");
    assert!(
        v["signals"].to_string().contains("not-entra"),
        "AADSTS90002 read: {v}"
    );

    // SRV + RFC 8414 metadata at the domain (not Entra).
    let (v, _) = w.decide(&sb, "nora@northwind.test", &[]);
    assert_eq!(
        (v["verdict"].as_str(), v["provider"].as_str()),
        (Some("decided"), Some("custom")),
        "{v}"
    );
    assert_eq!(host(&v, "imap"), "imap.northwind.test:993 implicit");
    assert_eq!(host(&v, "smtp"), "smtp.northwind.test:465 implicit");
    assert_eq!(host(&v, "pop"), "", "target `.` means not offered: {v}");
    assert_eq!(v["auth"]["token_url"], format!("{}/token", w.auth.issuer));
    assert_eq!(
        v["auth"]["scopes"],
        serde_json::json!([
            "https://outlook.test/IMAP.AccessAsUser.All",
            "https://outlook.test/POP.AccessAsUser.All",
            "https://outlook.test/SMTP.Send",
            "openid",
            "offline_access"
        ])
    );
}

#[test]
fn a_discovered_account_is_written_with_sources_and_logs_in_with_a_registered_client() {
    let w = world();
    let sb = Sandbox::new(
        "# my config\n[accounts.old]  # keep me\nprovider = \"google\"\nuser = \"o@gmail.com\"\nclient_id = \"x\"\n",
    );

    // Autoconfig (the domain's own, through an A record) names the issuer;
    // its metadata offers RFC 7591 registration: no client id needed.
    let o = w.add(&sb, &["dave@fabrikam.test"]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(err.contains("registered a client at"), "{err}");
    let cfg = std::fs::read_to_string(&sb.config).unwrap();
    assert!(
        cfg.starts_with("# my config\n[accounts.old]  # keep me\n"),
        "{cfg}"
    );
    assert!(cfg.contains("[accounts.dave-fabrikam]"), "{cfg}");
    assert!(cfg.contains("provider = \"custom\""), "{cfg}");
    assert!(
        cfg.contains("imap = { host = \"imap.fabrikam.test\", port = 993, tls = \"implicit\" }"),
        "{cfg}"
    );
    assert!(
        cfg.contains("# Mozilla autoconfig https://autoconfig.fabrikam.test:"),
        "each value names its source: {cfg}"
    );
    assert!(
        cfg.contains(&format!("token_url = \"{}/token\"", w.auth.issuer)),
        "{cfg}"
    );
    assert!(cfg.contains("(RFC 7591)"), "{cfg}");
    // Discovery's overrides are not part of the account.
    for leaked in ["/entra/", "/ispdb/", "/meta/", &w.dns.addr] {
        assert!(!cfg.contains(leaked), "{leaked} in {cfg}");
    }

    // Journey: add → login → (check needs a mail server; token proves the login).
    let (o, url) = sb.login_with_browser("dave-fabrikam", BrowserMode::Follow);
    assert_exit(&o, 0);
    assert!(url.starts_with(&format!("{}/auth", w.auth.issuer)), "{url}");
    let t = sb.run(&["token", "dave-fabrikam"]);
    assert_exit(&t, 0);
    assert_eq!(claims(stdout(&t).trim())["aud"], "https://outlook.test");

    // doctor: the chain as a checklist, a fix on each failed line.
    let o = w.doctor(&sb, "dave-fabrikam");
    let out = stdout(&o);
    assert_exit(&o, 1);
    for want in [
        "[ok  ] config",
        "[ok  ] discovery",
        "[ok  ] token",
        "[FAIL] imap login",
        "[FAIL] smtp login",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(out.contains("imap.fabrikam.test"), "{out}");

    // A Microsoft account without a client id: written, with the steps filled in.
    let o = w.add(&sb, &["alice@contoso.test"]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "https://login.microsoftonline.com/{TID}/adminconsent?client_id="
        )),
        "{err}"
    );
    assert!(
        err.contains("Mobile and desktop applications") && err.contains("http://localhost"),
        "{err}"
    );
    let cfg = std::fs::read_to_string(&sb.config).unwrap();
    assert!(cfg.contains(&format!("tenant = \"{TID}\"")), "{cfg}");
    // The person brings a client id (here one the test server knows); the
    // discovered Microsoft account then signs in, its sign-in host moved to
    // the test server for the test only.
    let o = sb.run(&["add", "alice-contoso", "--client-id", "native-public"]);
    assert_exit(&o, 0);
    let (o, url) = sb.login_with_browser_env(
        "alice-contoso",
        &[("MAILOAUTH_MICROSOFT_LOGIN_HOST", &w.auth.issuer)],
    );
    assert_exit(&o, 0);
    assert!(
        url.starts_with(&format!("{}/{TID}/oauth2/v2.0/authorize?", w.auth.issuer)),
        "the discovered tenant's authority: {url}"
    );
    let t = sb.run(&["token", "alice-contoso"]);
    assert_exit(&t, 0);
    assert_eq!(
        claims(stdout(&t).trim())["aud"],
        "https://outlook.office.com"
    );
    let cfg = std::fs::read_to_string(&sb.config).unwrap();
    let section = &cfg[cfg.find("[accounts.alice-contoso]").unwrap()..];
    assert!(!section.contains(&w.auth.issuer), "{section}");
}

#[test]
fn a_client_secret_handed_back_by_registration_is_kept_out_of_the_config() {
    // A server that makes every registered client confidential (RFC 7591
    // lets it replace what was asked): the secret goes to a 0600 file the
    // account reads by command, never into the config or the output.
    let auth = OAuthServer::start(&[("REGISTRATION", "confidential")]);
    let dns = Dns::start(&[
        "mx-host=adatum.test,mail.adatum.test,10",
        "srv-host=_imaps._tcp.adatum.test,imap.adatum.test,993,0,1",
        "srv-host=_submission._tcp.adatum.test,smtp.adatum.test,587,0,1",
    ]);
    let mut r = HashMap::new();
    r.insert(
        "/entra/adatum.test/v2.0/.well-known/openid-configuration".to_owned(),
        aadsts90002("adatum.test"),
    );
    r.insert("/meta/adatum.test".to_owned(), rfc8414(&auth.issuer, true));
    let https = Https::start(&[], r);
    let w = World { dns, https, auth };
    let sb = Sandbox::new("");

    let o = w.add(&sb, &["erin@adatum.test"]);
    assert_exit(&o, 0);
    let cfg = std::fs::read_to_string(&sb.config).unwrap();
    assert!(cfg.contains("client_id = \""), "{cfg}");
    let file = sb.state().join("client-secrets").join("erin-adatum.secret");
    assert!(
        cfg.contains(&format!(
            "client_secret = {{ command = \"cat '{}'\" }}",
            file.display()
        )),
        "{cfg}"
    );
    let secret = std::fs::read_to_string(&file).unwrap();
    assert!(secret.len() >= 16, "a real secret: {} bytes", secret.len());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{file:?}");
    for (what, text) in [
        ("config", cfg),
        ("stdout", stdout(&o)),
        ("stderr", stderr(&o)),
    ] {
        assert!(!text.contains(secret.trim()), "the secret in {what}");
    }

    // The confidential client signs in with the kept secret.
    let (o, _) = sb.login_with_browser("erin-adatum", BrowserMode::Follow);
    assert_exit(&o, 0);
    assert!(!stderr(&o).contains(secret.trim()));
    let t = sb.run(&["token", "erin-adatum"]);
    assert_exit(&t, 0);
    assert_eq!(claims(stdout(&t).trim())["aud"], "https://outlook.test");
}

#[test]
fn conflicting_signals_are_explained_with_the_flags_that_settle_them() {
    let w = world();
    let sb = Sandbox::new("");
    let (v, o) = w.decide(&sb, "carol@litware.test", &[]);
    assert_exit(&o, 2);
    assert_eq!(v["verdict"], "conflict", "{v}");
    let err = stderr(&o);
    assert!(err.contains("--provider google"), "{err}");
    assert!(
        err.contains(&format!("--provider microsoft --tenant {LITWARE_TID}")),
        "{err}"
    );
    assert!(
        err.contains("aspmx.l.google.com") && err.contains(LITWARE_TID),
        "what was found: {err}"
    );
    assert!(!sb.config.exists() || std::fs::read_to_string(&sb.config).unwrap().is_empty());
    // The person settles it.
    let (v, o) = w.decide(&sb, "carol@litware.test", &["--provider", "google"]);
    assert_exit(&o, 0);
    assert_eq!(
        (v["verdict"].as_str(), v["provider"].as_str()),
        (Some("decided"), Some("google")),
        "{v}"
    );
}

#[test]
fn bad_answers_say_what_was_found_and_what_to_pass() {
    let w = world();
    let sb = Sandbox::new("");
    // A domain that does not exist.
    let (v, o) = w.decide(&sb, "x@nowhere.test", &[]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("no such host"), "{err}");
    assert!(err.contains("--provider"), "{err}");
    assert_eq!(v["verdict"], "unknown");
    // Entra answering an HTML page: MX still decides, the tenant is not guessed.
    let (v, o) = w.decide(&sb, "h@broken.test", &[]);
    assert_exit(&o, 0);
    assert_eq!(v["provider"], "microsoft");
    assert_eq!(v["tenant"], "organizations", "{v}");
    assert!(
        v["signals"].to_string().contains("HTML page, not JSON"),
        "{v}"
    );
    assert!(
        v["sources"]["tenant"]
            .as_str()
            .unwrap()
            .contains("--tenant"),
        "{v}"
    );
    let (v, _) = w.decide(&sb, "h@broken500.test", &[]);
    assert!(v["signals"].to_string().contains("HTTP 500"), "{v}");
    // Not an address.
    let o = w.add(&sb, &["not-an-address@", "--dry-run"]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("not an email address"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_name_server_that_never_answers_still_ends_discovery_within_five_seconds() {
    let w = world();
    let (_silent, addr) = silent_dns();
    let sb = Sandbox::new("");
    let mut cmd = sb.cmd(&["add", "alice@contoso.test", "--dry-run", "--json"]);
    w.env(&mut cmd);
    cmd.env("MAILOAUTH_DNS_SERVER", &addr);
    let start = Instant::now();
    let o = run_with_timeout(cmd, Duration::from_secs(30));
    let took = start.elapsed();
    eprintln!("FIGURE discovery with a silent name server: {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    // The HTTP signals (by address here) still answer: Entra and autodiscover decide.
    assert_eq!(v["provider"], "microsoft", "{v}");
    assert_eq!(v["tenant"], TID);
    assert!(
        v["signals"].to_string().contains("no name server answered"),
        "{v}"
    );
}

#[test]
fn the_journey_of_a_new_user_is_three_commands_add_login_check() {
    // A domain whose mail servers are the private Dovecot, named by RFC 6186
    // SRV records, and whose authorization server is found by RFC 8414 metadata
    // offering RFC 7591 registration: the person brings only the address.
    let auth = OAuthServer::start(&[("REGISTRATION", "1")]);
    let issuer = auth.issuer.clone();
    let mail = MailServer::start(&issuer);
    let dns = Dns::start(&[
        "mx-host=journey.test,mx.journey.test,10",
        &format!(
            "srv-host=_imaps._tcp.journey.test,localhost,{},0,1",
            mail.port("imap_tls")
        ),
        &format!(
            "srv-host=_submission._tcp.journey.test,localhost,{},0,1",
            mail.port("submission")
        ),
    ]);
    let mut r = HashMap::new();
    r.insert(
        "/entra/journey.test/v2.0/.well-known/openid-configuration".to_owned(),
        aadsts90002("journey.test"),
    );
    r.insert("/meta/journey.test".to_owned(), rfc8414(&issuer, true));
    let https = Https::start(&[], r);
    let w = World { dns, https, auth };
    let sb = Sandbox::new("");

    // 1. add
    let o = w.add(&sb, &["alice@journey.test"]);
    assert_exit(&o, 0);
    let cfg = std::fs::read_to_string(&sb.config).unwrap();
    assert!(
        cfg.contains(&format!(
            "imap = {{ host = \"localhost\", port = {}, tls = \"implicit\" }}",
            mail.port("imap_tls")
        )),
        "{cfg}"
    );
    assert!(
        cfg.contains("# RFC 6186 SRV _imaps._tcp.journey.test"),
        "{cfg}"
    );
    // 2. login
    assert_exit(
        &sb.login_with_browser("alice-journey", BrowserMode::Follow)
            .0,
        0,
    );
    // 3. check: the fixture's CA is this machine's trust here (the environment,
    // not the account: discovery wrote no ca_file).
    let mut cmd = sb.cmd(&["check", "alice-journey"]);
    cmd.env("SSL_CERT_FILE", mail.ca());
    let o = run_with_timeout(cmd, Duration::from_secs(60));
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("imap") && out.contains("smtp"), "{out}");
}
