//! Discovery's parsers and decision on recorded answer shapes; the lookups
//! against real servers are in the CLI's `tests/onboarding.rs`.

use super::autoconfig::parse_autoconfig;
use super::signals::*;
use super::*;
use crate::dns::Mx;
use crate::http::Response;

fn resp(status: u16, ct: &str, body: &str) -> Response {
    Response {
        status,
        content_type: ct.into(),
        retry_after: None,
        body: body.into(),
    }
}

const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// The shape of Entra's answer for a commercial tenant (fields trimmed).
fn entra_commercial() -> String {
    format!(
        r#"{{"token_endpoint":"https://login.microsoftonline.com/{TID}/oauth2/v2.0/token","token_endpoint_auth_methods_supported":["client_secret_post","private_key_jwt","client_secret_basic"],"jwks_uri":"https://login.microsoftonline.com/{TID}/discovery/v2.0/keys","response_modes_supported":["query","fragment","form_post"],"subject_types_supported":["pairwise"],"id_token_signing_alg_values_supported":["RS256"],"response_types_supported":["code","id_token","code id_token","id_token token"],"scopes_supported":["openid","profile","email","offline_access"],"issuer":"https://login.microsoftonline.com/{TID}/v2.0","request_uri_parameter_supported":false,"userinfo_endpoint":"https://graph.microsoft.com/oidc/userinfo","authorization_endpoint":"https://login.microsoftonline.com/{TID}/oauth2/v2.0/authorize","device_authorization_endpoint":"https://login.microsoftonline.com/{TID}/oauth2/v2.0/devicecode","http_logout_supported":true,"frontchannel_logout_supported":true,"end_session_endpoint":"https://login.microsoftonline.com/{TID}/oauth2/v2.0/logout","claims_supported":["sub","iss","aud"],"kerberos_endpoint":"https://login.microsoftonline.com/{TID}/kerberos","tenant_region_scope":"WW","cloud_instance_name":"microsoftonline.com","cloud_graph_host_name":"graph.windows.net","msgraph_host":"graph.microsoft.com","rbac_url":"https://pas.windows.net"}}"#
    )
}

fn entra_usgov(sub: &str) -> String {
    entra_commercial()
        .replace("login.microsoftonline.com", "login.microsoftonline.us")
        .replace(
            "\"cloud_instance_name\":\"microsoftonline.com\"",
            &format!("\"cloud_instance_name\":\"microsoftonline.us\",\"tenant_region_sub_scope\":\"{sub}\""),
        )
        .replace("\"tenant_region_scope\":\"WW\"", "\"tenant_region_scope\":\"NA\"")
}

const AADSTS90002: &str = r#"{"error":"invalid_tenant","error_description":"AADSTS90002: Tenant 'fabrikam.example' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Trace ID: 0 Correlation ID: 0 Timestamp: 2026-01-01 00:00:00Z","error_codes":[90002],"timestamp":"2026-01-01 00:00:00Z","trace_id":"0","correlation_id":"0","error_uri":"https://login.microsoftonline.com/error?code=90002"}"#;

#[test]
fn entra_metadata_gives_tenant_guid_and_cloud() {
    let s = parse_entra("u", &resp(200, "application/json", &entra_commercial()));
    assert_eq!(
        s.finding,
        Finding::Provider {
            provider: crate::config::ProviderKind::Microsoft,
            tenant: Some(TID.into()),
            cloud: Some(crate::config::Cloud::Global)
        }
    );
    for (sub, cloud) in [
        ("DODCON", crate::config::Cloud::Usgov),
        ("DOD", crate::config::Cloud::UsgovDod),
    ] {
        let s = parse_entra("u", &resp(200, "application/json", &entra_usgov(sub)));
        assert!(
            matches!(s.finding, Finding::Provider { cloud: Some(c), .. } if c == cloud),
            "{sub}: {s:?}"
        );
    }
}

#[test]
fn entra_aadsts90002_html_and_500_are_told_apart() {
    let s = parse_entra("u", &resp(400, "application/json", AADSTS90002));
    assert_eq!(s.finding, Finding::NotEntra);
    let s = parse_entra(
        "u",
        &resp(200, "text/html", "<html><body>sign in</body></html>"),
    );
    assert_eq!(s.finding, Finding::Failed);
    assert!(s.why.contains("HTML"), "{}", s.why);
    let s = parse_entra(
        "u",
        &resp(500, "application/json", "{\"error\":\"server_error\"}"),
    );
    assert_eq!(s.finding, Finding::Failed);
    assert!(s.why.contains("500"), "{}", s.why);
}

