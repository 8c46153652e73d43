//! Configuration: the YAML schema, its defaults, validation and secret handling.
//!
//! Two stages, as in blackbox_exporter and ripgrep: [`RawConfig`] is exactly what
//! the user wrote (serde, unknown keys rejected), and [`Config::from_raw`] turns it
//! into typed values, checking every rule and collecting *every* problem with the
//! key path, the bad value and the rule it breaks.
//!
//! This module does no network I/O and knows nothing about metrics. Secrets are
//! wrapped in [`Secret`], whose `Debug` never shows the value.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::gse::{ApiVersion, Host};

mod tls;
pub use tls::{ClientCert, RawTls, TlsConfig};

/// Largest batch GSE 2.0's `list_agent_*` accepts.
pub const V2_MAX_BATCH: usize = 1000;
/// Largest batch we send to GSE 1.x's ESB (no documented cap; nodeman uses 2000).
pub const V1_MAX_BATCH: usize = 2000;

/// A secret string (app secret, token). `Debug` shows `<redacted>`; there is no `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `groups[1].hosts[3]`.
    pub path: String,
    /// The offending value as written (never a secret).
    pub value: String,
    /// The rule that value breaks.
    pub rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.rule)
        } else {
            write!(f, "{}: {}: {}", self.path, self.value, self.rule)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// Where the parse failed (key path).
        path: String,
        /// The parser's message.
        message: String,
    },
    /// The file parsed but breaks one or more rules.
    #[error("invalid config: {}", list_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem, one per line, for `--config.check`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.iter().map(|p| p.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn list_problems(problems: &[Problem]) -> String {
    let parts: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    parts.join("; ")
}

/// The configuration file exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How to reach GSE.
    pub gse: RawGse,
    /// Status poll interval (default 60s).
    pub interval: Option<String>,
    /// Info (version, parent) poll interval (default 10m).
    pub info_interval: Option<String>,
    /// How long a failed agent keeps its last values (default 3 intervals).
    pub stale_after: Option<String>,
    /// CMDB discovery of business hosts.
    pub cmdb: Option<RawCmdb>,
    /// This process's share of the agents.
    pub sharding: Option<RawSharding>,
    /// Metric families never exposed: exact names or regular expressions (anchored).
    #[serde(default)]
    pub metric_deny: Vec<String>,
    /// The host groups.
    #[serde(default)]
    pub groups: Vec<RawGroup>,
    /// OTLP push of the same gauges (off when absent).
    pub otlp: Option<RawOtlp>,
}

/// `otlp:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    /// Collector URL (http/protobuf: `/v1/metrics` is added to a bare host).
    pub endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    pub protocol: Option<String>,
    /// Request headers or gRPC metadata; values may be `${ENV}` and are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time between pushes (default 30s).
    pub interval: Option<String>,
    /// Deadline of one push, retries included (default 10s; below `interval`).
    pub timeout: Option<String>,
    /// Extra resource attributes (values may be `${ENV}`).
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
}

/// `cmdb:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCmdb {
    /// `esb` (`list_biz_hosts`) or `gateway` (`list_hosts`).
    pub api: Option<String>,
    /// Root URL: ESB `.../api/c/compapi/v2/cc`, gateway `.../api/bk-cmdb/prod`.
    pub url: Option<String>,
    /// Path under the root; `{bk_biz_id}` is replaced.
    pub path: Option<String>,
    /// App code (default: `gse.app_code`).
    pub app_code: Option<String>,
    /// App secret (default: the GSE secret).
    pub app_secret: Option<String>,
    /// File holding the app secret.
    pub app_secret_file: Option<PathBuf>,
    /// Per-request timeout (default 10s).
    pub timeout: Option<String>,
    /// CMDB's own token bucket.
    pub rate_limit: Option<RawRateLimit>,
    /// Rows per page (default and maximum 500).
    pub page_size: Option<i64>,
    /// How often a group's hosts are re-listed (default 10m).
    pub refresh_interval: Option<String>,
    /// A refresh shrinking a group by this share or more is held back once (default 0.5).
    pub max_shrink: Option<f64>,
    /// Upstream TLS (default: the `gse:` block's).
    pub tls: Option<RawTls>,
}

