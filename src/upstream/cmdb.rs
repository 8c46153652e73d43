//! The CMDB client: lists a business's hosts through ESB `list_biz_hosts` or
//! the gateway's `list_hosts`, page by page.
//!
//! Owns the request shapes, authentication and decoding of CMDB replies. It
//! does not pace itself, decide when to refresh, or turn hosts into lookups:
//! [`crate::discovery`] does.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GseError, read_capped, status_error, transport_error, with_tls};
use crate::config::{CmdbApi, CmdbConfig, GroupCmdb};

/// Largest CMDB page read (500 hosts are far below this).
const MAX_PAGE_BYTES: usize = 16 << 20;

/// Host fields asked for.
const FIELDS: &[&str] = &[
    "bk_host_id",
    "bk_cloud_id",
    "bk_host_innerip",
    "bk_host_innerip_v6",
    "bk_agent_id",
    "bk_addressing",
    "bk_host_name",
];

/// One host as CMDB lists it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct CmdbHost {
    /// CMDB host id.
    #[serde(default)]
    pub(crate) bk_host_id: i64,
    /// Cloud area.
    #[serde(default)]
    pub(crate) bk_cloud_id: i64,
    /// Inner IPv4 addresses, comma-separated.
    #[serde(default, deserialize_with = "string_or_null")]
    pub(crate) bk_host_innerip: String,
    /// Inner IPv6 addresses, comma-separated.
    #[serde(default, deserialize_with = "string_or_null")]
    pub(crate) bk_host_innerip_v6: String,
    /// GSE 2.0 agent id ("" when none).
    #[serde(default, deserialize_with = "string_or_null")]
    pub(crate) bk_agent_id: String,
    /// `static` or `dynamic`.
    #[serde(default, deserialize_with = "string_or_null")]
    pub(crate) bk_addressing: String,
    /// Host name.
    #[serde(default, deserialize_with = "string_or_null")]
    pub(crate) bk_host_name: String,
}

fn string_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct Page {
    count: i64,
    #[serde(default)]
    info: Vec<CmdbHost>,
}

/// A client for one CMDB endpoint.
#[derive(Clone)]
pub(crate) struct CmdbClient {
    http: reqwest::Client,
    config: CmdbConfig,
}

impl std::fmt::Debug for CmdbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmdbClient")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

impl CmdbClient {
    /// Builds a client.
    pub(crate) fn new(config: &CmdbConfig) -> Result<CmdbClient, GseError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("gse_exporter/", env!("CARGO_PKG_VERSION")));
        let http = with_tls(http, &config.tls)?
            .build()
            .map_err(|e| GseError::Transport(e.to_string()))?;
        Ok(CmdbClient {
            http,
            config: config.clone(),
        })
    }

    /// The configuration in use.
    pub(crate) fn config(&self) -> &CmdbConfig {
        &self.config
    }

    /// One page of a business's hosts: the total count and the rows. An
    /// error's upstream text is cut short and never carries the secret.
    pub(crate) async fn page(
        &self,
        bk_biz_id: i64,
        selection: &GroupCmdb,
        start: usize,
    ) -> Result<(usize, Vec<CmdbHost>), GseError> {
        self.request_page(bk_biz_id, selection, start)
            .await
            .map_err(|e| e.scrubbed(&[self.config.app_secret.expose()]))
    }

    async fn request_page(
        &self,
        bk_biz_id: i64,
        selection: &GroupCmdb,
        start: usize,
    ) -> Result<(usize, Vec<CmdbHost>), GseError> {
        let url = format!(
            "{}{}",
            self.config.url.trim_end_matches('/'),
            self.config
                .path
                .replace("{bk_biz_id}", &bk_biz_id.to_string())
        );
        let body = self.body(bk_biz_id, selection, start);
        let request = match self.config.api {
            CmdbApi::Esb => self.http.post(url).json(&body),
            CmdbApi::Gateway => self.http.post(url).headers(self.auth_header()).json(&body),
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let bytes = read_capped(response, MAX_PAGE_BYTES).await?;
        if !status.is_success() {
            return Err(status_error(status.as_u16(), &bytes));
        }
        decode_page(&bytes)
    }

    fn body(&self, bk_biz_id: i64, selection: &GroupCmdb, start: usize) -> Value {
        let mut body = json!({
            "bk_biz_id": bk_biz_id,
            "page": { "start": start, "limit": self.config.page_size, "sort": "bk_host_id" },
            "fields": FIELDS,
        });
        if !selection.bk_set_ids.is_empty() {
            body["bk_set_ids"] = json!(selection.bk_set_ids);
        }
        if !selection.bk_module_ids.is_empty() {
            body["bk_module_ids"] = json!(selection.bk_module_ids);
        }
        if let Some(filter) = &selection.host_property_filter {
            body["host_property_filter"] = filter.clone();
        }
        if self.config.api == CmdbApi::Esb {
            body["bk_app_code"] = json!(self.config.app_code);
            body["bk_app_secret"] = json!(self.config.app_secret.expose());
            body["bk_username"] = json!(self.config.username);
        }
        body
    }

    fn auth_header(&self) -> HeaderMap {
        let auth = json!({
            "bk_app_code": self.config.app_code,
            "bk_app_secret": self.config.app_secret.expose(),
            "bk_username": self.config.username,
        })
        .to_string();
        let mut headers = HeaderMap::new();
        if let Ok(mut value) = HeaderValue::from_str(&auth) {
            value.set_sensitive(true);
            headers.insert("X-Bkapi-Authorization", value);
        }
        headers
    }
}

/// Decodes a `list_biz_hosts` / `list_hosts` reply.
pub(crate) fn decode_page(body: &[u8]) -> Result<(usize, Vec<CmdbHost>), GseError> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        code: Option<Value>,
        #[serde(default)]
        result: Option<bool>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        data: Option<Page>,
    }
    let env: Envelope =
        serde_json::from_slice(body).map_err(|e| GseError::Decode(e.to_string()))?;
    let code = env
        .code
        .as_ref()
        .and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()));
    let ok = match (code, env.result) {
        (Some(code), _) => code == 0,
        (None, Some(result)) => result,
        (None, None) => false,
    };
    if !ok {
        return Err(GseError::Api {
            code: code.unwrap_or(-1),
            message: env.message.unwrap_or_default(),
        });
    }
    let page = env
        .data
        .ok_or_else(|| GseError::Decode("reply has no data".into()))?;
    let count = usize::try_from(page.count)
        .map_err(|_| GseError::Decode(format!("negative count {}", page.count)))?;
    Ok((count, page.info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_decode_and_errors_are_errors() {
        let body = br#"{"result":true,"code":0,"message":"","permission":null,"request_id":"x",
            "data":{"count":2,"info":[{"bk_host_id":1,"bk_cloud_id":0,"bk_host_innerip":"10.0.0.1,10.0.0.9","bk_agent_id":null},
            {"bk_host_id":2,"bk_cloud_id":1,"bk_host_innerip":"","bk_host_innerip_v6":"::1","bk_agent_id":"abc"}]}}"#;
        let (count, hosts) = decode_page(body).unwrap();
        assert_eq!(count, 2);
        assert_eq!(hosts[0].bk_host_innerip, "10.0.0.1,10.0.0.9");
        assert_eq!(hosts[1].bk_agent_id, "abc");
        let err = decode_page(br#"{"result":false,"code":1199006,"message":"limit"}"#).unwrap_err();
        assert!(matches!(err, GseError::Api { code: 1199006, .. }));
        assert!(matches!(
            decode_page(br#"{"result":true,"code":0}"#),
            Err(GseError::Decode(_))
        ));
    }
}
