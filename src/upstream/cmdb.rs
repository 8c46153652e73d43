//! The CMDB client: lists a business's hosts through ESB `list_biz_hosts` or
//! the gateway's `list_hosts`, page by page; with topology, through
//! `list_biz_hosts_topo` / `list_hosts_topo` instead (the same hosts, each
//! with its sets, modules and maintainers) plus one `search_business` for the
//! business name.
//!
//! Owns the request shapes, authentication and decoding of CMDB replies. It
//! does not pace itself, decide when to refresh, or turn hosts into lookups:
//! [`crate::discovery`] does.
//!
//! Shapes relied on (bk-cmdb `docs/apidoc/apigw/open/en/list_biz_hosts_topo.md`,
//! `search_business.md`; `src/common/metadata/hostserver.go`
//! `ListBizHostsTopoParameter`, `HostTopo`; `src/scene_server/host_server/service/findhost.go`
//! `ListBizHostsTopo`): the topology listing takes `page` (limit at most 500),
//! `fields`, `host_property_filter` and `set_property_filter` /
//! `module_property_filter` (it has no `bk_set_ids` / `bk_module_ids`: CMDB
//! would ignore them, so they are sent as `bk_set_id` / `bk_module_id` `in`
//! rules) and answers `{count, info: [{host: {..}, topo: [{bk_set_id,
//! bk_set_name, module: [{bk_module_id, bk_module_name}]}]}]}`, `topo` in no
//! particular order (a Go map). `search_business` takes the legacy
//! `condition: {bk_biz_id}`, the one filter both the ESB component
//! (legacy-bk-paas `components/bk/apisv2/cc/search_business.py` forwards only
//! `fields`, `condition`, `page`) and the current server accept.

use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use std::sync::Arc;

use super::{
    GseError, TENANT_HEADER, client_builder, read_capped, status_error, tenant_header,
    transport_error, with_tls,
};
use crate::config::{CmdbApi, CmdbConfig, GroupCmdb};
use crate::model::Topology;

/// Largest CMDB page read (500 hosts are far below this).
const MAX_PAGE_BYTES: usize = 16 << 20;

/// Most hosts one business may list: twice the largest fleets. A `count`
/// above it is refused at the first page; paging a lying `count` of 10^9 held
/// every group's polling for as long as CMDB answered, growing to gigabytes.
const MAX_BUSINESS_HOSTS: usize = 1 << 21;

/// A page's `count` and rows as CMDB may truthfully give them: at most
/// [`MAX_BUSINESS_HOSTS`] hosts, and no more rows than the page asked for.
fn believable(count: usize, rows: usize, page_size: usize) -> Result<(), GseError> {
    if count > MAX_BUSINESS_HOSTS {
        return Err(GseError::Decode(format!(
            "CMDB counts {count} hosts in the business, more than the {MAX_BUSINESS_HOSTS} read"
        )));
    }
    if rows > page_size {
        return Err(GseError::Decode(format!(
            "CMDB answered {rows} hosts to a page of {page_size}"
        )));
    }
    Ok(())
}

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

/// Host fields asked for with topology: the maintainers too (CMDB `objuser`
/// fields, comma-separated user names).
const TOPOLOGY_FIELDS: &[&str] = &[
    "bk_host_id",
    "bk_cloud_id",
    "bk_host_innerip",
    "bk_host_innerip_v6",
    "bk_agent_id",
    "bk_addressing",
    "bk_host_name",
    "operator",
    "bk_bak_operator",
];

/// Largest business lookup read (one business).
const MAX_BUSINESS_BYTES: usize = 1 << 20;

/// One host as CMDB lists it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct CmdbHost {
    /// CMDB host id.
    #[serde(default, deserialize_with = "whole_number")]
    pub(crate) bk_host_id: i64,
    /// Cloud area.
    #[serde(default, deserialize_with = "whole_number")]
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
    /// Main maintainers, comma-separated (asked for with topology only).
    #[serde(default, deserialize_with = "string_or_null")]
    pub(crate) operator: String,
    /// Backup maintainers, comma-separated (asked for with topology only).
    #[serde(default, deserialize_with = "string_or_null")]
    pub(crate) bk_bak_operator: String,
    /// Where the host sits, from a topology listing (None from a plain one).
    #[serde(skip)]
    pub(crate) topology: Option<Arc<Topology>>,
    /// The row could not be read (a field of the wrong type): counted as
    /// skipped, so one bad row does not fail the listing of a business.
    #[serde(skip)]
    pub(crate) unreadable: bool,
}

