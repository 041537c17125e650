//! TLS towards real servers: the private Dovecot serving the certificates
//! people really use — a self-signed one made with `openssl req -x509` (which
//! sets CA:TRUE), one for another name, an expired one. A self-signed
//! certificate in `ca_file` is trusted as itself by `check` and by the proxy;
//! every refusal says why in the certificate's own terms (its names, its dates)
//! and which config key fixes it.

mod common;

use common::*;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `openssl req -x509` as the guides say: a self-signed certificate for
/// localhost (CA:TRUE by openssl's defaults), into `dir/NAME.{crt,key}`.
fn openssl_self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    need("openssl", "apt-get install -y openssl");
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,DNS:mail.localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "the certificate of the bug report has CA:TRUE"
    );
    (crt, key)
}

/// Write an rcgen certificate (with its key) as PEM files.
fn write_pem(
    dir: &Path,
    name: &str,
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
) -> (PathBuf, PathBuf) {
    let (crt, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (crt, k)
}

/// The fixture's servers (localhost, both TLS layouts), trusting `ca_file`.
fn servers(mail: &MailServer, layout: &str, ca_file: &Path) -> String {
    layout.replace(
        &format!("ca_file = \"{}\"", mail.ca().display()),
        &format!("ca_file = \"{}\"", ca_file.display()),
    )
}

/// OAuth server, Dovecot serving `cert`/`key`, and a sandbox whose account `m`
/// trusts `ca_file`, with a token stored (the handshake fails before it is used).
fn world(cert: &Path, key: &Path, ca_file: &Path) -> (OAuthServer, MailServer, Sandbox) {
    let srv = OAuthServer::start(&[]);
    let mail = MailServer::serving(&srv.issuer, cert, key);
    let sb = Sandbox::new(&config(
        &srv,
        &servers(&mail, &mail.servers(), ca_file),
        ALL_SCOPES,
    ));
    sb.store_valid_token("m", "not-used");
    (srv, mail, sb)
}

/// `check m` over all three protocols fails for TLS with exit 1; its output.
fn check_fails(sb: &Sandbox) -> String {
    let o = sb.run(&["check", "m"]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    for p in ["imap  FAIL", "pop   FAIL", "smtp  FAIL"] {
        assert!(out.contains(p), "{p}: {out}");
    }
    assert_eq!(out.matches("cause: ").count(), 3, "a cause for each: {out}");
    out
}

#[test]
fn a_self_signed_server_certificate_in_ca_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = openssl_self_signed(dir.path(), "server");
    let srv = OAuthServer::start(&[]);
    let mail = MailServer::serving(&srv.issuer, &crt, &key);
    let sb = Sandbox::new(&config(
        &srv,
        &servers(&mail, &mail.servers(), &crt),
        ALL_SCOPES,
    ));
    assert_exit(&sb.login_with_browser("m", BrowserMode::Follow).0, 0);
    for layout in [mail.servers(), mail.other_servers()] {
        std::fs::write(
            &sb.config,
            config(&srv, &servers(&mail, &layout, &crt), ALL_SCOPES),
        )
        .unwrap();
        let o = sb.run(&["check", "m"]);
        assert_exit(&o, 0);
        let out = stdout(&o);
        for p in ["imap  ok", "pop   ok", "smtp  ok"] {
            assert!(out.contains(p), "{p}: {out}");
        }
    }
}

#[test]
fn a_different_self_signed_certificate_in_ca_file_is_refused_with_the_ca_file_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = openssl_self_signed(dir.path(), "server");
    // Same subject and names, another key: a certificate the user did not pin.
    let (other, _) = openssl_self_signed(dir.path(), "other");
    let (_srv, mail, sb) = world(&crt, &key, &other);
    let out = check_fails(&sb);
    assert!(
        out.contains("localhost presents a self-signed certificate (CN=localhost, SHA-256 "),
        "{out}"
    );
    assert!(
        out.contains(&format!("not in ca_file {}", other.display())),
        "{out}"
    );
    assert!(
        out.contains("set `accounts.m.ca_file` in the config file to that file (`localhost.pem`)"),
        "{out}"
    );
    // The command that saves the certificate, per protocol and TLS mode.
    let imap = mail.port("imap_tls");
    let sub = mail.port("submission");
    assert!(
        out.contains(&format!(
            "openssl s_client -connect localhost:{imap} -servername localhost -showcerts"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "-connect localhost:{sub} -servername localhost -starttls smtp"
        )),
        "{out}"
    );
    // The fingerprint we show is the server's, as openssl prints it.
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&crt)
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout);
    let fp = fp.trim().rsplit('=').next().unwrap();
    assert!(out.contains(fp), "{fp}: {out}");
    // The command we print saves exactly the server's certificate.
    let save = out
        .split("save the server's certificate: `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap();
    let o = run_with_timeout(
        {
            let mut c = Command::new("sh");
            c.args(["-c", save]).current_dir(dir.path());
            c
        },
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{save}: {}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("localhost.pem")).unwrap(),
        std::fs::read_to_string(&crt).unwrap(),
        "{save}"
    );
}

