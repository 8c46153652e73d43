//! The exporter's configuration file exactly as written: serde types with
//! unknown keys rejected and nothing checked beyond the YAML shape. The
//! validator turns them into [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub(crate) use super::tls::RawTls;

/// The configuration file exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How to reach GSE.
    pub(crate) gse: RawGse,
    /// Status poll interval (default 60s).
    pub(crate) interval: Option<String>,
    /// Info (version, parent) poll interval (default 10m).
    pub(crate) info_interval: Option<String>,
    /// How long a failed agent keeps its last values (default 3 intervals).
    pub(crate) stale_after: Option<String>,
    /// CMDB discovery of business hosts.
    pub(crate) cmdb: Option<RawCmdb>,
    /// This process's share of the agents.
    pub(crate) sharding: Option<RawSharding>,
    /// Metric families never exposed: exact names or regular expressions (anchored).
    #[serde(default)]
    pub(crate) metric_deny: Vec<String>,
    /// The host groups.
    #[serde(default)]
    pub(crate) groups: Vec<RawGroup>,
    /// OTLP push of the same gauges (off when absent).
    pub(crate) otlp: Option<RawOtlp>,
}

/// `otlp:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOtlp {
    /// Collector URL (http/protobuf: `/v1/metrics` is added to a bare host).
    pub(crate) endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    pub(crate) protocol: Option<String>,
    /// Request headers or gRPC metadata; values may be `${ENV}` and are secrets.
    #[serde(default, deserialize_with = "super::unique_keys")]
    pub(crate) headers: BTreeMap<String, String>,
    /// Time between pushes (default 30s).
    pub(crate) interval: Option<String>,
    /// Deadline of one push, retries included (default 10s; below `interval`).
    pub(crate) timeout: Option<String>,
    /// Extra resource attributes (values may be `${ENV}`).
    #[serde(default, deserialize_with = "super::unique_keys")]
    pub(crate) resource_attributes: BTreeMap<String, String>,
}

/// `cmdb:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCmdb {
    /// `esb` (`list_biz_hosts`) or `gateway` (`list_hosts`).
    pub(crate) api: Option<String>,
    /// Root URL: ESB `.../api/c/compapi/v2/cc`, gateway `.../api/bk-cmdb/prod`.
    pub(crate) url: Option<String>,
    /// Path under the root; `{bk_biz_id}` is replaced.
    pub(crate) path: Option<String>,
    /// Path of the host listing with topology (default: `path` + `_topo`).
    pub(crate) topology_path: Option<String>,
    /// Path of the business lookup; `{bk_supplier_account}` is replaced.
    pub(crate) business_path: Option<String>,
    /// App code (default: `gse.app_code`).
    pub(crate) app_code: Option<String>,
    /// App secret (default: the GSE secret).
    pub(crate) app_secret: Option<String>,
    /// File holding the app secret.
    pub(crate) app_secret_file: Option<PathBuf>,
    /// Per-request timeout (default 10s).
    pub(crate) timeout: Option<String>,
    /// CMDB's own token bucket.
    pub(crate) rate_limit: Option<RawRateLimit>,
    /// Rows per page (default and maximum 500).
    pub(crate) page_size: Option<i64>,
    /// How often a group's hosts are re-listed (default 10m).
    pub(crate) refresh_interval: Option<String>,
    /// A refresh shrinking a group by this share or more is held back once (default 0.5).
    pub(crate) max_shrink: Option<f64>,
    /// Upstream TLS (default: the `gse:` block's).
    pub(crate) tls: Option<RawTls>,
    /// Tenant id sent as `X-Bk-Tenant-Id` (default: `gse.tenant_id`).
    pub(crate) tenant_id: Option<String>,
}

/// `sharding:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSharding {
    /// This shard's ordinal, from 0.
    pub(crate) shard: i64,
    /// Number of shards.
    pub(crate) total_shards: i64,
}

