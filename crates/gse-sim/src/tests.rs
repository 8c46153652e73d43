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
        data[0].get("report_time").is_none(),
        "state has no report_time"
    );

    let r = post_v2(&sim, "list_agent_info", &ids[..1]).await;
    let item = &r.body["data"][0];
    assert!(
        item["report_time"].as_u64().unwrap() > 1_600_000_000_000,
        "ms"
    );
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
async fn a_tenant_sees_its_own_offline_agents_and_requests_are_counted_per_tenant() {
    let sim = sim().await;
    let (on, _, _) = pick(&sim.truth());
    sim.set_tenant_offline("tenant-b", &[on.v2_id()]);
    let state = |tenant: Option<&'static str>| {
        let (url, id) = (
            format!("{}/api/v2/cluster/list_agent_state", sim.v2_url()),
            on.v2_id(),
        );
        async move {
            let mut request = reqwest::Client::new()
                .post(url)
                .header("X-Bkapi-Authorization", auth_header("sim-secret"));
            if let Some(tenant) = tenant {
                request = request.header("X-Bk-Tenant-Id", tenant);
            }
            let body: Value = request
                .json(&json!({"agent_id_list": [id]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["data"][0]["status_code"].as_i64()
        }
    };
    assert_eq!(state(Some("tenant-a")).await, Some(2));
    assert_eq!(state(Some("tenant-b")).await, Some(3));
    assert_eq!(state(None).await, Some(2));
    assert_eq!(
        sim.truth()
            .iter()
            .find(|t| t.bk_agent_id == on.bk_agent_id)
            .map(|t| t.online),
        Some(true)
    );
    let seen = sim.tenants();
    for tenant in ["tenant-a", "tenant-b", ""] {
        assert_eq!(
            seen.get(&(Api::V2State, tenant.to_string())),
            Some(&1),
            "{seen:?}"
        );
    }
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
    set(BodyFault::OtherAgents);
    let body: Value = raw_v2(&sim).await.unwrap().json().await.unwrap();
    let ids: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["bk_agent_id"])
        .collect();
    assert!(
        !ids.is_empty()
            && ids
                .iter()
                .all(|id| id.as_str().unwrap().ends_with("-other")),
        "{ids:?}"
    );
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
async fn state_carries_report_time_when_asked_to() {
    let options = SimOptions {
        state_report_time: true,
        report_period: Duration::from_millis(500),
        ..opts()
    };
    let sim = start(options, LOCAL.parse().unwrap()).await.unwrap();
    let (on, _, _) = pick(&sim.truth());
    let r = post_v2(&sim, "list_agent_state", &[on.v2_id()]).await;
    let reported = r.body["data"][0]["report_time"].as_u64().unwrap();
    let age = fleet::now_ms().saturating_sub(reported);
    assert!(age <= 500 + 1000, "an online agent reported {age} ms ago");
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

// ---- CMDB ----

fn esb_auth(body: Value) -> Value {
    let mut body = body;
    body["bk_app_code"] = json!("gse-exporter");
    body["bk_app_secret"] = json!("sim-secret");
    body["bk_username"] = json!("admin");
    body
}

async fn post_json(url: String, auth: Option<String>, body: &Value) -> Reply {
    let mut req = reqwest::Client::new().post(url).json(body);
    if let Some(a) = auth {
        req = req.header("X-Bkapi-Authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

async fn cmdb_esb(sim: &RunningSim, body: Value) -> Reply {
    let url = format!("{}/list_biz_hosts/", sim.cmdb_esb_url());
    post_json(url, None, &body).await
}

/// Gateway `list_hosts` under `prefix` (`hosts` or `open/hosts`).
async fn cmdb_gw(sim: &RunningSim, prefix: &str, biz: i64, body: Value, slash: &str) -> Reply {
    let url = format!(
        "{}/api/v3/{prefix}/app/{biz}/list_hosts{slash}",
        sim.cmdb_gateway_url()
    );
    post_json(url, Some(auth_header("sim-secret")), &body).await
}

fn page(start: usize, limit: i64) -> Value {
    json!({"start": start, "limit": limit, "sort": "bk_host_id"})
}

fn host_ids(body: &Value) -> Vec<i64> {
    let info = body["data"]["info"].as_array().unwrap();
    info.iter()
        .map(|h| h["bk_host_id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn cmdb_pages_across_the_business() {
    let sim = sim().await;
    let want: Vec<i64> = sim.cmdb_hosts(2).iter().map(|h| h.bk_host_id).collect();
    assert!(want.len() > 100, "{}", want.len());
    let mut got = Vec::new();
    for start in (0..want.len() + 50).step_by(50) {
        let r = cmdb_esb(
            &sim,
            esb_auth(json!({"bk_biz_id": 2, "page": page(start, 50)})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["result"], json!(true));
        assert_eq!(r.body["code"], json!(0));
        assert!(r.body.get("permission").is_some_and(Value::is_null));
        assert_eq!(r.body["request_id"].as_str().map(str::len), Some(32));
        assert_eq!(r.body["data"]["count"], json!(want.len()));
        got.extend(host_ids(&r.body));
    }
    assert_eq!(got, want);
    let reqs = sim.requests();
    assert!(
        reqs.iter()
            .all(|r| r.api == Api::CmdbListHosts && r.outcome == Outcome::Ok)
    );
    assert_eq!(reqs.iter().map(|r| r.ids).sum::<usize>(), want.len());
    assert!(!Api::CmdbListHosts.is_v2() && Api::CmdbListHosts.is_cmdb());

    // Descending sort and the full field set.
    let body = esb_auth(
        json!({"bk_biz_id": "2", "page": {"start": 0, "limit": 1, "sort": "-bk_host_id"}}),
    );
    let r = cmdb_esb(&sim, body).await;
    let first = &r.body["data"]["info"][0];
    assert_eq!(first["bk_host_id"], json!(want[want.len() - 1]));
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
}

#[tokio::test]
async fn cmdb_limit_bounds_are_1199006() {
    let sim = sim().await;
    for limit in [501, 0, -1] {
        let body = json!({"bk_biz_id": 3, "page": page(0, limit)});
        let r = cmdb_esb(&sim, esb_auth(body.clone())).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            (r.body["result"].as_bool(), r.body["code"].as_i64()),
            (Some(false), Some(1199006))
        );
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        let r = cmdb_gw(&sim, "hosts", 3, body, "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["code"], json!(1199006));
    }
    let r = cmdb_esb(&sim, esb_auth(json!({"bk_biz_id": 3}))).await;
    assert_eq!(r.body["code"], json!(1199006), "page is required");
    let r = cmdb_gw(&sim, "hosts", 3, json!({"page": page(0, 500)}), "").await;
    assert_eq!(r.body["code"], json!(0));
    let out = sim.stats().by_outcome;
    assert_eq!((out[&Outcome::BadRequest], out[&Outcome::Ok]), (7, 1));
}

#[tokio::test]
async fn cmdb_gateway_paths_and_auth() {
    let sim = sim().await;
    let body = json!({"page": page(0, 500), "fields": ["bk_host_id", "bk_agent_id"]});
    let esb = cmdb_esb(
        &sim,
        esb_auth(json!({"bk_biz_id": 5, "page": page(0, 500),
        "fields": ["bk_host_id", "bk_agent_id"]})),
    )
    .await;
    for (prefix, slash) in [
        ("hosts", ""),
        ("hosts", "/"),
        ("open/hosts", ""),
        ("open/hosts", "/"),
    ] {
        let r = cmdb_gw(&sim, prefix, 5, body.clone(), slash).await;
        assert_eq!(r.status, StatusCode::OK, "{prefix}{slash}");
        assert_eq!(r.body["data"], esb.body["data"], "{prefix}{slash}");
        assert!(r.headers.contains_key("x-bkapi-request-id"));
    }
    // Gateway credentials live in the header.
    let url = format!("{}/api/v3/hosts/app/5/list_hosts", sim.cmdb_gateway_url());
    let r = post_json(url.clone(), Some(auth_header("wrong")), &body).await;
    assert_eq!(
        (r.status, r.body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(1640001))
    );
    let r = post_json(url, None, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // ESB credentials live in the body.
    let mut bad = esb_auth(json!({"bk_biz_id": 5, "page": page(0, 10)}));
    bad["bk_app_secret"] = json!("wrong");
    let r = cmdb_esb(&sim, bad).await;
    assert_eq!(
        (r.status, r.body["code"].as_i64()),
        (StatusCode::OK, Some(1306403))
    );
    let r = cmdb_esb(
        &sim,
        json!({"bk_app_code": "gse-exporter", "bk_app_secret": "sim-secret",
        "bk_biz_id": 5, "page": page(0, 10)}),
    )
    .await;
    assert_eq!(r.body["code"], json!(1306401));
    assert_eq!(sim.stats().by_outcome[&Outcome::AuthError], 4);
    // Bad JSON through the gateway is CMDB's 1199000.
    let r = reqwest::Client::new()
        .post(format!(
            "{}/api/v3/hosts/app/5/list_hosts",
            sim.cmdb_gateway_url()
        ))
        .header("X-Bkapi-Authorization", auth_header("sim-secret"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], json!(1199000));
    // An unknown business is empty.
    let r = cmdb_gw(&sim, "hosts", 777, json!({"page": page(0, 10)}), "").await;
    assert_eq!(r.body["data"], json!({"count": 0, "info": []}));
}

#[tokio::test]
async fn cmdb_filters() {
    let sim = sim().await;
    let hosts = sim.cmdb_hosts(2);
    let set = hosts[0].bk_set_id;
    let module = hosts[1].bk_module_id;
    let fields = json!(["bk_host_id", "bk_set_id", "bk_module_id", "unknown_field"]);
    let body = json!({"page": page(0, 500), "bk_set_ids": [set], "fields": fields});
    let r = cmdb_gw(&sim, "hosts", 2, body, "").await;
    // A host in a second module of another set is in that set too.
    let in_set = |h: &CmdbHost| h.memberships().iter().any(|m| m.bk_set_id == set);
    let want: Vec<i64> = hosts
        .iter()
        .filter(|h| in_set(h))
        .map(|h| h.bk_host_id)
        .collect();
    assert!(want.len() > hosts.iter().filter(|h| h.bk_set_id == set).count());
    assert_eq!(host_ids(&r.body), want);
    let info = r.body["data"]["info"].as_array().unwrap();
    assert!(info.iter().all(|h| h.as_object().unwrap().len() == 3));

    let body = json!({"page": page(0, 500), "bk_module_ids": [module]});
    let r = cmdb_gw(&sim, "hosts", 2, body, "").await;
    let in_module = |h: &&CmdbHost| h.memberships().iter().any(|m| m.bk_module_id == module);
    let want = hosts.iter().filter(in_module).count();
    assert_eq!(r.body["data"]["count"], json!(want));
    assert!(
        r.body["data"]["info"][0].get("bk_module_id").is_none(),
        "not asked"
    );

    // (static AND has an agent id) OR host id in [first two]
    let two = [hosts[0].bk_host_id, hosts[1].bk_host_id];
    let filter = json!({"condition": "OR", "rules": [
        {"condition": "AND", "rules": [
            {"field": "bk_addressing", "operator": "equal", "value": "static"},
            {"field": "bk_agent_id", "operator": "not_equal", "value": ""}]},
        {"field": "bk_host_id", "operator": "in", "value": two}]});
    let body = json!({"page": page(0, 500), "host_property_filter": filter});
    let r = cmdb_gw(&sim, "open/hosts", 2, body, "").await;
    let want: Vec<i64> = hosts
        .iter()
        .filter(|h| {
            (h.bk_addressing == Addressing::Static && !h.bk_agent_id.is_empty())
                || two.contains(&h.bk_host_id)
        })
        .map(|h| h.bk_host_id)
        .collect();
    assert_eq!(r.body["data"]["count"], json!(want.len()));
    assert_eq!(host_ids(&r.body), want);

    let not_in = json!({"condition": "AND", "rules": [
        {"field": "bk_host_id", "operator": "not_in", "value": two}]});
    let r = cmdb_gw(
        &sim,
        "hosts",
        2,
        json!({"page": page(0, 1), "host_property_filter": not_in}),
        "",
    )
    .await;
    assert_eq!(r.body["data"]["count"], json!(hosts.len() - 2));

    for bad in [
        json!({"condition": "XOR", "rules": [{"field": "bk_host_id", "operator": "equal", "value": 1}]}),
        json!({"condition": "AND", "rules": [{"field": "bk_host_id", "operator": "between", "value": [1, 2]}]}),
        json!({"condition": "AND", "rules": [{"field": "nope", "operator": "equal", "value": 1}]}),
    ] {
        let r = cmdb_gw(
            &sim,
            "hosts",
            2,
            json!({"page": page(0, 1), "host_property_filter": bad}),
            "",
        )
        .await;
        assert_eq!(r.body["code"], json!(1199006));
    }
}

#[tokio::test]
async fn cmdb_hosts_mirror_the_fleet_with_odd_shares() {
    let sim = sim().await;
    let truth = sim.truth();
    let by_ip: std::collections::HashMap<&str, &AgentTruth> =
        truth.iter().map(|t| (t.ip.as_str(), t)).collect();
    let mut seen = 0;
    for biz in sim.cmdb_businesses() {
        let hosts = sim.cmdb_hosts(biz);
        let multi = hosts
            .iter()
            .filter(|h| h.bk_host_innerip.contains(','))
            .count();
        let v6_bare = hosts
            .iter()
            .filter(|h| h.bk_host_innerip.is_empty() && h.bk_agent_id.is_empty())
            .count();
        let v6_agent = hosts
            .iter()
            .filter(|h| h.bk_host_innerip.is_empty() && !h.bk_agent_id.is_empty())
            .count();
        let dynamic = hosts
            .iter()
            .filter(|h| h.bk_addressing == Addressing::Dynamic)
            .count();
        assert!(
            multi >= 1 && v6_bare >= 1 && v6_agent >= 1 && dynamic >= 1,
            "biz {biz}"
        );
        for h in &hosts {
            if h.bk_host_innerip.is_empty() {
                assert!(!h.bk_host_innerip_v6.is_empty());
                assert!(
                    h.bk_agent_id.is_empty()
                        || truth.iter().any(|t| t.bk_agent_id == h.bk_agent_id)
                );
                seen += usize::from(!h.bk_agent_id.is_empty());
                continue;
            }
            let t = by_ip[h.first_ipv4().unwrap()];
            assert_eq!(
                (t.bk_cloud_id, &t.bk_agent_id),
                (h.bk_cloud_id, &h.bk_agent_id)
            );
            if t.bk_agent_id.is_empty() {
                assert_eq!(h.bk_addressing, Addressing::Static);
            }
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        truth.len(),
        "every fleet agent in exactly one business"
    );

    // An exact size, larger than the fleet: the rest are CMDB-only.
    let o = SimOptions {
        businesses: vec![BizSpec {
            bk_biz_id: 9,
            hosts: 2345,
        }],
        ..opts()
    };
    let big = start(o, LOCAL.parse().unwrap()).await.unwrap();
    let hosts = big.cmdb_hosts(9);
    assert_eq!(hosts.len(), 2345);
    let r = cmdb_esb(
        &big,
        esb_auth(json!({"bk_biz_id": 9, "page": page(2300, 500)})),
    )
    .await;
    assert_eq!(r.body["data"]["count"], json!(2345));
    assert_eq!(r.body["data"]["info"].as_array().map(Vec::len), Some(45));
    // 2345 slots: 47 IPv6-only without agent, 300 fleet agents, the rest CMDB-only.
    let bare = |h: &&CmdbHost| h.bk_host_innerip.is_empty() && h.bk_agent_id.is_empty();
    assert_eq!(hosts.iter().filter(bare).count(), 47);
    let unknown = hosts
        .iter()
        .filter(|h| !bare(h))
        .filter(|h| match h.first_ipv4() {
            Some(ip) => !truth.iter().any(|t| t.ip == ip),
            None => !truth.iter().any(|t| t.bk_agent_id == h.bk_agent_id),
        })
        .count();
    assert_eq!(unknown, 2345 - 47 - truth.len());
}

#[tokio::test]
async fn cmdb_is_deterministic() {
    let a = sim().await;
    let b = sim().await;
    for biz in [2, 3, 5] {
        assert_eq!(a.cmdb_hosts(biz), b.cmdb_hosts(biz));
    }
    let c = start(SimOptions { seed: 43, ..opts() }, LOCAL.parse().unwrap())
        .await
        .unwrap();
    assert_ne!(a.cmdb_hosts(2), c.cmdb_hosts(2));
    assert_eq!(a.cmdb_hosts(2).len(), c.cmdb_hosts(2).len());
}

#[tokio::test]
async fn cmdb_shrink_and_edit_controls() {
    let sim = sim().await;
    let all = sim.cmdb_hosts(3);
    sim.set_cmdb_visible_share(3, 0.5);
    let half = sim.cmdb_hosts(3);
    assert_eq!(half.len(), all.len() / 2);
    let r = cmdb_esb(
        &sim,
        esb_auth(json!({"bk_biz_id": 3, "page": page(0, 500)})),
    )
    .await;
    assert_eq!(r.body["data"]["count"], json!(half.len()));
    assert_eq!(
        host_ids(&r.body),
        half.iter().map(|h| h.bk_host_id).collect::<Vec<_>>()
    );
    sim.set_cmdb_visible_share(3, 1.0);
    assert_eq!(sim.cmdb_hosts(3), all);

    assert_eq!(sim.remove_cmdb_hosts(3, &[all[0].bk_host_id, -5]), 1);
    let mut extra = all[0].clone();
    extra.bk_host_id = 99_999;
    sim.add_cmdb_hosts(3, vec![extra.clone()]);
    let now = sim.cmdb_hosts(3);
    assert_eq!(now.len(), all.len());
    assert_eq!(now.last(), Some(&extra));
    sim.set_cmdb_hosts(3, vec![extra.clone()]);
    assert_eq!(sim.cmdb_hosts(3), vec![extra]);

    // The same over HTTP.
    let client = reqwest::Client::new();
    let base = format!("http://{}", sim.addr());
    let ctl =
        json!({"bk_biz_id": 2, "remove": [sim.cmdb_hosts(2)[0].bk_host_id], "visible_share": 0.25});
    let r = client
        .post(format!("{base}/sim/cmdb"))
        .json(&ctl)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["removed"], json!(1));
    let listed: Vec<CmdbHost> = client
        .get(format!("{base}/sim/cmdb/2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, sim.cmdb_hosts(2));
    assert_eq!(v["visible"], json!(listed.len()));
    let r = client
        .post(format!("{base}/sim/cmdb"))
        .json(&json!({"bk_biz": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cmdb_outage_is_separate_from_gse() {
    let sim = sim().await;
    sim.set_faults(Faults {
        cmdb_outage: true,
        ..Faults::default()
    });
    let r = cmdb_esb(&sim, esb_auth(json!({"bk_biz_id": 2, "page": page(0, 10)}))).await;
    assert_eq!(
        (
            r.status,
            r.body["result"].as_bool(),
            r.body["code"].as_i64()
        ),
        (StatusCode::OK, Some(false), Some(1306201))
    );
    let r = cmdb_gw(&sim, "hosts", 2, json!({"page": page(0, 10)}), "").await;
    assert_eq!(
        (r.status, r.body["code"].as_i64()),
        (StatusCode::BAD_GATEWAY, Some(1650200))
    );
    let (on, _, _) = pick(&sim.truth());
    let r = post_v2(&sim, "list_agent_state", &[on.v2_id()]).await;
    assert_eq!(r.body["code"], json!(0), "GSE unaffected");

    // And the other way round: GSE faults leave CMDB alone.
    sim.set_faults(Faults {
        outage: true,
        throttle_every: Some(1),
        ..Faults::default()
    });
    let r = cmdb_gw(&sim, "hosts", 2, json!({"page": page(0, 10)}), "").await;
    assert_eq!(r.body["code"], json!(0));
    let faults: Faults = serde_json::from_str(r#"{"cmdb_outage":true}"#).unwrap();
    assert!(faults.cmdb_outage);
}

/// A CMDB endpoint through ESB (`list_biz_hosts_topo`, `search_business`).
async fn cmdb_esb_call(sim: &RunningSim, name: &str, body: Value) -> Reply {
    let url = format!("{}/{name}/", sim.cmdb_esb_url());
    post_json(url, None, &esb_auth(body)).await
}

/// A CMDB endpoint through the gateway, `path` under `api/v3`.
async fn cmdb_gw_call(sim: &RunningSim, path: &str, body: Value) -> Reply {
    let url = format!("{}/api/v3/{path}", sim.cmdb_gateway_url());
    post_json(url, Some(auth_header("sim-secret")), &body).await
}

#[tokio::test]
async fn cmdb_topology_over_both_apis_with_renames() {
    let sim = sim().await;
    let truth = sim.cmdb_topology(2);
    let body = json!({"page": page(0, 500), "fields": ["bk_host_id", "bk_host_innerip", "operator", "bk_bak_operator"]});
    let mut esb_body = body.clone();
    esb_body["bk_biz_id"] = json!(2);
    let esb = cmdb_esb_call(&sim, "list_biz_hosts_topo", esb_body).await;
    assert_eq!(esb.body["code"], json!(0), "{}", esb.body);
    for path in [
        "hosts/app/2/list_hosts_topo",
        "open/hosts/app/2/list_hosts_topo/",
    ] {
        let gw = cmdb_gw_call(&sim, path, body.clone()).await;
        assert_eq!(gw.body["data"], esb.body["data"], "{path}");
    }
    let info = esb.body["data"]["info"].as_array().unwrap();
    assert_eq!(info.len(), truth.len());
    for (row, t) in info.iter().zip(&truth) {
        assert_eq!(row["host"]["bk_host_id"], json!(t.host.bk_host_id));
        assert_eq!(row["host"]["operator"], json!(t.host.operator));
        assert_eq!(row["topo"], json!(t.topo));
    }
    assert!(
        info.iter()
            .any(|r| r["host"]["operator"] == json!("alice,dave")),
        "multi-user maintainers"
    );
    assert!(truth.iter().any(|t| t.topo.len() == 2), "hosts in two sets");
    assert_eq!(sim.stats().by_api[&Api::CmdbListHostsTopo], 3);

    // Names as search_business answers them, and renamed.
    let name = |r: &Reply| r.body["data"]["info"][0]["bk_biz_name"].clone();
    let q = json!({"fields": ["bk_biz_id", "bk_biz_name"], "condition": {"bk_biz_id": 2}, "page": {"start": 0, "limit": 1}});
    let r = cmdb_esb_call(&sim, "search_business", q.clone()).await;
    assert_eq!(name(&r), json!("Business 2"));
    let r = cmdb_gw_call(&sim, "biz/search/0", q.clone()).await;
    assert_eq!(name(&r), json!("Business 2"));
    let client = reqwest::Client::new();
    let ctl = json!({"bk_biz_id": 2, "bk_biz_name": "支付", "rename_module": {"id": 2001, "name": "edge"},
        "rename_set": {"id": 201, "name": "front"}});
    let resp = client
        .post(format!("http://{}/sim/cmdb", sim.addr()))
        .json(&ctl)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r = cmdb_gw_call(&sim, "open/biz/search/0/", q.clone()).await;
    assert_eq!(name(&r), json!("支付"));
    assert_eq!(sim.cmdb_business_name(2).as_deref(), Some("支付"));
    let renamed = sim.cmdb_topology(2);
    let first = renamed[0].topo.last().unwrap();
    assert_eq!(
        (
            first.bk_set_name.as_str(),
            first.module.last().unwrap().bk_module_name.as_str()
        ),
        ("front", "edge")
    );

    // The business lookup fails alone; every CMDB call fails in an outage.
    sim.set_faults(Faults {
        cmdb_business_outage: true,
        ..Faults::default()
    });
    let r = cmdb_gw_call(&sim, "biz/search/0", q.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let r = cmdb_gw_call(&sim, "hosts/app/2/list_hosts_topo", body.clone()).await;
    assert_eq!(r.body["code"], json!(0));
    let r = cmdb_esb_call(&sim, "search_business", q).await;
    assert_eq!(r.body["code"], json!(1306201));
    // The id lists of list_biz_hosts are refused here.
    sim.set_faults(Faults::default());
    let r = cmdb_gw_call(
        &sim,
        "hosts/app/2/list_hosts_topo",
        json!({"page": page(0, 10), "bk_module_ids": [2001]}),
    )
    .await;
    assert_eq!(r.body["code"], json!(1199006));
    assert!(Api::CmdbSearchBusiness.is_cmdb() && Api::CmdbListHostsTopo.is_cmdb());
}
