//! `mailoauth add EMAIL` against real parts: dnsmasq on a loopback port serving
//! MX, SRV and A records for test domains, and a local HTTPS server (a test CA
//! made here) answering in the shapes of Entra's OIDC metadata, Exchange
//! Online autodiscover, Mozilla autoconfig and the ISPDB; the test
//! authorization server (oidc-provider) offers RFC 8414 metadata and RFC 7591
//! registration. Each case asserts provider, tenant, cloud and hosts.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const GOV_TID: &str = "0b1d3c2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const DOD_TID: &str = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
const GATEWAY_TID: &str = "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f60";
const LITWARE_TID: &str = "3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6071";

/// dnsmasq in the foreground on 127.0.0.1:PORT, authoritative for `.test`
/// (unknown names there are NXDOMAIN), reading no system file: no
/// /etc/dnsmasq.conf, resolv.conf or hosts, and it changes nothing of the
/// system's resolver.
struct Dns {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Dns {
    fn start(records: &[&str]) -> Dns {
        need("dnsmasq", "apt-get install -y dnsmasq-base");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("dnsmasq.conf");
        let mut text = String::from(
            "no-resolv\nno-hosts\nno-poll\nbind-interfaces\nlisten-address=127.0.0.1\n\
             local=/test/\nlog-facility=-\n",
        );
        for r in records {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(&conf, text).unwrap();
        for _ in 0..5 {
            let port = free_udp_and_tcp_port();
            let mut child = Command::new("dnsmasq")
                .arg(format!("--conf-file={}", conf.display()))
                .arg(format!("--port={port}"))
                .arg("--keep-in-foreground")
                .arg("--pid-file=")
                .arg("--user=root")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start dnsmasq");
            let addr = format!("127.0.0.1:{port}");
            // Ready when it answers over TCP (it binds UDP and TCP together).
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if std::net::TcpStream::connect(&addr).is_ok() {
                    return Dns {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on a loopback port");
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A name server that reads every query and never answers.
fn silent_dns() -> (UdpSocket, String) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap().to_string();
    (s, addr)
}

/// A canned answer.
#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

fn reply(status: u16, content_type: &'static str, body: impl Into<String>) -> Reply {
    Reply {
        status,
        content_type,
        body: body.into(),
    }
}

/// An HTTPS server on 127.0.0.1 with a certificate from a CA made here for
/// `names`, answering `GET path` from a table (404 otherwise); it counts requests.
struct Https {
    port: u16,
    ca_file: std::path::PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Https {
    fn start(names: &[&str], routes: HashMap<String, Reply>) -> Https {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mailoauth onboarding test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let mut sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        sans.push("127.0.0.1".into());
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(sans)
            .unwrap()
            .signed_by(&leaf_key, &rcgen::Issuer::new(ca_params, ca_key))
            .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { return };
                let (config, routes, log) = (config.clone(), routes.clone(), log.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(tcp, config, &routes, &log);
                });
            }
        });
        Https {
            port,
            ca_file,
            seen,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_one(
    tcp: std::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    routes: &HashMap<String, Reply>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut reader = BufReader::new(&mut tls);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut host = String::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 || l == "\r\n" {
            break;
        }
        if let Some(h) = l.strip_prefix("Host: ").or(l.strip_prefix("host: ")) {
            host = h.trim().split(':').next().unwrap_or("").to_owned();
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
    let key = format!("{host}{path}");
    log.lock().unwrap().push(key.clone());
    let r = routes
        .get(&key)
        .or(routes.get(&path))
        .cloned()
        .unwrap_or_else(|| reply(404, "text/plain", "not found"));
    let reason = match r.status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let location = if r.status == 302 {
        "Location: https://autodiscover-s.outlook.com/elsewhere\r\n"
    } else {
        ""
    };
    write!(
        tls,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n{}",
        r.status,
        r.content_type,
        r.body.len(),
        r.body
    )?;
    tls.flush()?;
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    Ok(())
}

/// Entra's OIDC metadata in its real shape for a tenant (fields that matter,
/// others trimmed) in the commercial cloud or, with `sub`, the US Government one.
fn entra(tid: &str, us_sub: Option<&str>) -> Reply {
    let (host, instance, scope, sub) = match us_sub {
        None => (
            "login.microsoftonline.com",
            "microsoftonline.com",
            "NA",
            String::new(),
        ),
        Some(s) => (
            "login.microsoftonline.us",
            "microsoftonline.us",
            "NA",
            format!(",\"tenant_region_sub_scope\":\"{s}\""),
        ),
    };
    reply(
        200,
        "application/json; charset=utf-8",
        format!(
            r#"{{"token_endpoint":"https://{host}/{tid}/oauth2/v2.0/token","token_endpoint_auth_methods_supported":["client_secret_post","private_key_jwt","client_secret_basic"],"jwks_uri":"https://{host}/{tid}/discovery/v2.0/keys","response_modes_supported":["query","fragment","form_post"],"subject_types_supported":["pairwise"],"id_token_signing_alg_values_supported":["RS256"],"response_types_supported":["code","id_token","code id_token","id_token token"],"scopes_supported":["openid","profile","email","offline_access"],"issuer":"https://{host}/{tid}/v2.0","request_uri_parameter_supported":false,"userinfo_endpoint":"https://graph.microsoft.com/oidc/userinfo","authorization_endpoint":"https://{host}/{tid}/oauth2/v2.0/authorize","device_authorization_endpoint":"https://{host}/{tid}/oauth2/v2.0/devicecode","http_logout_supported":true,"frontchannel_logout_supported":true,"end_session_endpoint":"https://{host}/{tid}/oauth2/v2.0/logout","claims_supported":["sub","iss","cloud_instance_name","cloud_instance_host_name","cloud_graph_host_name","msgraph_host","aud","exp","iat","auth_time","acr","nonce","preferred_username","name","tid","ver","at_hash","c_hash","email"],"kerberos_endpoint":"https://{host}/{tid}/kerberos","tenant_region_scope":"{scope}"{sub},"cloud_instance_name":"{instance}","cloud_graph_host_name":"graph.windows.net","msgraph_host":"graph.microsoft.com","rbac_url":"https://pas.windows.net"}}"#
        ),
    )
}

/// Entra's answer for a domain that is no tenant's.
fn aadsts90002(domain: &str) -> Reply {
    reply(
        400,
        "application/json; charset=utf-8",
        format!(
            r#"{{"error":"invalid_tenant","error_description":"AADSTS90002: Tenant '{domain}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant. Trace ID: 5f0e6a8e-1c2b-4a3d-9e8f-7a6b5c4d3e00 Correlation ID: 0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f Timestamp: 2026-12-03 19:00:00Z","error_codes":[90002],"timestamp":"2026-12-03 19:00:00Z","trace_id":"5f0e6a8e-1c2b-4a3d-9e8f-7a6b5c4d3e00","correlation_id":"0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f","error_uri":"https://login.microsoftonline.com/error?code=90002"}}"#
        ),
    )
}

fn exo_mailbox() -> Reply {
    reply(
        200,
        "application/json; charset=utf-8",
        r#"{"Protocol":"AutodiscoverV1","Url":"https://outlook.office365.com/autodiscover/autodiscover.xml"}"#,
    )
}

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
    r.insert(
        "/meta/northwind.test".into(),
        reply(
            200,
            "application/json",
            format!(
                r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/auth","token_endpoint":"{issuer}/token","device_authorization_endpoint":"{issuer}/device/auth","response_types_supported":["code"],"grant_types_supported":["authorization_code","refresh_token"],"code_challenge_methods_supported":["S256"],"scopes_supported":["openid","email","offline_access","https://outlook.test/IMAP.AccessAsUser.All","https://outlook.test/SMTP.Send"]}}"#
            ),
        ),
    );
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
    let o = sb.run(&[
        "add",
        "alice-contoso",
        "--client-id",
        "11111111-2222-3333-4444-555555555555",
    ]);
    assert_exit(&o, 0);
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
    r.insert(
        "/meta/journey.test".to_owned(),
        reply(
            200,
            "application/json",
            format!(
                r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/auth","token_endpoint":"{issuer}/token","registration_endpoint":"{issuer}/reg","scopes_supported":["openid","email","offline_access","https://outlook.test/IMAP.AccessAsUser.All","https://outlook.test/POP.AccessAsUser.All","https://outlook.test/SMTP.Send"]}}"#
            ),
        ),
    );
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