/// The `gse:` block as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGse {
    /// Default API for groups: `v1` (ESB) or `v2` (API gateway).
    pub(crate) api: Option<String>,
    /// Root URL of the default API.
    pub(crate) url: Option<String>,
    /// Root URL of the GSE 1.x ESB API, when groups use both APIs.
    pub(crate) v1_url: Option<String>,
    /// Root URL of the GSE 2.0 gateway API, when groups use both APIs.
    pub(crate) v2_url: Option<String>,
    /// BlueKing app code.
    pub(crate) app_code: Option<String>,
    /// BlueKing app secret (may be `${ENV}`).
    pub(crate) app_secret: Option<String>,
    /// File holding the app secret.
    pub(crate) app_secret_file: Option<PathBuf>,
    /// User name sent as `bk_username` (default `admin`).
    pub(crate) username: Option<String>,
    /// `bk_supplier_account` for ESB (default `0`).
    pub(crate) supplier_account: Option<String>,
    /// Tenant id sent as `X-Bk-Tenant-Id` in multi-tenant deployments.
    pub(crate) tenant_id: Option<String>,
    /// Per-request timeout (default 10s).
    pub(crate) timeout: Option<String>,
    /// Hosts per request (default 1000).
    pub(crate) batch_size: Option<i64>,
    /// Token bucket shared by every group for one GSE endpoint.
    pub(crate) rate_limit: Option<RawRateLimit>,
    /// Requests in flight per endpoint (default 4).
    pub(crate) max_in_flight: Option<i64>,
    /// Attempts per batch, first one included (default 4).
    pub(crate) max_attempts: Option<i64>,
    /// First retry delay (default 500ms), doubled per attempt with jitter.
    pub(crate) initial_backoff: Option<String>,
    /// Longest retry delay (default 10s).
    pub(crate) max_backoff: Option<String>,
    /// Largest reply body read (default 64MiB; in bytes).
    pub(crate) max_response_bytes: Option<i64>,
    /// Upstream TLS.
    pub(crate) tls: Option<RawTls>,
}

/// `rate_limit:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    /// Sustained requests per second.
    pub(crate) requests_per_second: f64,
    /// Requests allowed at once after an idle spell.
    pub(crate) burst: Option<i64>,
}

/// One group as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    /// Unique name, the `group` label.
    pub(crate) name: String,
    /// The business the hosts belong to.
    pub(crate) bk_biz_id: i64,
    /// Overrides `gse.api` for this group.
    pub(crate) gse_api: Option<String>,
    /// Extra labels on every series of this group.
    #[serde(default, deserialize_with = "super::unique_keys")]
    pub(crate) labels: BTreeMap<String, String>,
    /// Hosts: `"cloud:ip"`, an agent id, or `{ip, bk_cloud_id, bk_agent_id}`.
    #[serde(default)]
    pub(crate) hosts: super::inline::RawHosts,
    /// A file of hosts, one per line, `#` comments; re-read when it changes.
    pub(crate) hosts_file: Option<PathBuf>,
    /// Every host of the business from CMDB (`{}` for all of it).
    pub(crate) cmdb: Option<RawGroupCmdb>,
    /// Export per-agent series (default true); per-group counts stay either way.
    pub(crate) per_agent_metrics: Option<bool>,
    /// Tenant of this group's GSE and CMDB calls (default: `gse.tenant_id`
    /// for GSE, `cmdb.tenant_id` for CMDB).
    pub(crate) tenant_id: Option<String>,
}

/// A group's `cmdb:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroupCmdb {
    /// Only hosts of these sets.
    #[serde(default)]
    pub(crate) bk_set_ids: Vec<i64>,
    /// Only hosts of these modules.
    #[serde(default)]
    pub(crate) bk_module_ids: Vec<i64>,
    /// CMDB `host_property_filter`, passed through.
    pub(crate) host_property_filter: Option<serde_json::Value>,
    /// CMDB fields to add as labels (`bk_host_name`, `bk_host_id`).
    #[serde(default)]
    pub(crate) labels: Vec<String>,
    /// Ask CMDB for each host's sets, modules and maintainers and the
    /// business name (`gse_agent_topology_info`; default false).
    #[serde(default)]
    pub(crate) topology: bool,
}
