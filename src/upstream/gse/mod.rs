//! The GSE clients: GSE 1.x through ESB and GSE 2.0 through the API gateway.
//!
//! Owns the wire: request shapes, authentication, the per-request timeout, the
//! cap on what a reply may weigh, and typed decoding of replies into
//! observations. It knows nothing of pacing, retries across attempts, batching,
//! state or Prometheus: the poller owns those.

mod client;
pub mod decode;

pub use client::GseClient;

use crate::model::ApiVersion;

/// The tenant a call of `api` carries: GSE 2.0 gateway calls send
/// `X-Bk-Tenant-Id`, GSE 1.x calls through ESB send none, so for them
/// every tenant is the same.
pub(crate) fn tenant_sent(api: ApiVersion, tenant: Option<&str>) -> Option<&str> {
    tenant.filter(|_| api == ApiVersion::V2)
}

/// One GSE call, as named in `gse_exporter_api_requests_total{api}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Call {
    /// ESB `get_agent_status`.
    V1Status,
    /// ESB `get_agent_info`.
    V1Info,
    /// Gateway `list_agent_state`.
    V2State,
    /// Gateway `list_agent_info`.
    V2Info,
}

impl Call {
    /// Every call, for pre-creating metric series.
    pub(crate) const ALL: [Call; 4] = [Call::V1Status, Call::V1Info, Call::V2State, Call::V2Info];

    /// The `api` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Call::V1Status => "v1_get_agent_status",
            Call::V1Info => "v1_get_agent_info",
            Call::V2State => "v2_list_agent_state",
            Call::V2Info => "v2_list_agent_info",
        }
    }

    /// The status or info call of an API.
    pub(crate) fn of(api: ApiVersion, info: bool) -> Call {
        match (api, info) {
            (ApiVersion::V1, false) => Call::V1Status,
            (ApiVersion::V1, true) => Call::V1Info,
            (ApiVersion::V2, false) => Call::V2State,
            (ApiVersion::V2, true) => Call::V2Info,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Call::V1Status => "/get_agent_status/",
            Call::V1Info => "/get_agent_info/",
            Call::V2State => "/api/v2/cluster/list_agent_state",
            Call::V2Info => "/api/v2/cluster/list_agent_info",
        }
    }
}

/// What `get_agent_status` / `list_agent_state` says of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Online: `bk_agent_alive == 1` (v1) or `status_code == 2` (v2).
    pub alive: bool,
    /// GSE 2.0 status code; `None` on v1.
    pub status_code: Option<i64>,
    /// Version, when the status call carries it (v2), cleaned.
    pub(crate) version: Option<String>,
    /// Last report from the agent, unix seconds (v2 only).
    pub report_time: Option<f64>,
}

/// What `get_agent_info` / `list_agent_info` says of one agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    /// Agent version, cleaned ("" when unknown or junk).
    pub version: String,
    /// Upstream proxy or server.
    pub(crate) parent_ip: String,
    /// Host IP as GSE knows it (v2 `bk_host_ip`).
    pub(crate) host_ip: Option<String>,
    /// Cloud area as GSE knows it.
    pub(crate) bk_cloud_id: Option<i64>,
    /// Last report from the agent, unix seconds (v2 only).
    pub(crate) report_time: Option<f64>,
}

/// A decoded reply: one answer per asked key, in the order asked, plus
/// whether GSE said it knows none of the batch (GSE 2.0 code 1011003).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// The answer for each asked key, in the order asked; `None`: GSE left
    /// that agent out of its reply ("not found"). Items for keys that were
    /// not asked are ignored; a reply of nothing else is a decode error.
    pub answers: Vec<Option<T>>,
    /// GSE answered 1011003: none of the batch is known.
    pub none_found: bool,
}
