//! HTTP replies of the simulator: success and error envelopes for ESB (v1)
//! and the API gateway (v2), CMDB envelopes, rate-limit headers, and broken
//! bodies.
//!
//! Owns how a decided answer becomes bytes on the wire; it never decides
//! *which* answer to give and never reads the fleet.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::{Value, json};

use super::conn::ConnTag;
use super::faults::{BodyFault, gateway_code, gateway_status};
use super::log::{Api, Outcome};

/// GSE's "none of the agents was found" code.
pub(crate) const NOT_FOUND_CODE: i64 = 1011003;
/// Size a `Huge` body exceeds.
const HUGE_BYTES: usize = 64 * 1024 * 1024 + 512 * 1024;

/// Rate-limit reply details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateInfo {
    /// Value of `X-Bkapi-RateLimit-Limit`.
    pub limit: u32,
    /// Whole seconds until a token is available (at least 1).
    pub reset_s: u64,
}

/// Why a request is not answered with data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No user identity (v1 1306401; v2 400/1640001).
    NoUser,
    /// Missing or wrong app code/secret (v1 1306403; v2 400/1640001).
    BadCredentials,
    /// Unusable body (v1 1306406; v2 400/1640001).
    BadArgs(String),
    /// Over the rate limit (v1 1306429; v2 429/1642902).
    RateLimited(RateInfo),
    /// GSE unreachable (v1 1306201; v2 502/1650200).
    Upstream,
    /// An injected error code.
    Code(i64),
    /// v2: none of the ids is known (1011003).
    NotFound,
    /// A CMDB error (code, message): HTTP 200, `result:false`, both paths.
    Cmdb(i64, String),
}

impl Failure {
    /// The outcome recorded for this failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::NoUser | Failure::BadCredentials => Outcome::AuthError,
            Failure::BadArgs(_) | Failure::Cmdb(..) => Outcome::BadRequest,
            Failure::RateLimited(_) => Outcome::RateLimited,
            Failure::Upstream => Outcome::Fault,
            Failure::NotFound | Failure::Code(NOT_FOUND_CODE) => Outcome::NotFound,
            Failure::Code(1642901..=1642904) => Outcome::RateLimited,
            Failure::Code(_) => Outcome::Fault,
        }
    }
}

/// The success envelope around `data`.
pub(crate) fn success(api: Api, data: Value, request_id: &str) -> Value {
    if api.is_v2() {
        json!({"code": 0, "result": true, "message": "success", "data": data,
               "request_id": request_id})
    } else {
        json!({"result": true, "code": 0, "message": "success", "data": data,
               "request_id": request_id})
    }
}

/// The v2 "none found" envelope (what body faults break when no agent matched).
pub(crate) fn not_found_envelope(request_id: &str) -> Value {
    json!({"code": NOT_FOUND_CODE, "result": false, "message": "agent not found",
           "data": null, "request_id": request_id})
}

/// The reply for a failure.
pub(crate) fn failure(api: Api, f: &Failure, request_id: &str) -> Response {
    if api.is_v2() {
        v2_failure(f)
    } else {
        v1_failure(f, request_id)
    }
}

fn v1_failure(f: &Failure, request_id: &str) -> Response {
    let (code, message) = match f {
        Failure::NoUser => (1306401, "bk_username or bk_token is required".to_string()),
        Failure::BadCredentials => (1306403, "app code or app secret is wrong".to_string()),
        Failure::BadArgs(m) => (1306406, m.clone()),
        Failure::RateLimited(_) => (1306429, "rate limit restriction".to_string()),
        Failure::Upstream => (1306201, "Request third-party interface error".to_string()),
        Failure::Code(c) => (*c, format!("simulated error code {c}")),
        Failure::NotFound => (NOT_FOUND_CODE, "agents not found".to_string()),
        Failure::Cmdb(c, m) => (*c, m.clone()),
    };
    let body = json!({"result": false, "code": code, "message": message, "data": null,
                      "request_id": request_id});
    json_response(StatusCode::OK, &body)
}

