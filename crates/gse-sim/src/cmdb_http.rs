//! The CMDB side of the simulator's HTTP server: `list_biz_hosts`,
//! `list_biz_hosts_topo` and `search_business` through ESB, `list_hosts`,
//! `list_hosts_topo` and `biz/search` through the API gateway, plus the
//! `/sim/cmdb` control routes.
//!
//! Owns the order of checks for a CMDB request: credentials (ESB body or
//! `X-Bkapi-Authorization`), `cmdb_outage` (and `cmdb_business_outage` for
//! `search_business`), body, query, lookup, each after `cmdb_latency`. CMDB requests have their own
//! request counter and ignore every GSE fault (latency, rate limit, error
//! rate, codes, body faults), so tests can break GSE and CMDB apart.
//! Envelopes are spelled in `reply`; the host table and query semantics
//! live in `cmdb`, the topology and business names in `topo`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::cmdb::{CODE_BAD_JSON, CODE_PARAMS_INVALID, CmdbHost, HostQuery};
use super::log::{Api, Outcome, RequestRecord};
use super::reply::{self, Failure};
use super::server::{Shared, control_error};
use super::topo::{BizQuery, TopoQuery};

/// ESB root of the CMDB endpoints.
pub(crate) const CMDB_ESB_ROOT: &str = "/api/c/compapi/v2/cc";
/// Gateway root of the CMDB endpoints.
pub(crate) const CMDB_GATEWAY_ROOT: &str = "/api/bk-cmdb/prod";
const REQUEST_ID_HEADER: &str = "x-bkapi-request-id";

/// The CMDB routes, each with and without a trailing slash.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    let mut r = Router::new();
    for api in [
        Api::CmdbListHosts,
        Api::CmdbListHostsTopo,
        Api::CmdbSearchBusiness,
    ] {
        let esb = format!("{CMDB_ESB_ROOT}/{}", esb_name(api));
        let handler =
            move |s: State<Arc<Shared>>, h: HeaderMap, b: Bytes| esb_handler(api, s, h, b);
        r = r
            .route(&esb, post(handler))
            .route(&format!("{esb}/"), post(handler));
        for prefix in ["api/v3", "api/v3/open"] {
            let path = format!("{CMDB_GATEWAY_ROOT}/{prefix}/{}", gateway_path(api));
            let handler = move |s: State<Arc<Shared>>, p: Path<String>, h: HeaderMap, b: Bytes| {
                gateway_handler(api, s, p, h, b)
            };
            r = r
                .route(&path, post(handler))
                .route(&format!("{path}/"), post(handler));
        }
    }
    r.route("/sim/cmdb", post(control_cmdb))
        .route("/sim/cmdb/{bk_biz_id}", get(get_cmdb))
}

/// The ESB component name of a CMDB endpoint.
fn esb_name(api: Api) -> &'static str {
    match api {
        Api::CmdbListHostsTopo => "list_biz_hosts_topo",
        Api::CmdbSearchBusiness => "search_business",
        _ => "list_biz_hosts",
    }
}

/// The gateway path of a CMDB endpoint under `api/v3` (its one parameter:
/// the business, or the supplier account of `biz/search`).
fn gateway_path(api: Api) -> &'static str {
    match api {
        Api::CmdbListHostsTopo => "hosts/app/{bk_biz_id}/list_hosts_topo",
        Api::CmdbSearchBusiness => "biz/search/{bk_supplier_account}",
        _ => "hosts/app/{bk_biz_id}/list_hosts",
    }
}

async fn esb_handler(
    api: Api,
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let at = Instant::now();
    tokio::time::sleep(shared.faults().cmdb_latency).await;
    let decided = esb_decide(&shared, api, &bytes);
    finish(&shared, api, &headers, at, false, decided)
}

async fn gateway_handler(
    api: Api,
    State(shared): State<Arc<Shared>>,
    Path(param): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let at = Instant::now();
    tokio::time::sleep(shared.faults().cmdb_latency).await;
    let decided = gateway_decide(&shared, api, &param, &headers, &bytes);
    finish(&shared, api, &headers, at, true, decided)
}

/// `cmdb_outage`, and `cmdb_business_outage` for `search_business`.
fn outage(shared: &Shared, api: Api) -> Result<(), Failure> {
    let faults = shared.faults();
    let business = api == Api::CmdbSearchBusiness && faults.cmdb_business_outage;
    if faults.cmdb_outage || business {
        return Err(Failure::Upstream);
    }
    Ok(())
}

