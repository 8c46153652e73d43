//! CMDB topology (`cmdb: { topology: true }`): one `gse_agent_topology_info`
//! series per agent whose labels are the simulator's truth on both CMDB APIs,
//! no extra CMDB request when it is off and one per refresh when it is on,
//! the last good topology kept (and the failure visible) while CMDB fails,
//! and a renamed module or business shown after the next refresh.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use gse_sim::{Api, BizSpec, Faults, HostTopo, RunningSim, SimOptions};

const TOPOLOGY: &str = "gse_agent_topology_info";

/// The labels a host's topology series must carry.
fn expected_labels(biz_name: &str, t: &HostTopo) -> BTreeMap<&'static str, String> {
    let joined = |names: BTreeSet<&str>| names.into_iter().collect::<Vec<_>>().join(",");
    let sets = t.topo.iter().map(|s| s.bk_set_name.as_str()).collect();
    let modules = t
        .topo
        .iter()
        .flat_map(|s| &s.module)
        .map(|m| m.bk_module_name.as_str())
        .collect();
    BTreeMap::from([
        ("bk_biz_name", biz_name.to_string()),
        ("bk_set_name", joined(sets)),
        ("bk_module_name", joined(modules)),
        ("operator", t.host.operator.clone()),
        ("bk_bak_operator", t.host.bk_bak_operator.clone()),
    ])
}

/// The `by_agent` key of a CMDB host in a GSE 2.0 group (None: not askable).
fn key(group: &str, t: &HostTopo) -> Option<String> {
    let h = &t.host;
    let id = match (h.bk_agent_id.as_str(), h.first_ipv4()) {
        ("", None) => return None,
        ("", Some(ip)) => format!("{}:{ip}", h.bk_cloud_id),
        (id, _) => id.to_string(),
    };
    Some(format!("{group}/{id}"))
}

/// The topology labels of each exported agent, by `by_agent` key.
fn topology_of(all: &[Sample]) -> BTreeMap<String, BTreeMap<&'static str, String>> {
    by_agent(all, TOPOLOGY)
        .into_iter()
        .map(|(k, s)| {
            let labels = [
                "bk_biz_name",
                "bk_set_name",
                "bk_module_name",
                "operator",
                "bk_bak_operator",
            ]
            .map(|l| (l, s.label(l).to_string()));
            (k, BTreeMap::from(labels))
        })
        .collect()
}

/// A config of one topology group of business `biz` through `api` (`gateway`
/// or `esb`), re-listed every `refresh`, polled every `interval`.
fn topology_yaml(sim: &RunningSim, biz: i64, api: &str, refresh: &str, interval: &str) -> String {
    let mut yaml = format!(
        "{}interval: {interval}\ngroups:\n",
        gse_block(
            sim,
            "  rate_limit: { requests_per_second: 500, burst: 50 }\n"
        )
    );
    let group =
        cmdb_topology_group_yaml(sim, &format!("biz-{biz}"), biz, "    labels: {team: sre}\n")
            .replace(
                "refresh_interval: 1s",
                &format!("refresh_interval: {refresh}"),
            );
    if api == "esb" {
        yaml.push_str(&group.replace(&sim.cmdb_gateway_url(), &sim.cmdb_esb_url()));
        yaml.push_str("  api: esb\n");
    } else {
        yaml.push_str(&group);
    }
    yaml
}

async fn scrape_all(exporter: &gse_exporter::run::Exporter) -> Vec<Sample> {
    parse(&scrape(exporter.addr()).await)
}

