//! Heartbeat age against the simulator (issue 18): GSE 2.0 keeps
//! `report_time` in `list_agent_info` only (the simulator's default), which the
//! exporter asks every `info_interval` for versions and parents. The heartbeat
//! must still be fresh: an agent that comes back shows a fresh heartbeat
//! within one interval of GSE knowing it, and an alive agent's heartbeat is
//! never older than about two poll intervals plus GSE's report period.
//!
//! The exporter runs with its default settings except for time, which is
//! scaled down 60 times with the default relations kept: `interval` 1s
//! (default 60s), `info_interval` 10s (default 10m, ten intervals), and the
//! simulated agents report every 1/3 s (20 s at full scale). Every published
//! cycle is scraped as it is published.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use gse_exporter::run::Exporter;
use gse_sim::{AgentTruth, Api, RunningSim, SimOptions};

const INTERVAL: Duration = Duration::from_secs(1);
const INFO_INTERVAL: Duration = Duration::from_secs(10);
const REPORT_PERIOD: Duration = Duration::from_millis(333);

/// The bound of the issue: two poll intervals plus GSE's report period.
fn bound() -> f64 {
    (2 * INTERVAL + REPORT_PERIOD).as_secs_f64()
}

async fn start() -> (RunningSim, Vec<AgentTruth>, Exporter) {
    let sim = start_sim(SimOptions {
        agents: 40,
        seed: 18,
        online_share: 0.8,
        unknown_share: 0.05,
        report_period: REPORT_PERIOD,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let specs = [GroupSpec::web(&truth)];
    let top = format!(
        "interval: {}ms\ninfo_interval: {}ms\n",
        INTERVAL.as_millis(),
        INFO_INTERVAL.as_millis()
    );
    let exporter = start_exporter(parse_config(&config_yaml(&sim, "", &top, &specs))).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    (sim, truth, exporter)
}

/// One published cycle as scraped: per agent id, (online, heartbeat age,
/// heartbeat timestamp).
type Cycle = BTreeMap<String, (f64, Option<f64>, Option<f64>)>;

/// Scrapes each cycle as it is published.
struct Cycles {
    published: tokio::sync::watch::Receiver<u64>,
}

impl Cycles {
    fn new(exporter: &Exporter) -> Cycles {
        let mut published = exporter.cycles();
        published.mark_unchanged();
        Cycles { published }
    }

    /// The number of the last cycle published.
    fn last(&self) -> u64 {
        *self.published.borrow()
    }

    /// Waits for the next published cycle and scrapes it; returns its number.
    async fn next(&mut self, exporter: &Exporter) -> (u64, Cycle) {
        let changed = tokio::time::timeout(Duration::from_secs(10), self.published.changed());
        assert!(changed.await.is_ok(), "a cycle is published every interval");
        let number = *self.published.borrow_and_update();
        let all = parse(&scrape(exporter.addr()).await);
        let online = by_agent(&all, "gse_agent_online");
        let ages = by_agent(&all, "gse_agent_heartbeat_age_seconds");
        let stamps = by_agent(&all, "gse_agent_heartbeat_timestamp_seconds");
        let cycle = online
            .iter()
            .map(|(key, s)| {
                let id = key.trim_start_matches("web/").to_string();
                let age = ages.get(key).map(|s| s.value);
                (id, (s.value, age, stamps.get(key).map(|s| s.value)))
            })
            .collect();
        (number, cycle)
    }
}

fn info_ids(sim: &RunningSim) -> usize {
    let requests = sim.requests();
    let info = requests.iter().filter(|r| r.api == Api::V2Info);
    info.map(|r| r.ids).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alive_agents_have_a_fresh_heartbeat_across_info_intervals() {
    let (sim, truth, exporter) = start().await;
    let alive: Vec<&AgentTruth> = truth.iter().filter(|a| a.known && a.online).collect();
    assert!(alive.len() >= 20, "most of the fleet is online");
    let before = info_ids(&sim);
    // More than one info_interval of cycles, every one of them checked.
    let wanted = INFO_INTERVAL.as_secs() + 4;
    let (mut checked, mut oldest) = (0, 0.0f64);
    let mut cycles = Cycles::new(&exporter);
    let started = cycles.last();
    while checked < wanted {
        let (_, cycle) = cycles.next(&exporter).await;
        for agent in &alive {
            let (online, age, stamp) = cycle[&agent.v2_id()];
            assert_eq!(online, 1.0, "{} stays online", agent.v2_id());
            let age = age.expect("an alive agent has a heartbeat age");
            assert!(stamp.is_some(), "and a heartbeat timestamp");
            assert!(
                age <= bound(),
                "cycle {checked}: heartbeat of {} is {age} s old, more than {} s",
                agent.v2_id(),
                bound()
            );
            oldest = oldest.max(age);
        }
        checked += 1;
    }
    let cycles = cycles.last() - started;
    // The cost: about half the online agents' info per cycle (each every
    // other cycle), plus every info_interval the rest.
    let asked = info_ids(&sim) - before;
    let known = truth.iter().filter(|a| a.known).count();
    let most = alive.len() * (cycles as usize / 2 + 1) + known * 2;
    assert!(
        asked <= most,
        "{asked} info ids in {cycles} cycles for {} online agents (at most {most})",
        alive.len()
    );
    eprintln!(
        "oldest heartbeat of an alive agent: {oldest} s over {cycles} cycles; {asked} info ids"
    );
    exporter.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_agent_shows_a_fresh_heartbeat_within_one_interval() {
    let (sim, truth, exporter) = start().await;
    let agent = truth.iter().find(|a| a.known && a.online).unwrap();
    let id = agent.v2_id();

    // It goes offline, and stays away for several intervals: its heartbeat
    // ages from its last report.
    let mut cycles = Cycles::new(&exporter);
    sim.set_online(std::slice::from_ref(&id), false).unwrap();
    let away = cycles.last();
    let mut last_age = 0.0;
    loop {
        let (number, cycle) = cycles.next(&exporter).await;
        let (online, age, _) = cycle[&id];
        if online == 0.0 {
            last_age = age.expect("an offline agent keeps its heartbeat age");
        }
        if number >= away + 5 {
            break;
        }
    }
    assert!(
        last_age >= 2.0,
        "after four intervals away the heartbeat is {last_age} s old"
    );

    // GSE knows it is back from now on: the cycle running now may have asked
    // before, the next one starts after, within one interval.
    let back = SystemTime::now();
    sim.set_online(std::slice::from_ref(&id), true).unwrap();
    let running = cycles.last() + 1;
    let (number, (online, age, stamp)) = loop {
        let (number, cycle) = cycles.next(&exporter).await;
        if cycle[&id].0 == 1.0 || number > running {
            break (number, cycle[&id]);
        }
    };
    assert_eq!(
        online, 1.0,
        "online in cycle {number}, the first one started after it came back"
    );
    let age = age.expect("a heartbeat age");
    assert!(
        age <= INTERVAL.as_secs_f64(),
        "a returning agent shows a fresh heartbeat, not one {age} s old"
    );
    let stamp = stamp.expect("a heartbeat timestamp");
    let back = back.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(
        stamp >= back.floor(),
        "the heartbeat ({stamp}) is from after it came back ({back})"
    );
    exporter.shutdown().await;
    sim.shutdown().await;
}

/// The info ids asked in the `cycles` cycles after the first, with `top`
/// added to the configuration and the group's per-agent series on or off.
async fn info_ids_after_the_first_cycle(top: &str, per_agent: bool, cycles: u64) -> usize {
    let sim = start_sim(SimOptions {
        agents: 40,
        seed: 18,
        online_share: 0.8,
        report_period: REPORT_PERIOD,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let top = format!(
        "interval: {}ms\ninfo_interval: 1h\n{top}",
        INTERVAL.as_millis()
    );
    let yaml = config_yaml(&sim, "", &top, &[GroupSpec::web(&truth)]).replace(
        "    hosts:\n",
        &format!("    per_agent_metrics: {per_agent}\n    hosts:\n"),
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    let before = info_ids(&sim);
    wait_cycles(&exporter, 1 + cycles, Duration::from_secs(10 * cycles)).await;
    let asked = info_ids(&sim) - before;
    exporter.shutdown().await;
    sim.shutdown().await;
    asked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_no_one_exports_are_not_asked_for_again() {
    // Both heartbeat families denied, or no per-agent series: after the
    // first cycle's info, nothing is asked while no agent changes.
    let denied =
        "metric_deny: [gse_agent_heartbeat_age_seconds, gse_agent_heartbeat_timestamp_seconds]\n";
    assert_eq!(info_ids_after_the_first_cycle(denied, true, 4).await, 0);
    assert_eq!(info_ids_after_the_first_cycle("", false, 4).await, 0);
    // One of them still exported: the online agents' info, every other cycle.
    let one = "metric_deny: [gse_agent_heartbeat_age_seconds]\n";
    let asked = info_ids_after_the_first_cycle(one, true, 4).await;
    assert!(asked >= 20, "{asked} info ids in 4 cycles");
}
