//! Tenants per group: a group's `tenant_id` overrides `gse.tenant_id` for
//! its GSE calls and `cmdb.tenant_id` for its CMDB calls; the same agent id
//! in groups of two tenants is two agents, asked for in separate requests,
//! in the exporter and in `query` alike, and a reload that changes a
//! group's tenant asks in the new one only; hostile tenant ids are refused.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use gse_sim::{AgentTruth, Api, RunningSim, SimOptions};

/// Requests per tenant ("" for none) the simulator saw on one endpoint.
fn per_tenant(sim: &RunningSim, api: Api) -> BTreeMap<String, usize> {
    sim.tenants()
        .into_iter()
        .filter(|((a, _), _)| *a == api)
        .map(|((_, tenant), n)| (tenant, n))
        .collect()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

/// Two online agents with agent ids: the first is answered offline to
/// tenant-b only.
/// A simulator of `n` agents, all online, and two of them that groups of
/// two tenants share (the first is offline to tenant-b only).
async fn shared_agents(n: usize) -> (RunningSim, [AgentTruth; 2]) {
    let sim = start_sim(SimOptions {
        agents: n,
        online_share: 1.0,
        unknown_share: 0.0,
        ..SimOptions::default()
    })
    .await;
    let mut online = sim
        .truth()
        .into_iter()
        .filter(|a| a.known && a.online && !a.bk_agent_id.is_empty());
    let agents = [online.next().unwrap(), online.next().unwrap()];
    sim.set_tenant_offline("tenant-b", &[agents[0].bk_agent_id.clone()]);
    (sim, agents)
}

/// Groups `a` (the `gse:` block's tenant-a) and `b` (its own tenant-b),
/// both listing the same two agents; `interval` long enough that a test
/// sees exactly one cycle.
fn two_tenants_yaml(sim: &RunningSim, agents: &[AgentTruth]) -> String {
    let ids: Vec<String> = agents
        .iter()
        .map(|a| format!("\"{}\"", a.bk_agent_id))
        .collect();
    let hosts = ids.join(", ");
    format!(
        "{}interval: 1h\ngroups:\n  - name: a\n    bk_biz_id: 2\n    hosts: [{hosts}]\n  - name: b\n    bk_biz_id: 2\n    tenant_id: tenant-b\n    hosts: [{hosts}]\n",
        gse_block(sim, "  tenant_id: tenant-a\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_agent_id_in_two_tenants_is_two_agents_asked_apart() {
    let (sim, agents) = shared_agents(200).await;
    // Group c: CMDB topology discovery in its own tenant-c; d: plain
    // discovery with the cmdb block's tenant (the gse block's, tenant-a).
    let mut yaml = two_tenants_yaml(&sim, &agents);
    yaml.push_str("  - name: d\n    bk_biz_id: 2\n    cmdb: {}\n");
    yaml.push_str(&cmdb_topology_group_yaml(
        &sim,
        "c",
        2,
        "    tenant_id: tenant-c\n",
    ));
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(30)).await;

    let all = parse(&scrape(exporter.addr()).await);
    let online = |group: &str, agent: &AgentTruth| {
        let labels = [
            ("group", group),
            ("bk_agent_id", agent.bk_agent_id.as_str()),
        ];
        value(&all, "gse_agent_online", &labels)
    };
    assert_eq!(online("a", &agents[0]), Some(1.0), "tenant-a's answer");
    assert_eq!(online("b", &agents[0]), Some(0.0), "tenant-b's answer");
    assert_eq!(online("a", &agents[1]), Some(1.0));
    assert_eq!(online("b", &agents[1]), Some(1.0));
    assert_eq!(online("c", &agents[0]), Some(1.0), "tenant-c's answer");

    // One cycle, each space's agents in one batch: one status and one info
    // request per tenant, none without one.
    let each = counts(&[("tenant-a", 1), ("tenant-b", 1), ("tenant-c", 1)]);
    assert_eq!(per_tenant(&sim, Api::V2State), each);
    assert_eq!(per_tenant(&sim, Api::V2Info), each);
    assert_eq!(
        per_tenant(&sim, Api::CmdbListHosts),
        counts(&[("tenant-a", 1)])
    );
    assert_eq!(
        per_tenant(&sim, Api::CmdbListHostsTopo),
        counts(&[("tenant-c", 1)])
    );
    assert_eq!(
        per_tenant(&sim, Api::CmdbSearchBusiness),
        counts(&[("tenant-c", 1)])
    );
    exporter.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_asks_each_tenant_apart_too() {
    let (sim, agents) = shared_agents(50).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gse.yml");
    std::fs::write(&config, two_tenants_yaml(&sim, &agents)).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .env_remove("GSE_EXPORTER_CONFIG")
        .args(["query", "-o", "json", "--config.file"])
        .arg(&config)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("query finishes within a minute")
        .expect("the binary runs");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let states: BTreeMap<(String, String), String> = rows
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            ((field("group"), field("bk_agent_id")), field("state"))
        })
        .collect();
    let key = |group: &str, agent: &AgentTruth| (group.to_string(), agent.bk_agent_id.clone());
    let expected = BTreeMap::from([
        (key("a", &agents[0]), "online".to_string()),
        (key("a", &agents[1]), "online".to_string()),
        (key("b", &agents[0]), "offline".to_string()),
        (key("b", &agents[1]), "online".to_string()),
    ]);
    assert_eq!(states, expected);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an agent is offline in tenant-b"
    );
    let each = counts(&[("tenant-a", 1), ("tenant-b", 1)]);
    assert_eq!(per_tenant(&sim, Api::V2State), each);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_a_group_to_another_tenant_asks_in_that_tenant_only() {
    let (sim, agents) = shared_agents(50).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    let yaml = two_tenants_yaml(&sim, &agents).replace("interval: 1h", "interval: 1s");
    std::fs::write(&path, &yaml).unwrap();
    let exporter = start_from_file(&path).await;
    let b_online = || async {
        let all = parse(&scrape(exporter.addr()).await);
        let labels = [
            ("group", "b"),
            ("bk_agent_id", agents[0].bk_agent_id.as_str()),
        ];
        value(&all, "gse_agent_online", &labels)
    };
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    assert_eq!(b_online().await, Some(0.0), "tenant-b's answer");

    std::fs::write(
        &path,
        yaml.replace("tenant_id: tenant-b", "tenant_id: tenant-c"),
    )
    .unwrap();
    exporter.reloader().reload_now().await.expect("reload");
    wait_until("group b in tenant-c", Duration::from_secs(20), || async {
        (b_online().await == Some(1.0)).then_some(())
    })
    .await;
    let before = per_tenant(&sim, Api::V2State);
    wait_more_cycles(&exporter, 3, Duration::from_secs(20)).await;
    let after = per_tenant(&sim, Api::V2State);
    let grew = |tenant: &str| after.get(tenant) > before.get(tenant);
    assert!(
        grew("tenant-a") && grew("tenant-c"),
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        after.get("tenant-b"),
        before.get("tenant-b"),
        "tenant-b is no longer asked"
    );
    assert_eq!(after.get(""), None, "no request without a tenant");
    exporter.shutdown().await;
    sim.shutdown().await;
}

#[test]
fn hostile_group_tenants_are_refused_with_key_value_and_rule() {
    let long = "t".repeat(65);
    let hostile = [
        "\"\"",
        "\"a b\"",
        "\"a\\nX-Injected: 1\"",
        "\"tenant;drop\"",
        "\"租户\"",
        "\"a/../b\"",
        long.as_str(),
    ];
    for value in hostile {
        let yaml = format!(
            "gse:\n  api: v2\n  url: http://127.0.0.1:1/v2\n  app_code: a\n  app_secret: s\ngroups:\n  - name: g\n    bk_biz_id: 2\n    tenant_id: {value}\n    hosts: [\"0:10.0.0.1\"]\n"
        );
        let err = gse_exporter::config::Config::parse(&yaml, std::path::Path::new("."))
            .expect_err(value)
            .to_string();
        assert!(
            err.contains("groups[0].tenant_id: ")
                && err.contains("must be 1 to 64 letters, digits, '-' or '_'"),
            "{value}: {err}"
        );
        assert!(
            !err.contains("\nX-Injected"),
            "a line break is escaped: {err}"
        );
    }
    let ok = "gse:\n  api: v2\n  url: http://127.0.0.1:1/v2\n  app_code: a\n  app_secret: s\ngroups:\n  - name: g\n    bk_biz_id: 2\n    tenant_id: Tenant_9-x\n    hosts: [\"0:10.0.0.1\"]\n";
    gse_exporter::config::Config::parse(ok, std::path::Path::new(".")).expect("a good tenant");
}
