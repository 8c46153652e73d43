//! End-to-end tests of the simulator over real HTTP on loopback.

use std::net::SocketAddr;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::*;

const LOCAL: &str = "127.0.0.1:0";

fn opts() -> SimOptions {
    SimOptions {
        seed: 42,
        agents: 300,
        ..SimOptions::default()
    }
}

async fn sim() -> RunningSim {
    let addr: SocketAddr = LOCAL.parse().unwrap();
    start(opts(), addr).await.unwrap()
}

fn auth_header(secret: &str) -> String {
    json!({"bk_app_code": "gse-exporter", "bk_app_secret": secret, "bk_username": "admin"})
        .to_string()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn post_v2_as(sim: &RunningSim, api: &str, ids: &[String], secret: &str) -> Reply {
    let url = format!("{}/api/v2/cluster/{api}", sim.v2_url());
    let resp = reqwest::Client::new()
        .post(url)
        .header("X-Bkapi-Authorization", auth_header(secret))
        .json(&json!({"agent_id_list": ids}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

async fn post_v2(sim: &RunningSim, api: &str, ids: &[String]) -> Reply {
    post_v2_as(sim, api, ids, "sim-secret").await
}

async fn post_v1_body(sim: &RunningSim, api: &str, body: Value) -> Reply {
    let url = format!("{}/{api}/", sim.v1_url());
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

async fn post_v1(sim: &RunningSim, api: &str, hosts: &[&AgentTruth]) -> Reply {
    let hosts: Vec<Value> = hosts
        .iter()
        .map(|t| json!({"ip": t.ip, "bk_cloud_id": t.bk_cloud_id}))
        .collect();
    let body = json!({"bk_app_code": "gse-exporter", "bk_app_secret": "sim-secret",
                      "bk_username": "admin", "bk_supplier_account": "0", "hosts": hosts});
    post_v1_body(sim, api, body).await
}

/// Known online, known offline and unknown agents with real ids.
fn pick(truth: &[AgentTruth]) -> (AgentTruth, AgentTruth, AgentTruth) {
    let modern = |t: &&AgentTruth| !t.bk_agent_id.is_empty();
    let on = truth
        .iter()
        .filter(modern)
        .find(|t| t.known && t.online)
        .unwrap();
    let off = truth
        .iter()
        .filter(modern)
        .find(|t| t.known && !t.online)
        .unwrap();
    let unknown = truth.iter().filter(modern).find(|t| !t.known).unwrap();
    (on.clone(), off.clone(), unknown.clone())
}

#[tokio::test]
async fn v2_state_and_info_envelopes() {
    let sim = sim().await;
    let (on, off, unknown) = pick(&sim.truth());
    let ids = vec![on.v2_id(), off.v2_id(), unknown.v2_id()];
    let r = post_v2(&sim, "list_agent_state", &ids).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["code"].as_i64(), r.body["result"].as_bool()),
        (Some(0), Some(true))
    );
    assert_eq!(r.body["request_id"].as_str().map(str::len), Some(32));
    assert!(r.headers.contains_key("x-bkapi-request-id"));
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "unknown agent omitted");
    assert_eq!(data[0]["bk_agent_id"], json!(on.bk_agent_id));
    assert_eq!(data[0]["status_code"], json!(2));
    assert_eq!(data[1]["status_code"], json!(off.status_code));
    assert_eq!(data[0]["run_mode"], json!(1));
    assert!(
        data[0]["report_time"].as_u64().unwrap() > 1_600_000_000_000,
        "ms"
    );

    let r = post_v2(&sim, "list_agent_info", &ids[..1]).await;
    let item = &r.body["data"][0];
    for key in [
        "bk_host_ip",
        "bk_os_type",
        "parent_ip",
        "parent_port",
        "status",
        "start_time",
    ] {
        assert!(item.get(key).is_some(), "info lacks {key}");
    }
    assert_eq!(item["bk_host_ip"], json!(on.ip));
    assert_eq!(item["status"], json!("running"));
    assert!(
        item["start_time"].as_u64().unwrap() < 10_000_000_000,
        "seconds"
    );
}

#[tokio::test]
async fn v2_legacy_ids_and_trailing_slash() {
    let sim = sim().await;
    let truth = sim.truth();
    let legacy = truth
        .iter()
        .find(|t| t.bk_agent_id.is_empty() && t.known)
        .unwrap();
    let url = format!("{}/api/v2/cluster/list_agent_state/", sim.v2_url());
    let resp = reqwest::Client::new()
        .post(url)
        .header("X-Bkapi-Authorization", auth_header("sim-secret"))
        .header("X-Bkapi-Request-Id", "abc123")
        .json(&json!({"agent_id_list": [legacy.hosts_key()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-bkapi-request-id"], "abc123");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"][0]["bk_agent_id"], json!(legacy.hosts_key()));
}

#[tokio::test]
async fn v2_none_known_is_1011003() {
    let sim = sim().await;
    let (_, _, unknown) = pick(&sim.truth());
    let r = post_v2(&sim, "list_agent_state", &[unknown.v2_id(), "nope".into()]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["code"], json!(1011003));
    assert_eq!(r.body["result"], json!(false));
    assert!(r.body["data"].is_null());
    assert_eq!(sim.requests()[0].outcome, Outcome::NotFound);
}

#[tokio::test]
async fn v2_batch_limit_and_bad_body() {
    let sim = sim().await;
    let ids: Vec<String> = (0..1001).map(|i| format!("id{i}")).collect();
    let r = post_v2(&sim, "list_agent_state", &ids).await;
    assert_eq!(
        (r.status, r.body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(1640001))
    );
    let rec = sim.requests()[0];
    assert_eq!((rec.ids, rec.outcome), (1001, Outcome::BadRequest));
}

#[tokio::test]
async fn v1_status_and_info_envelopes() {
    let sim = sim().await;
    let truth = sim.truth();
    let (on, off, unknown) = pick(&truth);
    let r = post_v1(&sim, "get_agent_status", &[&on, &off, &unknown]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["result"].as_bool(), r.body["code"].as_i64()),
        (Some(true), Some(0))
    );
    assert_eq!(r.body["request_id"].as_str().map(str::len), Some(32));
    let data = r.body["data"].as_object().unwrap();
    assert_eq!(data.len(), 2, "unknown host omitted");
    assert_eq!(data[&on.hosts_key()]["bk_agent_alive"], json!(1));
    assert_eq!(data[&off.hosts_key()]["bk_agent_alive"], json!(0));
    assert_eq!(data[&on.hosts_key()]["bk_cloud_id"], json!(on.bk_cloud_id));

    let r = post_v1(&sim, "get_agent_info", &[&on]).await;
    let item = &r.body["data"][on.hosts_key()];
    assert_eq!(item["version"], json!(on.version));
    assert_eq!(item["parent_ip"], json!(on.parent_ip));
    assert!(item["parent_port"].as_u64().is_some());
    assert!(item.get("status_code").is_none(), "v1 has no status code");
}

#[tokio::test]
async fn auth_failures() {
    let sim = sim().await;
    let (on, ..) = pick(&sim.truth());
    let r = post_v2_as(&sim, "list_agent_state", &[on.v2_id()], "wrong").await;
    assert_eq!(
        (r.status, r.body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(1640001))
    );
    assert_eq!(r.body["code_name"], json!("INVALID_ARGS"));
    let url = format!("{}/api/v2/cluster/list_agent_state", sim.v2_url());
    let resp = reqwest::Client::new()
        .post(url)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let host = json!([{"ip": on.ip, "bk_cloud_id": on.bk_cloud_id}]);
    let cases = [
        (
            json!({"bk_app_code": "gse-exporter", "bk_app_secret": "x", "bk_username": "a",
                "hosts": host}),
            1306403,
        ),
        (
            json!({"bk_app_code": "gse-exporter", "bk_app_secret": "sim-secret", "hosts": host}),
            1306401,
        ),
        (
            json!({"bk_app_code": "gse-exporter", "bk_app_secret": "sim-secret",
                "bk_token": "t"}),
            1306406,
        ),
    ];
    for (body, code) in cases {
        let r = post_v1_body(&sim, "get_agent_status", body).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            (r.body["result"].as_bool(), r.body["code"].as_i64()),
            (Some(false), Some(code))
        );
    }
    let outcomes: Vec<Outcome> = sim.requests().iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes[..4], [Outcome::AuthError; 4]);
    assert_eq!(outcomes[4], Outcome::BadRequest);
}

#[tokio::test]
async fn rate_limit_bucket_replies_with_headers() {
    let sim = sim().await;
    let (on, ..) = pick(&sim.truth());
    let limit = RateLimit {
        requests_per_second: 0.5,
        burst: 2,
    };
    sim.set_faults(Faults {
        rate_limit: Some(limit),
        ..Faults::default()
    });
    let ids = [on.v2_id()];
    assert_eq!(
        post_v2(&sim, "list_agent_state", &ids).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post_v2(&sim, "list_agent_state", &ids).await.status,
        StatusCode::OK
    );
    let r = post_v2(&sim, "list_agent_state", &ids).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body["code"], json!(1642902));
    assert_eq!(r.headers["x-bkapi-ratelimit-remaining"], "0");
    assert_eq!(r.headers["x-bkapi-ratelimit-plugin"], "bk-rate-limit");
    assert_eq!(r.headers["x-bkapi-ratelimit-limit"], "1");
    let reset: u64 = r.headers["x-bkapi-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&reset), "reset {reset}");
    assert_eq!(
        r.headers["retry-after"].to_str().unwrap(),
        reset.to_string()
    );

    let r = post_v1(&sim, "get_agent_status", &[&on]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["result"].as_bool(), r.body["code"].as_i64()),
        (Some(false), Some(1306429))
    );
    let limited = sim
        .requests()
        .iter()
        .filter(|r| r.outcome == Outcome::RateLimited)
        .count();
    assert_eq!(limited, 2);
}

