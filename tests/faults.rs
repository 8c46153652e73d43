//! Every upstream fault, against a real exporter polling the simulator over
//! loopback HTTP. Each test runs its own simulator and exporter with two
//! groups, one per API (gateway v2 and ESB v1), so each fault meets both
//! decoders.
//!
//! For a failure the test proves that the exporter keeps serving, that no
//! agent's `gse_agent_online` moves (agents that really go offline during the
//! fault included: nothing is read from a broken reply), that `gse_up` is 0,
//! that the failed requests are counted under the fault's own `result` label
//! and under no other failure label, and that the first cycle started after
//! the fault ends shows the truth again (the agents that went offline during
//! the fault included).
//!
//! | fault | v2 (`list_agent_state`) | v1 (`get_agent_status`) |
//! |---|---|---|
//! | latency past `gse.timeout` | timeout | timeout |
//! | connection refused | transport_error | transport_error |
//! | connection reset | transport_error | transport_error |
//! | HTTP 502 / 504 (gateway envelope) | http_error | http_error |
//! | nginx HTML 502 page | http_error | http_error |
//! | gateway 429 + `X-Bkapi-RateLimit-*` / ESB 1306429 (`rate_limit`) | rate_limited | rate_limited |
//! | code 1306429 | rate_limited | rate_limited |
//! | code 1640001, 1640301, 1650200, 1650401 | http_error (400/403/502/504) | api_error (ESB: HTTP 200, `result:false`) |
//! | malformed / truncated JSON, no `data`, `data` of the wrong type | decode_error | decode_error |
//! | reply over `gse.max_response_bytes` | decode_error | decode_error |
//! | reply trickling past `gse.timeout` | timeout | timeout |
//!
//! Not failures: 1011003 (`none_found`), junk versions. Duplicate keys are
//! tested on the decoder, as the simulator cannot produce them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::binary::Binary;
use crate::common::*;
use gse_exporter::run::Exporter;
use gse_exporter::upstream::GseError;
use gse_exporter::upstream::gse::decode::{self, clean_version};
use gse_sim::{self as sim, AgentTruth, BodyFault, Faults, RateLimit, RunningSim, SimOptions};

const DEADLINE: Duration = Duration::from_secs(20);
const AGENTS: usize = 60;
/// Status batches per group and cycle: 30 agents in batches of 15.
const BATCHES: f64 = 2.0;
const V2_GROUP: &str = "gw";
const V1_GROUP: &str = "esb";
const V2_STATE: &str = "v2_list_agent_state";
const V1_STATUS: &str = "v1_get_agent_status";
const FAILURE_LABELS: [&str; 6] = [
    "transport_error",
    "timeout",
    "http_error",
    "rate_limited",
    "api_error",
    "decode_error",
];

fn sim_options(junk_version_share: f64) -> SimOptions {
    SimOptions {
        agents: AGENTS,
        seed: 23,
        online_share: 0.8,
        unknown_share: 0.1,
        junk_version_share,
        ..SimOptions::default()
    }
}

/// What breaks upstream.
enum Fault {
    /// The simulator answers under these faults.
    Sim(Faults),
    /// The simulator is gone and its port closed.
    Refused,
}

fn faults(f: impl FnOnce(&mut Faults)) -> Fault {
    let mut faults = Faults::default();
    f(&mut faults);
    Fault::Sim(faults)
}

fn body(fault: BodyFault) -> Fault {
    faults(|f| f.body = Some(fault))
}

fn code(code: i64) -> Fault {
    faults(|f| f.code = Some(code))
}

/// A simulator, an exporter polling it (first cycle done), and the groups.
struct Rig {
    sim: Option<RunningSim>,
    sim_addr: SocketAddr,
    junk: f64,
    truth: Vec<AgentTruth>,
    exporter: Exporter,
}

