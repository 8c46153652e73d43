//! Host parsing: the forms a host may be written in (`cloud:ip`, an agent
//! id, `{ip, bk_cloud_id, bk_agent_id}`) in the config and in hosts files, and
//! the validator's rules for a group's hosts and hosts file.

use std::net::Ipv4Addr;
use std::path::Path;

use super::validate::Validator;
use crate::model::{ApiVersion, FirstSeen, Host};

/// The rule a host without an ip breaks in a GSE 1.x group.
const V1_NEEDS_IP: &str = "GSE 1.x asks by cloud:ip; this host has no ip";

/// A bad line of a hosts file: its number and the rule it breaks. What the
/// line says is never quoted: a hosts file pointed at the wrong file (a
/// password file, a key) must not end up in logs or answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    /// 1-based line number.
    pub(crate) line: usize,
    /// The rule it breaks.
    pub(crate) rule: &'static str,
}

/// The entries of a hosts file (one host per line, `cloud:ip` or an agent
/// id, `#` starts a comment), one at a time, keeping no list: callers keep
/// what they need and de-duplicate by the key they ask with. Each item is a
/// line's 1-based number and its host or the rule it breaks (blank and
/// comment lines skipped).
pub(crate) fn host_lines(
    text: &str,
    api: ApiVersion,
) -> impl Iterator<Item = (usize, Result<Host, &'static str>)> {
    text.lines().enumerate().filter_map(move |(n, line)| {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            return None;
        }
        let parsed = parse_host_text(entry).and_then(|host| {
            if api == ApiVersion::V1 && host.ip.is_none() {
                Err(V1_NEEDS_IP)
            } else {
                Ok(host)
            }
        });
        Some((n + 1, parsed))
    })
}

/// One inline host as read from the configuration: the host, or what was
/// written (cut) and the rule it breaks. Read straight from the parser's
/// events, with no YAML tree per host, so that a million inline hosts cost
/// what their hosts do.
#[derive(Debug)]
pub(crate) struct RawHost(Result<Host, BadHost>);

/// An inline host that breaks a rule: what was written, cut, and the rule.
#[derive(Debug)]
struct BadHost {
    written: String,
    rule: &'static str,
}

/// The rule a host of another shape breaks.
const HOST_SHAPE: &str = "a host is \"cloud:ip\", an agent id, or {ip, bk_cloud_id, bk_agent_id}";

impl RawHost {
    /// A host written as a string: `"cloud:ip"` or an agent id.
    pub(super) fn from_text(text: &str) -> RawHost {
        RawHost(parse_host_text(text).map_err(|rule| BadHost::new(text, rule)))
    }

    /// A host written as a map, its keys and values in the order written.
    pub(super) fn from_fields(fields: &[(HostKey, Scalar)]) -> RawHost {
        RawHost(host_from_fields(fields).map_err(|rule| BadHost::new(&fields_text(fields), rule)))
    }
}

impl<'de> serde::Deserialize<'de> for RawHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HostVisitor).map(RawHost)
    }
}

struct HostVisitor;

impl<'de> serde::de::Visitor<'de> for HostVisitor {
    type Value = Result<Host, BadHost>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(HOST_SHAPE)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(RawHost::from_text(text).0)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Vec<(HostKey, Scalar)> = Vec::with_capacity(3);
        while let Some(key) = map.next_key::<HostKey>()? {
            fields.push((key, map.next_value()?));
        }
        Ok(RawHost::from_fields(&fields).0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Err(BadHost::new("[…]", HOST_SHAPE)))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Err(BadHost::new(&n.to_string(), HOST_SHAPE)))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Err(BadHost::new(&n.to_string(), HOST_SHAPE)))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Ok(Err(BadHost::new(&n.to_string(), HOST_SHAPE)))
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Err(BadHost::new(&b.to_string(), HOST_SHAPE)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(BadHost::new("null", HOST_SHAPE)))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
}

impl BadHost {
    fn new(written: &str, rule: &'static str) -> BadHost {
        BadHost {
            written: super::cut(written.trim(), super::MAX_QUOTE_BYTES),
            rule,
        }
    }
}

/// A key of a host map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostKey {
    Ip,
    Cloud,
    Agent,
    Other(String),
}

impl std::fmt::Display for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostKey::Ip => "ip",
            HostKey::Cloud => "bk_cloud_id",
            HostKey::Agent => "bk_agent_id",
            HostKey::Other(key) => key,
        })
    }
}

impl<'de> serde::Deserialize<'de> for HostKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Scalar::deserialize(d)? {
            Scalar::Text(key) => match key.as_str() {
                "ip" => HostKey::Ip,
                "bk_cloud_id" => HostKey::Cloud,
                "bk_agent_id" => HostKey::Agent,
                _ => HostKey::Other(key),
            },
            other => HostKey::Other(other.to_string()),
        })
    }
}

