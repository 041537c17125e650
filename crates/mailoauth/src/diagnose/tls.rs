//! The TLS catalog: why a TLS session with a mail server did not come about →
//! cause and remedy, with the certificate's own names and dates in them.
//!
//! Owns: the words for each [`TlsFailure`] and the config keys that fix it
//! (`accounts.NAME.ca_file`, `accounts.NAME.imap.host` …). Must not: word a fix
//! for one front end; the `openssl` commands in it are the user's tools, not ours.

use super::Diagnosis;
use crate::config::TlsMode;
use crate::providers::{Account, Server};
use crate::remedy::Remedy;
use crate::service::Service;
use crate::tls::{CertFacts, CertProblem, CertRefusal, TlsFailure, date};

/// Where the failing connection went: for the config keys and the commands.
struct Place<'a> {
    account: &'a Account,
    service: Service,
    server: &'a Server,
}

impl Place<'_> {
    fn ca_key(&self) -> String {
        format!("accounts.{}.ca_file", self.account.name)
    }

    fn server_key(&self) -> String {
        format!("accounts.{}.{}", self.account.name, self.service.name())
    }

    /// `ca_file /path`, or that there is none.
    fn ca_file(&self) -> String {
        match &self.account.ca_file {
            Some(p) => format!("ca_file {}", p.display()),
            None => "ca_file (the account has none)".into(),
        }
    }

    /// `-starttls imap` for openssl when the server starts in plain text.
    fn starttls(&self) -> &'static str {
        match (self.server.tls, self.service) {
            (TlsMode::Starttls, Service::Imap) => " -starttls imap",
            (TlsMode::Starttls, Service::Pop) => " -starttls pop3",
            (TlsMode::Starttls, Service::Smtp) => " -starttls smtp",
            _ => "",
        }
    }

    fn s_client(&self) -> String {
        let s = self.server;
        format!(
            "openssl s_client -connect {}:{} -servername {}{} -showcerts </dev/null",
            s.host,
            s.port,
            s.host,
            self.starttls()
        )
    }
}

/// Cause and fix of a TLS failure towards `server`, the account's server for
/// `service`.
pub fn tls_failure(
    account: &Account,
    service: Service,
    server: &Server,
    f: &TlsFailure,
) -> Diagnosis {
    let at = Place {
        account,
        service,
        server,
    };
    let hp = format!("{}:{}", server.host, server.port);
    let (cause, remedy) = match f {
        TlsFailure::Certificate(c) => return certificate(&at, c),
        TlsFailure::CaFile { path, why } => (
            format!("ca_file {} cannot be used: {why}", path.display()),
            Remedy::SetConfig {
                key: at.ca_key(),
                to: "a readable PEM file with the server's certificate or its CA's \
                     (`-----BEGIN CERTIFICATE-----` blocks)"
                    .into(),
            },
        ),
        TlsFailure::SystemRoots(s) => (
            format!("this machine's trusted CA certificates could not be loaded ({s})"),
            Remedy::Steps(
                "install the system's CA certificates (Debian/Ubuntu: `apt install ca-certificates`, \
                 Fedora: `dnf install ca-certificates`)"
                    .into(),
            )
            .then(Remedy::SetConfig {
                key: at.ca_key(),
                to: "a PEM file with the server's CA, for a private server".into(),
            }),
        ),
        TlsFailure::NotTls(s) if server.tls == TlsMode::Implicit => (
            format!(
                "{hp} answered in plain text, not TLS ({s}): this port expects STARTTLS or no TLS, \
                 but the account says `tls = \"implicit\"`"
            ),
            Remedy::SetConfig {
                key: format!("{}.tls", at.server_key()),
                to: format!(
                    "\"starttls\", or `port` to the port of implicit TLS ({})",
                    implicit_port(service)
                ),
            },
        ),
        TlsFailure::NotTls(s) => (
            format!("{hp} agreed to STARTTLS but then did not speak TLS ({s})"),
            Remedy::Steps(format!(
                "check `port` and `tls` of `{}`; a firewall or antivirus that rewrites mail traffic does this",
                at.server_key()
            )),
        ),
        TlsFailure::NoCommonParameters(s) => (
            format!(
                "{hp} and mailoauth share no TLS version or cipher suite ({s}); mailoauth speaks TLS 1.2 \
                 and 1.3 with current ciphers"
            ),
            Remedy::Steps(
                "the server's administrator must enable TLS 1.2 or later; a server that offers only \
                 TLS 1.0/1.1 cannot be used"
                    .into(),
            ),
        ),
        TlsFailure::Other(s) => (
            format!("the TLS handshake with {hp} failed: {s}"),
            Remedy::Steps(format!(
                "check `host`, `port` and `tls` of `{}`; `{}` shows what the server does",
                at.server_key(),
                at.s_client()
            )),
        ),
    };
    Diagnosis {
        cause,
        remedy,
        login_required: false,
    }
}

