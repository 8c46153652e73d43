//! Three shards against one simulator export every agent exactly once, and
//! their per-group counts add up to the fleet's.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use gse_exporter::model::Sharding;
use gse_exporter::run::{Exporter, ExporterOptions};
use gse_sim::SimOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_export_the_fleet_exactly_once() {
    let sim = start_sim(SimOptions {
        agents: 3_000,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let specs = [
        GroupSpec::web(&truth[..2_000]),
        GroupSpec {
            name: "legacy",
            bk_biz_id: 3,
            api: "v1",
            agents: &truth[2_000..],
            labels: "",
        },
    ];
    let yaml = config_yaml(
        &sim,
        "  rate_limit: { requests_per_second: 100, burst: 20 }\n",
        "interval: 60s\n",
        &specs,
    );
    let mut shards = Vec::new();
    for shard in 0..3 {
        let options = ExporterOptions {
            sharding: Some(Sharding { shard, total: 3 }),
            ..ExporterOptions::default()
        };
        shards.push(Exporter::start(parse_config(&yaml), options).await.unwrap());
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (ordinal, exporter) in shards.iter().enumerate() {
        wait_cycles(exporter, 1, Duration::from_secs(30)).await;
        let all = parse(&scrape(exporter.addr()).await);
        assert_eq!(
            value(&all, "gse_exporter_shard_ordinal", &[]),
            Some(ordinal as f64)
        );
        assert_eq!(value(&all, "gse_exporter_total_shards", &[]), Some(3.0));
        let mine = by_agent(&all, "gse_agent_online");
        assert!(
            mine.len() > 700,
            "shard {ordinal} has a fair share: {}",
            mine.len()
        );
        for key in mine.keys() {
            *seen.entry(key.clone()).or_default() += 1;
        }
        for s in samples(&all, "gse_agents") {
            *counts
                .entry((s.label("group").into(), s.label("state").into()))
                .or_default() += s.value;
        }
    }
    let fleet: Vec<String> = specs
        .iter()
        .flat_map(|g| g.agents.iter().map(|a| agent_key(g.name, g.api, a)))
        .collect();
    assert_eq!(
        seen.len(),
        fleet.len(),
        "the union of the shards is the fleet"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "no agent is exported by two shards"
    );
    assert!(fleet.iter().all(|k| seen.contains_key(k)));
    for g in &specs {
        let known_online = g.agents.iter().filter(|a| a.known && a.online).count() as f64;
        let not_found = g.agents.iter().filter(|a| !a.known).count() as f64;
        assert_eq!(
            counts[&(g.name.to_string(), "online".to_string())],
            known_online
        );
        assert_eq!(
            counts[&(g.name.to_string(), "not_found".to_string())],
            not_found
        );
        let total: f64 = ["online", "offline", "not_found", "unknown"]
            .iter()
            .map(|s| counts[&(g.name.to_string(), s.to_string())])
            .sum();
        assert_eq!(
            total,
            g.agents.len() as f64,
            "sum by (group) of the shards' counts is the group"
        );
    }
    for exporter in shards {
        exporter.shutdown().await;
    }
}