/// A value of a host map: text, an integer, or something else (shown as written
/// as far as it is a scalar).
#[derive(Debug)]
pub(super) enum Scalar {
    Text(String),
    Int(i64),
    Other(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Text(text) | Scalar::Other(text) => f.write_str(text),
            Scalar::Int(n) => write!(f, "{n}"),
        }
    }
}

impl Scalar {
    fn text(&self) -> &str {
        match self {
            Scalar::Text(text) => text,
            _ => "",
        }
    }
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(text.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Scalar, E> {
        Ok(Scalar::Text(text))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(n))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(n).map_or_else(|_| Scalar::Other(n.to_string()), Scalar::Int))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other(n.to_string()))
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other(b.to_string()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other("null".into()))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Scalar, E> {
        self.visit_unit()
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("[…]".into()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Scalar::Other("{…}".into()))
    }
}

/// A host from the fields of a host map, as written.
fn host_from_fields(fields: &[(HostKey, Scalar)]) -> Result<Host, &'static str> {
    let mut host = Host::default();
    for (i, (key, value)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(k, _)| k == key) {
            return Err("a host map has a key written twice");
        }
        match (key, value) {
            (HostKey::Ip, value) => host.ip = Some(parse_ipv4(value.text())?),
            (HostKey::Cloud, Scalar::Int(cloud)) if *cloud >= 0 => host.bk_cloud_id = Some(*cloud),
            (HostKey::Cloud, _) => return Err("bk_cloud_id must be a non-negative integer"),
            (HostKey::Agent, value) => host.agent_id = Some(parse_agent_id(value.text())?),
            (HostKey::Other(_), _) => {
                return Err("has an unknown key (use ip, bk_cloud_id, bk_agent_id)");
            }
        }
    }
    if host.ip.is_some() && host.bk_cloud_id.is_none() {
        host.bk_cloud_id = Some(0);
    }
    if host.ip.is_none() && host.agent_id.is_none() {
        return Err("a host needs an ip or a bk_agent_id");
    }
    with_legacy_address(host)
}

/// A host map as written, one line: `ip: 10.0.0.1, bk_cloud_id: -1`.
fn fields_text(fields: &[(HostKey, Scalar)]) -> String {
    let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    pairs.join(", ")
}

/// Parses `"cloud:ip"` or a GSE 2.0 agent id.
pub(crate) fn parse_host_text(text: &str) -> Result<Host, &'static str> {
    let text = text.trim();
    if let Some((cloud, ip)) = text.split_once(':') {
        return Ok(Host {
            bk_cloud_id: Some(parse_cloud_text(cloud)?),
            ip: Some(parse_ipv4(ip)?),
            agent_id: None,
        });
    }
    Ok(Host {
        agent_id: Some(parse_agent_id(text)?),
        ..Host::default()
    })
}

fn parse_cloud_text(text: &str) -> Result<i64, &'static str> {
    match text.parse::<i64>() {
        Ok(cloud) if cloud >= 0 => Ok(cloud),
        _ => Err("the cloud id (before ':') must be a non-negative integer"),
    }
}

fn parse_ipv4(text: &str) -> Result<Ipv4Addr, &'static str> {
    text.trim()
        .parse()
        .map_err(|_| "the ip must be an IPv4 address")
}

/// The cloud and address a legacy `cloud:ip` agent id names, read as a
/// host's id is (None for any other id).
pub(crate) fn legacy_address(id: &str) -> Option<(i64, Ipv4Addr)> {
    let (cloud, ip) = id.split_once(':')?;
    Some((parse_cloud_text(cloud).ok()?, parse_ipv4(ip).ok()?))
}

/// Checks a GSE 2.0 agent id: 1-64 ASCII letters and digits, or the legacy
/// id `cloud:ip` GSE 2.0 gives agents not yet upgraded (`0:10.0.0.6`),
/// returned in its plain form.
pub(crate) fn parse_agent_id(text: &str) -> Result<String, &'static str> {
    if let Some((cloud, ip)) = text.split_once(':') {
        return Ok(format!("{}:{}", parse_cloud_text(cloud)?, parse_ipv4(ip)?));
    }
    let ok = !text.is_empty() && text.len() <= 64 && letters_and_digits(text.as_bytes());
    if ok {
        Ok(text.to_string())
    } else {
        Err("is neither cloud:ip nor an agent id (1-64 letters and digits)")
    }
}

/// Whether every byte is an ASCII letter or digit. Bytes, not chars: every
/// byte of a character outside ASCII is not an ASCII letter or digit either.
/// Every byte is looked at, with no branch on each, so the loop runs on
/// vector registers: a hosts file is mostly agent ids (at a million hosts,
/// the per-byte check with an early exit was 6 % of start-up).
fn letters_and_digits(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        let digit = b.wrapping_sub(b'0') < 10;
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        ok & (digit | letter)
    })
}