#[test]
fn consumer_domains_are_known_offline() {
    for (d, p) in [
        ("gmail.com", "google"),
        ("googlemail.com", "google"),
        ("outlook.com", "microsoft"),
        ("hotmail.co.uk", "microsoft"),
        ("live.de", "microsoft"),
        ("msn.com", "microsoft"),
        ("yahoo.com", "yahoo"),
        ("aol.com", "aol"),
    ] {
        let s = consumer(d).unwrap_or_else(|| panic!("{d}"));
        assert!(
            matches!(s.finding, Finding::Provider { provider, .. } if provider.as_str() == p),
            "{d}"
        );
    }
    for d in ["contoso.com", "live.contoso.com", "outlook.contoso.co.uk"] {
        assert!(consumer(d).is_none(), "{d}");
    }
}

#[test]
fn mx_hosts_are_classified() {
    let mx = |h: &str| {
        classify_mx(
            "d",
            &[Mx {
                preference: 0,
                host: h.into(),
            }],
        )
        .finding
    };
    assert!(matches!(
        mx("contoso-com.mail.protection.outlook.com"),
        Finding::Provider {
            provider: crate::config::ProviderKind::Microsoft,
            ..
        }
    ));
    assert!(matches!(
        mx("contoso-com.l-v1.mx.microsoft"),
        Finding::Provider {
            provider: crate::config::ProviderKind::Microsoft,
            ..
        }
    ));
    assert!(matches!(
        mx("alt2.aspmx.l.google.com"),
        Finding::Provider {
            provider: crate::config::ProviderKind::Google,
            ..
        }
    ));
    assert!(matches!(
        mx("eu-smtp-inbound-1.mimecast.com"),
        Finding::Gateway(_)
    ));
    assert!(matches!(mx("mx0a-001.pphosted.com"), Finding::Gateway(_)));
    assert!(matches!(mx("mx.example.net"), Finding::OtherMx(_)));
}

const AUTOCONFIG: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.net">
    <domain>example.net</domain>
    <incomingServer type="imap">
      <hostname>imap.example.net</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>OAuth2</authentication>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <incomingServer type="pop3">
      <hostname>pop.example.net</hostname>
      <port>110</port>
      <socketType>plain</socketType>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.%EMAILDOMAIN%</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <authentication>OAuth2</authentication>
    </outgoingServer>
  </emailProvider>
  <oAuth2>
    <issuer>https://auth.example.net</issuer>
    <scope>https://example.net/imap offline_access</scope>
    <authURL>https://auth.example.net/authorize</authURL>
    <tokenURL>https://auth.example.net/token</tokenURL>
  </oAuth2>
</clientConfig>"#;

#[test]
fn autoconfig_gives_servers_tls_and_oauth_block_and_skips_plain_text() {
    let s = parse_autoconfig(
        SignalKind::Ispdb,
        "u",
        "a@example.net",
        &resp(200, "text/xml", AUTOCONFIG),
    );
    let Finding::Servers { hosts, auth } = s.finding else {
        panic!("{s:?}")
    };
    assert_eq!(
        hosts.len(),
        2,
        "the plain-text POP3 server is skipped: {hosts:?}"
    );
    assert_eq!(hosts[0].host, "imap.example.net");
    assert_eq!(hosts[0].tls, crate::config::TlsMode::Implicit);
    assert!(hosts[0].oauth);
    assert_eq!(hosts[1].host, "smtp.example.net");
    assert_eq!(hosts[1].tls, crate::config::TlsMode::Starttls);
    let auth = auth.unwrap();
    assert_eq!(
        auth.token_url.as_deref(),
        Some("https://auth.example.net/token")
    );
    assert_eq!(auth.scopes, ["https://example.net/imap", "offline_access"]);
    let bad = parse_autoconfig(
        SignalKind::Autoconfig,
        "u",
        "a@b.c",
        &resp(200, "text/html", "<html/>"),
    );
    assert_eq!(bad.finding, Finding::Failed);
}

#[test]
fn metadata_with_registration_endpoint() {
    let body = r#"{"issuer":"https://idp.example.net","authorization_endpoint":"https://idp.example.net/auth","token_endpoint":"https://idp.example.net/token","registration_endpoint":"https://idp.example.net/reg","scopes_supported":["openid","offline_access","urn:example:imap","profile"]}"#;
    let s = parse_metadata("u", &resp(200, "application/json", body));
    let Finding::AuthServer(a) = &s.finding else {
        panic!("{s:?}")
    };
    assert_eq!(
        a.registration_url.as_deref(),
        Some("https://idp.example.net/reg")
    );
    assert!(s.why.contains("RFC 7591"));
    let http_elsewhere = body.replace(
        "https://idp.example.net/token",
        "http://idp.example.net/token",
    );
    assert_eq!(
        parse_metadata("u", &resp(200, "application/json", &http_elsewhere)).finding,
        Finding::Failed
    );
}

fn sig(kind: SignalKind, f: Finding) -> Signal {
    Signal::new(kind, "asked", f, "why")
}

