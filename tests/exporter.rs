//! The core exporter against the simulator over real HTTP on loopback:
//! truth after one cycle, pacing under the rate limit, outages, and scrapes
//! that never wait on a poll.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::*;
use gse_exporter::upstream::gse::decode::clean_version;
use gse_sim::{self as sim, AgentTruth, Api, Faults, Outcome, SimOptions};

const GROUPS: [(&str, i64, &str); 3] = [("web", 2, "v2"), ("legacy", 3, "v1"), ("batch", 5, "v2")];

fn fleet_options(agents: usize) -> SimOptions {
    SimOptions {
        agents,
        seed: 7,
        online_share: 0.9,
        unknown_share: 0.03,
        junk_version_share: 0.05,
        ..SimOptions::default()
    }
}

/// Splits the fleet into the three groups of `GROUPS` (40% / 30% / 30%).
fn split(truth: &[AgentTruth]) -> [&[AgentTruth]; 3] {
    let a = truth.len() * 4 / 10;
    let b = a + truth.len() * 3 / 10;
    [&truth[..a], &truth[a..b], &truth[b..]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_equals_the_simulators_truth_after_one_cycle() {
    let sim = start_sim(fleet_options(10_000)).await;
    let truth = sim.truth();
    let parts = split(&truth);
    let specs: Vec<GroupSpec> = GROUPS
        .iter()
        .zip(parts)
        .map(|((name, biz, api), agents)| GroupSpec {
            name,
            bk_biz_id: *biz,
            api,
            agents,
            labels: "team: sre",
        })
        .collect();
    let yaml = config_yaml(
        &sim,
        "  rate_limit: { requests_per_second: 200, burst: 50 }\n",
        "interval: 60s\n",
        &specs,
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(60)).await;
    let all = parse(&scrape(exporter.addr()).await);
    let scraped_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();

    let online = by_agent(&all, "gse_agent_online");
    let codes = by_agent(&all, "gse_agent_status_code");
    let info = by_agent(&all, "gse_agent_info");
    let ages = by_agent(&all, "gse_agent_heartbeat_age_seconds");
    assert_eq!(
        online.len(),
        10_000,
        "one online series per configured agent"
    );
    for ((name, biz, api), agents) in GROUPS.iter().zip(parts) {
        for agent in agents {
            let key = agent_key(name, api, agent);
            let series = online
                .get(&key)
                .unwrap_or_else(|| panic!("no gse_agent_online for {key}"));
            assert_eq!(
                series.value,
                f64::from(u8::from(agent.known && agent.online)),
                "online of {key}"
            );
            assert_eq!(series.label("bk_biz_id"), biz.to_string());
            assert_eq!(series.label("team"), "sre");
            let code = codes.get(&key).map(|s| s.value);
            let expected_code = match (agent.known, *api) {
                (false, _) => Some(-2.0),
                (true, "v1") => None,
                (true, _) => Some(agent.status_code as f64),
            };
            assert_eq!(code, expected_code, "status code of {key}");
            let version = info.get(&key).map(|s| s.label("version").to_string());
            let expected_version = if agent.known {
                clean_version(&agent.version)
            } else {
                String::new()
            };
            assert_eq!(
                version.as_deref(),
                Some(expected_version.as_str()),
                "version of {key}"
            );
            if agent.known {
                let parent = info[&key].label("parent_ip");
                assert_eq!(parent, agent.parent_ip, "parent of {key}");
            }
            if agent.known && *api == "v2" {
                let age = ages
                    .get(&key)
                    .unwrap_or_else(|| panic!("no heartbeat age for {key}"))
                    .value;
                let expected = scraped_at - agent.report_time_ms as f64 / 1000.0;
                let slack = if agent.online { 25.0 } else { 5.0 }; // online agents beat every 20 s
                assert!(
                    (age - expected).abs() <= slack,
                    "heartbeat age of {key}: {age} vs {expected}"
                );
            }
        }
        assert_group_counts(&all, name, &biz.to_string(), agents);
    }
    exporter.shutdown().await;
}

fn assert_group_counts(all: &[Sample], group: &str, biz: &str, agents: &[AgentTruth]) {
    let count = |f: &dyn Fn(&AgentTruth) -> bool| agents.iter().filter(|a| f(a)).count() as f64;
    let expected = [
        ("online", count(&|a| a.known && a.online)),
        ("offline", count(&|a| a.known && !a.online)),
        ("not_found", count(&|a| !a.known)),
        ("unknown", 0.0),
    ];
    for (state, want) in expected {
        let got = value(
            all,
            "gse_agents",
            &[("group", group), ("bk_biz_id", biz), ("state", state)],
        );
        assert_eq!(got, Some(want), "gse_agents{{group={group},state={state}}}");
    }
    let mut versions: BTreeMap<String, f64> = BTreeMap::new();
    for agent in agents.iter().filter(|a| a.known) {
        *versions.entry(clean_version(&agent.version)).or_default() += 1.0;
    }
    let exported: BTreeMap<String, f64> = samples(all, "gse_agent_versions")
        .into_iter()
        .filter(|s| s.label("group") == group)
        .map(|s| (s.label("version").to_string(), s.value))
        .collect();
    assert_eq!(exported, versions, "gse_agent_versions of {group}");
    assert_eq!(value(all, "gse_up", &[("group", group)]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_and_throttled_batches_are_retried_without_loss() {
    const RATE: f64 = 20.0;
    const BURST: usize = 5;
    let sim = start_sim(fleet_options(5_200)).await;
    // Every 7th request is answered with 429 / 1642902 (v2) or 1306429 (v1).
    sim.set_faults(Faults {
        throttle_every: Some(7),
        ..Faults::default()
    });
    let truth = sim.truth();
    let (v2_agents, v1_agents) = truth.split_at(2_600);
    let specs = [
        GroupSpec {
            name: "v2-half",
            bk_biz_id: 2,
            api: "v2",
            agents: v2_agents,
            labels: "",
        },
        GroupSpec {
            name: "v1-half",
            bk_biz_id: 3,
            api: "v1",
            agents: v1_agents,
            labels: "",
        },
    ];
    let gse = format!(
        "  batch_size: 100\n  max_in_flight: 4\n  initial_backoff: 50ms\n  rate_limit: {{ requests_per_second: {RATE}, burst: {BURST} }}\n"
    );
    let yaml = config_yaml(&sim, &gse, "interval: 60s\n", &specs);
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(50)).await;

    let requests = sim.requests();
    let status_batches = requests
        .iter()
        .filter(|r| matches!(r.api, Api::V1Status | Api::V2State))
        .count();
    assert!(
        status_batches >= 52,
        "a cycle of 50+ status batches, got {status_batches}"
    );
    let times: Vec<Instant> = requests.iter().map(|r| r.at).collect();
    for window_ms in [100u64, 250, 500, 1000, 2000, 4000] {
        let window = Duration::from_millis(window_ms);
        let seen = sim::max_in_window(&times, window);
        // GCRA bound: burst + rate x window, plus one for arrival jitter on loopback.
        let bound = BURST + (RATE * window.as_secs_f64()).ceil() as usize + 1;
        assert!(
            seen <= bound,
            "{seen} requests within {window_ms} ms exceed the limit bound {bound}"
        );
    }

    let throttled = |api: Api| {
        requests
            .iter()
            .filter(|r| r.api == api && r.outcome == Outcome::RateLimited)
            .count()
    };
    assert!(
        throttled(Api::V2State) > 0 && throttled(Api::V1Status) > 0,
        "both APIs were throttled"
    );
    let all = parse(&scrape(exporter.addr()).await);
    for (api, label) in [
        (Api::V1Status, "v1_get_agent_status"),
        (Api::V1Info, "v1_get_agent_info"),
        (Api::V2State, "v2_list_agent_state"),
        (Api::V2Info, "v2_list_agent_info"),
    ] {
        let counted = value(
            &all,
            "gse_exporter_api_requests_total",
            &[("api", label), ("result", "rate_limited")],
        );
        assert_eq!(
            counted,
            Some(throttled(api) as f64),
            "rate-limited replies counted for {label}"
        );
    }
    let online = by_agent(&all, "gse_agent_online");
    for spec in &specs {
        for agent in spec.agents {
            let key = agent_key(spec.name, spec.api, agent);
            let got = online
                .get(&key)
                .unwrap_or_else(|| panic!("{key} lost"))
                .value;
            assert_eq!(
                got,
                f64::from(u8::from(agent.known && agent.online)),
                "{key}"
            );
        }
        assert_eq!(
            value(&all, "gse_up", &[("group", spec.name)]),
            Some(1.0),
            "no batch lost in {}",
            spec.name
        );
    }
    exporter.shutdown().await;
}

/// The poll duration of a cycle that asks info counts its info batches from
/// the cycle's start: 8 state and 8 info requests of one id each through a
/// bucket of 10 a second (burst 1) take at least 1.5 s, each phase half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_duration_counts_info_batches_from_the_start_of_the_cycle() {
    let sim = start_sim(fleet_options(8)).await;
    let truth = sim.truth();
    let specs = [GroupSpec::web(&truth)];
    let gse = "  batch_size: 1\n  rate_limit: { requests_per_second: 10, burst: 1 }\n";
    let exporter = start_exporter(parse_config(&config_yaml(&sim, gse, "", &specs))).await;
    wait_cycles(&exporter, 1, Duration::from_secs(30)).await;
    let all = parse(&scrape(exporter.addr()).await);
    let took = value(
        &all,
        "gse_exporter_poll_duration_seconds",
        &[("group", "web")],
    )
    .unwrap();
    let info = sim
        .requests()
        .iter()
        .filter(|r| r.api == Api::V2Info)
        .count();
    assert_eq!(info, 8, "the first cycle asks every agent's info");
    assert!(took >= 1.5, "16 requests at 10 a second took {took} s");
    exporter.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gse_outage_keeps_last_values_and_says_it_is_blind() {
    let sim = start_sim(fleet_options(600)).await;
    let truth = sim.truth();
    let specs = [
        GroupSpec::web(&truth[..300]),
        GroupSpec {
            name: "legacy",
            bk_biz_id: 3,
            api: "v1",
            agents: &truth[300..],
            labels: "",
        },
    ];
    let gse = "  batch_size: 100\n  max_attempts: 2\n  initial_backoff: 10ms\n  rate_limit: { requests_per_second: 500, burst: 50 }\n";
    let yaml = config_yaml(&sim, gse, "interval: 1s\nstale_after: 30s\n", &specs);
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    let before = parse(&scrape(exporter.addr()).await);
    let online_before = by_agent(&before, "gse_agent_online");
    assert!(online_before.values().any(|s| s.value == 1.0));

    sim.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    let start = *exporter.cycles().borrow();
    wait_cycles(&exporter, start + 3, Duration::from_secs(20)).await; // >= 2 full cycles in the outage
    let during = parse(&scrape(exporter.addr()).await);
    for spec in &specs {
        assert_eq!(
            value(&during, "gse_up", &[("group", spec.name)]),
            Some(0.0),
            "{} is blind",
            spec.name
        );
        assert_eq!(
            value(
                &during,
                "gse_agents",
                &[("group", spec.name), ("state", "unknown")]
            ),
            Some(0.0)
        );
    }
    let online_during = by_agent(&during, "gse_agent_online");
    assert_eq!(
        online_during.len(),
        online_before.len(),
        "no agent left the exposition"
    );
    for (key, sample) in &online_before {
        assert_eq!(
            online_during[key].value, sample.value,
            "{key} kept its last value"
        );
    }
    let failures = value(
        &during,
        "gse_exporter_api_requests_total",
        &[("api", "v2_list_agent_state"), ("result", "http_error")],
    );
    assert!(
        failures.unwrap_or(0.0) > 0.0,
        "failed requests are counted by result"
    );

    // While GSE is down, some agents really change; the first cycle after shows it.
    let flipped: Vec<String> = truth[..300]
        .iter()
        .filter(|a| a.known && a.online)
        .take(5)
        .map(|a| a.v2_id())
        .collect();
    sim.set_online(&flipped, false).unwrap();
    sim.set_faults(Faults::default());
    let outage_end = *exporter.cycles().borrow();
    wait_cycles(&exporter, outage_end + 2, Duration::from_secs(20)).await;
    let after = parse(&scrape(exporter.addr()).await);
    assert_eq!(value(&after, "gse_up", &[("group", "web")]), Some(1.0));
    let online_after = by_agent(&after, "gse_agent_online");
    for id in &flipped {
        assert_eq!(
            online_after[&format!("web/{id}")].value,
            0.0,
            "{id} is offline after the outage"
        );
    }
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_returns_promptly_while_a_poll_waits_on_a_slow_gse() {
    let sim = start_sim(fleet_options(200)).await;
    sim.set_faults(Faults {
        latency: Duration::from_secs(5),
        ..Faults::default()
    });
    let truth = sim.truth();
    let specs = [GroupSpec {
        name: "slow",
        bk_biz_id: 2,
        api: "v2",
        agents: &truth,
        labels: "",
    }];
    let yaml = config_yaml(&sim, "  timeout: 20s\n", "interval: 30s\n", &specs);
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_until(
        "the first GSE request to be in flight",
        Duration::from_secs(10),
        || async { (!sim.requests().is_empty()).then_some(()) },
    )
    .await;
    let started = Instant::now();
    let body = scrape(exporter.addr()).await;
    let took = started.elapsed();
    assert!(
        !exporter.published().is_ready(),
        "the poll is still in flight"
    );
    assert!(
        took < Duration::from_secs(1),
        "scrape took {took:?} while GSE answers in 5 s"
    );
    assert!(body.contains("gse_exporter_build_info"));
    let ready = reqwest::get(format!("http://{}/-/ready", exporter.addr()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready before the first cycle");
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_cloud_ip_agent_ids_are_accepted_and_labelled_as_gse_answered() {
    let sim = start_sim(SimOptions {
        agents: 60,
        legacy_share: 0.5,
        online_share: 1.0,
        unknown_share: 0.0,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let legacy: Vec<&AgentTruth> = truth.iter().filter(|a| a.bk_agent_id.is_empty()).collect();
    assert!(legacy.len() >= 10, "{} legacy agents", legacy.len());
    // Legacy agents as `cloud:ip` strings and as maps carrying the legacy
    // id; upgraded agents by their real id.
    let mut hosts = String::new();
    for (i, agent) in truth.iter().enumerate() {
        let id = agent.v2_id();
        hosts.push_str(&match (agent.bk_agent_id.is_empty(), i % 2) {
            (true, 0) => format!(
                "      - {{ip: {}, bk_cloud_id: {}, bk_agent_id: \"{id}\"}}\n",
                agent.ip, agent.bk_cloud_id
            ),
            _ => format!("      - \"{id}\"\n"),
        });
    }
    let yaml = format!(
        "{}interval: 60s\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts:\n{hosts}",
        gse_block(&sim, "")
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    let all = parse(&scrape(exporter.addr()).await);
    let online = samples(&all, "gse_agent_online");
    assert_eq!(online.len(), truth.len());
    for agent in &legacy {
        let series = online
            .iter()
            .find(|s| {
                s.label("ip") == agent.ip && s.label("bk_cloud_id") == agent.bk_cloud_id.to_string()
            })
            .unwrap_or_else(|| panic!("no series for {}", agent.hosts_key()));
        assert_eq!(
            series.label("bk_agent_id"),
            agent.hosts_key(),
            "the id GSE answered with"
        );
        assert_eq!(series.value, 1.0);
    }
    exporter.shutdown().await;
}
