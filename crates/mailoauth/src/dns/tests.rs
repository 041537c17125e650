//! The resolver against scripted name servers on loopback: what real servers do
//! (answers, NXDOMAIN, truncation) and what hostile or broken ones do (spoofed
//! ids, records for other names, garbage, silence).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

/// How the scripted server behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answer from the zone.
    Normal,
    /// Send garbage, a reply with another id, then the real answer.
    SpoofFirst,
    /// Over UDP, say "truncated" with no records; answer fully over TCP.
    Truncate,
    /// Never answer.
    Silent,
    /// SERVFAIL everything.
    ServFail,
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// The zone: a few names of each type, one CNAME, and for `evil.test.` an
/// extra record for a name nobody asked about.
fn answer(q: &Message) -> Message {
    let query = &q.queries[0];
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.add_query(query.clone());
    let qn = query.name().to_ascii().to_ascii_lowercase();
    let rec = |n: &str, d: RData| Record::from_rdata(name(n), 60, d);
    let recs: Vec<Record> = match (qn.as_str(), query.query_type()) {
        ("mail.test.", RecordType::A) => vec![rec("mail.test.", RData::A(A::new(192, 0, 2, 1)))],
        ("mail.test.", RecordType::AAAA) => vec![rec(
            "mail.test.",
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        )],
        ("alias.test.", RecordType::A) => vec![
            rec("alias.test.", RData::CNAME(CNAME(name("mail.test.")))),
            rec("mail.test.", RData::A(A::new(192, 0, 2, 1))),
        ],
        ("evil.test.", RecordType::A) => vec![
            rec("bank.test.", RData::A(A::new(6, 6, 6, 6))),
            rec("evil.test.", RData::A(A::new(192, 0, 2, 9))),
        ],
        ("host.corp.test.", RecordType::A) => {
            vec![rec("host.corp.test.", RData::A(A::new(192, 0, 2, 7)))]
        }
        ("contoso.test.", RecordType::MX) => vec![
            rec(
                "contoso.test.",
                RData::MX(MX::new(20, name("backup.contoso.test."))),
            ),
            rec(
                "contoso.test.",
                RData::MX(MX::new(
                    10,
                    name("contoso-test.mail.protection.outlook.com."),
                )),
            ),
        ],
        ("_submission._tcp.contoso.test.", RecordType::SRV) => {
            vec![rec(
                "_submission._tcp.contoso.test.",
                RData::SRV(SRV::new(0, 1, 587, name("smtp.contoso.test."))),
            )]
        }
        ("contoso.test.", RecordType::TXT) => vec![rec(
            "contoso.test.",
            RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()])),
        )],
        ("mail.test.", _)
        | ("alias.test.", _)
        | ("evil.test.", _)
        | ("host.corp.test.", _)
        | ("contoso.test.", _) => vec![],
        _ => {
            m.metadata.response_code = ResponseCode::NXDomain;
            vec![]
        }
    };
    m.answers = recs;
    m
}

struct Server {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
}

fn server(mode: Mode) -> Server {
    // DNS serves UDP and TCP on one port: find a port free for both.
    let (udp, tcp) = (0..50)
        .find_map(|_| {
            let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
            let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
            Some((udp, tcp))
        })
        .expect("a loopback port free for UDP and TCP");
    let addr = udp.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let count = queries.clone();
    // The threads end with the test process; every socket has a read timeout.
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        udp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut a = answer(&q);
            match mode {
                Mode::Silent => continue,
                Mode::ServFail => {
                    a.answers.clear();
                    a.metadata.response_code = ResponseCode::ServFail;
                }
                Mode::SpoofFirst => {
                    udp.send_to(b"\x00\x01garbage", from).unwrap();
                    let mut spoof = a.clone();
                    spoof.metadata.id = q.metadata.id.wrapping_add(1);
                    spoof.answers = vec![Record::from_rdata(
                        q.queries[0].name().clone(),
                        60,
                        RData::A(A::new(6, 6, 6, 6)),
                    )];
                    udp.send_to(&spoof.to_vec().unwrap(), from).unwrap();
                }
                Mode::Truncate => {
                    a.answers.clear();
                    a.metadata.truncation = true;
                }
                Mode::Normal => {}
            }
            udp.send_to(&a.to_vec().unwrap(), from).unwrap();
        }
    });
    std::thread::spawn(move || {
        for s in tcp.incoming() {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut body).is_err() {
                continue;
            }
            let a = answer(&Message::from_vec(&body).unwrap()).to_vec().unwrap();
            let mut out = (a.len() as u16).to_be_bytes().to_vec();
            out.extend(a);
            let _ = s.write_all(&out);
        }
    });
    Server { addr, queries }
}

use std::io::{Read, Write};