fn discovery_success(all: &[Sample], group: &str) -> Option<f64> {
    value(all, "gse_exporter_discovery_success", &[("group", group)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_the_simulators_truth_on_both_cmdb_apis() {
    for api in ["gateway", "esb"] {
        let sim = start_sim(SimOptions {
            agents: 300,
            ..SimOptions::default()
        })
        .await;
        let yaml = topology_yaml(&sim, 2, api, "10m", "30s");
        let exporter = start_exporter(parse_config(&yaml)).await;
        wait_cycles(&exporter, 1, Duration::from_secs(30)).await;
        let body = scrape(exporter.addr()).await;
        promtool_check_metrics(&body);
        let all = parse(&body);

        let biz_name = sim.cmdb_business_name(2).unwrap();
        let want: BTreeMap<String, _> = sim
            .cmdb_topology(2)
            .iter()
            .filter_map(|t| Some((key("biz-2", t)?, expected_labels(&biz_name, t))))
            .collect();
        let got = topology_of(&all);
        assert_eq!(got, want, "{api}: every agent's topology as CMDB has it");
        let online: BTreeSet<String> = by_agent(&all, "gse_agent_online").into_keys().collect();
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            online,
            "{api}: one series per agent"
        );
        // The join labels are gse_agent_online's, extra labels included.
        let onlines = by_agent(&all, "gse_agent_online");
        for (k, s) in by_agent(&all, TOPOLOGY) {
            for l in [
                "group",
                "bk_biz_id",
                "bk_cloud_id",
                "ip",
                "bk_agent_id",
                "team",
            ] {
                assert_eq!(s.label(l), onlines[&k].label(l), "{api} {k} {l}");
            }
        }
        // Hosts in two modules and in two sets, names needing escapes and
        // multi-user maintainers all came through.
        let values = |l: &str| got.values().map(|v| v[l].clone()).collect::<BTreeSet<_>>();
        let modules = values("bk_module_name");
        assert!(modules.iter().any(|m| m.contains(',')), "{modules:?}");
        assert!(
            modules.iter().any(|m| m.contains("worker \"batch\"")),
            "{modules:?}"
        );
        let sets = values("bk_set_name");
        assert!(sets.iter().any(|s| s.contains(',')), "{sets:?}");
        assert!(sets.contains("接入层"), "{sets:?}");
        assert!(values("operator").contains("alice,dave"));
        assert!(values("bk_bak_operator").contains(""));
        assert_eq!(discovery_success(&all, "biz-2"), Some(1.0));
        exporter.shutdown().await;
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_costs_no_extra_request_and_on_one_per_refresh() {
    // 1,234 hosts: three pages of 500 per listing.
    let businesses = vec![BizSpec {
        bk_biz_id: 9,
        hosts: 1_234,
    }];
    for topology in [false, true] {
        let sim = start_sim(SimOptions {
            agents: 1_000,
            businesses: businesses.clone(),
            ..SimOptions::default()
        })
        .await;
        let mut yaml = topology_yaml(&sim, 9, "gateway", "1h", "1s");
        if !topology {
            yaml = yaml.replace("cmdb: { topology: true }", "cmdb: {}");
        }
        let exporter = start_exporter(parse_config(&yaml)).await;
        wait_cycles(&exporter, 3, Duration::from_secs(30)).await;
        let all = scrape_all(&exporter).await;
        let by_api = sim.stats().by_api;
        let calls = |api| by_api.get(&api).copied().unwrap_or(0);
        let got = [
            calls(Api::CmdbListHosts),
            calls(Api::CmdbListHostsTopo),
            calls(Api::CmdbSearchBusiness),
        ];
        if topology {
            assert_eq!(
                got,
                [0, 3, 1],
                "one refresh: three topology pages and the name"
            );
            assert_eq!(
                samples(&all, TOPOLOGY).len(),
                samples(&all, "gse_agent_online").len()
            );
        } else {
            assert_eq!(
                got,
                [3, 0, 0],
                "one refresh: three plain pages, nothing more"
            );
            assert!(
                samples(&all, TOPOLOGY).is_empty(),
                "no topology series when off"
            );
        }
        exporter.shutdown().await;
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_the_last_topology_visibly_and_renames_show_after_the_next_refresh() {
    let sim = start_sim(SimOptions {
        agents: 300,
        ..SimOptions::default()
    })
    .await;
    let yaml = topology_yaml(&sim, 2, "gateway", "1s", "1s");
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    let before = topology_of(&scrape_all(&exporter).await);
    let has_module = |t: &BTreeMap<String, BTreeMap<&str, String>>, name: &str| {
        t.values()
            .any(|v| v["bk_module_name"].split(',').any(|m| m == name))
    };
    assert!(has_module(&before, "nginx") && !has_module(&before, "edge"));

    // CMDB down, a module renamed meanwhile: the failure shows, the last
    // good topology stays.
    sim.set_faults(Faults {
        cmdb_outage: true,
        ..Faults::default()
    });
    sim.rename_cmdb_module(2, 2001, "edge");
    let during = wait_until(
        "the outage in the metrics",
        Duration::from_secs(15),
        || async {
            let all = scrape_all(&exporter).await;
            (discovery_success(&all, "biz-2") == Some(0.0)).then_some(all)
        },
    )
    .await;
    wait_more_cycles(&exporter, 2, Duration::from_secs(15)).await;
    assert_eq!(
        topology_of(&during),
        before,
        "the last good topology is kept"
    );
    assert_eq!(topology_of(&scrape_all(&exporter).await), before);

    // The listing answers again, the business lookup still fails: the
    // rename shows, the last good business name stays, and the group still
    // reads as failing discovery.
    sim.set_faults(Faults {
        cmdb_business_outage: true,
        ..Faults::default()
    });
    sim.set_cmdb_business_name(2, "支付");
    let renamed = wait_until("the renamed module", Duration::from_secs(15), || async {
        let all = scrape_all(&exporter).await;
        has_module(&topology_of(&all), "edge").then_some(all)
    })
    .await;
    assert!(!has_module(&topology_of(&renamed), "nginx"));
    assert!(
        topology_of(&renamed)
            .values()
            .all(|v| v["bk_biz_name"] == "Business 2")
    );
    assert_eq!(discovery_success(&renamed, "biz-2"), Some(0.0));

    // Everything answers: the new business name, and success.
    sim.set_faults(Faults::default());
    wait_until("the renamed business", Duration::from_secs(15), || async {
        let all = scrape_all(&exporter).await;
        let named = topology_of(&all)
            .values()
            .all(|v| v["bk_biz_name"] == "支付");
        (named && discovery_success(&all, "biz-2") == Some(1.0)).then_some(())
    })
    .await;
    exporter.shutdown().await;
}

// ------------------------------------------------- the documented joins

fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a tool, panicking with its output unless it succeeds (a missing tool
/// is a failure: Debian ships both in `prometheus` and `alertmanager`).
fn run(tool: &str, args: &[&str], dir: &std::path::Path) -> String {
    let output = std::process::Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{tool}` ({e}); apt-get install prometheus alertmanager")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "`{tool} {}` failed:\n{stdout}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The PromQL blocks of the "Topology from CMDB" section of docs/metrics.md.
fn documented_joins() -> Vec<String> {
    let docs = std::fs::read_to_string(repo_root().join("docs/metrics.md")).unwrap();
    let start = docs.find("### Topology from CMDB").expect("the section");
    let section = &docs[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    section
        .split("```promql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().trim().to_string())
        .collect()
}

/// `promtool check metrics` finds nothing to say about an exposition.
fn promtool_check_metrics(body: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}

/// Agents as the exporter writes them, scraped from two sites whose groups
/// and addresses are the same: at `sh` agent `a` is offline in two modules,
/// `b` online, `c` offline in a group without topology; at `sz` its own `a`
/// is offline in another set.
const SERIES: &str = r#"
      - series: 'gse_agent_online{site="sh",job="gse_exporter",instance="x:1",group="web",bk_biz_id="2",bk_cloud_id="0",ip="10.0.0.1",bk_agent_id="a",team="sre"}'
        values: '0x5'
      - series: 'gse_agent_online{site="sh",job="gse_exporter",instance="x:1",group="web",bk_biz_id="2",bk_cloud_id="0",ip="10.0.0.2",bk_agent_id="b",team="sre"}'
        values: '1x5'
      - series: 'gse_agent_online{site="sh",job="gse_exporter",instance="x:1",group="legacy",bk_biz_id="3",bk_cloud_id="0",ip="10.1.0.1",bk_agent_id=""}'
        values: '0x5'
      - series: 'gse_agent_online{site="sz",job="gse_exporter",instance="y:1",group="web",bk_biz_id="2",bk_cloud_id="0",ip="10.0.0.1",bk_agent_id="a",team="sre"}'
        values: '0x5'
      - series: 'gse_agent_topology_info{site="sh",job="gse_exporter",instance="x:1",group="web",bk_biz_id="2",bk_cloud_id="0",ip="10.0.0.1",bk_agent_id="a",team="sre",bk_biz_name="支付",bk_set_name="db",bk_module_name="mysql,redis",operator="alice,dave",bk_bak_operator=""}'
        values: '1x5'
      - series: 'gse_agent_topology_info{site="sh",job="gse_exporter",instance="x:1",group="web",bk_biz_id="2",bk_cloud_id="0",ip="10.0.0.2",bk_agent_id="b",team="sre",bk_biz_name="支付",bk_set_name="web",bk_module_name="nginx",operator="bob",bk_bak_operator="oncall"}'
        values: '1x5'
      - series: 'gse_agent_topology_info{site="sz",job="gse_exporter",instance="y:1",group="web",bk_biz_id="2",bk_cloud_id="0",ip="10.0.0.1",bk_agent_id="a",team="sre",bk_biz_name="支付",bk_set_name="db-sz",bk_module_name="mysql",operator="erin",bk_bak_operator=""}'
        values: '1x5'
"#;

#[test]
fn the_documented_joins_give_one_row_per_agent_with_its_topology() {
    let joins = documented_joins();
    assert_eq!(joins.len(), 3, "{joins:#?}");
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: joins\n    rules:\n");
    for (i, expr) in joins.iter().enumerate() {
        let expr = expr.replace('\n', "\n          ");
        rules.push_str(&format!(
            "      - record: doc:join{i}\n        expr: |\n          {expr}\n"
        ));
    }
    std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
    let agent = r#"job="gse_exporter",group="web",bk_biz_id="2",bk_cloud_id="0",ip="10.0.0.1",bk_agent_id="a",team="sre",bk_biz_name="支付""#;
    let sh = format!(
        r#"site="sh",instance="x:1",{agent},bk_set_name="db",bk_module_name="mysql,redis",operator="alice,dave""#
    );
    let sz = format!(
        r#"site="sz",instance="y:1",{agent},bk_set_name="db-sz",bk_module_name="mysql",operator="erin""#
    );
    let c = r#"site="sh",job="gse_exporter",instance="x:1",group="legacy",bk_biz_id="3",bk_cloud_id="0",ip="10.1.0.1""#;
    let test = format!(
        r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:{SERIES}
    promql_expr_test:
      - expr: doc:join0
        eval_time: 2m
        exp_samples:
          - labels: 'doc:join0{{{sh}}}'
            value: 0
          - labels: 'doc:join0{{{sz}}}'
            value: 0
      - expr: doc:join1
        eval_time: 2m
        exp_samples:
          - labels: 'doc:join1{{site="sh",bk_set_name="db"}}'
            value: 1
          - labels: 'doc:join1{{site="sh",bk_set_name="web"}}'
            value: 0
          - labels: 'doc:join1{{site="sz",bk_set_name="db-sz"}}'
            value: 1
      - expr: doc:join2
        eval_time: 2m
        exp_samples:
          - labels: 'doc:join2{{{sh}}}'
            value: 0
          - labels: 'doc:join2{{{sz}}}'
            value: 0
          - labels: 'doc:join2{{{c}}}'
            value: 0
"#
    );
    std::fs::write(dir.path().join("test.yml"), test).unwrap();
    run("promtool", &["check", "rules", "rules.yml"], dir.path());
    run("promtool", &["test", "rules", "test.yml"], dir.path());
}

#[test]
fn the_example_alertmanager_routes_a_maintainers_hosts_to_the_team() {
    let config = "--config.file=deploy/alertmanager/alertmanager.yml";
    let route = |labels: &[&str]| {
        let mut args = vec!["config", "routes", "test", config];
        args.extend_from_slice(labels);
        run("amtool", &args, &repo_root()).trim().to_string()
    };
    assert_eq!(
        route(&["operator=zhangsan", "severity=critical"]),
        "team-storage-page"
    );
    assert_eq!(
        route(&["operator=wangwu,lisi", "severity=warning"]),
        "team-storage-ticket"
    );
    assert_eq!(
        route(&["operator=lisiwang", "severity=warning"]),
        "gse-ticket"
    );
    assert_eq!(route(&["operator=zhangsan", "severity=info"]), "null");
    assert_eq!(route(&["severity=critical"]), "gse-page");
}