fn v2_failure(f: &Failure) -> Response {
    match f {
        Failure::NoUser => gateway_error(1640001, "user identity is required"),
        Failure::BadCredentials => gateway_error(1640001, "app code or app secret is wrong"),
        Failure::BadArgs(m) => gateway_error(1640001, m),
        Failure::RateLimited(info) => rate_limited(*info),
        Failure::Upstream => gateway_error(1650200, "bad gateway: backend unavailable"),
        Failure::Code(c) if gateway_status(*c).is_some() => {
            gateway_error(*c, &format!("simulated error code {c}"))
        }
        Failure::Code(c) => gse_error(*c, &format!("simulated error code {c}")),
        Failure::NotFound => gse_error(NOT_FOUND_CODE, "agent not found: none of the ids"),
        Failure::Cmdb(c, m) => gse_error(*c, m),
    }
}

/// The CMDB success envelope around `data`, the same on ESB and gateway.
pub(crate) fn cmdb_success(data: Value, request_id: &str) -> Response {
    let body = json!({"result": true, "code": 0, "message": "success", "permission": null,
                      "request_id": request_id, "data": data});
    json_response(StatusCode::OK, &body)
}

/// A failed CMDB request: CMDB's own errors are HTTP 200 with its
/// envelope; auth and outage failures are ESB's (`gateway` false) or the
/// gateway's.
pub(crate) fn cmdb_failure(gateway: bool, f: &Failure, request_id: &str) -> Response {
    match f {
        Failure::Cmdb(code, message) => {
            let body = json!({"result": false, "code": code, "message": message,
                              "permission": null, "request_id": request_id, "data": null});
            json_response(StatusCode::OK, &body)
        }
        _ if gateway => v2_failure(f),
        _ => v1_failure(f, request_id),
    }
}

/// A GSE (not gateway) error: HTTP 200 with `result:false`.
fn gse_error(code: i64, message: &str) -> Response {
    let body = json!({"code": code, "result": false, "message": message, "data": null});
    json_response(StatusCode::OK, &body)
}

/// A gateway error envelope with the HTTP status its code maps to.
pub(crate) fn gateway_error(code: i64, message: &str) -> Response {
    let (status, name) = gateway_status(code).unwrap_or((502, "BAD_GATEWAY"));
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = json!({"result": false, "code": code, "code_name": name,
                      "message": message, "data": null});
    let mut resp = json_response(status, &body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        add_rate_headers(
            resp.headers_mut(),
            RateInfo {
                limit: 1,
                reset_s: 1,
            },
        );
    }
    resp
}

fn rate_limited(info: RateInfo) -> Response {
    let mut resp = gateway_error(1642902, "rate limit restriction: too many requests");
    add_rate_headers(resp.headers_mut(), info);
    resp
}

fn add_rate_headers(h: &mut HeaderMap, info: RateInfo) {
    h.insert("x-bkapi-ratelimit-limit", HeaderValue::from(info.limit));
    h.insert("x-bkapi-ratelimit-remaining", HeaderValue::from_static("0"));
    h.insert("x-bkapi-ratelimit-reset", HeaderValue::from(info.reset_s));
    h.insert(
        "x-bkapi-ratelimit-plugin",
        HeaderValue::from_static("bk-rate-limit"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from(info.reset_s));
}

/// `body` as an `application/json` reply.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let text = serde_json::to_vec(body).unwrap_or_default();
    raw(status, "application/json", text)
}

fn raw(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut resp = (status, body.into()).into_response();
    let ct = HeaderValue::from_static(content_type);
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    resp
}

/// The envelope as a reply, broken as `fault` says.
pub(crate) fn render(
    api: Api,
    envelope: Value,
    fault: Option<BodyFault>,
    conn: &ConnTag,
) -> Response {
    let Some(fault) = fault else {
        return json_response(StatusCode::OK, &envelope);
    };
    match fault {
        BodyFault::Malformed => raw(StatusCode::OK, "application/json", malformed(api)),
        BodyFault::Truncated => raw(StatusCode::OK, "application/json", truncated(&envelope)),
        BodyFault::Html => raw(StatusCode::BAD_GATEWAY, "text/html", NGINX_502),
        BodyFault::NoData => json_response(StatusCode::OK, &without_data(envelope)),
        BodyFault::WrongDataType => json_response(StatusCode::OK, &wrong_data(api, envelope)),
        BodyFault::Huge => raw(StatusCode::OK, "application/json", huge(api)),
        BodyFault::Trickle => raw(StatusCode::OK, "application/json", trickle(&envelope)),
        BodyFault::Reset => {
            conn.reset();
            raw(StatusCode::OK, "application/json", "")
        }
        BodyFault::HttpStatus(s) => http_status(s),
        BodyFault::OtherAgents => json_response(StatusCode::OK, &other_agents(envelope)),
    }
}