/// A host whose agent id is a legacy `cloud:ip`: its ip and cloud come from
/// the id when not given, and must agree with it when given.
fn with_legacy_address(mut host: Host) -> Result<Host, &'static str> {
    let Some((cloud, ip)) = host.agent_id.as_deref().and_then(|id| id.split_once(':')) else {
        return Ok(host);
    };
    let (cloud, ip) = (parse_cloud_text(cloud)?, parse_ipv4(ip)?);
    let agrees = host.bk_cloud_id.is_none_or(|c| c == cloud) && host.ip.is_none_or(|i| i == ip);
    if !agrees {
        return Err(
            "bk_agent_id is a legacy cloud:ip id that names another host than its ip and bk_cloud_id",
        );
    }
    host.bk_cloud_id = Some(cloud);
    host.ip = Some(ip);
    Ok(host)
}

impl Validator<'_> {
    pub(super) fn hosts_file(&mut self, key: &str, file: &Path, api: ApiVersion) {
        let Some(bytes) = self.read_file(key, file, super::HOSTS_FILE) else {
            return;
        };
        match String::from_utf8(bytes) {
            Ok(text) => {
                // Only the bad lines matter here: no list of the hosts is made.
                // Written out only while problems are kept (`problem`).
                for (line, parsed) in host_lines(&text, api) {
                    if let Err(rule) = parsed {
                        self.problem(key, format_args!("{} line {line}", file.display()), rule);
                    }
                }
            }
            Err(_) => self.problem(key, file.display(), "is not UTF-8 text"),
        }
    }

    /// A group's inline hosts, de-duplicated in file order; every bad one
    /// is a problem naming its index.
    pub(super) fn hosts(&mut self, path: &str, raw: Vec<RawHost>, api: ApiVersion) -> Vec<Host> {
        let mut hosts = FirstSeen::with_capacity(raw.len());
        for (i, RawHost(parsed)) in raw.into_iter().enumerate() {
            let key = || format!("{path}.hosts[{i}]");
            match parsed {
                Ok(host) if api == ApiVersion::V1 && host.ip.is_none() => {
                    self.problem(key(), host.display(), V1_NEEDS_IP);
                }
                Ok(host) => hosts.push_by(host, |h: &Host| h),
                Err(bad) => self.problem(key(), bad.written, bad.rule),
            }
        }
        hosts.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(yaml: &str) -> Result<Host, &'static str> {
        let RawHost(parsed) = super::super::parse_yaml(yaml).unwrap();
        parsed.map_err(|bad| bad.rule)
    }

    #[test]
    fn letters_and_digits_are_what_ascii_says_they_are() {
        for b in 0..=u8::MAX {
            for at in 0..3 {
                let mut id = *b"a1Z";
                id[at] = b;
                let want = id.iter().all(u8::is_ascii_alphanumeric);
                assert_eq!(letters_and_digits(&id), want, "byte {b:#04x} at {at}");
            }
        }
        assert!(letters_and_digits(b""));
    }

    #[test]
    fn legacy_cloud_ip_ids_are_agent_ids_wherever_an_agent_id_is() {
        assert_eq!(parse_agent_id("0:10.0.0.6"), Ok("0:10.0.0.6".into()));
        assert_eq!(parse_agent_id("02:10.0.0.6"), Ok("2:10.0.0.6".into()));
        assert!(parse_agent_id("0:10.0.0.300").is_err());
        assert!(parse_agent_id("-1:10.0.0.6").is_err());
        for bad in ["", "é1", "ａ1", "0100-1", "a b", &"a".repeat(65)] {
            assert!(parse_agent_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_agent_id(&"Z9".repeat(32)), Ok("Z9".repeat(32)));
        let full = host("{ip: 10.0.0.6, bk_cloud_id: 0, bk_agent_id: \"0:10.0.0.6\"}").unwrap();
        assert_eq!(full.agent_id.as_deref(), Some("0:10.0.0.6"));
        assert_eq!(
            full.query_key(ApiVersion::V2).as_deref(),
            Some("0:10.0.0.6")
        );
        let alone = host("{bk_agent_id: \"3:10.0.0.7\"}").unwrap();
        assert_eq!(
            alone.cloud_ip().as_deref(),
            Some("3:10.0.0.7"),
            "v1 can ask for it too"
        );
        assert!(host("{ip: 10.0.0.6, bk_cloud_id: 0, bk_agent_id: \"0:10.0.0.7\"}").is_err());
        assert!(host("{ip: 10.0.0.6, bk_cloud_id: 1, bk_agent_id: \"0:10.0.0.6\"}").is_err());
    }
}
