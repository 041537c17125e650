//! A connect link for an address alone: the service runs the core's discovery
//! (as `mailoauth add EMAIL` does) and picks the connector — the Microsoft one
//! of the address's tenant over a `common` one, the custom one whose token
//! endpoint the domain's metadata names — or says what it found and to pass
//! `connector`. Real parts: dnsmasq serving the test domains' MX and SRV
//! records, HTTPS stand-ins for Entra's metadata and autodiscover (a CA made
//! here), the test authorization server's RFC 8414 metadata, the real service.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;
#[path = "../../mailoauth-cli/tests/common/discovery.rs"]
mod stand_ins;

use std::collections::HashMap;
use std::time::Instant;

use harness::*;
use serde_json::{Value, json};
use stand_ins::*;

const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const GOV_TID: &str = "0b1d3c2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";

/// Microsoft connectors: one for the contoso tenant, one for any tenant.
const MICROSOFT: &str = "[serve.connectors.ms-contoso]\nprovider = \"microsoft\"\n\
    client_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = \"s1\"\n\
    tenant = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n\n\
    [serve.connectors.ms-any]\nprovider = \"microsoft\"\n\
    client_id = \"66666666-7777-8888-9999-000000000000\"\nclient_secret = \"s2\"\n\n";

struct World {
    dns: Dns,
    https: Https,
}

fn world(issuer: &str) -> World {
    let dns = Dns::start(&[
        "mx-host=contoso.test,contoso-test.mail.protection.outlook.com,0",
        "mx-host=other.test,other-test.mail.protection.outlook.com,0",
        "mx-host=gov.test,gov-test.mail.protection.office365.us,0",
        "mx-host=fabrikam.test,mx.fabrikam.test,10",
        "mx-host=northwind.test,mail.northwind.test,10",
        "srv-host=_imaps._tcp.northwind.test,imap.northwind.test,993,0,1",
        "srv-host=_submissions._tcp.northwind.test,smtp.northwind.test,465,0,1",
    ]);
    let mut r: HashMap<String, Reply> = HashMap::new();
    let e = |d: &str| format!("/entra/{d}/v2.0/.well-known/openid-configuration");
    r.insert(e("contoso.test"), entra(TID, None));
    r.insert(
        e("other.test"),
        entra("4f5a6b7c-8d9e-4f0a-9b1c-2d3e4f5a6b7c", None),
    );
    r.insert(e("gov.test"), entra(GOV_TID, Some("DODCON")));
    for d in ["fabrikam.test", "northwind.test"] {
        r.insert(e(d), aadsts90002(d));
    }
    for who in ["alice@contoso.test", "olga@other.test"] {
        r.insert(format!("/autodiscover/{who}"), exo_mailbox());
    }
    r.insert(
        "/meta/northwind.test".into(),
        reply(
            200,
            "application/json",
            format!(
                r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/auth","token_endpoint":"{issuer}/token","response_types_supported":["code"],"code_challenge_methods_supported":["S256"],"scopes_supported":["openid","email","offline_access","https://outlook.test/IMAP.AccessAsUser.All"]}}"#
            ),
        ),
    );
    let https = Https::start(&[], r);
    World { dns, https }
}

impl World {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MAILOAUTH_DNS_SERVER", self.dns.addr.clone()),
            (
                "MAILOAUTH_DISCOVERY_CA_FILE",
                self.https.ca_file.display().to_string(),
            ),
            (
                "MAILOAUTH_DISCOVERY_ENTRA_URL",
                self.https
                    .url("/entra/{domain}/v2.0/.well-known/openid-configuration"),
            ),
            (
                "MAILOAUTH_DISCOVERY_AUTODISCOVER_URL",
                self.https.url("/autodiscover/{email}"),
            ),
            (
                "MAILOAUTH_DISCOVERY_AUTOCONFIG_URLS",
                self.https.url("/autoconfig/{domain}"),
            ),
            (
                "MAILOAUTH_DISCOVERY_ISPDB_URL",
                self.https.url("/ispdb/{domain}"),
            ),
            (
                "MAILOAUTH_DISCOVERY_METADATA_URLS",
                self.https.url("/meta/{domain}"),
            ),
        ]
    }

    fn node(&self, setup: &Setup) -> Node {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        setup.start_another_with(&env)
    }
}