/// ESB: the body carries the credentials, so it is read first.
fn esb_decide(shared: &Shared, api: Api, bytes: &[u8]) -> Result<Value, Failure> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| Failure::BadArgs(format!("request body is not valid: {e}")))?;
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let user = text("bk_username").or(text("bk_token"));
    shared.check_esb_auth(text("bk_app_code"), text("bk_app_secret"), user)?;
    outage(shared, api)?;
    if api == Api::CmdbSearchBusiness {
        return search(shared, &body);
    }
    let biz = body.get("bk_biz_id").and_then(biz_id).ok_or_else(|| {
        Failure::Cmdb(
            CODE_PARAMS_INVALID,
            "bk_biz_id: an integer is required".into(),
        )
    })?;
    list(shared, api, biz, &body)
}

/// Gateway: header credentials, then the body goes to CMDB.
fn gateway_decide(
    shared: &Shared,
    api: Api,
    param: &str,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Value, Failure> {
    shared.check_gateway_auth(headers)?;
    outage(shared, api)?;
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| Failure::Cmdb(CODE_BAD_JSON, format!("unmarshal request body: {e}")))?;
    if api == Api::CmdbSearchBusiness {
        return search(shared, &body);
    }
    let biz = param.trim().parse::<i64>().map_err(|_| {
        Failure::Cmdb(
            CODE_PARAMS_INVALID,
            format!("bk_biz_id {param:?} is invalid"),
        )
    })?;
    list(shared, api, biz, &body)
}

/// `bk_biz_id` as an integer or a numeric string.
fn biz_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn list(shared: &Shared, api: Api, biz: i64, body: &Value) -> Result<Value, Failure> {
    let invalid = |m| Failure::Cmdb(CODE_PARAMS_INVALID, m);
    if api == Api::CmdbListHostsTopo {
        let q = TopoQuery::parse(body).map_err(invalid)?;
        return Ok(shared.cmdb().list_topo(biz, &q));
    }
    let q = HostQuery::parse(body).map_err(invalid)?;
    Ok(shared.cmdb().list(biz, &q))
}

fn search(shared: &Shared, body: &Value) -> Result<Value, Failure> {
    let q = BizQuery::parse(body).map_err(|m| Failure::Cmdb(CODE_PARAMS_INVALID, m))?;
    Ok(shared.cmdb().search_business(&q))
}

/// Reply, record and tag one CMDB request.
fn finish(
    shared: &Shared,
    api: Api,
    headers: &HeaderMap,
    at: Instant,
    gateway: bool,
    decided: Result<Value, Failure>,
) -> Response {
    let request_id = shared.cmdb_request_id(headers);
    shared.record_tenant(api, headers);
    let (mut resp, outcome, rows) = match decided {
        Ok(data) => {
            let rows = data["info"].as_array().map_or(0, Vec::len);
            (reply::cmdb_success(data, &request_id), Outcome::Ok, rows)
        }
        Err(f) => (
            reply::cmdb_failure(gateway, &f, &request_id),
            f.outcome(),
            0,
        ),
    };
    shared.record(RequestRecord {
        at,
        api,
        ids: rows,
        outcome,
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// Body of `POST /sim/cmdb`; the changes apply in field order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CmdbControl {
    bk_biz_id: i64,
    set_hosts: Option<Vec<CmdbHost>>,
    remove: Option<Vec<i64>>,
    add: Option<Vec<CmdbHost>>,
    visible_share: Option<f64>,
    bk_biz_name: Option<String>,
    rename_set: Option<Rename>,
    rename_module: Option<Rename>,
}

/// A new name for a set or module: `{"id": 201, "name": "web"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    id: i64,
    name: String,
}

async fn control_cmdb(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    let ctl: CmdbControl = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => return control_error(&format!("bad /sim/cmdb body: {e}")),
    };
    let biz = ctl.bk_biz_id;
    let mut cmdb = shared.cmdb();
    if let Some(hosts) = ctl.set_hosts {
        cmdb.set_hosts(biz, hosts);
    }
    let removed = ctl.remove.map_or(0, |ids| cmdb.remove_hosts(biz, &ids));
    if let Some(hosts) = ctl.add {
        cmdb.add_hosts(biz, hosts);
    }
    if let Some(share) = ctl.visible_share {
        cmdb.set_visible_share(biz, share);
    }
    if let Some(name) = ctl.bk_biz_name {
        cmdb.business_mut(biz).tables.name = name;
    }
    if let Some(r) = ctl.rename_set {
        cmdb.business_mut(biz).tables.rename_set(r.id, &r.name);
    }
    if let Some(r) = ctl.rename_module {
        cmdb.business_mut(biz).tables.rename_module(r.id, &r.name);
    }
    let visible = cmdb.visible(biz).len();
    let body = json!({"bk_biz_id": biz, "removed": removed, "visible": visible});
    reply::json_response(StatusCode::OK, &body)
}

async fn get_cmdb(State(shared): State<Arc<Shared>>, Path(biz): Path<String>) -> Response {
    match biz.trim().parse::<i64>() {
        Ok(biz) => reply::json_response(StatusCode::OK, &json!(shared.cmdb().visible(biz))),
        Err(_) => control_error(&format!("bad business id {biz:?}")),
    }
}