/// The reply with every agent it names changed into one not asked: a v2
/// item's `bk_agent_id` gets a suffix, a v1 `cloud:ip` key a cloud of its own.
fn other_agents(mut envelope: Value) -> Value {
    match envelope.get_mut("data") {
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(Value::String(id)) = item.get_mut("bk_agent_id") {
                    id.push_str("-other");
                }
            }
        }
        Some(Value::Object(map)) => {
            let taken = std::mem::take(map);
            map.extend(taken.into_iter().map(|(key, v)| (format!("9{key}"), v)));
        }
        _ => {}
    }
    envelope
}

fn http_status(status: u16) -> Response {
    let code = gateway_code(status);
    let mut resp = gateway_error(code, &format!("simulated HTTP {status}"));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp
}

const NGINX_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

fn malformed(api: Api) -> &'static str {
    if api.is_v2() {
        r#"{"code":0,"result":true,"message":"success","data":[{"bk_agent_id":,"status_code":2}"#
    } else {
        r#"{"result":true,"code":0,"message":"success","data":{"0:10.0.0.1":{ip:'10.0.0.1'}}}"#
    }
}

fn truncated(envelope: &Value) -> Vec<u8> {
    let mut text = serde_json::to_vec(envelope).unwrap_or_default();
    text.truncate((text.len() / 2).max(1));
    text
}

fn without_data(mut envelope: Value) -> Value {
    if let Some(map) = envelope.as_object_mut() {
        map.remove("data");
    }
    envelope
}

fn wrong_data(api: Api, mut envelope: Value) -> Value {
    let data = if api.is_v2() {
        json!("no data")
    } else {
        json!([])
    };
    envelope["data"] = data;
    envelope
}

/// A valid reply over 64 MiB, streamed in 64 KiB chunks.
fn huge(api: Api) -> Body {
    let (head, item, tail) = if api.is_v2() {
        (
            r#"{"code":0,"result":true,"message":"success","data":["#,
            r#"{"bk_agent_id":"01000000000000000000000000000001","bk_cloud_id":0,"version":"2.1.3","run_mode":1,"status_code":2,"report_time":1700000000000},"#,
            r#"{"bk_agent_id":"01000000000000000000000000000002","bk_cloud_id":0,"version":"2.1.3","run_mode":1,"status_code":2,"report_time":1700000000000}]}"#,
        )
    } else {
        (
            r#"{"result":true,"code":0,"message":"success","data":{"#,
            r#""0:10.0.0.1":{"ip":"10.0.0.1","bk_cloud_id":0,"bk_agent_alive":1},"#,
            r#""0:10.0.0.2":{"ip":"10.0.0.2","bk_cloud_id":0,"bk_agent_alive":1}}}"#,
        )
    };
    let chunk = Bytes::from(item.repeat(64 * 1024 / item.len()));
    let n = HUGE_BYTES / chunk.len() + 1;
    let parts = std::iter::once(Bytes::from_static(head.as_bytes()))
        .chain(std::iter::repeat_n(chunk, n))
        .chain(std::iter::once(Bytes::from_static(tail.as_bytes())));
    Body::from_stream(stream::iter(parts.map(Ok::<_, std::io::Error>)))
}

/// The real reply: the first byte at once, then one per second.
fn trickle(envelope: &Value) -> Body {
    let text = serde_json::to_vec(envelope).unwrap_or_default();
    let bytes = stream::iter(text.into_iter().enumerate()).then(|(i, b)| async move {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok::<_, std::io::Error>(Bytes::from(vec![b]))
    });
    Body::from_stream(bytes)
}