#[test]
fn a_certificate_for_another_name_is_refused_naming_the_certificates_names() {
    let dir = tempfile::tempdir().unwrap();
    // A private CA's certificate for other hosts, the CA in ca_file.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["mail.example.org".into(), "imap.example.org".into()])
            .unwrap()
            .signed_by(&leaf_key, &rcgen::Issuer::new(ca_params, ca_key))
            .unwrap();
    let (crt, key) = write_pem(dir.path(), "leaf", &leaf, &leaf_key);
    let (_srv, _mail, sb) = world(&crt, &key, &ca_file);
    let out = check_fails(&sb);
    assert!(
        out.contains(
            "the certificate is for mail.example.org, imap.example.org, not for localhost"
        ),
        "{out}"
    );
    assert!(
        out.contains("set `accounts.m.imap.host` in the config file to a name the certificate has"),
        "{out}"
    );
    assert!(out.contains("`accounts.m.smtp.host`"), "{out}");
}

#[test]
fn a_pinned_certificate_is_still_checked_against_the_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = openssl_self_signed(dir.path(), "server");
    let (srv, mail, sb) = world(&crt, &key, &crt);
    // The certificate names localhost and mail.localhost, not the address.
    let by_ip = servers(&mail, &mail.servers(), &crt)
        .replace("host = \"localhost\"", "host = \"127.0.0.1\"");
    std::fs::write(&sb.config, config(&srv, &by_ip, ALL_SCOPES)).unwrap();
    let out = check_fails(&sb);
    assert!(
        out.contains("the certificate is for localhost, mail.localhost, not for 127.0.0.1 (it is the certificate pinned in ca_file"),
        "{out}"
    );
}

#[test]
fn an_expired_certificate_is_refused_with_its_dates() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2023, 3, 1);
    p.not_after = rcgen::date_time_ymd(2024, 3, 1);
    let cert = p.self_signed(&key).unwrap();
    let (crt, key) = write_pem(dir.path(), "old", &cert, &key);
    // Pinned, and expired all the same: a renewal the user has not seen yet.
    let (_srv, _mail, sb) = world(&crt, &key, &crt);
    let out = check_fails(&sb);
    assert!(
        out.contains(
            "the certificate of localhost expired: valid from Mar  1 00:00:00 2023 +00:00 until Mar  1 00:00:00 2024 +00:00, and now is "
        ),
        "{out}"
    );
    assert!(out.contains("must renew the certificate"), "{out}");
}

/// Start `mailoauth daemon` with an IMAP proxy on a free port; (daemon, port).
fn proxy(
    sb: &Sandbox,
    srv: &OAuthServer,
    mail: &MailServer,
    ca_file: &Path,
) -> (std::process::Child, u16) {
    let port = free_port();
    let table =
        format!("proxy = {{ imap = \"127.0.0.1:{port}\", password = {{ env = \"PROXY_PW\" }} }}\n");
    let cfg = config(srv, &servers(mail, &mail.servers(), ca_file), ALL_SCOPES).replacen(
        "[accounts.m]\n",
        &format!("[accounts.m]\n{table}"),
        1,
    );
    std::fs::write(&sb.config, cfg).unwrap();
    let daemon = sb
        .cmd(&["daemon"])
        .env("PROXY_PW", "pw")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(sb.dir.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    (daemon, port)
}

/// Log in to the proxy at `port` with the local password; the reply line.
fn proxy_login(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the proxy did not listen: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    (&s).write_all(b"a1 LOGIN alice@example.test pw\r\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    line
}

#[test]
fn the_proxy_trusts_a_self_signed_upstream_certificate_in_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = openssl_self_signed(dir.path(), "server");
    let (other, _) = openssl_self_signed(dir.path(), "other");
    let srv = OAuthServer::start(&[]);
    let mail = MailServer::serving(&srv.issuer, &crt, &key);
    let sb = Sandbox::new(&config(
        &srv,
        &servers(&mail, &mail.servers(), &crt),
        ALL_SCOPES,
    ));
    assert_exit(&sb.login_with_browser("m", BrowserMode::Follow).0, 0);

    let (mut daemon, port) = proxy(&sb, &srv, &mail, &crt);
    let reply = proxy_login(port);
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(reply.starts_with("a1 OK"), "{reply}");

    // Another certificate in ca_file: the client hears why, on one line.
    let (mut daemon, port) = proxy(&sb, &srv, &mail, &other);
    let reply = proxy_login(port);
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        reply.starts_with("a1 NO [UNAVAILABLE] upstream login failed"),
        "{reply}"
    );
    assert!(
        reply.contains("presents a self-signed certificate"),
        "{reply}"
    );
    assert!(reply.contains("`accounts.m.ca_file`"), "{reply}");
}