#[tokio::test]
async fn throttle_every_is_deterministic() {
    let sim = sim().await;
    let (on, ..) = pick(&sim.truth());
    sim.set_faults(Faults {
        throttle_every: Some(3),
        ..Faults::default()
    });
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            post_v2(&sim, "list_agent_state", &[on.v2_id()])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429, 200]);
}

#[tokio::test]
async fn outage_fails_both_apis() {
    let sim = sim().await;
    let (on, ..) = pick(&sim.truth());
    sim.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    let r = post_v2(&sim, "list_agent_info", &[on.v2_id()]).await;
    assert_eq!(
        (r.status, r.body["code"].as_i64()),
        (StatusCode::BAD_GATEWAY, Some(1650200))
    );
    let r = post_v1(&sim, "get_agent_info", &[&on]).await;
    assert_eq!(
        (r.status, r.body["code"].as_i64()),
        (StatusCode::OK, Some(1306201))
    );
    assert!(sim.requests().iter().all(|r| r.outcome == Outcome::Fault));
}

#[tokio::test]
async fn error_code_and_drop_share() {
    let sim = sim().await;
    let truth = sim.truth();
    let ids: Vec<String> = truth
        .iter()
        .filter(|t| t.known)
        .map(AgentTruth::v2_id)
        .collect();
    sim.set_faults(Faults {
        code: Some(1650401),
        ..Faults::default()
    });
    let r = post_v2(&sim, "list_agent_state", &ids).await;
    assert_eq!(
        (r.status, r.body["code"].as_i64()),
        (StatusCode::GATEWAY_TIMEOUT, Some(1650401))
    );
    sim.set_faults(Faults {
        drop_share: 0.2,
        ..Faults::default()
    });
    let r = post_v2(&sim, "list_agent_state", &ids).await;
    let n = r.body["data"].as_array().unwrap().len();
    assert!(
        n < ids.len() * 9 / 10 && n > ids.len() * 7 / 10,
        "{n} of {}",
        ids.len()
    );
}