/// `sharding:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharding {
    /// This shard's ordinal, from 0.
    pub shard: i64,
    /// Number of shards.
    pub total_shards: i64,
}

/// The `gse:` block as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGse {
    /// Default API for groups: `v1` (ESB) or `v2` (API gateway).
    pub api: Option<String>,
    /// Root URL of the default API.
    pub url: Option<String>,
    /// Root URL of the GSE 1.x ESB API, when groups use both APIs.
    pub v1_url: Option<String>,
    /// Root URL of the GSE 2.0 gateway API, when groups use both APIs.
    pub v2_url: Option<String>,
    /// BlueKing app code.
    pub app_code: Option<String>,
    /// BlueKing app secret (may be `${ENV}`).
    pub app_secret: Option<String>,
    /// File holding the app secret.
    pub app_secret_file: Option<PathBuf>,
    /// User name sent as `bk_username` (default `admin`).
    pub username: Option<String>,
    /// `bk_supplier_account` for ESB (default `0`).
    pub supplier_account: Option<String>,
    /// Tenant id sent as `X-Bk-Tenant-Id` in multi-tenant deployments.
    pub tenant_id: Option<String>,
    /// Per-request timeout (default 10s).
    pub timeout: Option<String>,
    /// Hosts per request (default 1000).
    pub batch_size: Option<i64>,
    /// Token bucket shared by every group for one GSE endpoint.
    pub rate_limit: Option<RawRateLimit>,
    /// Requests in flight per endpoint (default 4).
    pub max_in_flight: Option<i64>,
    /// Attempts per batch, first one included (default 4).
    pub max_attempts: Option<i64>,
    /// First retry delay (default 500ms), doubled per attempt with jitter.
    pub initial_backoff: Option<String>,
    /// Longest retry delay (default 10s).
    pub max_backoff: Option<String>,
    /// Largest reply body read (default 64MiB; in bytes).
    pub max_response_bytes: Option<i64>,
    /// Upstream TLS.
    pub tls: Option<RawTls>,
}

/// `rate_limit:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Requests allowed at once after an idle spell.
    pub burst: Option<i64>,
}

/// One group as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    /// Unique name, the `group` label.
    pub name: String,
    /// The business the hosts belong to.
    pub bk_biz_id: i64,
    /// Overrides `gse.api` for this group.
    pub gse_api: Option<String>,
    /// Extra labels on every series of this group.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Hosts: `"cloud:ip"`, an agent id, or `{ip, bk_cloud_id, bk_agent_id}`.
    #[serde(default)]
    pub hosts: Vec<serde_yaml_ng::Value>,
    /// A file of hosts, one per line, `#` comments; re-read when it changes.
    pub hosts_file: Option<PathBuf>,
    /// Every host of the business from CMDB (`{}` for all of it).
    pub cmdb: Option<RawGroupCmdb>,
    /// Export per-agent series (default true); per-group counts stay either way.
    pub per_agent_metrics: Option<bool>,
}

/// A group's `cmdb:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroupCmdb {
    /// Only hosts of these sets.
    #[serde(default)]
    pub bk_set_ids: Vec<i64>,
    /// Only hosts of these modules.
    #[serde(default)]
    pub bk_module_ids: Vec<i64>,
    /// CMDB `host_property_filter`, passed through.
    pub host_property_filter: Option<serde_json::Value>,
    /// CMDB fields to add as labels (`bk_host_name`, `bk_host_id`).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// GSE access.
    pub gse: GseConfig,
    /// Status poll interval.
    pub interval: Duration,
    /// Info poll interval.
    pub info_interval: Duration,
    /// How long agents of a failed batch keep their last values.
    pub stale_after: Duration,
    /// CMDB discovery, when any group uses it.
    pub cmdb: Option<CmdbConfig>,
    /// This process's shard.
    pub sharding: Sharding,
    /// Metric families never exposed (anchored regular expressions).
    pub metric_deny: Vec<String>,
    /// Groups in file order.
    pub groups: Vec<GroupConfig>,
    /// OTLP push, when configured.
    pub otlp: Option<OtlpConfig>,
}

/// How OTLP data is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP POST.
    HttpProtobuf,
    /// gRPC (tonic).
    Grpc,
}