fn resolver(servers: &[&Server]) -> Resolver {
    Resolver::with_servers(servers.iter().map(|s| s.addr).collect(), Hosts::default())
        .timeout(Duration::from_millis(300))
}

#[test]
fn addresses_come_from_the_name_server_ipv4_first() {
    let s = server(Mode::Normal);
    let ips = resolver(&[&s]).lookup_ip("mail.test").unwrap();
    assert_eq!(
        ips,
        vec![
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "2001:db8::1".parse().unwrap()
        ]
    );
    assert_eq!(
        resolver(&[&s]).lookup_ip("alias.test").unwrap(),
        vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn hosts_file_ip_literals_and_localhost_never_ask_the_network() {
    let s = server(Mode::Normal);
    let hosts =
        Hosts::parse("# comment\n10.1.2.3  idp.internal idp # alias\n::1 six\nnot-an-ip x\n");
    let r = Resolver::with_servers(vec![s.addr], hosts);
    assert_eq!(
        r.lookup_ip("IDP").unwrap(),
        vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        r.lookup_ip("six").unwrap(),
        vec!["::1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        r.lookup_ip("127.0.0.1").unwrap(),
        vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        r.lookup_ip("[::1]").unwrap(),
        vec!["::1".parse::<IpAddr>().unwrap()]
    );
    assert!(
        r.lookup_ip("localhost")
            .unwrap()
            .contains(&"127.0.0.1".parse().unwrap())
    );
    assert!(r.lookup_ip("x").is_err(), "a bad hosts line is skipped");
    assert_eq!(
        s.queries.load(Ordering::SeqCst),
        1,
        "only `x` went to the network"
    );
}

#[test]
fn spoofed_and_garbage_replies_are_ignored() {
    let s = server(Mode::SpoofFirst);
    assert_eq!(
        resolver(&[&s]).lookup_ip("mail.test").unwrap()[0],
        "192.0.2.1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn records_for_names_nobody_asked_about_are_ignored() {
    let s = server(Mode::Normal);
    assert_eq!(
        resolver(&[&s]).lookup_ip("evil.test").unwrap(),
        vec!["192.0.2.9".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn a_truncated_reply_is_asked_again_over_tcp() {
    let s = server(Mode::Truncate);
    assert_eq!(resolver(&[&s]).lookup_mx("contoso.test").unwrap().len(), 2);
}

#[test]
fn a_silent_server_is_unreachable_within_timeout_times_attempts() {
    let s = server(Mode::Silent);
    let started = Instant::now();
    let e = resolver(&[&s]).lookup_ip("mail.test").unwrap_err();
    assert!(matches!(e, DnsError::Unreachable { .. }), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_failing_server_hands_over_to_the_next() {
    let bad = server(Mode::ServFail);
    let good = server(Mode::Normal);
    assert!(resolver(&[&bad, &good]).lookup_ip("mail.test").is_ok());
    let e = resolver(&[&bad]).lookup_ip("mail.test").unwrap_err();
    assert!(
        matches!(e, DnsError::Failed { .. }) && e.to_string().contains("Server Failure"),
        "{e}"
    );
}

#[test]
fn unknown_names_are_not_found() {
    let s = server(Mode::Normal);
    let e = resolver(&[&s]).lookup_ip("nowhere.test").unwrap_err();
    assert!(matches!(e, DnsError::NotFound { .. }), "{e:?}");
    assert!(matches!(
        resolver(&[&s]).lookup_ip("bad name!").unwrap_err(),
        DnsError::BadName(_)
    ));
}

#[test]
fn mx_srv_and_txt_records_are_read_in_preference_order() {
    let s = server(Mode::Normal);
    let r = resolver(&[&s]);
    let mx = r.lookup_mx("contoso.test").unwrap();
    assert_eq!(mx[0].host, "contoso-test.mail.protection.outlook.com");
    assert_eq!(mx[1].preference, 20);
    let srv = r.lookup_srv("_submission._tcp.contoso.test").unwrap();
    assert_eq!(
        (srv[0].port, srv[0].target.as_str()),
        (587, "smtp.contoso.test")
    );
    assert_eq!(
        r.lookup_txt("contoso.test").unwrap(),
        vec!["v=spf1 -all".to_owned()]
    );
}

#[test]
fn short_names_go_through_the_search_list() {
    let s = server(Mode::Normal);
    let conf = "nameserver 127.0.0.1\nsearch corp.test\noptions ndots:1 timeout:1 attempts:1\n";
    let mut r = Resolver::from_resolv_conf(conf.as_bytes(), Hosts::default());
    r.servers = vec![s.addr];
    assert_eq!(
        r.lookup_ip("host").unwrap(),
        vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        r.candidates("a.b").unwrap(),
        vec!["a.b.".to_owned(), "a.b.corp.test.".to_owned()]
    );
    assert_eq!(r.candidates("fq.dn.").unwrap(), vec!["fq.dn.".to_owned()]);
}
