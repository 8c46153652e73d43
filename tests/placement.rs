//! Where agents sit: `gse_parent_agents` (per upstream proxy or server) and
//! `gse_cloud_agents` (per cloud area) against the simulator's own fleet, and
//! a dead proxy read as one parent whose agents all went offline.

use std::collections::BTreeMap;
use std::time::Duration;

use gse_sim::SimOptions;

use crate::common::*;

/// `(label value, state) -> agents`, zeros left out.
fn counts(all: &[Sample], name: &str, label: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for s in samples(all, name).into_iter().filter(|s| s.value > 0.0) {
        let key = (s.label(label).to_string(), s.label("state").to_string());
        *out.entry(key).or_insert(0.0) += s.value;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_and_clouds_match_the_fleet_and_a_dead_proxy_shows_as_one() {
    let sim = start_sim(SimOptions {
        agents: 300,
        churn_per_minute: 0.0,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let group = GroupSpec {
        name: "all",
        bk_biz_id: 2,
        api: "v2",
        agents: &truth,
        labels: "tier: all",
    };
    let yaml = config_yaml(&sim, "", "interval: 1s\n", &[group]);
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;

    let state = |online: bool| if online { "online" } else { "offline" };
    let mut expected = BTreeMap::new();
    for agent in truth.iter().filter(|a| a.known) {
        let key = (agent.parent_ip.clone(), state(agent.online).to_string());
        *expected.entry(key).or_insert(0.0) += 1.0;
    }
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(counts(&all, "gse_parent_agents", "parent_ip"), expected);
    let mut by_state = BTreeMap::new();
    for ((_, state), n) in counts(&all, "gse_cloud_agents", "bk_cloud_id") {
        *by_state.entry(state).or_insert(0.0) += n;
    }
    let agents = counts(&all, "gse_agents", "group");
    let agents: BTreeMap<String, f64> = agents.into_iter().map(|((_, s), n)| (s, n)).collect();
    // Agents GSE knows have a cloud area (from the config or GSE's info); one
    // given only by agent id that GSE does not know has none and is left out.
    for state in ["online", "offline"] {
        assert_eq!(by_state.get(state), agents.get(state), "{state}");
    }
    assert!(by_state.get("not_found") <= agents.get("not_found"));
    let clouds: std::collections::BTreeSet<String> = truth
        .iter()
        .filter(|a| a.known)
        .map(|a| a.bk_cloud_id.to_string())
        .collect();
    let seen: std::collections::BTreeSet<String> = samples(&all, "gse_cloud_agents")
        .iter()
        .map(|s| s.label("bk_cloud_id").to_string())
        .collect();
    assert!(seen.is_superset(&clouds), "{seen:?} {clouds:?}");

    // The proxy with the most agents dies: every agent behind it goes offline.
    let mut per_parent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for agent in truth.iter().filter(|a| a.known) {
        per_parent
            .entry(&agent.parent_ip)
            .or_default()
            .push(agent.v2_id());
    }
    let (parent, ids) = per_parent
        .into_iter()
        .max_by_key(|(_, ids)| ids.len())
        .unwrap();
    let behind = ids.len() as f64;
    sim.set_online(&ids, false).unwrap();
    let addr = exporter.addr();
    let parent = parent.to_string();
    wait_until(
        "the dead proxy's agents all offline",
        Duration::from_secs(20),
        || {
            let parent = parent.clone();
            async move {
                let all = parse(&scrape(addr).await);
                let of = |state: &str| {
                    value(
                        &all,
                        "gse_parent_agents",
                        &[("parent_ip", &parent), ("state", state)],
                    )
                };
                (of("online") == Some(0.0) && of("offline") == Some(behind)).then_some(())
            }
        },
    )
    .await;
}