impl Rig {
    async fn start(junk: f64) -> Rig {
        let sim = start_sim(sim_options(junk)).await;
        let truth = sim.truth();
        let yaml = {
            let (v2, v1) = truth.split_at(AGENTS / 2);
            let specs = [
                GroupSpec {
                    name: V2_GROUP,
                    bk_biz_id: 2,
                    api: "v2",
                    agents: v2,
                    labels: "",
                },
                GroupSpec {
                    name: V1_GROUP,
                    bk_biz_id: 3,
                    api: "v1",
                    agents: v1,
                    labels: "",
                },
            ];
            let gse = "  batch_size: 15\n  max_attempts: 1\n  initial_backoff: 10ms\n  max_backoff: 50ms\n  timeout: 500ms\n  max_response_bytes: 1048576\n  rate_limit: { requests_per_second: 1000, burst: 100 }\n";
            config_yaml(&sim, gse, "interval: 1s\nstale_after: 60s\n", &specs)
        };
        let exporter = start_exporter(parse_config(&yaml)).await;
        wait_cycles(&exporter, 1, DEADLINE).await;
        Rig {
            sim_addr: sim.addr(),
            sim: Some(sim),
            junk,
            truth,
            exporter,
        }
    }

    fn sim(&self) -> &RunningSim {
        self.sim.as_ref().expect("the simulator is running")
    }

    /// Groups as (name, api, agents).
    fn groups(&self) -> [(&'static str, &'static str, &[AgentTruth]); 2] {
        let (v2, v1) = self.truth.split_at(AGENTS / 2);
        [(V2_GROUP, "v2", v2), (V1_GROUP, "v1", v1)]
    }

    /// `gse_agent_online` as the simulator's truth says it should be.
    fn expected_online(&self, truth: &[AgentTruth]) -> BTreeMap<String, f64> {
        let (v2, v1) = truth.split_at(AGENTS / 2);
        let mut out = BTreeMap::new();
        for (group, api, agents) in [(V2_GROUP, "v2", v2), (V1_GROUP, "v1", v1)] {
            for agent in agents {
                let online = f64::from(u8::from(agent.known && agent.online));
                out.insert(agent_key(group, api, agent), online);
            }
        }
        out
    }

    /// Takes agents that are online in each group offline in the simulator
    /// and returns their `by_agent` keys.
    fn take_some_offline(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for (group, api, agents) in self.groups() {
            let picked: Vec<&AgentTruth> = agents
                .iter()
                .filter(|a| a.known && a.online)
                .take(3)
                .collect();
            assert_eq!(picked.len(), 3, "{group} has online agents to flip");
            let ids: Vec<String> = picked
                .iter()
                .map(|a| {
                    if api == "v1" {
                        a.hosts_key()
                    } else {
                        a.v2_id()
                    }
                })
                .collect();
            self.sim().set_online(&ids, false).expect("known agents");
            keys.extend(picked.iter().map(|a| agent_key(group, api, a)));
        }
        keys
    }

    async fn scrape(&self) -> Vec<Sample> {
        parse(&scrape(self.exporter.addr()).await)
    }

    async fn start_fault(&mut self, fault: &Fault) {
        match fault {
            Fault::Sim(faults) => self.sim().set_faults(faults.clone()),
            Fault::Refused => {
                let sim = self.sim.take().expect("the simulator is running");
                sim.shutdown().await;
            }
        }
    }

    async fn end_fault(&mut self, fault: &Fault) {
        match fault {
            Fault::Sim(_) => self.sim().set_faults(Faults::default()),
            Fault::Refused => {
                // Same seed, same fleet, on the same port.
                let sim = sim::start(sim_options(self.junk), self.sim_addr)
                    .await
                    .expect("the simulator starts again on its old port");
                self.sim = Some(sim);
            }
        }
    }
}

fn online(all: &[Sample]) -> BTreeMap<String, f64> {
    by_agent(all, "gse_agent_online")
        .into_iter()
        .map(|(key, s)| (key, s.value))
        .collect()
}

/// `gse_exporter_api_requests_total{api}` by `result`.
fn results(all: &[Sample], api: &str) -> BTreeMap<String, f64> {
    samples(all, "gse_exporter_api_requests_total")
        .into_iter()
        .filter(|s| s.label("api") == api)
        .map(|s| (s.label("result").to_string(), s.value))
        .collect()
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, result: &str) -> f64 {
    after.get(result).copied().unwrap_or(0.0) - before.get(result).copied().unwrap_or(0.0)
}