fn implicit_port(service: Service) -> u16 {
    match service {
        Service::Imap => 993,
        Service::Pop => 995,
        Service::Smtp => 465,
    }
}

/// A refused certificate: its names, dates or issuer, and the key that fixes it.
fn certificate(at: &Place<'_>, c: &CertRefusal) -> Diagnosis {
    let unknown = CertFacts {
        subject: "?".into(),
        issuer: "?".into(),
        names: vec![],
        common_name: None,
        not_before: 0,
        not_after: 0,
        self_signed: false,
        is_ca: false,
        sha256: "?".into(),
    };
    let cert = c.cert.as_ref().unwrap_or(&unknown);
    let asked = &c.asked;
    let pinned = if c.pinned {
        format!(" (it is the certificate pinned in {})", at.ca_file())
    } else {
        String::new()
    };
    let (cause, remedy) = match &c.problem {
        CertProblem::UntrustedIssuer | CertProblem::CaUsedAsEndEntity
            if cert.self_signed || c.problem == CertProblem::CaUsedAsEndEntity =>
        {
            let what = if cert.self_signed {
                "a self-signed certificate"
            } else {
                "a CA certificate (CA:TRUE) as its own"
            };
            (
                format!(
                    "{asked} presents {what} ({}, SHA-256 {}) that is not in {}; such a certificate is \
                     trusted only when the file holds exactly that certificate",
                    cert.subject,
                    cert.sha256,
                    at.ca_file()
                ),
                pin_it(at),
            )
        }
        CertProblem::UntrustedIssuer | CertProblem::CaUsedAsEndEntity => (
            format!(
                "the certificate of {asked} is issued by `{}`, which is neither among this machine's \
                 trusted CAs nor in {}",
                cert.issuer,
                at.ca_file()
            ),
            Remedy::SetConfig {
                key: at.ca_key(),
                to: format!(
                    "a PEM file with the certificate of the CA `{}` (from the server's administrator)",
                    cert.issuer
                ),
            },
        ),
        CertProblem::NameMismatch => name_mismatch(at, c, cert, &pinned),
        CertProblem::Expired { now } => (
            format!(
                "the certificate of {asked} expired: valid from {} until {}, and now is {}{pinned}",
                date(cert.not_before),
                date(cert.not_after),
                date(*now)
            ),
            renew(at, c.pinned),
        ),
        CertProblem::NotYetValid { now } => (
            format!(
                "the certificate of {asked} is not valid yet: valid from {} until {}, and now is {}{pinned}",
                date(cert.not_before),
                date(cert.not_after),
                date(*now)
            ),
            Remedy::Steps(
                "check this machine's clock (`timedatectl`); if it is right, the server's certificate \
                 starts in the future and its administrator must reissue it"
                    .into(),
            ),
        ),
        CertProblem::Other(s) => (
            format!("the certificate of {asked} was refused: {s}"),
            Remedy::Steps(format!(
                "ask the server's administrator; `{}` shows the certificates the server sends",
                at.s_client()
            )),
        ),
    };
    Diagnosis {
        cause,
        remedy,
        login_required: false,
    }
}

/// Save the server's certificate, compare its fingerprint, point `ca_file` at it.
fn pin_it(at: &Place<'_>) -> Remedy {
    let file = format!("{}.pem", at.server.host);
    Remedy::Steps(format!(
        "save the server's certificate: `{} 2>/dev/null | openssl x509 -out {file}`, and trust it only if \
         its fingerprint (`openssl x509 -in {file} -noout -fingerprint -sha256`) is the one above and the \
         one the server's administrator gives you",
        at.s_client(),
    ))
    .then(Remedy::SetConfig {
        key: at.ca_key(),
        to: format!("that file (`{file}`)"),
    })
}

fn name_mismatch(
    at: &Place<'_>,
    c: &CertRefusal,
    cert: &CertFacts,
    pinned: &str,
) -> (String, Remedy) {
    let asked = &c.asked;
    if cert.names.is_empty() {
        let cn = cert
            .common_name
            .as_deref()
            .map(|cn| format!(" (its common name {cn} is not checked by TLS clients)"))
            .unwrap_or_default();
        return (
            format!("the certificate of {asked} names no host in subjectAltName{cn}{pinned}"),
            Remedy::Steps(format!(
                "the server's administrator must issue a certificate with subjectAltName DNS:{asked} \
                 (`openssl req -x509 … -addext subjectAltName=DNS:{asked}`)"
            )),
        );
    }
    let names = cert.names.join(", ");
    (
        format!("the certificate is for {names}, not for {asked}{pinned}"),
        Remedy::SetConfig {
            key: format!("{}.host", at.server_key()),
            to: format!(
                "a name the certificate has ({names}) if it reaches the same server; otherwise the \
                 server's administrator must issue a certificate that names {asked}"
            ),
        },
    )
}

