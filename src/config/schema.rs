//! The exporter's configuration file exactly as written: serde types with
//! unknown keys rejected and nothing checked beyond the YAML shape. The
//! validator turns them into [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use super::tls::RawTls;

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