/// An integer as CMDB may write one: a number, a whole float, or a string
/// of digits (`"1002"`); anything else (null, text) makes the row unreadable.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let value = Value::deserialize(d)?;
    let whole = match &value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    };
    whole.ok_or_else(|| serde::de::Error::custom("expected a whole number"))
}

/// One row of a host listing, or nothing when it cannot be read as one.
struct Row<T>(Option<T>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Row<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(Row(T::deserialize(value).ok()))
    }
}

/// The host of a row that could not be read.
fn unreadable() -> CmdbHost {
    CmdbHost {
        unreadable: true,
        ..CmdbHost::default()
    }
}

/// A set a host belongs to, with the host's modules in it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
struct CmdbSet {
    /// Set name.
    #[serde(default, deserialize_with = "string_or_null")]
    bk_set_name: String,
    /// The host's modules in the set.
    #[serde(default, deserialize_with = "list_or_null")]
    module: Vec<CmdbModule>,
}

/// A module a host belongs to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
struct CmdbModule {
    /// Module name.
    #[serde(default, deserialize_with = "string_or_null")]
    bk_module_name: String,
}

/// A string field, null read as empty, cut at [`MAX_FIELD_BYTES`].
fn string_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let mut text = Option::<String>::deserialize(d)?.unwrap_or_default();
    if text.len() > MAX_FIELD_BYTES {
        text.truncate(text.floor_char_boundary(MAX_FIELD_BYTES));
        text.shrink_to_fit();
    }
    Ok(text)
}

/// Longest string CMDB's fields are kept at (host names, maintainers, set
/// and module names become label values): a host name of a megabyte went
/// into every series of its host, 15.7 MB of `/metrics` for three hosts.
const MAX_FIELD_BYTES: usize = 1024;

fn list_or_null<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct Page<T> {
    count: i64,
    #[serde(default = "Vec::new", deserialize_with = "list_or_null")]
    info: Vec<T>,
}

/// One row of a topology listing.
#[derive(Deserialize)]
struct TopoRow {
    host: CmdbHost,
    #[serde(default, deserialize_with = "list_or_null")]
    topo: Vec<CmdbSet>,
}

/// One row of a business lookup.
#[derive(Deserialize)]
struct BusinessRow {
    #[serde(default)]
    bk_biz_id: Option<Value>,
    #[serde(default, deserialize_with = "string_or_null")]
    bk_biz_name: String,
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
        let http = with_tls(client_builder(config.timeout), &config.tls)?
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

    /// One page of a business's hosts: the total count and the rows (with
    /// their topology when the selection asks for it).
    pub(crate) async fn page(
        &self,
        bk_biz_id: i64,
        selection: &GroupCmdb,
        start: usize,
    ) -> Result<(usize, Vec<CmdbHost>), GseError> {
        let path = if selection.topology {
            &self.config.topology_path
        } else {
            &self.config.path
        };
        let path = path.replace("{bk_biz_id}", &bk_biz_id.to_string());
        let body = self.body(bk_biz_id, selection, start);
        let tenant = selection.tenant_id.as_deref();
        let bytes = self.post(&path, &body, tenant, MAX_PAGE_BYTES).await?;
        let decoded = if selection.topology {
            decode_topology_page(&bytes)
        } else {
            decode_page(&bytes)
        };
        let (count, hosts) = decoded.map_err(|e| self.scrub(e))?;
        believable(count, hosts.len(), self.config.page_size)?;
        let unreadable = hosts.iter().filter(|h| h.unreadable).count();
        if unreadable > 0 {
            tracing::warn!(
                bk_biz_id,
                start,
                unreadable,
                "CMDB rows that cannot be read (a field of the wrong type) are skipped, counted as unreadable_in_cmdb"
            );
        }
        Ok((count, hosts))
    }