/// `POST /v1/connect-links` with an address alone: (status, body, seconds).
fn link_for(node: &Node, key: &str, email: &str) -> (u16, Value, f64) {
    let started = Instant::now();
    let (st, v) = node.call(
        "POST",
        "/v1/connect-links",
        Some(key),
        Some(&json!({"email": email})),
    );
    (st, v, started.elapsed().as_secs_f64())
}

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_link_for_an_address_alone_gets_the_connector_discovery_decides() {
    let setup = Setup::new("sqlite", &[]);
    let w = world(&setup.oauth.issuer);
    setup.write_config_with("", MICROSOFT);
    let key = setup.key(&["accounts:write"], &[]);
    let node = w.node(&setup);

    // The tenant's own connector wins over the one for any tenant.
    let (st, v, secs) = link_for(&node, &key, "alice@contoso.test");
    assert_eq!(st, 201, "{v} {}", node.log());
    assert_eq!(v["connector"], "ms-contoso", "{v}");
    assert_eq!(v["discovery"]["provider"], "microsoft", "{v}");
    assert_eq!(v["discovery"]["tenant"], TID, "{v}");
    assert!(secs < 6.0, "discovery took {secs} s");
    // The link works: its page names the address.
    let url = v["url"].as_str().unwrap();
    let path = &url[url.find("/connect/").unwrap()..];
    let (st, _, page) = node.send("GET", path, &[], "");
    assert_eq!(st, 200, "{page}");
    assert!(page.contains("alice@contoso.test"), "{page}");

    // Another tenant: only the connector for any tenant fits.
    let (st, v, _) = link_for(&node, &key, "olga@other.test");
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["connector"], "ms-any", "{v}");

    // A custom provider: the connector whose token endpoint the domain's
    // RFC 8414 metadata names.
    let (st, v, _) = link_for(&node, &key, "dave@northwind.test");
    assert_eq!(st, 201, "{v} {}", node.log());
    assert_eq!(v["connector"], "people", "{v}");
    assert_eq!(
        v["discovery"]["auth"]["token_url"],
        format!("{}/token", setup.oauth.issuer)
    );

    // Naming the connector still skips discovery (and says which).
    let (st, v) = node.call(
        "POST",
        "/v1/connect-links",
        Some(&key),
        Some(&json!({"connector": "people", "email": "zed@nowhere.test"})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["connector"], "people");
    assert!(v.get("discovery").is_none(), "{v}");
}

#[test]
fn an_address_no_connector_fits_is_refused_with_what_was_found_and_the_fix() {
    let setup = Setup::new("sqlite", &[]);
    let w = world(&setup.oauth.issuer);
    setup.write_config_with("", MICROSOFT);
    let key = setup.key(&["accounts:write"], &[]);
    let node = w.node(&setup);

    // GCC High: no connector is in that cloud.
    let (st, v, _) = link_for(&node, &key, "gina@gov.test");
    assert_eq!(st, 400, "{v}");
    let m = message(&v);
    assert!(m.contains("no connector fits gina@gov.test"), "{m}");
    assert!(m.contains("cloud usgov") && m.contains(GOV_TID), "{m}");
    assert!(
        m.contains("`ms-contoso` (provider microsoft, tenant"),
        "{m}"
    );
    assert!(m.contains("pass `connector`"), "{m}");

    // Nothing decides the provider: what was found, and to pass `connector`.
    let (st, v, _) = link_for(&node, &key, "erin@fabrikam.test");
    assert_eq!(st, 400, "{v}");
    let m = message(&v);
    assert!(m.contains("not enough was found"), "{m}");
    assert!(m.contains("mx.fabrikam.test"), "{m}");
    assert!(m.contains("pass `connector`"), "{m}");

    // Not an address.
    let (st, v, _) = link_for(&node, &key, "no-at-sign");
    assert_eq!(st, 400, "{v}");
    assert!(message(&v).contains("email"), "{v}");

    // Two connectors equally fit: neither is guessed.
    let both = format!(
        "{MICROSOFT}[serve.connectors.ms-contoso-too]\nprovider = \"microsoft\"\n\
         client_id = \"22222222-2222-3333-4444-555555555555\"\nclient_secret = \"s3\"\n\
         tenant = \"contoso.test\"\n\n"
    );
    drop(node);
    setup.write_config_with("", &both);
    let node = w.node(&setup);
    let (st, v, _) = link_for(&node, &key, "alice@contoso.test");
    assert_eq!(st, 400, "{v}");
    let m = message(&v);
    assert!(
        m.contains("`ms-contoso`") && m.contains("`ms-contoso-too`") && m.contains("both fit"),
        "{m}"
    );
    // No link was stored for any refused request.
    assert_eq!(
        setup.query("SELECT COUNT(*) FROM connect_links").trim(),
        "0"
    );
}