/// The whole failure scenario; `v2_label` and `v1_label` are the `result`
/// each API's failed status requests must be counted under.
async fn failure_keeps_last_values(fault: Fault, v2_label: &str, v1_label: &str) {
    let mut rig = Rig::start(0.0).await;
    let before = rig.scrape().await;
    assert_eq!(
        online(&before),
        rig.expected_online(&rig.truth),
        "before the fault the exporter shows the truth"
    );
    for (group, _, _) in rig.groups() {
        assert_eq!(value(&before, "gse_up", &[("group", group)]), Some(1.0));
    }

    rig.start_fault(&fault).await;
    // Agents that really go offline while GSE cannot be asked must not show
    // until GSE answers again (for a closed port: right after it reopens).
    let mut flipped = match &fault {
        Fault::Sim(_) => rig.take_some_offline(),
        Fault::Refused => Vec::new(),
    };
    wait_more_cycles(&rig.exporter, 2, DEADLINE).await; // one whole cycle in the fault
    let during = rig.scrape().await;
    assert_eq!(
        get_status(rig.exporter.addr(), "/-/healthy").await,
        200,
        "the exporter is healthy"
    );
    for (group, _, _) in rig.groups() {
        assert_eq!(
            value(&during, "gse_up", &[("group", group)]),
            Some(0.0),
            "{group} says it is blind"
        );
        assert_eq!(
            value(
                &during,
                "gse_agents",
                &[("group", group), ("state", "unknown")]
            ),
            Some(0.0),
            "{group}: nothing is stale yet"
        );
    }
    assert_eq!(
        online(&during),
        online(&before),
        "no agent changed because of the fault"
    );
    for (api, label) in [(V2_STATE, v2_label), (V1_STATUS, v1_label)] {
        let (was, now) = (results(&before, api), results(&during, api));
        assert!(
            delta(&now, &was, label) >= BATCHES,
            "{api}: a whole cycle of failures counted as {label}: {was:?} -> {now:?}"
        );
        for other in FAILURE_LABELS.iter().filter(|l| **l != label) {
            assert_eq!(
                delta(&now, &was, other),
                0.0,
                "{api}: nothing counted as {other} for a {label} fault"
            );
        }
    }

    rig.end_fault(&fault).await;
    if flipped.is_empty() {
        flipped = rig.take_some_offline();
    }
    wait_more_cycles(&rig.exporter, 2, DEADLINE).await; // the first cycle started after the fault
    let after = rig.scrape().await;
    for (group, _, _) in rig.groups() {
        assert_eq!(
            value(&after, "gse_up", &[("group", group)]),
            Some(1.0),
            "{group} sees again"
        );
    }
    let now_online = online(&after);
    assert_eq!(
        now_online,
        rig.expected_online(&rig.sim().truth()),
        "the first cycle after the fault shows the truth"
    );
    for key in &flipped {
        assert_eq!(now_online[key], 0.0, "{key} went offline during the fault");
    }
    rig.exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_latency_past_the_request_timeout() {
    let fault = faults(|f| f.latency = Duration::from_secs(3));
    failure_keeps_last_values(fault, "timeout", "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused() {
    failure_keeps_last_values(Fault::Refused, "transport_error", "transport_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset() {
    let fault = body(BodyFault::Reset);
    failure_keeps_last_values(fault, "transport_error", "transport_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_502() {
    let fault = body(BodyFault::HttpStatus(502));
    failure_keeps_last_values(fault, "http_error", "http_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_504() {
    let fault = body(BodyFault::HttpStatus(504));
    failure_keeps_last_values(fault, "http_error", "http_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_instead_of_json() {
    // nginx's 502 page: an HTTP failure before it is a decoding one.
    failure_keeps_last_values(body(BodyFault::Html), "http_error", "http_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_429_and_esb_1306429_from_the_rate_limit() {
    let limit = RateLimit {
        requests_per_second: 0.0,
        burst: 0,
    };
    // The reply carries the gateway's rate-limit headers.
    let probe = start_sim(sim_options(0.0)).await;
    probe.set_faults(Faults {
        rate_limit: Some(limit),
        ..Faults::default()
    });
    let reply = reqwest::Client::new()
        .post(format!(
            "{}/api/v2/cluster/list_agent_state",
            probe.v2_url()
        ))
        .header(
            "X-Bkapi-Authorization",
            r#"{"bk_app_code":"gse-exporter","bk_app_secret":"sim-secret","bk_username":"admin"}"#,
        )
        .json(&serde_json::json!({ "agent_id_list": [probe.truth()[0].v2_id()] }))
        .send()
        .await
        .expect("the simulator answers");
    assert_eq!(reply.status(), 429);
    for header in [
        "x-bkapi-ratelimit-limit",
        "x-bkapi-ratelimit-remaining",
        "x-bkapi-ratelimit-reset",
        "retry-after",
    ] {
        assert!(reply.headers().contains_key(header), "{header} is sent");
    }

    let fault = faults(|f| f.rate_limit = Some(limit));
    failure_keeps_last_values(fault, "rate_limited", "rate_limited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esb_200_result_false_1306429() {
    failure_keeps_last_values(code(1306429), "rate_limited", "rate_limited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_1640001_invalid_args() {
    failure_keeps_last_values(code(1640001), "http_error", "api_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_1640301_no_permission() {
    failure_keeps_last_values(code(1640301), "http_error", "api_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_1650200_bad_gateway() {
    failure_keeps_last_values(code(1650200), "http_error", "api_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_1650401_backend_timeout() {
    failure_keeps_last_values(code(1650401), "http_error", "api_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json() {
    failure_keeps_last_values(body(BodyFault::Malformed), "decode_error", "decode_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_json() {
    failure_keeps_last_values(body(BodyFault::Truncated), "decode_error", "decode_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_without_data() {
    failure_keeps_last_values(body(BodyFault::NoData), "decode_error", "decode_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_of_the_wrong_type() {
    let fault = body(BodyFault::WrongDataType);
    failure_keeps_last_values(fault, "decode_error", "decode_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_about_other_agents_than_those_asked() {
    // A cache in front of GSE that ignores the request body answers with
    // another batch's agents: read as "not found", every agent went offline.
    let fault = body(BodyFault::OtherAgents);
    failure_keeps_last_values(fault, "decode_error", "decode_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_over_max_response_bytes() {
    // The simulator streams over 64 MiB; the test config caps replies at 1 MiB.
    failure_keeps_last_values(body(BodyFault::Huge), "decode_error", "decode_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_trickling_past_the_request_timeout() {
    // One byte a second after the headers: the 500 ms request timeout still holds.
    failure_keeps_last_values(body(BodyFault::Trickle), "timeout", "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_found_1011003_is_not_a_failure() {
    let rig = Rig::start(0.0).await;
    let before = rig.scrape().await;
    // v2 answers 1011003 for every batch; v1 an empty map.
    rig.sim().set_faults(Faults {
        none_found: true,
        ..Faults::default()
    });
    wait_more_cycles(&rig.exporter, 2, DEADLINE).await;
    let during = rig.scrape().await;
    let codes = by_agent(&during, "gse_agent_status_code");
    for (group, api, agents) in rig.groups() {
        assert_eq!(
            value(&during, "gse_up", &[("group", group)]),
            Some(1.0),
            "{group}: GSE answered"
        );
        for (state, want) in [
            ("not_found", agents.len() as f64),
            ("online", 0.0),
            ("offline", 0.0),
            ("unknown", 0.0),
        ] {
            assert_eq!(
                value(&during, "gse_agents", &[("group", group), ("state", state)]),
                Some(want),
                "gse_agents{{group={group},state={state}}}"
            );
        }
        for agent in agents {
            let key = agent_key(group, api, agent);
            assert_eq!(
                online(&during)[&key],
                0.0,
                "{key} is not found, so not online"
            );
            assert_eq!(codes[&key].value, -2.0, "{key} has the not-found code");
        }
    }
    let (was, now) = (results(&before, V2_STATE), results(&during, V2_STATE));
    assert!(
        delta(&now, &was, "not_found") >= BATCHES,
        "{was:?} -> {now:?}"
    );
    for (api, was, now) in [
        (V2_STATE, was, now),
        (
            V1_STATUS,
            results(&before, V1_STATUS),
            results(&during, V1_STATUS),
        ),
    ] {
        for label in FAILURE_LABELS {
            assert_eq!(delta(&now, &was, label), 0.0, "{api}: no {label}");
        }
    }

    rig.sim().set_faults(Faults::default());
    wait_more_cycles(&rig.exporter, 2, DEADLINE).await;
    let after = rig.scrape().await;
    assert_eq!(online(&after), rig.expected_online(&rig.sim().truth()));
    rig.exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_versions_are_cleaned_to_empty() {
    let rig = Rig::start(0.4).await;
    let all = rig.scrape().await;
    let info = by_agent(&all, "gse_agent_info");
    let mut junk = 0;
    for (group, api, agents) in rig.groups() {
        let mut junk_in_group = 0;
        for agent in agents.iter().filter(|a| a.known) {
            let key = agent_key(group, api, agent);
            let version = info[&key].label("version");
            assert_eq!(version, clean_version(&agent.version), "version of {key}");
            if agent.version.trim() != agent.version || agent.version.contains('\x1b') {
                assert_eq!(version, "", "{key}: junk {:?} is emptied", agent.version);
                junk_in_group += 1;
            }
            assert!(
                version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
                "{key}: {version:?}"
            );
        }
        assert!(junk_in_group > 0, "{group} has agents with junk versions");
        junk += junk_in_group;
        let empty = value(
            &all,
            "gse_agent_versions",
            &[("group", group), ("version", "")],
        );
        assert_eq!(
            empty,
            Some(junk_in_group as f64),
            "{group} counts junk as \"\""
        );
    }
    assert!(junk >= 2);
    rig.exporter.shutdown().await;
}

#[test]
fn duplicate_agents_in_a_reply_last_one_wins() {
    // As in Python's json (what GSE's own tools read replies with), on both APIs.
    let v1 = br#"{"result":true,"code":0,"data":{
        "0:10.0.0.1":{"bk_agent_alive":1},"0:10.0.0.1":{"bk_agent_alive":0}}}"#;
    let reply = decode::v1_status(v1, &["0:10.0.0.1".into()]).expect("duplicate map keys decode");
    assert_eq!(reply.answers.len(), 1);
    assert!(!reply.answers[0].as_ref().unwrap().alive);
    let v2 = br#"{"code":0,"result":true,"data":[
        {"bk_agent_id":"a","status_code":3},{"bk_agent_id":"a","status_code":2}]}"#;
    let reply = decode::v2_state(v2, &["a".into()]).expect("duplicate list items decode");
    assert_eq!(reply.answers.len(), 1);
    assert!(reply.answers[0].as_ref().unwrap().alive);
}

#[test]
fn duplicate_fields_are_a_decode_error() {
    // Which of two `bk_agent_alive` (or two `code`) to believe is a guess: refuse.
    for body in [
        &br#"{"result":true,"code":0,"data":{"0:10.0.0.1":{"bk_agent_alive":1,"bk_agent_alive":0}}}"#[..],
        br#"{"result":true,"code":0,"code":1306201,"data":{}}"#,
        br#"{"result":true,"code":0,"data":{},"data":{"0:10.0.0.1":{"bk_agent_alive":1}}}"#,
    ] {
        let got = decode::v1_status(body, &[]);
        assert!(
            matches!(got, Err(GseError::Decode(_))),
            "{}: {got:?}",
            String::from_utf8_lossy(body)
        );
    }
    let v2 = br#"{"code":0,"result":true,"data":[{"bk_agent_id":"a","bk_agent_id":"b","status_code":2}]}"#;
    assert!(matches!(
        decode::v2_state(v2, &[]),
        Err(GseError::Decode(_))
    ));
    let v2 =
        br#"{"code":0,"result":true,"data":[{"bk_agent_id":"a","status_code":2,"status_code":3}]}"#;
    assert!(matches!(
        decode::v2_state(v2, &[]),
        Err(GseError::Decode(_))
    ));
}

#[test]
fn html_with_status_200_is_a_decode_error() {
    let page = b"<html><body><h1>Welcome to nginx!</h1></body></html>";
    for got in [
        decode::v1_status(page, &[]).map(|_| ()),
        decode::v1_info(page, &[]).map(|_| ()),
        decode::v2_state(page, &[]).map(|_| ()),
        decode::v2_info(page, &[]).map(|_| ()),
    ] {
        assert!(matches!(got, Err(GseError::Decode(_))), "{got:?}");
    }
}

/// About the size of every flood reply: under `gse.max_response_bytes`.
const FLOOD_BYTES: usize = 60_000_000;

/// The reply of about [`FLOOD_BYTES`] that a GSE answering with millions of
/// agents nobody asked for (then the one asked, `0:10.0.0.N` in `asked`,
/// alive) gives to `path`. Agent ids come with an escape for `0:10.0.0.2`,
/// so that the decoder's serde path reads them; its scanner reads the rest.
fn flood_reply(path: &str, asked: &str) -> String {
    let host = ["0:10.0.0.1", "0:10.0.0.2", "0:10.0.0.3"]
        .into_iter()
        .find(|h| asked.contains(&h[2..]))
        .unwrap_or("none");
    let items = |item: &str, last: String| {
        let mut all = vec![item; FLOOD_BYTES / (item.len() + 1)];
        all.push(&last);
        all.join(",")
    };
    let v2 = |item: &str| {
        format!(
            "[{}]",
            items(
                item,
                format!(r#"{{"bk_agent_id":"{host}","status_code":2}}"#)
            )
        )
    };
    let v1 = |item: &str| {
        format!(
            "{{{}}}",
            items(item, format!(r#""{host}":{{"bk_agent_alive":1}}"#))
        )
    };
    let data = match path {
        p if p.contains("get_agent_status") => v1(r#""0:u":{"bk_agent_alive":1}"#),
        p if p.contains("get_agent_info") => v1(r#""0:u":{}"#),
        _ if host == "0:10.0.0.2" => v2(r#"{"bk_agent_id":"\u0075","status_code":2}"#),
        p if p.contains("list_agent_state") => v2(r#"{"bk_agent_id":"u","status_code":2}"#),
        _ => v2(r#"{"bk_agent_id":"u"}"#),
    };
    format!(r#"{{"code":0,"result":true,"message":"","data":{data}}}"#)
}

/// A reply of millions of items costs the exporter about its size, not ten
/// times: the decoders built every item of a reply, asked or not, before
/// filing them, in the scanner, in serde's path and for ESB's maps (690 MB
/// peak for these replies of 60 MB; 87 MB now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_of_millions_of_items_costs_about_its_size() {
    let answer = |uri: axum::http::Uri, body: String| async move { flood_reply(uri.path(), &body) };
    let gateway = serve(axum::Router::new().fallback(axum::routing::any(answer))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    std::fs::write(
        &path,
        format!(
            "gse:\n  api: v2\n  url: http://{gateway}/api/bk-gse/prod\n  v1_url: http://{gateway}/api/c/compapi/v2/gse\n  \
             app_code: gse-exporter\n  app_secret: flood-secret\n  max_in_flight: 1\n  batch_size: 1\n  timeout: 60s\n\
             interval: 60s\ngroups:\n  - name: scanned\n    bk_biz_id: 2\n    hosts: [\"0:10.0.0.1\"]\n\
             \x20 - name: serde\n    bk_biz_id: 3\n    hosts: [\"0:10.0.0.2\"]\n\
             \x20 - name: esb\n    bk_biz_id: 4\n    gse_api: v1\n    hosts: [\"0:10.0.0.3\"]\n",
        ),
    )
    .unwrap();
    let binary = Binary::start(&[format!("--config.file={}", path.display())], &[]).await;
    let url = format!("http://{}/metrics", binary.addr);
    let decoded = |all: &[Sample], api: &str| {
        value(
            all,
            "gse_exporter_api_requests_total",
            &[("api", api), ("result", "success")],
        )
        .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let all = parse(&reqwest::get(&url).await.unwrap().text().await.unwrap());
        if decoded(&all, "v2_list_agent_info") >= 2.0 && decoded(&all, "v1_get_agent_info") >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "calls so far: {:?}\n{}",
            samples(&all, "gse_exporter_api_requests_total")
                .iter()
                .filter(|s| s.value > 0.0)
                .map(|s| format!("{} {} {}", s.label("api"), s.label("result"), s.value))
                .collect::<Vec<_>>(),
            binary.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = binary.peak_kib() * 1024;
    binary.stop();
    assert!(
        peak < 2 * FLOOD_BYTES as u64,
        "peak {peak} bytes decoding replies of about {FLOOD_BYTES} bytes"
    );
}