/// Validated `otlp:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Collector URL as written (trailing `/` removed).
    pub endpoint: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Header (metadata) names, lower-case, with their secret values.
    pub headers: Vec<(String, Secret)>,
    /// Time between pushes.
    pub interval: Duration,
    /// Deadline of one push, retries included.
    pub timeout: Duration,
    /// Extra resource attributes, sorted by key.
    pub resource_attributes: Vec<(String, String)>,
}

/// Which shard of the agents this process exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    /// Ordinal from 0.
    pub shard: u32,
    /// Number of shards (1 = no sharding).
    pub total: u32,
}

impl Default for Sharding {
    fn default() -> Self {
        Sharding { shard: 0, total: 1 }
    }
}

/// Which CMDB API lists a business's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdbApi {
    /// ESB `list_biz_hosts`, auth in the body, `bk_biz_id` in the body.
    Esb,
    /// Gateway `list_hosts`, auth in a header, `bk_biz_id` in the path.
    Gateway,
}

/// Validated `cmdb:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct CmdbConfig {
    /// The API.
    pub api: CmdbApi,
    /// Root URL.
    pub url: String,
    /// Path under the root with `{bk_biz_id}`.
    pub path: String,
    /// App code.
    pub app_code: String,
    /// App secret.
    pub app_secret: Secret,
    /// `bk_username`.
    pub username: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Sustained request rate.
    pub requests_per_second: f64,
    /// Burst.
    pub burst: u32,
    /// Rows per page.
    pub page_size: usize,
    /// How often a group's hosts are re-listed.
    pub refresh_interval: Duration,
    /// A refresh shrinking a group by this share or more is held back once.
    pub max_shrink: f64,
    /// Upstream TLS.
    pub tls: TlsConfig,
}

/// Largest CMDB page (the documented limit).
pub const CMDB_MAX_PAGE: usize = 500;

/// CMDB fields a group may turn into labels.
pub const CMDB_LABEL_FIELDS: &[&str] = &["bk_host_name", "bk_host_id"];

/// A group's CMDB selection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupCmdb {
    /// Only hosts of these sets.
    pub bk_set_ids: Vec<i64>,
    /// Only hosts of these modules.
    pub bk_module_ids: Vec<i64>,
    /// `host_property_filter`, passed through.
    pub host_property_filter: Option<serde_json::Value>,
    /// CMDB fields exported as labels.
    pub labels: Vec<String>,
}

/// Validated `gse:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct GseConfig {
    /// Default API.
    pub api: ApiVersion,
    /// ESB root for v1 (`.../api/c/compapi/v2/gse`), when any group uses v1.
    pub v1_url: Option<String>,
    /// Gateway root for v2 (`.../api/bk-gse/prod`), when any group uses v2.
    pub v2_url: Option<String>,
    /// App code.
    pub app_code: String,
    /// App secret.
    pub app_secret: Secret,
    /// `bk_username`.
    pub username: String,
    /// `bk_supplier_account`.
    pub supplier_account: String,
    /// `X-Bk-Tenant-Id`, if any.
    pub tenant_id: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Hosts per request (already capped per API by the poller).
    pub batch_size: usize,
    /// Sustained request rate per endpoint.
    pub requests_per_second: f64,
    /// Burst per endpoint.
    pub burst: u32,
    /// Requests in flight per endpoint.
    pub max_in_flight: usize,
    /// Attempts per batch.
    pub max_attempts: u32,
    /// First retry delay.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Reply body cap in bytes.
    pub max_response_bytes: usize,
    /// Upstream TLS.
    pub tls: TlsConfig,
}

impl GseConfig {
    /// The root URL for an API version (validated to exist for every API in use).
    pub fn url_for(&self, api: ApiVersion) -> Option<&str> {
        match api {
            ApiVersion::V1 => self.v1_url.as_deref(),
            ApiVersion::V2 => self.v2_url.as_deref(),
        }
    }
}

/// One validated group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// The `group` label.
    pub name: String,
    /// The business.
    pub bk_biz_id: i64,
    /// API used for this group.
    pub api: ApiVersion,
    /// Extra labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// Inline hosts, de-duplicated, in file order.
    pub hosts: Vec<Host>,
    /// A hosts file (absolute, or relative to the config file).
    pub hosts_file: Option<PathBuf>,
    /// CMDB discovery of the business.
    pub cmdb: Option<GroupCmdb>,
    /// Export per-agent series.
    pub per_agent_metrics: bool,
}