    /// An error as it may be logged: CMDB's text cut short, the secret gone.
    fn scrub(&self, err: GseError) -> GseError {
        err.scrubbed(&[self.config.app_secret.expose()])
    }

    /// The name of a business (None when CMDB lists no such business to this
    /// app and user: unknown, archived or not permitted), asked in the
    /// selection's tenant.
    pub(crate) async fn business_name(
        &self,
        bk_biz_id: i64,
        selection: &GroupCmdb,
    ) -> Result<Option<String>, GseError> {
        let path = self
            .config
            .business_path
            .replace("{bk_supplier_account}", &self.config.supplier_account);
        let mut body = json!({
            "fields": ["bk_biz_id", "bk_biz_name"],
            "condition": { "bk_biz_id": bk_biz_id },
            "page": { "start": 0, "limit": 1 },
        });
        if self.config.api == CmdbApi::Esb {
            body["bk_supplier_account"] = json!(self.config.supplier_account);
            self.esb_auth(&mut body);
        }
        let tenant = selection.tenant_id.as_deref();
        let bytes = self.post(&path, &body, tenant, MAX_BUSINESS_BYTES).await?;
        decode_business(&bytes, bk_biz_id).map_err(|e| self.scrub(e))
    }

    /// POSTs `body` to `path` under the root with the API's credentials and
    /// the group's tenant; returns the reply body of a 2xx status. An
    /// error's upstream text is cut short and never carries the secret.
    async fn post(
        &self,
        path: &str,
        body: &Value,
        tenant: Option<&str>,
        cap: usize,
    ) -> Result<Vec<u8>, GseError> {
        let sent = self.send(path, body, tenant, cap).await;
        sent.map_err(|e| self.scrub(e))
    }

