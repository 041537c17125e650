//! One DNS question to one server: UDP, then TCP when the reply is truncated.
//!
//! Owns: building the query, matching the reply to it (id, question, source),
//! and the size and time limits. Must not: trust a reply beyond the records
//! that answer the question (names must match; other sections are ignored).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::{Mx, Srv};

/// Largest UDP reply read (EDNS is not offered, so 512 is the protocol's
/// limit; servers that send more are tolerated up to this).
const MAX_UDP: usize = 4096;
/// Most records taken from one answer.
const MAX_ANSWERS: usize = 64;
/// Longest chain of CNAMEs followed inside one answer.
const MAX_CNAME: usize = 8;

/// What a server said.
pub enum Reply {
    /// The records of the asked type (possibly none: "no data").
    Records(Vec<Answer>),
    /// NXDOMAIN.
    NoSuchName,
    /// SERVFAIL, REFUSED and friends: try the next server.
    Refused(String),
}

/// One answering record, reduced to what lookups use.
pub enum Answer {
    /// A or AAAA.
    Ip(std::net::IpAddr),
    /// MX.
    Mx(Mx),
    /// SRV.
    Srv(Srv),
    /// TXT, strings joined.
    Txt(String),
}

impl Answer {
    /// The address, for A/AAAA.
    pub fn ip(self) -> Option<std::net::IpAddr> {
        match self {
            Answer::Ip(ip) => Some(ip),
            _ => None,
        }
    }
    /// The MX record.
    pub fn mx(self) -> Option<Mx> {
        match self {
            Answer::Mx(m) => Some(m),
            _ => None,
        }
    }
    /// The SRV record.
    pub fn srv(self) -> Option<Srv> {
        match self {
            Answer::Srv(s) => Some(s),
            _ => None,
        }
    }
    /// The TXT text.
    pub fn txt(self) -> Option<String> {
        match self {
            Answer::Txt(t) => Some(t),
            _ => None,
        }
    }
}

/// Ask `server` for `rtype` records of the absolute `name`, within `timeout`.
pub fn exchange(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> std::io::Result<Reply> {
    let qname = Name::from_ascii(name).map_err(invalid)?;
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(qname.clone(), rtype));
    let bytes = q.to_vec().map_err(invalid)?;
    let id = q.metadata.id;
    let deadline = Instant::now() + timeout;

    let sock = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    // connect() makes the kernel drop datagrams from any other source.
    sock.connect(server)?;
    sock.send(&bytes)?;
    let mut buf = vec![0u8; MAX_UDP];
    let reply = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ));
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                ));
            }
            Err(e) => return Err(e),
        };
        // A datagram that is not the answer to our question is ignored, not believed.
        match Message::from_vec(&buf[..n]) {
            Ok(m) if matches(&m, id, &qname, rtype) => break m,
            _ => continue,
        }
    };
    let reply = if reply.metadata.truncation {
        tcp_exchange(server, &bytes, id, &qname, rtype, deadline)?
    } else {
        reply
    };
    Ok(classify(reply, &qname, rtype))
}

fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    qname: &Name,
    rtype: RecordType,
    deadline: Instant,
) -> std::io::Result<Message> {
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&server, left())?;
    s.set_write_timeout(Some(left()))?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed)?;
    s.set_read_timeout(Some(left()))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    // The length prefix caps a TCP reply at 64 KiB by construction.
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    s.set_read_timeout(Some(left()))?;
    s.read_exact(&mut body)?;
    match Message::from_vec(&body) {
        Ok(m) if matches(&m, id, qname, rtype) => Ok(m),
        _ => Err(invalid("the TCP reply does not answer the question")),
    }
}

fn matches(m: &Message, id: u16, qname: &Name, rtype: RecordType) -> bool {
    m.metadata.id == id
        && m.metadata.message_type == MessageType::Response
        && m.queries.len() == 1
        && m.queries[0].query_type() == rtype
        && m.queries[0].name().eq_case(qname)
}

fn classify(m: Message, qname: &Name, rtype: RecordType) -> Reply {
    match m.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Reply::NoSuchName,
        other => return Reply::Refused(other.to_string()),
    }
    // Follow CNAMEs within the answer section only, from the asked name.
    let mut names = vec![qname.clone()];
    for _ in 0..MAX_CNAME {
        let next = m.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if names.iter().any(|n| n.eq_case(&r.name)) => Some(c.0.clone()),
            _ => None,
        });
        match next {
            Some(n) if !names.iter().any(|x| x.eq_case(&n)) => names.push(n),
            _ => break,
        }
    }
    let owner_ok = |n: &Name| names.iter().any(|x| x.eq_case(n));
    let text = |n: &Name| n.to_ascii().trim_end_matches('.').to_owned();
    let answers = m
        .answers
        .iter()
        .filter(|r| owner_ok(&r.name))
        .filter_map(|r| match (&r.data, rtype) {
            (RData::A(a), RecordType::A) => Some(Answer::Ip(a.0.into())),
            (RData::AAAA(a), RecordType::AAAA) => Some(Answer::Ip(a.0.into())),
            (RData::MX(mx), RecordType::MX) => Some(Answer::Mx(Mx {
                preference: mx.preference,
                host: text(&mx.exchange),
            })),
            (RData::SRV(s), RecordType::SRV) => Some(Answer::Srv(Srv {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: text(&s.target),
            })),
            (RData::TXT(t), RecordType::TXT) => Some(Answer::Txt(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            )),
            _ => None,
        })
        .take(MAX_ANSWERS)
        .collect();
    Reply::Records(answers)
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}
