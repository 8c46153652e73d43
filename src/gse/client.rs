//! HTTP transport for both GSE APIs: builds requests with authentication,
//! enforces the per-request timeout and the reply-size cap, and maps HTTP
//! outcomes to [`GseError`]. One attempt per call: retries belong to the poller.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde_json::json;

use super::{Call, GseError, Info, Reply, Status, decode};
use crate::config::{GseConfig, TlsConfig};

/// A client for both GSE APIs. Cheap to clone.
#[derive(Clone)]
pub struct GseClient {
    http: reqwest::Client,
    app_code: String,
    app_secret: crate::config::Secret,
    username: String,
    supplier_account: String,
    tenant_id: Option<String>,
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
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("gse_exporter/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(cfg.max_in_flight.max(1));
        let http = with_tls(http, &cfg.tls)?
            .build()
            .map_err(|e| GseError::Transport(error_chain(&e)))?;
        Ok(GseClient {
            http,
            app_code: cfg.app_code.clone(),
            app_secret: cfg.app_secret.clone(),
            username: cfg.username.clone(),
            supplier_account: cfg.supplier_account.clone(),
            tenant_id: cfg.tenant_id.clone(),
            max_body: cfg.max_response_bytes,
        })
    }

    /// Asks for the live status of a batch (`keys` are query keys of that API).
    pub async fn status(
        &self,
        call: Call,
        base: &str,
        keys: &[Arc<str>],
    ) -> Result<Reply<Status>, GseError> {
        let body = self.send(call, base, keys).await?;
        match call {
            Call::V1Status => decode::v1_status(&body),
            Call::V2State => decode::v2_state(&body),
            other => Err(GseError::Decode(format!(
                "{} is not a status call",
                other.label()
            ))),
        }
    }

    /// Asks for the info (version, parent) of a batch.
    pub async fn info(
        &self,
        call: Call,
        base: &str,
        keys: &[Arc<str>],
    ) -> Result<Reply<Info>, GseError> {
        let body = self.send(call, base, keys).await?;
        match call {
            Call::V1Info => decode::v1_info(&body),
            Call::V2Info => decode::v2_info(&body),
            other => Err(GseError::Decode(format!(
                "{} is not an info call",
                other.label()
            ))),
        }
    }

    async fn send(&self, call: Call, base: &str, keys: &[Arc<str>]) -> Result<Vec<u8>, GseError> {
        let url = format!("{}{}", base.trim_end_matches('/'), call.path());
        let request = match call {
            Call::V1Status | Call::V1Info => self.http.post(url).json(&self.v1_body(keys)),
            Call::V2State | Call::V2Info => {
                self.http
                    .post(url)
                    .headers(self.v2_headers())
                    .json(&V2Body {
                        agent_id_list: keys.iter().map(|k| &**k).collect(),
                    })
            }
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

    fn v1_body(&self, keys: &[Arc<str>]) -> serde_json::Value {
        let hosts: Vec<serde_json::Value> = keys
            .iter()
            .filter_map(|key| key.split_once(':'))
            .map(
                |(cloud, ip)| json!({ "ip": ip, "bk_cloud_id": cloud.parse::<i64>().unwrap_or(0) }),
            )
            .collect();
        json!({
            "bk_app_code": self.app_code,
            "bk_app_secret": self.app_secret.expose(),
            "bk_username": self.username,
            "bk_supplier_account": self.supplier_account,
            "hosts": hosts,
        })
    }

    fn v2_headers(&self) -> HeaderMap {
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
        if let Some(tenant) = self
            .tenant_id
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            headers.insert("X-Bk-Tenant-Id", tenant);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers
    }
}

/// Applies a `tls:` block: extra CA roots (added to the system roots), a
/// client certificate, or no verification at all when the user asked so
/// (the warning is logged where configurations are applied).
pub(crate) fn with_tls(
    builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> Result<reqwest::ClientBuilder, GseError> {
    let tls_error =
        |what: &str, e: reqwest::Error| GseError::Transport(format!("{what}: {}", error_chain(&e)));
    let roots = tls
        .ca_certs
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("tls.ca_file", e))?;
    let mut builder = builder
        .tls_certs_merge(roots)
        .tls_danger_accept_invalid_certs(tls.insecure_skip_verify);
    if let Some(client) = &tls.client {
        // reqwest's own message is fixed text: no key material in it.
        let identity = reqwest::Identity::from_pem(client.identity_pem())
            .map_err(|e| tls_error("tls.key_file", e))?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

/// A GSE 2.0 request body.
#[derive(Serialize)]
struct V2Body<'a> {
    agent_id_list: Vec<&'a str>,
}

/// Maps a reqwest failure to a timeout or a transport error.
pub(crate) fn transport_error(err: reqwest::Error) -> GseError {
    if err.is_timeout() {
        GseError::Timeout
    } else {
        // `without_url` keeps hosts out of logs only by choice; no secret is in a URL.
        GseError::Transport(error_chain(&err.without_url()))
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a reply body, refusing more than `cap` bytes.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, GseError> {
    if response
        .content_length()
        .is_some_and(|len| len as usize > cap)
    {
        return Err(GseError::TooLarge(cap));
    }
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > cap {
            return Err(GseError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn http_error(status: u16, headers: &HeaderMap, body: &[u8]) -> GseError {
    let (code, message) = decode::error_code(body);
    let gateway_limit = decode::GATEWAY_RATE_LIMITED_FIRST..=decode::GATEWAY_RATE_LIMITED_LAST;
    if status == 429 || code.is_some_and(|c| gateway_limit.contains(&c)) {
        return GseError::RateLimited {
            code: code.unwrap_or(429),
            retry_after: retry_after(headers),
        };
    }
    GseError::HttpStatus {
        status,
        code,
        message,
    }
}

/// `Retry-After` (seconds) or the gateway's `X-Bkapi-RateLimit-Reset` (seconds).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = |name: &str| -> Option<f64> {
        let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    let mut wait = seconds(RETRY_AFTER.as_str()).or_else(|| seconds("X-Bkapi-RateLimit-Reset"))?;
    if wait > 1e9 {
        // An absolute unix time rather than a delay.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        wait = (wait - now).max(0.0);
    }
    Some(Duration::from_secs_f64(wait.min(300.0)))
}
