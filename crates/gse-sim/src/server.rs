//! The simulator's HTTP side: shared state, the axum router, the GSE
//! handlers (auth, rate limit, faults, lookup) and the `/sim/*` control API
//! (the CMDB routes are added from `cmdb_http`).
//!
//! Owns the order in which checks run for a GSE request:
//! credentials, rate limit (bucket, then `throttle_every`), outage and
//! `error_rate`, injected `code`, body validation, lookup, then body faults.
//! It does not know how envelopes are spelled (see `reply`) nor how the
//! fleet is generated (see `fleet`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};

use super::SimError;
use super::cmdb::Cmdb;
use super::cmdb_http;
use super::conn::ConnTag;
use super::faults::{BodyFault, Faults, TokenBucket, dropped, error_hit, throttle_hit};
use super::fleet::{Agent, AgentTruth, Fleet, SimOptions, mix, now_ms};
use super::log::{Api, Outcome, RequestLog, RequestRecord, Stats};
use super::reply::{self, Failure, RateInfo};

/// ESB root of the v1 endpoints.
pub(crate) const V1_ROOT: &str = "/api/c/compapi/v2/gse";
/// Gateway root of the v2 endpoints.
pub(crate) const V2_ROOT: &str = "/api/bk-gse/prod";
const REQUEST_ID_HEADER: &str = "x-bkapi-request-id";
/// The tenant header of multi-tenant BlueKing, recorded per request.
const TENANT_HEADER: &str = "x-bk-tenant-id";

/// State shared by every handler and by the Rust control methods.
#[derive(Debug)]
pub(crate) struct Shared {
    opts: SimOptions,
    fleet: Mutex<Fleet>,
    faults: Mutex<Faults>,
    bucket: Mutex<Option<TokenBucket>>,
    counter: AtomicU64,
    log: Mutex<RequestLog>,
    tenants: Mutex<BTreeMap<(Api, String), usize>>,
    /// Agents (as asked) that GSE 2.0 answers offline to one tenant only.
    tenant_offline: Mutex<BTreeMap<String, BTreeSet<String>>>,
    cmdb: Mutex<Cmdb>,
    cmdb_counter: AtomicU64,
}

impl Shared {
    /// Fresh state for `opts`, no faults.
    pub fn new(opts: SimOptions) -> Self {
        let fleet = Fleet::new(&opts);
        let cmdb = Cmdb::new(&opts, &fleet);
        Self {
            fleet: Mutex::new(fleet),
            cmdb: Mutex::new(cmdb),
            cmdb_counter: AtomicU64::new(0),
            opts,
            faults: Mutex::new(Faults::default()),
            bucket: Mutex::new(None),
            counter: AtomicU64::new(0),
            log: Mutex::new(RequestLog::default()),
            tenants: Mutex::new(BTreeMap::new()),
            tenant_offline: Mutex::new(BTreeMap::new()),
        }
    }

    /// Replace the fault set (a new rate limit starts with a full bucket).
    pub fn set_faults(&self, faults: Faults) {
        *self.bucket.lock() = faults.rate_limit.map(TokenBucket::new);
        *self.faults.lock() = faults;
    }

    /// The current fault set.
    pub fn faults(&self) -> Faults {
        self.faults.lock().clone()
    }

    /// Set agents (agent id or `cloud:ip`) online or offline; all or nothing.
    pub fn set_state(&self, ids: &[String], online: bool, code: i64) -> Result<usize, SimError> {
        let mut fleet = self.fleet.lock();
        fleet.advance();
        let found: Vec<Option<usize>> = ids.iter().map(|id| fleet.find_any(id)).collect();
        let missing: Vec<String> = ids
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        if !missing.is_empty() {
            return Err(SimError::UnknownAgents(missing));
        }
        let idxs: Vec<usize> = found.into_iter().flatten().collect();
        fleet.set_state(&idxs, online, code);
        Ok(idxs.len())
    }

    /// The truth about every agent.
    pub fn truth(&self) -> Vec<AgentTruth> {
        let mut fleet = self.fleet.lock();
        fleet.advance();
        fleet.truth()
    }

    /// GSE requests received, answered or not.
    pub fn received(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    /// Every recorded GSE request.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.lock().all()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        self.log.lock().clear();
    }

    /// Request counts.
    pub fn stats(&self) -> Stats {
        self.log.lock().stats()
    }

