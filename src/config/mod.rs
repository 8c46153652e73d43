//! Configuration: the exporter's file and the web configuration file, from
//! YAML text to typed, validated values.
//!
//! Two stages, as in blackbox_exporter and ripgrep: the `Raw*` types of
//! [`schema`] are exactly what the user wrote (serde, unknown keys rejected),
//! and one [`validate::Validator`] turns them into typed values, checking
//! every rule and collecting *every* problem with the key path, the bad value
//! and the rule it breaks. This module (`mod.rs`) holds the typed result and
//! the entry points; host parsing is [`hosts`], PEM reading [`pem`], upstream
//! TLS [`tls`], the web configuration [`web`], and noticing that a file
//! changed [`watch`].
//!
//! No network I/O and no knowledge of metrics. Secrets stay in
//! [`Secret`], whose `Debug` never shows the value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{ApiVersion, Host, RateLimit, Secret, Sharding};

pub(crate) mod hosts;
mod pem;
pub(crate) mod schema;
mod tls;
mod validate;
pub(crate) mod watch;
pub mod web;

pub(crate) use schema::RawConfig;
pub(crate) use tls::TlsConfig;
use validate::Validator;

/// Largest batch GSE 2.0's `list_agent_*` accepts.
pub(crate) const V2_MAX_BATCH: usize = 1000;
/// Largest batch we send to GSE 1.x's ESB (no documented cap; nodeman uses 2000).
pub(crate) const V1_MAX_BATCH: usize = 2000;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `groups[1].hosts[3]`.
    pub(crate) path: String,
    /// The offending value as written (never a secret).
    pub(crate) value: String,
    /// The rule that value breaks.
    pub(crate) rule: String,
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

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// GSE access.
    pub gse: GseConfig,
    /// Status poll interval.
    pub interval: Duration,
    /// Info poll interval.
    pub(crate) info_interval: Duration,
    /// How long agents of a failed batch keep their last values.
    pub stale_after: Duration,
    /// CMDB discovery, when any group uses it.
    pub(crate) cmdb: Option<CmdbConfig>,
    /// This process's shard.
    pub(crate) sharding: Sharding,
    /// Metric families never exposed (anchored regular expressions).
    pub(crate) metric_deny: Vec<String>,
    /// Groups in file order.
    pub groups: Vec<GroupConfig>,
    /// OTLP push, when configured.
    pub otlp: Option<OtlpConfig>,
}

/// How OTLP data is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtlpProtocol {
    /// Protobuf over HTTP POST.
    HttpProtobuf,
    /// gRPC (tonic).
    Grpc,
}

/// Validated `otlp:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Collector URL as written (trailing `/` removed).
    pub(crate) endpoint: String,
    /// Transport.
    pub(crate) protocol: OtlpProtocol,
    /// Header (metadata) names, lower-case, with their secret values.
    pub headers: Vec<(String, Secret)>,
    /// Time between pushes.
    pub(crate) interval: Duration,
    /// Deadline of one push, retries included.
    pub(crate) timeout: Duration,
    /// Extra resource attributes, sorted by key.
    pub(crate) resource_attributes: Vec<(String, String)>,
}

/// Which CMDB API lists a business's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmdbApi {
    /// ESB `list_biz_hosts`, auth in the body, `bk_biz_id` in the body.
    Esb,
    /// Gateway `list_hosts`, auth in a header, `bk_biz_id` in the path.
    Gateway,
}

/// Validated `cmdb:` block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CmdbConfig {
    /// The API.
    pub(crate) api: CmdbApi,
    /// Root URL.
    pub(crate) url: String,
    /// Path under the root with `{bk_biz_id}`.
    pub(crate) path: String,
    /// Path of the host listing with topology, with `{bk_biz_id}`.
    pub(crate) topology_path: String,
    /// Path of the business lookup, with `{bk_supplier_account}`.
    pub(crate) business_path: String,
    /// `bk_supplier_account` (`gse.supplier_account`).
    pub(crate) supplier_account: String,
    /// App code.
    pub(crate) app_code: String,
    /// App secret.
    pub(crate) app_secret: Secret,
    /// `bk_username`.
    pub(crate) username: String,
    /// Per-request timeout.
    pub(crate) timeout: Duration,
    /// The request rate (`cmdb.rate_limit`).
    pub(crate) rate_limit: RateLimit,
    /// Rows per page.
    pub(crate) page_size: usize,
    /// How often a group's hosts are re-listed.
    pub(crate) refresh_interval: Duration,
    /// A refresh shrinking a group by this share or more is held back once.
    pub(crate) max_shrink: f64,
    /// `X-Bk-Tenant-Id` sent on every CMDB request, if any.
    pub(crate) tenant_id: Option<String>,
    /// Upstream TLS.
    pub(crate) tls: TlsConfig,
}