fn renew(at: &Place<'_>, pinned: bool) -> Remedy {
    let r = Remedy::Steps(
        "the server's administrator must renew the certificate (if its dates look right, check this \
         machine's clock)"
            .into(),
    );
    if pinned {
        r.then(Remedy::SetConfig {
            key: at.ca_key(),
            to: "the renewed certificate, once the server has it".into(),
        })
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn account() -> Account {
        let c = Config::parse(
            "[accounts.m]\nprovider = \"custom\"\nuser = \"a@example.test\"\nclient_id = \"c\"\n\
             authorize_url = \"https://idp.test/auth\"\ntoken_url = \"https://idp.test/token\"\nscopes = [\"mail\"]\nca_file = \"/etc/mail-ca.pem\"\n\
             imap = { host = \"mail.test\", port = 993, tls = \"implicit\" }\n\
             smtp = { host = \"mail.test\", port = 587, tls = \"starttls\" }\n",
            std::path::Path::new("/c"),
        )
        .unwrap();
        crate::providers::resolve(&c, "m").unwrap()
    }

    fn facts() -> CertFacts {
        CertFacts {
            subject: "CN=mail.test".into(),
            issuer: "CN=mail.test".into(),
            names: vec!["mail.test".into(), "imap.test".into()],
            common_name: Some("mail.test".into()),
            not_before: 1_577_836_800,
            not_after: 1_609_459_200,
            self_signed: true,
            is_ca: true,
            sha256: "AB:CD".into(),
        }
    }

    fn diagnose(service: Service, problem: CertProblem, asked: &str) -> Diagnosis {
        let a = account();
        let server = crate::mail::server_for(&a, service).unwrap().clone();
        let f = TlsFailure::Certificate(Box::new(CertRefusal {
            problem,
            asked: asked.into(),
            cert: Some(facts()),
            pinned: false,
        }));
        tls_failure(&a, service, &server, &f)
    }

    fn keys(r: &Remedy) -> Vec<String> {
        r.clone()
            .into_list()
            .into_iter()
            .filter_map(|r| match r {
                Remedy::SetConfig { key, .. } => Some(key),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_untrusted_self_signed_certificate_is_saved_and_pinned_in_ca_file() {
        let d = diagnose(Service::Smtp, CertProblem::CaUsedAsEndEntity, "mail.test");
        assert!(
            d.cause.contains("self-signed") && d.cause.contains("AB:CD"),
            "{d:?}"
        );
        assert!(d.cause.contains("/etc/mail-ca.pem"), "{d:?}");
        assert_eq!(keys(&d.remedy), ["accounts.m.ca_file"]);
        let Remedy::Steps(save) = &d.remedy.clone().into_list()[0] else {
            panic!("{d:?}")
        };
        assert!(
            save.contains(
                "openssl s_client -connect mail.test:587 -servername mail.test -starttls smtp"
            ),
            "{save}"
        );
    }

    #[test]
    fn a_name_mismatch_lists_the_certificates_names_and_the_host_key() {
        let d = diagnose(Service::Imap, CertProblem::NameMismatch, "127.0.0.1");
        assert!(
            d.cause
                .contains("is for mail.test, imap.test, not for 127.0.0.1"),
            "{d:?}"
        );
        assert_eq!(keys(&d.remedy), ["accounts.m.imap.host"]);
    }

    #[test]
    fn an_expired_certificate_shows_its_dates_and_now() {
        let d = diagnose(
            Service::Imap,
            CertProblem::Expired { now: 1_700_000_000 },
            "mail.test",
        );
        for when in [
            "Jan  1 00:00:00 2020",
            "Jan  1 00:00:00 2021",
            "Nov 14 22:13:20 2023",
        ] {
            assert!(d.cause.contains(when), "{when}: {d:?}");
        }
    }

    #[test]
    fn plain_text_on_an_implicit_tls_port_points_at_the_tls_key() {
        let a = account();
        let server = a.imap.clone().unwrap();
        let d = tls_failure(&a, Service::Imap, &server, &TlsFailure::NotTls("x".into()));
        assert_eq!(keys(&d.remedy), ["accounts.m.imap.tls"]);
    }
}