    async fn send(
        &self,
        path: &str,
        body: &Value,
        tenant: Option<&str>,
        cap: usize,
    ) -> Result<Vec<u8>, GseError> {
        let url = format!("{}{path}", self.config.url.trim_end_matches('/'));
        let request = match self.config.api {
            CmdbApi::Esb => self.http.post(url).json(body),
            CmdbApi::Gateway => self.http.post(url).headers(self.auth_header()).json(body),
        };
        let request = match tenant_header(tenant) {
            Some(tenant) => request.header(TENANT_HEADER, tenant),
            None => request,
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let bytes = read_capped(response, cap).await?;
        if !status.is_success() {
            return Err(status_error(status.as_u16(), &bytes));
        }
        Ok(bytes)
    }

    fn body(&self, bk_biz_id: i64, selection: &GroupCmdb, start: usize) -> Value {
        let fields = if selection.topology {
            TOPOLOGY_FIELDS
        } else {
            FIELDS
        };
        let mut body = json!({
            "bk_biz_id": bk_biz_id,
            "page": { "start": start, "limit": self.config.page_size, "sort": "bk_host_id" },
            "fields": fields,
        });
        let ids = [
            (
                "bk_set_ids",
                "set_property_filter",
                "bk_set_id",
                &selection.bk_set_ids,
            ),
            (
                "bk_module_ids",
                "module_property_filter",
                "bk_module_id",
                &selection.bk_module_ids,
            ),
        ];
        for (list_key, filter_key, field, ids) in ids {
            if ids.is_empty() {
                continue;
            }
            body[if selection.topology {
                filter_key
            } else {
                list_key
            }] = if selection.topology {
                json!({ "condition": "AND", "rules": [{ "field": field, "operator": "in", "value": ids }] })
            } else {
                json!(ids)
            };
        }
        if let Some(filter) = &selection.host_property_filter {
            body["host_property_filter"] = filter.clone();
        }
        if self.config.api == CmdbApi::Esb {
            self.esb_auth(&mut body);
        }
        body
    }

    /// ESB credentials, in the body.
    fn esb_auth(&self, body: &mut Value) {
        body["bk_app_code"] = json!(self.config.app_code);
        body["bk_app_secret"] = json!(self.config.app_secret.expose());
        body["bk_username"] = json!(self.config.username);
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
    let page: Page<Row<CmdbHost>> = decode_data(body)?;
    let hosts = page
        .info
        .into_iter()
        .map(|Row(host)| host.unwrap_or_else(unreadable));
    Ok((count(page.count)?, hosts.collect()))
}

/// Decodes a `list_biz_hosts_topo` / `list_hosts_topo` reply.
pub(crate) fn decode_topology_page(body: &[u8]) -> Result<(usize, Vec<CmdbHost>), GseError> {
    let page: Page<Row<TopoRow>> = decode_data(body)?;
    let hosts = page
        .info
        .into_iter()
        .map(|Row(row)| {
            let Some(row) = row else {
                return unreadable();
            };
            let sets = row.topo.iter().map(|s| s.bk_set_name.as_str());
            let modules = row.topo.iter().flat_map(|s| &s.module);
            let topology = Topology::from_names(
                sets,
                modules.map(|m| m.bk_module_name.as_str()),
                &row.host.operator,
                &row.host.bk_bak_operator,
            );
            CmdbHost {
                topology: Some(Arc::new(topology)),
                ..row.host
            }
        })
        .collect();
    Ok((count(page.count)?, hosts))
}

/// Decodes a `search_business` reply: the name of `bk_biz_id`'s row, if any.
pub(crate) fn decode_business(body: &[u8], bk_biz_id: i64) -> Result<Option<String>, GseError> {
    let page: Page<BusinessRow> = decode_data(body)?;
    let id = |v: &Value| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok());
    Ok(page
        .info
        .into_iter()
        .find(|row| row.bk_biz_id.as_ref().and_then(id) == Some(bk_biz_id))
        .map(|row| row.bk_biz_name))
}

fn count(n: i64) -> Result<usize, GseError> {
    usize::try_from(n).map_err(|_| GseError::Decode(format!("negative count {n}")))
}

/// The `data` of a CMDB envelope, or the error it carries.
fn decode_data<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GseError> {
    #[derive(Deserialize)]
    struct Envelope<T> {
        #[serde(default)]
        code: Option<Value>,
        #[serde(default)]
        result: Option<bool>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default = "none")]
        data: Option<T>,
    }
    fn none<T>() -> Option<T> {
        None
    }
    let env: Envelope<T> =
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
    env.data
        .ok_or_else(|| GseError::Decode("reply has no data".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_fields_are_cut_at_a_character_boundary() {
        let name = format!(
            "{}é{}",
            "a".repeat(MAX_FIELD_BYTES - 1),
            "b".repeat(1 << 20)
        );
        let body = format!(
            r#"{{"result":true,"code":0,"data":{{"count":1,"info":[{{"bk_host_id":1,"bk_host_innerip":"10.0.0.1","bk_host_name":"{name}"}}]}}}}"#
        );
        let (_, hosts) = decode_page(body.as_bytes()).unwrap();
        assert_eq!(hosts[0].bk_host_name, "a".repeat(MAX_FIELD_BYTES - 1));
        assert_eq!(hosts[0].bk_host_innerip, "10.0.0.1");
    }

    #[test]
    fn a_count_or_a_page_past_belief_is_an_error() {
        assert!(believable(MAX_BUSINESS_HOSTS, 500, 500).is_ok());
        let err = believable(1_000_000_000, 500, 500).unwrap_err().to_string();
        assert!(err.contains("CMDB counts 1000000000 hosts"), "{err}");
        let err = believable(10, 501, 500).unwrap_err().to_string();
        assert!(err.contains("501 hosts to a page of 500"), "{err}");
    }

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

    #[test]
    fn a_row_that_cannot_be_read_is_one_host_skipped_not_a_failed_page() {
        // One bad row failed the whole listing, so the business's host list
        // froze until someone mended CMDB.
        let body = br#"{"result":true,"code":0,"data":{"count":6,"info":[
            {"bk_host_id":1,"bk_cloud_id":null,"bk_host_innerip":"10.0.0.1"},
            {"bk_host_id":"1002","bk_cloud_id":"2","bk_host_innerip":"10.0.0.2"},
            {"bk_host_id":3.0,"bk_cloud_id":1e20,"bk_host_innerip":"10.0.0.3"},
            {"bk_host_id":4,"bk_host_innerip":["10.0.0.4"]},
            "not a host",
            {"bk_host_id":6,"bk_host_innerip":"10.0.0.6"}]}}"#;
        let (count, hosts) = decode_page(body).unwrap();
        assert_eq!((count, hosts.len()), (6, 6), "every row counts for paging");
        let unreadable: Vec<bool> = hosts.iter().map(|h| h.unreadable).collect();
        assert_eq!(unreadable, [true, false, true, true, true, false]);
        assert_eq!(
            (hosts[1].bk_host_id, hosts[1].bk_cloud_id),
            (1002, 2),
            "numbers as strings"
        );
        assert_eq!(
            (hosts[5].bk_host_id, hosts[5].bk_cloud_id),
            (6, 0),
            "a missing cloud is 0"
        );
        let topo = br#"{"result":true,"code":0,"data":{"count":2,"info":[
            {"host":{"bk_host_id":1,"bk_cloud_id":"x"},"topo":[]},
            {"host":{"bk_host_id":2,"bk_host_innerip":"10.0.0.2"},"topo":[{"bk_set_name":"s","module":[]}]}]}}"#;
        let (_, hosts) = decode_topology_page(topo).unwrap();
        assert!(hosts[0].unreadable && !hosts[1].unreadable);
        assert_eq!(&*hosts[1].topology.as_ref().unwrap().bk_set_name, "s");
    }

    #[test]
    fn topology_pages_and_business_names_decode() {
        let body = br#"{"result":true,"code":0,"message":"success","data":{"count":3,"info":[
            {"host":{"bk_host_id":1,"bk_cloud_id":0,"bk_host_innerip":"10.0.0.1","operator":"alice,bob","bk_bak_operator":null},
             "topo":[{"bk_set_id":11,"bk_set_name":"set1","module":[{"bk_module_id":56,"bk_module_name":"m1"},{"bk_module_id":57,"bk_module_name":"m2"}]}]},
            {"host":{"bk_host_id":2,"bk_host_innerip":"10.0.0.2"},"topo":null},
            {"host":{"bk_host_id":3,"bk_host_innerip":"10.0.0.3"},"topo":[{"bk_set_id":10,"bk_set_name":"Idle Pool","module":null}]}]}}"#;
        let (count, hosts) = decode_topology_page(body).unwrap();
        assert_eq!(count, 3);
        let topology = |i: usize| hosts[i].topology.as_deref().unwrap().clone();
        let first = topology(0);
        assert_eq!(&*first.operator, "alice,bob");
        assert_eq!(&*first.bk_bak_operator, "");
        assert_eq!(
            (&*first.bk_set_name, &*first.bk_module_name),
            ("set1", "m1,m2")
        );
        assert_eq!(topology(1), Topology::default());
        assert_eq!(
            (&*topology(2).bk_set_name, &*topology(2).bk_module_name),
            ("Idle Pool", "")
        );
        // An empty business answers a plain listing with no rows.
        assert_eq!(
            decode_topology_page(br#"{"result":true,"code":0,"data":{"count":0,"info":[]}}"#)
                .unwrap()
                .0,
            0
        );

        let names = r#"{"result":true,"code":0,"data":{"count":2,"info":[
            {"bk_biz_id":2,"bk_biz_name":"other"},{"bk_biz_id":"3","bk_biz_name":"支付"}]}}"#;
        let names = names.as_bytes();
        assert_eq!(decode_business(names, 3).unwrap().as_deref(), Some("支付"));
        assert_eq!(decode_business(names, 4).unwrap(), None);
        let denied = br#"{"result":false,"code":9900403,"message":"no permission"}"#;
        assert!(matches!(
            decode_business(denied, 3),
            Err(GseError::Api { code: 9900403, .. })
        ));
    }
}
