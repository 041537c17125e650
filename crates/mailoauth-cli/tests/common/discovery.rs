//! The stand-ins of discovery's peers: a real DNS server (dnsmasq on a
//! loopback port) and HTTPS servers with a CA made here answering recorded
//! shapes of Entra's OIDC metadata, autodiscover and autoconfig. Shared by the
//! CLI's onboarding tests and the service's connect-by-address test (each
//! uses a part of it).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// dnsmasq in the foreground on 127.0.0.1:PORT, authoritative for `.test`
/// (unknown names there are NXDOMAIN), reading no system file: no
/// /etc/dnsmasq.conf, resolv.conf or hosts, and it changes nothing of the
/// system's resolver.
pub struct Dns {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Dns {
    /// Start it with dnsmasq `records` (`mx-host=…`, `srv-host=…`, `host-record=…`).
    pub fn start(records: &[&str]) -> Dns {
        super::oauth_server::need("dnsmasq", "apt-get install -y dnsmasq-base");
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

pub fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A name server that reads every query and never answers.
pub fn silent_dns() -> (UdpSocket, String) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap().to_string();
    (s, addr)
}

/// A canned answer.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

pub fn reply(status: u16, content_type: &'static str, body: impl Into<String>) -> Reply {
    Reply {
        status,
        content_type,
        body: body.into(),
    }
}

/// An HTTPS server on 127.0.0.1 with a certificate from a CA made here for
/// `names`, answering `GET path` from a table (404 otherwise); it counts requests.
pub struct Https {
    pub port: u16,
    /// The CA that signed its certificate (PEM).
    pub ca_file: std::path::PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Https {
    /// Serve `routes` (by `host/path` or `path`) with a certificate for `names`.
    pub fn start(names: &[&str], routes: HashMap<String, Reply>) -> Https {
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

    /// `https://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, as `host/path`.
    pub fn requests(&self) -> Vec<String> {
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
pub fn entra(tid: &str, us_sub: Option<&str>) -> Reply {
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
pub fn aadsts90002(domain: &str) -> Reply {
    reply(
        400,
        "application/json; charset=utf-8",
        format!(
            r#"{{"error":"invalid_tenant","error_description":"AADSTS90002: Tenant '{domain}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant. Trace ID: 5f0e6a8e-1c2b-4a3d-9e8f-7a6b5c4d3e00 Correlation ID: 0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f Timestamp: 2026-12-03 19:00:00Z","error_codes":[90002],"timestamp":"2026-12-03 19:00:00Z","trace_id":"5f0e6a8e-1c2b-4a3d-9e8f-7a6b5c4d3e00","correlation_id":"0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f","error_uri":"https://login.microsoftonline.com/error?code=90002"}}"#
        ),
    )
}

/// Exchange Online autodiscover for a mailbox it hosts.
pub fn exo_mailbox() -> Reply {
    reply(
        200,
        "application/json; charset=utf-8",
        r#"{"Protocol":"AutodiscoverV1","Url":"https://outlook.office365.com/autodiscover/autodiscover.xml"}"#,
    )
}

/// RFC 8414 metadata for the test authorization server at `issuer`, naming its
/// endpoints and the outlook.test scopes; with `registration`, its RFC 7591
/// registration endpoint too.
pub fn rfc8414(issuer: &str, registration: bool) -> Reply {
    let reg = if registration {
        format!(r#","registration_endpoint":"{issuer}/reg""#)
    } else {
        String::new()
    };
    reply(
        200,
        "application/json",
        format!(
            r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/auth","token_endpoint":"{issuer}/token","device_authorization_endpoint":"{issuer}/device/auth"{reg},"response_types_supported":["code"],"grant_types_supported":["authorization_code","refresh_token"],"code_challenge_methods_supported":["S256"],"scopes_supported":["openid","email","offline_access","https://outlook.test/IMAP.AccessAsUser.All","https://outlook.test/POP.AccessAsUser.All","https://outlook.test/SMTP.Send"]}}"#
        ),
    )
}