impl GroupConfig {
    /// Label names every agent of the group carries after the standard ones.
    pub fn host_label_names(&self) -> &[String] {
        self.cmdb.as_ref().map_or(&[], |c| c.labels.as_slice())
    }
}

/// Label names the exporter sets itself; groups may not use them as extra labels.
pub const RESERVED_LABELS: &[&str] = &[
    "group",
    "bk_biz_id",
    "bk_cloud_id",
    "ip",
    "bk_agent_id",
    "version",
    "parent_ip",
    "state",
    "job",
    "instance",
];

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates configuration text; relative files resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw = parse_raw(text)?;
        Config::from_raw(raw, &|name| std::env::var(name).ok(), base_dir)
    }

    /// Validates a raw configuration; `env` looks up `${VAR}` references.
    pub fn from_raw(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let mut v = Validator {
            problems: Vec::new(),
            env,
            base_dir,
        };
        let config = v.config(raw);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(v.problems))
        }
    }
}

/// Parses YAML into [`RawConfig`], reporting the key path of the first shape error.
pub fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
    parse_yaml(text)
}

/// Parses YAML into any file shape, reporting the key path of the first shape error.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        ConfigError::Parse {
            path: if path == "." { "<root>".into() } else { path },
            message: err.into_inner().to_string(),
        }
    })
}

