//! Host parsing: the forms a host may be written in (`cloud:ip`, an agent
//! id, `{ip, bk_cloud_id, bk_agent_id}`) in the config and in hosts files, and
//! the validator's rules for a group's hosts and hosts file.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use super::validate::Validator;
use crate::model::{ApiVersion, Host};

/// Parses a hosts file: one host per line (`cloud:ip` or an agent id), `#`
/// starts a comment. Returns the hosts and a problem per bad line.
pub(crate) fn parse_hosts_file(text: &str, api: ApiVersion) -> (Vec<Host>, Vec<String>) {
    let mut hosts = Vec::new();
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        match parse_host_text(entry) {
            Ok(host) if api == ApiVersion::V1 && host.ip.is_none() => {
                problems.push(format!(
                    "line {}: {entry}: GSE 1.x asks by cloud:ip; this host has no ip",
                    n + 1
                ));
            }
            Ok(host) => {
                if seen.insert(host.clone()) {
                    hosts.push(host);
                }
            }
            Err(rule) => problems.push(format!("line {}: {entry}: {rule}", n + 1)),
        }
    }
    (hosts, problems)
}

/// Parses one host entry: `"cloud:ip"`, an agent id, or a map.
pub(crate) fn parse_host_value(value: &serde_yaml_ng::Value) -> Result<Host, String> {
    use serde_yaml_ng::Value;
    match value {
        Value::String(text) => parse_host_text(text),
        Value::Mapping(map) => {
            let mut host = Host::default();
            for (k, v) in map {
                let key = k.as_str().unwrap_or("");
                match key {
                    "ip" => host.ip = Some(parse_ipv4(v.as_str().unwrap_or(""))?),
                    "bk_cloud_id" => host.bk_cloud_id = Some(parse_cloud(v)?),
                    "bk_agent_id" => {
                        host.agent_id = Some(parse_agent_id(v.as_str().unwrap_or(""))?)
                    }
                    other => {
                        return Err(format!(
                            "unknown host key {other:?} (use ip, bk_cloud_id, bk_agent_id)"
                        ));
                    }
                }
            }
            if host.ip.is_some() && host.bk_cloud_id.is_none() {
                host.bk_cloud_id = Some(0);
            }
            if host.ip.is_none() && host.agent_id.is_none() {
                return Err("a host needs an ip or a bk_agent_id".into());
            }
            Ok(host)
        }
        _ => Err("a host is \"cloud:ip\", an agent id, or {ip, bk_cloud_id, bk_agent_id}".into()),
    }
}

/// Parses `"cloud:ip"` or a GSE 2.0 agent id.
pub(crate) fn parse_host_text(text: &str) -> Result<Host, String> {
    let text = text.trim();
    if let Some((cloud, ip)) = text.split_once(':') {
        let cloud: i64 = cloud
            .parse()
            .map_err(|_| format!("cloud id {cloud:?} is not a non-negative integer"))?;
        if cloud < 0 {
            return Err(format!("cloud id {cloud} must not be negative"));
        }
        return Ok(Host {
            bk_cloud_id: Some(cloud),
            ip: Some(parse_ipv4(ip)?),
            agent_id: None,
        });
    }
    Ok(Host {
        agent_id: Some(parse_agent_id(text)?),
        ..Host::default()
    })
}

fn parse_ipv4(text: &str) -> Result<Ipv4Addr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 address"))
}

fn parse_cloud(value: &serde_yaml_ng::Value) -> Result<i64, String> {
    match value.as_i64() {
        Some(cloud) if cloud >= 0 => Ok(cloud),
        _ => Err(format!(
            "bk_cloud_id {} must be a non-negative integer",
            yaml_text(value)
        )),
    }
}

/// Checks a GSE 2.0 agent id: 1-64 ASCII letters and digits.
pub(crate) fn parse_agent_id(text: &str) -> Result<String, String> {
    let ok =
        !text.is_empty() && text.len() <= 64 && text.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is neither cloud:ip nor an agent id (1-64 letters and digits)"
        ))
    }
}

impl Validator<'_> {
    pub(super) fn hosts_file(&mut self, key: &str, file: &Path, api: ApiVersion) {
        let Some(bytes) = self.read_file(key, file) else {
            return;
        };
        match String::from_utf8(bytes) {
            Ok(text) => {
                for problem in parse_hosts_file(&text, api).1 {
                    self.problem(key, file.display(), &problem);
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
                    let rule = "GSE 1.x asks by cloud:ip; this host has no ip";
                    self.problem(key, host.display(), rule);
                }
                Ok(host) => {
                    if seen.insert(host.clone()) {
                        hosts.push(host);
                    }
                }
                Err(rule) => self.problem(key, yaml_text(value), &rule),
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