async fn raw_v2(sim: &RunningSim) -> Result<reqwest::Response, reqwest::Error> {
    let (on, ..) = pick(&sim.truth());
    let url = format!("{}/api/v2/cluster/list_agent_state", sim.v2_url());
    reqwest::Client::new()
        .post(url)
        .header("X-Bkapi-Authorization", auth_header("sim-secret"))
        .json(&json!({"agent_id_list": [on.v2_id()]}))
        .send()
        .await
}

#[tokio::test]
async fn body_faults() {
    let sim = sim().await;
    let set = |b| {
        sim.set_faults(Faults {
            body: Some(b),
            ..Faults::default()
        })
    };
    for fault in [BodyFault::Malformed, BodyFault::Truncated] {
        set(fault);
        let text = raw_v2(&sim).await.unwrap().text().await.unwrap();
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "{fault:?}: {text}"
        );
    }
    set(BodyFault::Html);
    let resp = raw_v2(&sim).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["content-type"], "text/html");
    set(BodyFault::NoData);
    let body: Value = raw_v2(&sim).await.unwrap().json().await.unwrap();
    assert_eq!(body["code"], json!(0));
    assert!(body.get("data").is_none());
    set(BodyFault::WrongDataType);
    let body: Value = raw_v2(&sim).await.unwrap().json().await.unwrap();
    assert!(body["data"].is_string());
    set(BodyFault::HttpStatus(403));
    let resp = raw_v2(&sim).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], json!(1640301));
    assert!(sim.requests().iter().all(|r| r.outcome == Outcome::Fault));
}