struct Validator<'a> {
    problems: Vec<Problem>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn problem(&mut self, path: impl Into<String>, value: impl Into<String>, rule: &str) {
        self.problems.push(Problem {
            path: path.into(),
            value: value.into(),
            rule: rule.into(),
        });
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let interval = self.duration("interval", raw.interval.as_deref(), "60s");
        let info_interval = self.duration("info_interval", raw.info_interval.as_deref(), "10m");
        let stale_after = match raw.stale_after.as_deref() {
            Some(text) => self.duration("stale_after", Some(text), "3m"),
            None => interval.saturating_mul(3),
        };
        if stale_after < interval {
            self.problem(
                "stale_after",
                humantime::format_duration(stale_after).to_string(),
                "must be at least one interval",
            );
        }
        let gse = self.gse(raw.gse);
        let groups = self.groups(raw.groups, &gse);
        self.batch_cap(&gse, &groups);
        let cmdb = self.cmdb(raw.cmdb, &gse, &groups);
        let sharding = self.sharding(raw.sharding.as_ref());
        self.metric_deny(&raw.metric_deny);
        let otlp = raw.otlp.map(|o| self.otlp(o));
        Config {
            gse,
            interval,
            info_interval,
            stale_after,
            cmdb,
            sharding,
            metric_deny: raw.metric_deny,
            groups,
            otlp,
        }
    }

    fn otlp(&mut self, raw: RawOtlp) -> OtlpConfig {
        let endpoint = self.url("otlp.endpoint", raw.endpoint.as_deref());
        if raw.endpoint.is_none() {
            self.problem("otlp.endpoint", "", "is required");
        }
        let protocol = match raw.protocol.as_deref().unwrap_or("http/protobuf") {
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            "grpc" => OtlpProtocol::Grpc,
            other => {
                self.problem("otlp.protocol", other, "must be http/protobuf or grpc");
                OtlpProtocol::HttpProtobuf
            }
        };
        let interval = self.duration("otlp.interval", raw.interval.as_deref(), "30s");
        let timeout = self.duration("otlp.timeout", raw.timeout.as_deref(), "10s");
        if timeout >= interval {
            let shown = humantime::format_duration(timeout).to_string();
            self.problem("otlp.timeout", shown, "must be shorter than otlp.interval");
        }
        let headers = raw
            .headers
            .iter()
            .map(|(name, value)| self.otlp_header(name, value))
            .collect();
        let resource_attributes = raw
            .resource_attributes
            .iter()
            .map(|(key, value)| {
                let path = format!("otlp.resource_attributes.{key}");
                if key.trim().is_empty() {
                    self.problem(&path, key, "must not be empty");
                }
                (key.clone(), self.expand(&path, value, false))
            })
            .collect();
        OtlpConfig {
            endpoint: endpoint.unwrap_or_default(),
            protocol,
            headers,
            interval,
            timeout,
            resource_attributes,
        }
    }

    /// A header name and its secret value (never shown in a problem).
    fn otlp_header(&mut self, name: &str, value: &str) -> (String, Secret) {
        use reqwest::header::{HeaderName, HeaderValue};
        let path = format!("otlp.headers.{name}");
        let lower = name.to_ascii_lowercase();
        if HeaderName::from_bytes(lower.as_bytes()).is_err() {
            self.problem(&path, name, "is not a valid HTTP header name");
        }
        let value = self.expand(&path, value, true);
        if HeaderValue::from_str(&value).is_err() {
            self.problem(&path, "", "value must be visible ASCII (no line breaks)");
        }
        (lower, Secret::new(value))
    }

    fn sharding(&mut self, raw: Option<&RawSharding>) -> Sharding {
        let Some(raw) = raw else {
            return Sharding::default();
        };
        if raw.total_shards < 1 || raw.total_shards > 10_000 {
            let value = raw.total_shards.to_string();
            self.problem(
                "sharding.total_shards",
                value,
                "must be between 1 and 10000",
            );
            return Sharding::default();
        }
        if raw.shard < 0 || raw.shard >= raw.total_shards {
            let rule = format!(
                "must be between 0 and total_shards - 1 ({})",
                raw.total_shards - 1
            );
            self.problem("sharding.shard", raw.shard.to_string(), &rule);
            return Sharding::default();
        }
        Sharding {
            shard: raw.shard as u32,
            total: raw.total_shards as u32,
        }
    }

    fn metric_deny(&mut self, patterns: &[String]) {
        for (i, pattern) in patterns.iter().enumerate() {
            if let Err(err) = regex::Regex::new(&format!("^(?:{pattern})$")) {
                let rule = format!("is not a valid regular expression: {err}");
                self.problem(format!("metric_deny[{i}]"), pattern, &rule);
            }
        }
    }

    fn cmdb(
        &mut self,
        raw: Option<RawCmdb>,
        gse: &GseConfig,
        groups: &[GroupConfig],
    ) -> Option<CmdbConfig> {
        let used = groups.iter().any(|g| g.cmdb.is_some());
        let Some(raw) = raw else {
            if used {
                self.problem(
                    "cmdb",
                    "",
                    "groups use cmdb discovery, so a top-level cmdb block with its url is required",
                );
            }
            return None;
        };
        let api = match raw.api.as_deref().unwrap_or("gateway") {
            "esb" => CmdbApi::Esb,
            "gateway" => CmdbApi::Gateway,
            other => {
                self.problem(
                    "cmdb.api",
                    other,
                    "must be esb (list_biz_hosts) or gateway (list_hosts)",
                );
                CmdbApi::Gateway
            }
        };
        let url = match self.url("cmdb.url", raw.url.as_deref()) {
            Some(url) => url,
            None => {
                if raw.url.is_none() {
                    self.problem("cmdb.url", "", "is required");
                }
                String::new()
            }
        };
        let default_path = match api {
            CmdbApi::Esb => "/list_biz_hosts/",
            CmdbApi::Gateway => "/api/v3/hosts/app/{bk_biz_id}/list_hosts",
        };
        let path = raw.path.unwrap_or_else(|| default_path.to_string());
        if !path.starts_with('/') {
            self.problem("cmdb.path", &path, "must start with /");
        }
        let app_secret = if raw.app_secret.is_some() || raw.app_secret_file.is_some() {
            self.secret_at(
                "cmdb",
                raw.app_secret.as_deref(),
                raw.app_secret_file.as_deref(),
            )
        } else {
            gse.app_secret.clone()
        };
        let app_code = match raw.app_code.as_deref() {
            Some(code) => self.expand("cmdb.app_code", code, false),
            None => gse.app_code.clone(),
        };
        let (requests_per_second, burst) = match raw.rate_limit.as_ref() {
            Some(limit) => self.rate_limit_at("cmdb.rate_limit", limit),
            None => (10.0, 5),
        };
        let max_shrink = raw.max_shrink.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&max_shrink) {
            self.problem(
                "cmdb.max_shrink",
                max_shrink.to_string(),
                "must be between 0 and 1",
            );
        }
        Some(CmdbConfig {
            api,
            url,
            path,
            app_code,
            app_secret,
            username: gse.username.clone(),
            timeout: self.duration("cmdb.timeout", raw.timeout.as_deref(), "10s"),
            requests_per_second,
            burst,
            page_size: self.positive(
                "cmdb.page_size",
                raw.page_size,
                CMDB_MAX_PAGE as i64,
                CMDB_MAX_PAGE as i64,
            ) as usize,
            refresh_interval: self.duration(
                "cmdb.refresh_interval",
                raw.refresh_interval.as_deref(),
                "10m",
            ),
            max_shrink,
            tls: match raw.tls {
                Some(tls) => self.tls("cmdb", Some(tls)),
                None => gse.tls.clone(),
            },
        })
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: &str) -> Duration {
        const LONGEST: Duration = Duration::from_secs(30 * 24 * 3600);
        let text = value.unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.problem(path, text, "must be greater than zero");
                Duration::from_secs(1)
            }
            Ok(d) if d > LONGEST => {
                self.problem(path, text, "must be at most 30d");
                Duration::from_secs(1)
            }
            Ok(d) => d,
            Err(_) => {
                self.problem(
                    path,
                    text,
                    "is not a duration (examples: 500ms, 10s, 5m, 1h)",
                );
                Duration::from_secs(1)
            }
        }
    }

    fn api(&mut self, path: &str, value: &str) -> ApiVersion {
        match value {
            "v1" => ApiVersion::V1,
            "v2" => ApiVersion::V2,
            other => {
                self.problem(path, other, "must be v1 (ESB) or v2 (API gateway)");
                ApiVersion::V2
            }
        }
    }

    fn expand(&mut self, path: &str, value: &str, secret: bool) -> String {
        match expand_env(value, self.env) {
            Ok(expanded) => expanded,
            Err(var) => {
                let shown = if secret { "" } else { value };
                self.problem(
                    path,
                    shown,
                    &format!("environment variable {var} is not set"),
                );
                String::new()
            }
        }
    }

    fn url(&mut self, path: &str, value: Option<&str>) -> Option<String> {
        let value = self.expand(path, value?, false);
        let trimmed = value.trim_end_matches('/').to_string();
        match reqwest::Url::parse(&trimmed) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(trimmed)
            }
            _ => {
                self.problem(path, value, "must be an absolute http:// or https:// URL");
                None
            }
        }
    }

    fn positive(&mut self, path: &str, value: Option<i64>, default: i64, max: i64) -> i64 {
        let v = value.unwrap_or(default);
        if v <= 0 || v > max {
            self.problem(path, v.to_string(), &format!("must be between 1 and {max}"));
            return default;
        }
        v
    }

    fn gse(&mut self, raw: RawGse) -> GseConfig {
        let api = self.api("gse.api", raw.api.as_deref().unwrap_or("v2"));
        let url = self.url("gse.url", raw.url.as_deref());
        let mut v1_url = self.url("gse.v1_url", raw.v1_url.as_deref());
        let mut v2_url = self.url("gse.v2_url", raw.v2_url.as_deref());
        match api {
            ApiVersion::V1 => v1_url = v1_url.or(url),
            ApiVersion::V2 => v2_url = v2_url.or(url),
        }
        let app_code = match raw.app_code.as_deref() {
            Some(code) => self.expand("gse.app_code", code, false),
            None => {
                self.problem("gse.app_code", "", "is required");
                String::new()
            }
        };
        let app_secret = self.secret(raw.app_secret.as_deref(), raw.app_secret_file.as_deref());
        let username = raw.username.as_deref().unwrap_or("admin");
        let username = self.expand("gse.username", username, false);
        let timeout = self.duration("gse.timeout", raw.timeout.as_deref(), "10s");
        let (requests_per_second, burst) = self.rate_limit(raw.rate_limit.as_ref());
        let batch_size = self.positive("gse.batch_size", raw.batch_size, 1000, V1_MAX_BATCH as i64);
        GseConfig {
            api,
            v1_url,
            v2_url,
            app_code,
            app_secret,
            username,
            supplier_account: raw.supplier_account.unwrap_or_else(|| "0".into()),
            tenant_id: raw.tenant_id,
            timeout,
            batch_size: batch_size as usize,
            requests_per_second,
            burst,
            max_in_flight: self.positive("gse.max_in_flight", raw.max_in_flight, 4, 256) as usize,
            max_attempts: self.positive("gse.max_attempts", raw.max_attempts, 4, 20) as u32,
            initial_backoff: self.duration(
                "gse.initial_backoff",
                raw.initial_backoff.as_deref(),
                "500ms",
            ),
            max_backoff: self.duration("gse.max_backoff", raw.max_backoff.as_deref(), "10s"),
            max_response_bytes: self.positive(
                "gse.max_response_bytes",
                raw.max_response_bytes,
                64 << 20,
                1 << 32,
            ) as usize,
            tls: self.tls("gse", raw.tls),
        }
    }

    fn batch_cap(&mut self, gse: &GseConfig, groups: &[GroupConfig]) {
        let uses_v2 = groups.iter().any(|g| g.api == ApiVersion::V2);
        if uses_v2 && gse.batch_size > V2_MAX_BATCH {
            let rule = format!("exceeds GSE 2.0's cap of {V2_MAX_BATCH} agent ids per request");
            self.problem("gse.batch_size", gse.batch_size.to_string(), &rule);
        }
    }

    fn secret(&mut self, inline: Option<&str>, file: Option<&Path>) -> Secret {
        self.secret_at("gse", inline, file)
    }

    fn secret_at(&mut self, block: &str, inline: Option<&str>, file: Option<&Path>) -> Secret {
        let key = format!("{block}.app_secret");
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, "", "set app_secret or app_secret_file, not both");
                Secret::default()
            }
            (Some(value), None) => Secret::new(self.expand(&key, value, true)),
            (None, Some(path)) => self.secret_file(&format!("{block}.app_secret_file"), path),
            (None, None) => {
                self.problem(key, "", "is required (or app_secret_file)");
                Secret::default()
            }
        }
    }

    fn secret_file(&mut self, key: &str, path: &Path) -> Secret {
        let path_text = path.to_string_lossy().to_string();
        let expanded = self.expand(key, &path_text, false);
        let full = self.base_dir.join(expanded);
        match std::fs::read_to_string(&full) {
            Ok(text) if !text.trim().is_empty() => Secret::new(text.trim()),
            Ok(_) => {
                self.problem(key, full.display().to_string(), "file is empty");
                Secret::default()
            }
            Err(err) => {
                let rule = format!("cannot be read: {err}");
                self.problem(key, full.display().to_string(), &rule);
                Secret::default()
            }
        }
    }

    fn rate_limit(&mut self, raw: Option<&RawRateLimit>) -> (f64, u32) {
        match raw {
            Some(raw) => self.rate_limit_at("gse.rate_limit", raw),
            None => (20.0, 10),
        }
    }

    fn rate_limit_at(&mut self, key: &str, raw: &RawRateLimit) -> (f64, u32) {
        let rps = raw.requests_per_second;
        let rps = if rps.is_finite() && rps > 0.0 && rps <= 100_000.0 {
            rps
        } else {
            let rule = "must be greater than 0 and at most 100000";
            self.problem(format!("{key}.requests_per_second"), rps.to_string(), rule);
            20.0
        };
        let burst = self.positive(&format!("{key}.burst"), raw.burst, 10, 10_000);
        (rps, burst as u32)
    }

    fn groups(&mut self, raw: Vec<RawGroup>, gse: &GseConfig) -> Vec<GroupConfig> {
        if raw.is_empty() {
            self.problem("groups", "", "at least one group is required");
        }
        let mut seen = HashSet::new();
        let mut groups = Vec::with_capacity(raw.len());
        for (i, group) in raw.into_iter().enumerate() {
            let path = format!("groups[{i}]");
            if !seen.insert(group.name.clone()) {
                self.problem(format!("{path}.name"), &group.name, "duplicate group name");
            }
            groups.push(self.group(&path, group, gse));
        }
        groups
    }

    fn group(&mut self, path: &str, raw: RawGroup, gse: &GseConfig) -> GroupConfig {
        if raw.name.trim().is_empty() {
            self.problem(format!("{path}.name"), &raw.name, "must not be empty");
        }
        if raw.bk_biz_id <= 0 {
            self.problem(
                format!("{path}.bk_biz_id"),
                raw.bk_biz_id.to_string(),
                "must be a positive business id",
            );
        }
        let api = match raw.gse_api.as_deref() {
            Some(value) => self.api(&format!("{path}.gse_api"), value),
            None => gse.api,
        };
        if gse.url_for(api).is_none() {
            let key = format!("{path}.gse_api");
            let rule =
                format!("no URL for API {api}: set gse.url with gse.api: {api}, or gse.{api}_url");
            self.problem(key, api.to_string(), &rule);
        }
        self.labels(path, &raw.labels);
        let hosts = self.hosts(path, &raw.hosts, api);
        if raw.hosts.is_empty() && raw.hosts_file.is_none() && raw.cmdb.is_none() {
            let rule = "a group needs a host source: hosts, hosts_file or cmdb";
            self.problem(path.to_string(), raw.name.clone(), rule);
        }
        let hosts_file = raw.hosts_file.map(|f| self.base_dir.join(f));
        if let Some(file) = &hosts_file {
            self.hosts_file(&format!("{path}.hosts_file"), file, api);
        }
        let cmdb = raw.cmdb.map(|c| self.group_cmdb(path, c));
        for name in cmdb.iter().flat_map(|c| c.labels.iter()) {
            if raw.labels.contains_key(name) {
                let rule = "is also a cmdb label of the group";
                self.problem(format!("{path}.labels.{name}"), name, rule);
            }
        }
        GroupConfig {
            name: raw.name,
            bk_biz_id: raw.bk_biz_id,
            api,
            labels: raw.labels.into_iter().collect(),
            hosts,
            hosts_file,
            cmdb,
            per_agent_metrics: raw.per_agent_metrics.unwrap_or(true),
        }
    }

    fn hosts_file(&mut self, key: &str, file: &Path, api: ApiVersion) {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                for problem in parse_hosts_file(&text, api).1 {
                    self.problem(key, file.display().to_string(), &problem);
                }
            }
            Err(err) => {
                let rule = format!("cannot be read: {err}");
                self.problem(key, file.display().to_string(), &rule);
            }
        }
    }

    fn group_cmdb(&mut self, path: &str, raw: RawGroupCmdb) -> GroupCmdb {
        for (i, label) in raw.labels.iter().enumerate() {
            if !CMDB_LABEL_FIELDS.contains(&label.as_str()) {
                let rule = format!("must be one of {}", CMDB_LABEL_FIELDS.join(", "));
                self.problem(format!("{path}.cmdb.labels[{i}]"), label, &rule);
            }
        }
        if let Some(filter) = &raw.host_property_filter
            && !filter.is_object()
        {
            let rule = "must be a map {condition, rules}";
            self.problem(
                format!("{path}.cmdb.host_property_filter"),
                filter.to_string(),
                rule,
            );
        }
        GroupCmdb {
            bk_set_ids: raw.bk_set_ids,
            bk_module_ids: raw.bk_module_ids,
            host_property_filter: raw.host_property_filter,
            labels: raw.labels,
        }
    }

    fn labels(&mut self, path: &str, labels: &BTreeMap<String, String>) {
        for name in labels.keys() {
            let key = format!("{path}.labels.{name}");
            if !is_label_name(name) {
                self.problem(
                    key,
                    name,
                    "is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                );
            } else if name.starts_with("__") || RESERVED_LABELS.contains(&name.as_str()) {
                self.problem(key, name, "is reserved: the exporter sets it");
            }
        }
    }

    fn hosts(&mut self, path: &str, raw: &[serde_yaml_ng::Value], api: ApiVersion) -> Vec<Host> {
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

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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

/// Expands `${VAR}` references; returns the name of the first unset variable.
pub fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&env(name).ok_or_else(|| name.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a hosts file: one host per line (`cloud:ip` or an agent id), `#`
/// starts a comment. Returns the hosts and a problem per bad line.
pub fn parse_hosts_file(text: &str, api: ApiVersion) -> (Vec<Host>, Vec<String>) {
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
pub fn parse_host_value(value: &serde_yaml_ng::Value) -> Result<Host, String> {
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
pub fn parse_host_text(text: &str) -> Result<Host, String> {
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
pub fn parse_agent_id(text: &str) -> Result<String, String> {
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
