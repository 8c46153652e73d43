//! Host parsing: the forms a host may be written in (`cloud:ip`, an agent
//! id, `{ip, bk_cloud_id, bk_agent_id}`) in the config and in hosts files, and
//! the validator's rules for a group's hosts and hosts file.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use super::validate::Validator;
use crate::model::{ApiVersion, Host};

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

/// Parses a hosts file: one host per line (`cloud:ip` or an agent id), `#`
/// starts a comment. Hands each good line's host to `each`, in file order
/// (a host written twice comes twice: callers de-duplicate by the key they
/// ask with), keeping no list of its own, and returns every bad line.
pub(crate) fn parse_hosts_file(
    text: &str,
    api: ApiVersion,
    mut each: impl FnMut(Host),
) -> Vec<BadLine> {
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let parsed = parse_host_text(entry).and_then(|host| {
            if api == ApiVersion::V1 && host.ip.is_none() {
                Err(V1_NEEDS_IP)
            } else {
                Ok(host)
            }
        });
        match parsed {
            Ok(host) => each(host),
            Err(rule) => bad.push(BadLine { line: n + 1, rule }),
        }
    }
    bad
}

/// Parses one host entry: `"cloud:ip"`, an agent id, or a map.
pub(crate) fn parse_host_value(value: &serde_yaml_ng::Value) -> Result<Host, &'static str> {
    use serde_yaml_ng::Value;
    match value {
        Value::String(text) => parse_host_text(text),
        Value::Mapping(map) => {
            let mut host = Host::default();
            for (k, v) in map {
                match k.as_str().unwrap_or("") {
                    "ip" => host.ip = Some(parse_ipv4(v.as_str().unwrap_or(""))?),
                    "bk_cloud_id" => host.bk_cloud_id = Some(parse_cloud(v)?),
                    "bk_agent_id" => {
                        host.agent_id = Some(parse_agent_id(v.as_str().unwrap_or(""))?)
                    }
                    _ => return Err("has an unknown key (use ip, bk_cloud_id, bk_agent_id)"),
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
        _ => Err("a host is \"cloud:ip\", an agent id, or {ip, bk_cloud_id, bk_agent_id}"),
    }
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

fn parse_cloud(value: &serde_yaml_ng::Value) -> Result<i64, &'static str> {
    match value.as_i64() {
        Some(cloud) if cloud >= 0 => Ok(cloud),
        _ => Err("bk_cloud_id must be a non-negative integer"),
    }
}

/// Checks a GSE 2.0 agent id: 1-64 ASCII letters and digits, or the legacy
/// id `cloud:ip` GSE 2.0 gives agents not yet upgraded (`0:10.0.0.6`),
/// returned in its plain form.
pub(crate) fn parse_agent_id(text: &str) -> Result<String, &'static str> {
    if let Some((cloud, ip)) = text.split_once(':') {
        return Ok(format!("{}:{}", parse_cloud_text(cloud)?, parse_ipv4(ip)?));
    }
    let ok =
        !text.is_empty() && text.len() <= 64 && text.bytes().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(text.to_string())
    } else {
        Err("is neither cloud:ip nor an agent id (1-64 letters and digits)")
    }
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
                for bad in parse_hosts_file(&text, api, drop) {
                    let at = format!("{} line {}", file.display(), bad.line);
                    self.problem(key, at, bad.rule);
                }
            }
            Err(_) => self.problem(key, file.display(), "is not UTF-8 text"),
        }
    }

    pub(super) fn hosts(
        &mut self,
        path: &str,
        raw: &[serde_yaml_ng::Value],
        api: ApiVersion,
    ) -> Vec<Host> {
        let mut seen = HashSet::new();
        let mut hosts = Vec::with_capacity(raw.len());
        for (i, value) in raw.iter().enumerate() {
            let key = format!("{path}.hosts[{i}]");
            match parse_host_value(value) {
                Ok(host) if api == ApiVersion::V1 && host.ip.is_none() => {
                    self.problem(key, host.display(), V1_NEEDS_IP);
                }
                Ok(host) => {
                    if seen.insert(host.clone()) {
                        hosts.push(host);
                    }
                }
                Err(rule) => self.problem(key, yaml_text(value), rule),
            }
        }
        hosts
    }
}

fn yaml_text(value: &serde_yaml_ng::Value) -> String {
    match value {
        serde_yaml_ng::Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .replace('\n', ", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(yaml: &str) -> Result<Host, &'static str> {
        parse_host_value(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn legacy_cloud_ip_ids_are_agent_ids_wherever_an_agent_id_is() {
        assert_eq!(parse_agent_id("0:10.0.0.6"), Ok("0:10.0.0.6".into()));
        assert_eq!(parse_agent_id("02:10.0.0.6"), Ok("2:10.0.0.6".into()));
        assert!(parse_agent_id("0:10.0.0.300").is_err());
        assert!(parse_agent_id("-1:10.0.0.6").is_err());
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