#[tokio::test]
async fn reset_closes_without_reply() {
    let sim = sim().await;
    sim.set_faults(Faults {
        body: Some(BodyFault::Reset),
        ..Faults::default()
    });
    let err = raw_v2(&sim).await.unwrap_err();
    assert!(!err.is_status(), "{err}");
    sim.set_faults(Faults::default());
    assert_eq!(raw_v2(&sim).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn huge_body_is_over_64_mib() {
    let sim = sim().await;
    sim.set_faults(Faults {
        body: Some(BodyFault::Huge),
        ..Faults::default()
    });
    let mut resp = raw_v2(&sim).await.unwrap();
    let mut total = 0usize;
    let mut head = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        if head.len() < 64 {
            head.extend_from_slice(&chunk[..chunk.len().min(64)]);
        }
        total += chunk.len();
    }
    assert!(total > 64 * 1024 * 1024, "{total}");
    assert!(head.starts_with(br#"{"code":0"#));
}

#[tokio::test]
async fn control_endpoint_flips_an_agent() {
    let sim = sim().await;
    let (on, off, _) = pick(&sim.truth());
    let client = reqwest::Client::new();
    let url = format!("http://{}/sim/agents", sim.addr());
    let resp = client
        .post(&url)
        .json(&json!({"agents": [on.bk_agent_id], "online": false, "status_code": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r = post_v2(&sim, "list_agent_state", &[on.v2_id()]).await;
    assert_eq!(r.body["data"][0]["status_code"], json!(7));

    sim.set_online(&[off.hosts_key()], true).unwrap();
    let r = post_v1(&sim, "get_agent_status", &[&off]).await;
    assert_eq!(r.body["data"][off.hosts_key()]["bk_agent_alive"], json!(1));
    assert!(sim.set_online(&["no-such".to_string()], true).is_err());
    let resp = client
        .post(&url)
        .json(&json!({"agents": ["x"], "online": true}))
        .send()
        .await;
    assert_eq!(resp.unwrap().status(), StatusCode::BAD_REQUEST);

    let truth: Vec<Value> = client
        .get(format!("http://{}/sim/truth", sim.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(truth.len(), 300);
    let stats: Value = client
        .get(format!("http://{}/sim/stats", sim.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["total"],
        json!(2),
        "control requests are not recorded"
    );
}

#[tokio::test]
async fn faults_via_http() {
    let sim = sim().await;
    let url = format!("http://{}/sim/faults", sim.addr());
    let client = reqwest::Client::new();
    let resp = client
        .post(&url)
        .json(&json!({"outage": true, "latency": 5}))
        .send()
        .await;
    assert_eq!(resp.unwrap().status(), StatusCode::OK);
    assert!(sim.faults().outage);
    let resp = client
        .post(&url)
        .json(&json!({"outgae": true}))
        .send()
        .await;
    assert_eq!(resp.unwrap().status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn same_seed_same_truth() {
    let strip = |v: Vec<AgentTruth>| -> Vec<AgentTruth> {
        v.into_iter()
            .map(|t| AgentTruth {
                report_time_ms: 0,
                ..t
            })
            .collect()
    };
    let a = sim().await;
    let b = sim().await;
    assert_eq!(strip(a.truth()), strip(b.truth()));
    let other = start(SimOptions { seed: 43, ..opts() }, LOCAL.parse().unwrap())
        .await
        .unwrap();
    assert_ne!(strip(a.truth()), strip(other.truth()));
    other.shutdown().await;
}

#[tokio::test]
async fn unknown_path_is_gateway_404() {
    let sim = sim().await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v2/cluster/nope", sim.v2_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], json!(1640401));
}

#[tokio::test]
async fn latency_delays_admitted_requests_only() {
    let sim = sim().await;
    let (on, ..) = pick(&sim.truth());
    let latency = std::time::Duration::from_millis(150);
    sim.set_faults(Faults {
        latency,
        throttle_every: Some(2),
        ..Faults::default()
    });
    let t0 = std::time::Instant::now();
    assert_eq!(
        post_v2(&sim, "list_agent_state", &[on.v2_id()])
            .await
            .status,
        StatusCode::OK
    );
    assert!(t0.elapsed() >= latency);
    let r = post_v2(&sim, "list_agent_state", &[on.v2_id()]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn error_rate_fails_evenly() {
    let sim = sim().await;
    let (on, ..) = pick(&sim.truth());
    sim.set_faults(Faults {
        error_rate: 0.5,
        ..Faults::default()
    });
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post_v2(&sim, "list_agent_state", &[on.v2_id()])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 502, 200, 502]);
    let r = post_v1(&sim, "get_agent_status", &[&on]).await;
    assert_eq!(r.body["result"], json!(true));
    let r = post_v1(&sim, "get_agent_status", &[&on]).await;
    assert_eq!(r.body["code"], json!(1306201));
}

#[tokio::test]
async fn none_found_fault() {
    let sim = sim().await;
    let (on, ..) = pick(&sim.truth());
    sim.set_faults(Faults {
        none_found: true,
        ..Faults::default()
    });
    let r = post_v2(&sim, "list_agent_info", &[on.v2_id()]).await;
    assert_eq!(r.body["code"], json!(1011003));
    let r = post_v1(&sim, "get_agent_status", &[&on]).await;
    assert_eq!(r.body["data"], json!({}));
}

#[tokio::test]
async fn trickle_sends_headers_then_dribbles() {
    let sim = sim().await;
    sim.set_faults(Faults {
        body: Some(BodyFault::Trickle),
        ..Faults::default()
    });
    let mut resp = raw_v2(&sim).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"{");
    let wait = std::time::Duration::from_millis(300);
    assert!(tokio::time::timeout(wait, resp.text()).await.is_err());
}

#[tokio::test]
async fn junk_versions_are_served_verbatim() {
    let o = SimOptions {
        junk_version_share: 1.0,
        ..opts()
    };
    let sim = start(o, LOCAL.parse().unwrap()).await.unwrap();
    let (on, ..) = pick(&sim.truth());
    assert!(on.version.contains('\n'));
    let r = post_v2(&sim, "list_agent_state", &[on.v2_id()]).await;
    assert_eq!(r.body["data"][0]["version"], json!(on.version));
}

#[tokio::test]
async fn request_log_supports_rate_checks() {
    let sim = sim().await;
    let (on, ..) = pick(&sim.truth());
    for _ in 0..3 {
        post_v2(&sim, "list_agent_state", &[on.v2_id()]).await;
    }
    let times: Vec<_> = sim.requests().iter().map(|r| r.at).collect();
    assert_eq!(max_in_window(&times, std::time::Duration::from_secs(60)), 3);
    assert_eq!(sim.stats().by_api.get(&Api::V2State), Some(&3));
    sim.clear_requests();
    assert!(sim.requests().is_empty());
}