fn ms_entra(cloud: crate::config::Cloud) -> Signal {
    sig(
        SignalKind::Entra,
        Finding::Provider {
            provider: crate::config::ProviderKind::Microsoft,
            tenant: Some(TID.into()),
            cloud: Some(cloud),
        },
    )
}

fn google_mx() -> Signal {
    sig(
        SignalKind::Mx,
        Finding::Provider {
            provider: crate::config::ProviderKind::Google,
            tenant: None,
            cloud: None,
        },
    )
}

#[test]
fn gateway_mx_is_decided_by_entra_and_autodiscover() {
    let o = Options::default();
    let d = decide::decide(
        "a@c.com",
        "c.com",
        vec![
            sig(SignalKind::Mx, Finding::Gateway("x.mimecast.com".into())),
            ms_entra(crate::config::Cloud::Global),
            sig(SignalKind::Autodiscover, Finding::ExchangeMailbox(true)),
        ],
        &o,
    );
    assert_eq!(d.verdict, Verdict::Decided, "{d:?}");
    assert_eq!(d.tenant.as_deref(), Some(TID));
    assert_eq!(
        d.server(crate::service::Service::Imap).unwrap().host,
        "outlook.office365.com"
    );
    // Exchange Online does not host it: the tenant alone decides nothing.
    let d = decide::decide(
        "a@c.com",
        "c.com",
        vec![
            sig(SignalKind::Mx, Finding::Gateway("x.mimecast.com".into())),
            ms_entra(crate::config::Cloud::Global),
            sig(SignalKind::Autodiscover, Finding::ExchangeMailbox(false)),
        ],
        &o,
    );
    assert_eq!(d.verdict, Verdict::Unknown, "{d:?}");
    assert!(
        d.fix.iter().any(|f| f.contains("--provider")),
        "{:?}",
        d.fix
    );
}

#[test]
fn google_mx_against_an_entra_mailbox_is_a_conflict_that_names_the_flags() {
    let signals = vec![
        google_mx(),
        ms_entra(crate::config::Cloud::Global),
        sig(SignalKind::Autodiscover, Finding::ExchangeMailbox(true)),
    ];
    let d = decide::decide("a@c.com", "c.com", signals.clone(), &Options::default());
    assert_eq!(d.verdict, Verdict::Conflict);
    assert!(
        d.fix.iter().any(|f| f.contains("--provider google")),
        "{:?}",
        d.fix
    );
    assert!(
        d.fix
            .iter()
            .any(|f| f.contains(&format!("--provider microsoft --tenant {TID}"))),
        "{:?}",
        d.fix
    );
    let o = Options {
        provider: Some(crate::config::ProviderKind::Google),
        ..Options::default()
    };
    let d = decide::decide("a@c.com", "c.com", signals, &o);
    assert_eq!(d.verdict, Verdict::Decided);
    assert_eq!(d.provider, Some(crate::config::ProviderKind::Google));
}

#[test]
fn national_clouds_pick_their_hosts() {
    for (cloud, host) in [
        (crate::config::Cloud::Usgov, "smtp.office365.us"),
        (crate::config::Cloud::UsgovDod, "outlook-dod.office365.us"),
    ] {
        let d = decide::decide("a@c.us", "c.us", vec![ms_entra(cloud)], &Options::default());
        assert_eq!(d.cloud, Some(cloud));
        assert_eq!(d.server(crate::service::Service::Smtp).unwrap().host, host);
    }
}

#[test]
fn addresses_and_names() {
    assert_eq!(account_name("alice@contoso.com"), "alice-contoso");
    assert_eq!(
        account_name("Bob.Smith+x@mail.Example.org"),
        "bob.smith-x-mail"
    );
    assert!(split_address("alice").is_err());
    assert!(split_address("alice@localhost").is_err());
    assert!(split_address("a b@c.com").is_err());
    assert_eq!(split_address(" a@C.com ").unwrap().1, "c.com");
}

#[test]
fn env_options_are_checked() {
    let o = Options::from_vars(|k| match k {
        "MAILOAUTH_DNS_SERVER" => Some("127.0.0.1:5353".into()),
        "MAILOAUTH_DISCOVERY_AUTOCONFIG_URLS" => {
            Some("https://127.0.0.1:1/{domain} https://x/{email}".into())
        }
        _ => None,
    })
    .unwrap();
    assert_eq!(o.autoconfig_urls.len(), 2);
    assert!(
        Options::from_vars(
            |k| (k == "MAILOAUTH_DISCOVERY_ENTRA_URL").then(|| "http://evil/".into())
        )
        .is_err()
    );
    assert!(Options::from_vars(|k| (k == "MAILOAUTH_DNS_SERVER").then(|| "nope".into())).is_err());
}