/// Largest CMDB page (the documented limit).
pub(crate) const CMDB_MAX_PAGE: usize = 500;

/// CMDB fields a group may turn into labels.
pub(crate) const CMDB_LABEL_FIELDS: &[&str] = &["bk_host_name", "bk_host_id"];

/// The labels `gse_agent_topology_info` adds after an agent's own (the
/// metric table spells them; a test there checks they agree), which a group
/// with `cmdb.topology` may not use as extra labels.
pub(crate) const TOPOLOGY_LABELS: &[&str] = &[
    "bk_biz_name",
    "bk_set_name",
    "bk_module_name",
    "operator",
    "bk_bak_operator",
];

/// A group's CMDB selection.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct GroupCmdb {
    /// Only hosts of these sets.
    pub(crate) bk_set_ids: Vec<i64>,
    /// Only hosts of these modules.
    pub(crate) bk_module_ids: Vec<i64>,
    /// `host_property_filter`, passed through.
    pub(crate) host_property_filter: Option<serde_json::Value>,
    /// CMDB fields exported as labels.
    pub(crate) labels: Vec<String>,
    /// Ask for each host's topology and maintainers and the business name.
    pub(crate) topology: bool,
}

/// Validated `gse:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct GseConfig {
    /// Default API.
    pub(crate) api: ApiVersion,
    /// ESB root for v1 (`.../api/c/compapi/v2/gse`), when any group uses v1.
    pub(crate) v1_url: Option<String>,
    /// Gateway root for v2 (`.../api/bk-gse/prod`), when any group uses v2.
    pub(crate) v2_url: Option<String>,
    /// App code.
    pub(crate) app_code: String,
    /// App secret.
    pub(crate) app_secret: Secret,
    /// `bk_username`.
    pub(crate) username: String,
    /// `bk_supplier_account`.
    pub(crate) supplier_account: String,
    /// `X-Bk-Tenant-Id`, if any.
    pub(crate) tenant_id: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Hosts per request (already capped per API by the poller).
    pub batch_size: usize,
    /// The request rate per endpoint (`gse.rate_limit`).
    pub rate_limit: RateLimit,
    /// Requests in flight per endpoint.
    pub(crate) max_in_flight: usize,
    /// Attempts per batch.
    pub max_attempts: u32,
    /// First retry delay.
    pub(crate) initial_backoff: Duration,
    /// Longest retry delay.
    pub(crate) max_backoff: Duration,
    /// Reply body cap in bytes.
    pub max_response_bytes: usize,
    /// Upstream TLS.
    pub(crate) tls: TlsConfig,
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
    pub(crate) bk_biz_id: i64,
    /// API used for this group.
    pub api: ApiVersion,
    /// Extra labels, sorted by name.
    pub(crate) labels: Vec<(String, String)>,
    /// Inline hosts, de-duplicated, in file order.
    pub hosts: Vec<Host>,
    /// A hosts file (absolute, or relative to the config file).
    pub(crate) hosts_file: Option<PathBuf>,
    /// CMDB discovery of the business.
    pub(crate) cmdb: Option<GroupCmdb>,
    /// Export per-agent series.
    pub(crate) per_agent_metrics: bool,
}

impl GroupConfig {
    /// Label names every agent of the group carries after the standard ones.
    pub(crate) fn host_label_names(&self) -> &[String] {
        self.cmdb.as_ref().map_or(&[], |c| c.labels.as_slice())
    }

    /// Whether CMDB is asked for the topology of the group's hosts.
    pub(crate) fn topology(&self) -> bool {
        self.cmdb.as_ref().is_some_and(|c| c.topology)
    }
}

/// Label names the exporter sets itself; groups may not use them as extra labels.
pub(crate) const RESERVED_LABELS: &[&str] = &[
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
        let mut v = Validator::new(env, base_dir);
        let config = v.config(raw);
        v.finish(config)
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
