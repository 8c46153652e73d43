//! The client of both GSE APIs: builds requests with authentication and the
//! per-request timeout, and hands replies to [`super::decode`]. The HTTP layer
//! under it (TLS, capped reads, error mapping) is [`crate::upstream`]'s. One
//! attempt per call: retries belong to the poller.

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Serialize;
use serde_json::json;

use super::{Call, Info, Reply, Status, decode};
use crate::config::GseConfig;
use crate::model::{Key, Secret};
use crate::upstream::{
    GseError, TENANT_HEADER, client_builder, error_chain, http_error, read_capped, tenant_header,
    transport_error, with_tls,
};

/// A client for both GSE APIs. Cheap to clone.
#[derive(Clone)]
pub struct GseClient {
    http: reqwest::Client,
    app_code: String,
    app_secret: Secret,
    username: String,
    supplier_account: String,
    max_body: usize,
}

impl std::fmt::Debug for GseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GseClient")
            .field("app_code", &self.app_code)
            .field("app_secret", &self.app_secret)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl GseClient {
    /// Builds a client from the `gse:` configuration.
    pub fn new(cfg: &GseConfig) -> Result<GseClient, GseError> {
        let http = client_builder(cfg.timeout).pool_max_idle_per_host(cfg.max_in_flight.max(1));
        let http = with_tls(http, &cfg.tls)?
            .build()
            .map_err(|e| GseError::Transport(error_chain(&e)))?;
        Ok(GseClient {
            http,
            app_code: cfg.app_code.clone(),
            app_secret: cfg.app_secret.clone(),
            username: cfg.username.clone(),
            supplier_account: cfg.supplier_account.clone(),
            max_body: cfg.max_response_bytes,
        })
    }

    /// Asks for the live status of a batch (`keys` are query keys of that
    /// API) in a tenant (sent with GSE 2.0 calls only, see [`super::tenant_sent`]).
    pub(crate) async fn status(
        &self,
        call: Call,
        base: &str,
        tenant: Option<&str>,
        keys: &[Key],
    ) -> Result<Reply<Status>, GseError> {
        let body = self
            .send(call, base, tenant, keys)
            .await
            .map_err(|e| self.scrub(e))?;
        let decoded = match call {
            Call::V1Status => decode::v1_status(&body, keys),
            Call::V2State => decode::v2_state(&body, keys),
            other => Err(GseError::Decode(format!(
                "{} is not a status call",
                other.label()
            ))),
        };
        decoded.map_err(|e| self.scrub(e))
    }

    /// Asks for the info (version, parent) of a batch in a tenant.
    pub(crate) async fn info(
        &self,
        call: Call,
        base: &str,
        tenant: Option<&str>,
        keys: &[Key],
    ) -> Result<Reply<Info>, GseError> {
        let body = self
            .send(call, base, tenant, keys)
            .await
            .map_err(|e| self.scrub(e))?;
        let decoded = match call {
            Call::V1Info => decode::v1_info(&body, keys),
            Call::V2Info => decode::v2_info(&body, keys),
            other => Err(GseError::Decode(format!(
                "{} is not an info call",
                other.label()
            ))),
        };
        decoded.map_err(|e| self.scrub(e))
    }

    /// An error as it may be logged: upstream text cut, the secret gone.
    fn scrub(&self, err: GseError) -> GseError {
        err.scrubbed(&[self.app_secret.expose()])
    }

    async fn send(
        &self,
        call: Call,
        base: &str,
        tenant: Option<&str>,
        keys: &[Key],
    ) -> Result<Vec<u8>, GseError> {
        let url = format!("{}{}", base.trim_end_matches('/'), call.path());
        let request = match call {
            Call::V1Status | Call::V1Info => self.http.post(url).json(&self.v1_body(keys)),
            Call::V2State | Call::V2Info => self
                .http
                .post(url)
                .headers(self.v2_headers(tenant))
                .json(&V2Body {
                    agent_id_list: keys,
                }),
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(response, self.max_body).await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(http_error(status.as_u16(), &headers, &body))
    }

    fn v1_body(&self, keys: &[Key]) -> serde_json::Value {
        let hosts: Vec<serde_json::Value> = keys
            .iter()
            .filter_map(|key| {
                key.with_str(|key| {
                    let (cloud, ip) = key.split_once(':')?;
                    let cloud = cloud.parse::<i64>().unwrap_or(0);
                    Some(json!({ "ip": ip, "bk_cloud_id": cloud }))
                })
            })
            .collect();
        json!({
            "bk_app_code": self.app_code,
            "bk_app_secret": self.app_secret.expose(),
            "bk_username": self.username,
            "bk_supplier_account": self.supplier_account,
            "hosts": hosts,
        })
    }

    fn v2_headers(&self, tenant: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let auth = json!({
            "bk_app_code": self.app_code,
            "bk_app_secret": self.app_secret.expose(),
            "bk_username": self.username,
        })
        .to_string();
        if let Ok(mut value) = HeaderValue::from_str(&auth) {
            value.set_sensitive(true);
            headers.insert("X-Bkapi-Authorization", value);
        }
        if let Some(tenant) = tenant_header(tenant) {
            headers.insert(TENANT_HEADER, tenant);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers
    }
}

/// A GSE 2.0 request body.
#[derive(Serialize)]
struct V2Body<'a> {
    agent_id_list: &'a [Key],
}