    /// The CMDB, locked.
    pub fn cmdb(&self) -> parking_lot::MutexGuard<'_, Cmdb> {
        self.cmdb.lock()
    }

    /// Record one request.
    pub fn record(&self, r: RequestRecord) {
        self.log.lock().push(r);
    }

    /// Counts a request's `X-Bk-Tenant-Id` ("" when it carries none).
    pub fn record_tenant(&self, api: Api, headers: &HeaderMap) {
        let tenant = tenant_of(headers).to_string();
        *self.tenants.lock().entry((api, tenant)).or_default() += 1;
    }

    /// Requests per endpoint and tenant header seen so far.
    pub fn tenants(&self) -> BTreeMap<(Api, String), usize> {
        self.tenants.lock().clone()
    }

    /// Makes GSE 2.0 answer these agent ids offline (status 3) to requests
    /// of `tenant` ("" for none), replacing that tenant's earlier list.
    pub fn set_tenant_offline(&self, tenant: &str, ids: &[String]) {
        let ids = ids.iter().cloned().collect();
        self.tenant_offline.lock().insert(tenant.to_string(), ids);
    }

    /// The agent ids answered offline to the tenant of a request.
    fn offline_for(&self, headers: &HeaderMap) -> BTreeSet<String> {
        let tenant = tenant_of(headers);
        let offline = self.tenant_offline.lock();
        offline.get(tenant).cloned().unwrap_or_default()
    }

    /// A request id for the next CMDB request (own counter, so CMDB traffic
    /// never shifts GSE's per-request fault decisions).
    pub fn cmdb_request_id(&self, headers: &HeaderMap) -> String {
        let n = self.cmdb_counter.fetch_add(1, Ordering::SeqCst) + 1;
        request_id(headers, self.opts.seed ^ 0xC3D8, n)
    }
}

/// A request's `X-Bk-Tenant-Id` ("" when it carries none).
fn tenant_of(headers: &HeaderMap) -> &str {
    let value = headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok());
    value.unwrap_or_default()
}

/// The router serving both GSE APIs and the control API.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let gse = [
        (format!("{V1_ROOT}/get_agent_status"), Api::V1Status),
        (format!("{V1_ROOT}/get_agent_info"), Api::V1Info),
        (
            format!("{V2_ROOT}/api/v2/cluster/list_agent_state"),
            Api::V2State,
        ),
        (
            format!("{V2_ROOT}/api/v2/cluster/list_agent_info"),
            Api::V2Info,
        ),
        // nodeman's fallback: the v2 paths under the ESB root.
        (
            format!("{V1_ROOT}/api/v2/cluster/list_agent_state"),
            Api::V2State,
        ),
        (
            format!("{V1_ROOT}/api/v2/cluster/list_agent_info"),
            Api::V2Info,
        ),
    ];
    let mut r = Router::new();
    for (path, api) in gse {
        let handler = move |s: State<Arc<Shared>>,
                            c: ConnectInfo<ConnTag>,
                            h: HeaderMap,
                            b: Bytes| { gse_handler(api, s, c, h, b) };
        r = r
            .route(&path, post(handler))
            .route(&format!("{path}/"), post(handler));
    }
    r.merge(cmdb_http::routes())
        .route("/sim/agents", post(control_agents))
        .route("/sim/faults", post(control_faults).get(get_faults))
        .route("/sim/truth", get(get_truth))
        .route("/sim/stats", get(get_stats).delete(clear_stats))
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> Response {
    reply::gateway_error(1640401, "API not found: no such method or path")
}

/// What one GSE request carries, once parsed.
#[derive(Debug)]
enum Body {
    V1(V1Body),
    V2(V2Body),
}

#[derive(Debug, Default, Deserialize)]
struct V1Body {
    bk_app_code: Option<String>,
    bk_app_secret: Option<String>,
    bk_username: Option<String>,
    bk_token: Option<String>,
    hosts: Option<Vec<V1Host>>,
}

#[derive(Debug, Deserialize)]
struct V1Host {
    ip: String,
    bk_cloud_id: CloudId,
}

/// `bk_cloud_id` as an integer or a numeric string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CloudId {
    Int(i64),
    Text(String),
}

impl CloudId {
    fn value(&self) -> Option<i64> {
        match self {
            CloudId::Int(i) => Some(*i),
            CloudId::Text(t) => t.trim().parse().ok(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct V2Body {
    agent_id_list: Option<Vec<String>>,
}

impl Body {
    fn parse(api: Api, bytes: &[u8]) -> Result<Body, String> {
        let bad = |e: serde_json::Error| format!("request body is not valid: {e}");
        if api.is_v2() {
            serde_json::from_slice(bytes).map(Body::V2).map_err(bad)
        } else {
            serde_json::from_slice(bytes).map(Body::V1).map_err(bad)
        }
    }

    fn ids(&self) -> usize {
        match self {
            Body::V1(b) => b.hosts.as_ref().map_or(0, Vec::len),
            Body::V2(b) => b.agent_id_list.as_ref().map_or(0, Vec::len),
        }
    }
}

/// Everything one GSE request needs while being answered.
struct Ctx<'a> {
    api: Api,
    n: u64,
    faults: &'a Faults,
    headers: &'a HeaderMap,
    body: Result<Body, String>,
}

async fn gse_handler(
    api: Api,
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnTag>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let at = Instant::now();
    let n = shared.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let faults = shared.faults();
    let body = Body::parse(api, &bytes);
    let ids = body.as_ref().map_or(0, Body::ids);
    let request_id = request_id(&headers, shared.opts.seed, n);
    shared.record_tenant(api, &headers);
    let ctx = Ctx {
        api,
        n,
        faults: &faults,
        headers: &headers,
        body,
    };
    // The gateway rejects at once; only admitted requests see backend latency.
    let decided = match shared.gate(&ctx) {
        Ok(()) => {
            backend_delay(shared.opts.latency + faults.latency).await;
            shared.backend(&ctx)
        }
        Err(f) => Err(f),
    };
    let (mut resp, outcome) = respond(api, decided, faults.body, &request_id, &conn);
    shared.log.lock().push(RequestRecord {
        at,
        api,
        ids,
        outcome,
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

async fn backend_delay(delay: std::time::Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The reply and outcome for a decided answer; body faults break data
/// replies and 1011003, never earlier failures.
fn respond(
    api: Api,
    decided: Result<Value, Failure>,
    body_fault: Option<BodyFault>,
    request_id: &str,
    conn: &ConnTag,
) -> (Response, Outcome) {
    let envelope = match (decided, body_fault) {
        (Ok(data), _) => reply::success(api, data, request_id),
        (Err(Failure::NotFound), Some(_)) => reply::not_found_envelope(request_id),
        (Err(f), _) => return (reply::failure(api, &f, request_id), f.outcome()),
    };
    let outcome = if body_fault.is_some() {
        Outcome::Fault
    } else {
        Outcome::Ok
    };
    (reply::render(api, envelope, body_fault, conn), outcome)
}

/// The caller's `X-Bkapi-Request-Id`, or 32 hex chars from the request number.
fn request_id(headers: &HeaderMap, seed: u64, n: u64) -> String {
    let given = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
    match given {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("{:016x}{:016x}", mix(seed, n), mix(n, seed)),
    }
}

impl Shared {
    /// The `data` to send, or why not.
    /// The gateway's checks: credentials, then rate limits.
    fn gate(&self, ctx: &Ctx<'_>) -> Result<(), Failure> {
        self.check_auth(ctx)?;
        self.check_rate(ctx)
    }

    /// The backend's answer: injected failures, then the lookup.
    fn backend(&self, ctx: &Ctx<'_>) -> Result<Value, Failure> {
        if ctx.faults.outage || error_hit(ctx.faults.error_rate, ctx.n) {
            return Err(Failure::Upstream);
        }
        if let Some(code) = ctx.faults.code {
            return Err(Failure::Code(code));
        }
        match &ctx.body {
            Ok(Body::V1(b)) => self.lookup_v1(ctx, b),
            Ok(Body::V2(b)) => self.lookup_v2(ctx, b),
            Err(e) => Err(Failure::BadArgs(e.clone())),
        }
    }

    fn check_auth(&self, ctx: &Ctx<'_>) -> Result<(), Failure> {
        if ctx.api.is_v2() {
            return self.check_gateway_auth(ctx.headers);
        }
        let b = match &ctx.body {
            Ok(Body::V1(b)) => b,
            Ok(Body::V2(_)) => return Err(Failure::BadArgs("unexpected body".into())),
            Err(e) => return Err(Failure::BadArgs(e.clone())),
        };
        let user = b.bk_username.as_deref().or(b.bk_token.as_deref());
        self.check_esb_auth(b.bk_app_code.as_deref(), b.bk_app_secret.as_deref(), user)
    }

    /// ESB credentials from the body: app code and secret, then a user.
    pub(crate) fn check_esb_auth(
        &self,
        code: Option<&str>,
        secret: Option<&str>,
        user: Option<&str>,
    ) -> Result<(), Failure> {
        self.check_app(code, secret)?;
        match user {
            Some(u) if !u.is_empty() => Ok(()),
            _ => Err(Failure::NoUser),
        }
    }

    fn check_app(&self, code: Option<&str>, secret: Option<&str>) -> Result<(), Failure> {
        let ok = code == Some(self.opts.app_code.as_str())
            && secret == Some(self.opts.app_secret.as_str());
        if ok {
            Ok(())
        } else {
            Err(Failure::BadCredentials)
        }
    }

    /// Gateway credentials from `X-Bkapi-Authorization`.
    pub(crate) fn check_gateway_auth(&self, headers: &HeaderMap) -> Result<(), Failure> {
        let raw = headers
            .get("x-bkapi-authorization")
            .and_then(|v| v.to_str().ok());
        let auth: Value = raw
            .and_then(|r| serde_json::from_str(r).ok())
            .ok_or(Failure::BadCredentials)?;
        let field = |k: &str| auth.get(k).and_then(Value::as_str);
        self.check_app(field("bk_app_code"), field("bk_app_secret"))?;
        let user = ["bk_username", "bk_token", "bk_ticket"]
            .iter()
            .any(|k| field(k).is_some_and(|v| !v.is_empty()));
        if user { Ok(()) } else { Err(Failure::NoUser) }
    }

    /// Bucket first (so throttled requests still spend tokens), then throttle_every.
    fn check_rate(&self, ctx: &Ctx<'_>) -> Result<(), Failure> {
        let mut bucket = self.bucket.lock();
        let limit = bucket
            .as_ref()
            .map_or(1, |b| b.limit().requests_per_second.ceil().max(1.0) as u32);
        if let Some(b) = bucket.as_mut()
            && let Err(wait) = b.try_take(Instant::now())
        {
            let reset_s = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(Failure::RateLimited(RateInfo { limit, reset_s }));
        }
        if throttle_hit(ctx.faults.throttle_every, ctx.n) {
            return Err(Failure::RateLimited(RateInfo { limit, reset_s: 1 }));
        }
        Ok(())
    }

    /// Whether agent `idx` appears in replies under the current faults.
    fn visible(&self, faults: &Faults, idx: usize, agent: &Agent) -> bool {
        agent.known && !dropped(self.opts.seed, idx, faults.drop_share)
    }

    fn lookup_v1(&self, ctx: &Ctx<'_>, body: &V1Body) -> Result<Value, Failure> {
        let hosts = match &body.hosts {
            Some(h) if !h.is_empty() => h,
            _ => return Err(Failure::BadArgs("hosts: this field is required".into())),
        };
        let mut data = serde_json::Map::new();
        if ctx.faults.none_found {
            return Ok(Value::Object(data));
        }
        let mut fleet = self.fleet.lock();
        fleet.advance();
        for h in hosts {
            let Some(cloud) = h.bk_cloud_id.value() else {
                return Err(Failure::BadArgs(format!(
                    "bk_cloud_id of {} is invalid",
                    h.ip
                )));
            };
            let found = fleet.find_v1(cloud, &h.ip);
            let Some((idx, a)) = found.and_then(|i| Some((i, fleet.agent(i)?))) else {
                continue;
            };
            if self.visible(ctx.faults, idx, a) {
                data.insert(a.key(), v1_item(ctx.api, a));
            }
        }
        Ok(Value::Object(data))
    }

    fn lookup_v2(&self, ctx: &Ctx<'_>, body: &V2Body) -> Result<Value, Failure> {
        let ids = match &body.agent_id_list {
            Some(ids) if !ids.is_empty() => ids,
            _ => {
                return Err(Failure::BadArgs(
                    "agent_id_list: this field is required".into(),
                ));
            }
        };
        if ids.len() > self.opts.max_batch_v2 {
            let max = self.opts.max_batch_v2;
            let msg = format!("agent_id_list has {} ids, at most {max} allowed", ids.len());
            return Err(Failure::BadArgs(msg));
        }
        if ctx.faults.none_found {
            return Err(Failure::NotFound);
        }
        let offline = self.offline_for(ctx.headers);
        let mut fleet = self.fleet.lock();
        fleet.advance();
        let now = now_ms();
        let mut items = Vec::new();
        for id in ids {
            let found = fleet.find_v2(id);
            let Some((idx, a)) = found.and_then(|i| Some((i, fleet.agent(i)?))) else {
                continue;
            };
            if !self.visible(ctx.faults, idx, a) {
                continue;
            }
            let with_report = self.opts.state_report_time;
            items.push(if offline.contains(id) {
                let a = Agent {
                    online: false,
                    status_code: 3,
                    ..a.clone()
                };
                v2_item(ctx.api, &a, id, now, with_report)
            } else {
                v2_item(ctx.api, a, id, now, with_report)
            });
        }
        if items.is_empty() {
            return Err(Failure::NotFound);
        }
        Ok(Value::Array(items))
    }
}

fn v1_item(api: Api, a: &Agent) -> Value {
    if api == Api::V1Status {
        json!({"ip": a.ip, "bk_cloud_id": a.cloud, "bk_agent_alive": i64::from(a.online)})
    } else {
        json!({"ip": a.ip, "bk_cloud_id": a.cloud, "version": a.version,
               "parent_ip": a.parent_ip, "parent_port": a.parent_port})
    }
}

fn v2_item(api: Api, a: &Agent, asked: &str, now: u64, state_report_time: bool) -> Value {
    let mut item = json!({
        "bk_agent_id": asked, "bk_cloud_id": a.cloud, "version": a.version, "run_mode": 1,
        "status_code": a.status_code,
    });
    if (api == Api::V2Info || state_report_time)
        && let Some(m) = item.as_object_mut()
    {
        m.insert("report_time".into(), json!(a.report_time_ms(now)));
    }
    if api == Api::V2Info {
        let extra = json!({
            "bk_host_ip": a.ip, "bk_os_type": "linux", "bk_cpu_architecture": "x86",
            "parent_ip": a.parent_ip, "parent_port": a.parent_port,
            "status": Agent::status_text(a.status_code), "start_time": a.start_time_s,
            "cpu_rate": a.cpu_rate, "mem_rate": a.mem_rate, "conn_cycle_time": "30",
            "remark": "", "last_status_code": a.last_status_code,
            "last_status": Agent::status_text(a.last_status_code),
        });
        if let (Some(m), Value::Object(e)) = (item.as_object_mut(), extra) {
            m.extend(e);
        }
    }
    item
}

/// Body of `POST /sim/agents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsControl {
    agents: Vec<String>,
    online: bool,
    status_code: Option<i64>,
}

async fn control_agents(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    let ctl: AgentsControl = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => return control_error(&format!("bad /sim/agents body: {e}")),
    };
    match shared.set_state(&ctl.agents, ctl.online, ctl.status_code.unwrap_or(3)) {
        Ok(n) => reply::json_response(StatusCode::OK, &json!({"updated": n})),
        Err(e) => control_error(&e.to_string()),
    }
}

async fn control_faults(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&bytes) {
        Ok(f) => {
            shared.set_faults(f.clone());
            reply::json_response(StatusCode::OK, &json!(f))
        }
        Err(e) => control_error(&format!("bad /sim/faults body: {e}")),
    }
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    reply::json_response(StatusCode::OK, &json!(shared.faults()))
}

async fn get_truth(State(shared): State<Arc<Shared>>) -> Response {
    reply::json_response(StatusCode::OK, &json!(shared.truth()))
}

async fn get_stats(State(shared): State<Arc<Shared>>) -> Response {
    reply::json_response(StatusCode::OK, &json!(shared.stats()))
}

async fn clear_stats(State(shared): State<Arc<Shared>>) -> Response {
    shared.clear_requests();
    reply::json_response(StatusCode::OK, &json!({"cleared": true}))
}

pub(crate) fn control_error(message: &str) -> Response {
    reply::json_response(StatusCode::BAD_REQUEST, &json!({"error": message}))
}
