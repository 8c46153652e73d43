//! `gse_exporter query` as scripts run it: the built binary against the
//! simulator, each output format parsed, each filter, one group, given hosts,
//! and the exit codes 0 (all online), 1 (some not) and 2 (GSE unreachable).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::*;
use gse_sim::{AgentTruth, RunningSim, SimOptions};

/// A simulator and a config file with two groups: `web` (v2, the first 40
/// agents) and `db` (v1, the next 20, without per-agent series).
struct Fixture {
    sim: RunningSim,
    truth: Vec<AgentTruth>,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

const WEB: std::ops::Range<usize> = 0..40;
const DB: std::ops::Range<usize> = 40..60;

async fn fixture(online_share: f64, unknown_share: f64) -> Fixture {
    let sim = start_sim(SimOptions {
        agents: 60,
        online_share,
        unknown_share,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let groups = [
        GroupSpec::web(&truth[WEB]),
        GroupSpec {
            name: "db",
            bk_biz_id: 3,
            api: "v1",
            agents: &truth[DB],
            labels: "",
        },
    ];
    // `db` keeps no per-agent series; the query lists its agents all the same.
    let yaml = config_yaml(&sim, "  batch_size: 15\n", "", &groups).replace(
        "  - name: db\n",
        "  - name: db\n    per_agent_metrics: false\n",
    );
    assert!(yaml.contains("per_agent_metrics: false"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gse.yml");
    std::fs::write(&config, yaml).unwrap();
    Fixture {
        sim,
        truth,
        _dir: dir,
        config,
    }
}

async fn query(config: &Path, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .env_remove("GSE_EXPORTER_CONFIG")
        .arg("query")
        .arg("--config.file")
        .arg(config)
        .args(args)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("query finishes within a minute")
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exits with a code")
}

/// What the simulator says each agent's state is, keyed like the rows.
fn expected_state(agent: &AgentTruth) -> &'static str {
    match (agent.known, agent.online) {
        (false, _) => "not_found",
        (true, true) => "online",
        (true, false) => "offline",
    }
}

/// The row key: `group/agent id`, or `group/cloud:ip` without one.
fn row_key(group: &str, ip: &str, cloud: &str, agent_id: &str) -> String {
    match agent_id {
        "" => format!("{group}/{cloud}:{ip}"),
        id => format!("{group}/{id}"),
    }
}

fn truth_states(f: &Fixture) -> BTreeMap<String, &'static str> {
    let web = f.truth[WEB].iter().map(|a| (agent_key("web", "v2", a), a));
    let db = f.truth[DB].iter().map(|a| (agent_key("db", "v1", a), a));
    web.chain(db).map(|(k, a)| (k, expected_state(a))).collect()
}

fn json_states(out: &Output) -> BTreeMap<String, String> {
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not a JSON array ({e}): {}", text(&out.stdout)));
    rows.iter()
        .map(|row| {
            let field = |name: &str| {
                row[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} in {row}"))
            };
            let key = row_key(
                field("group"),
                field("ip"),
                field("bk_cloud_id"),
                field("bk_agent_id"),
            );
            assert_eq!(
                row["online"].as_bool(),
                Some(field("state") == "online"),
                "{row}"
            );
            (key, field("state").to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lists_every_agent_as_the_simulator_knows_it_and_exits_1_when_some_are_not_online() {
    let f = fixture(0.8, 0.1).await;
    let out = query(&f.config, &["--output", "json"]).await;
    assert_eq!(code(&out), 1, "stderr: {}", text(&out.stderr));
    let got = json_states(&out);
    let expected: BTreeMap<String, String> = truth_states(&f)
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    assert_eq!(got, expected);
    assert!(expected.values().any(|s| s == "offline"));
    assert!(expected.values().any(|s| s == "not_found"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("2 groups, 60 agents:"),
        "summary on stderr: {stderr}"
    );
    assert!(
        !stderr.contains("batches"),
        "no progress bar off a terminal: {stderr}"
    );
    f.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_has_a_header_and_one_parsable_row_per_agent() {
    let f = fixture(0.8, 0.1).await;
    let out = query(&f.config, &["--output=csv"]).await;
    assert_eq!(code(&out), 1, "stderr: {}", text(&out.stderr));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "group",
            "bk_biz_id",
            "ip",
            "bk_cloud_id",
            "bk_agent_id",
            "state",
            "online",
            "version",
            "heartbeat_age_seconds"
        ]
    );
    let mut got = BTreeMap::new();
    for record in reader.records() {
        let r = record.unwrap();
        let biz = if &r[0] == "web" { "2" } else { "3" };
        assert_eq!(&r[1], biz, "{r:?}");
        if &r[5] == "online" {
            let age: f64 = r[8]
                .parse()
                .unwrap_or_else(|_| panic!("heartbeat age in {r:?}"));
            assert!(age >= 0.0, "{r:?}");
        }
        got.insert(row_key(&r[0], &r[2], &r[3], &r[4]), r[5].to_string());
    }
    let expected: BTreeMap<String, String> = truth_states(&f)
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    assert_eq!(got, expected);
    f.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_ends_with_the_summary_and_exits_0_when_every_agent_is_online() {
    let f = fixture(1.0, 0.0).await;
    let out = query(&f.config, &[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 60 + 1, "{stdout}");
    let header: Vec<&str> = lines[0].split("  ").filter(|c| !c.is_empty()).collect();
    let header: Vec<&str> = header.iter().map(|c| c.trim()).collect();
    assert_eq!(
        header,
        [
            "GROUP",
            "BUSINESS",
            "IP",
            "CLOUD",
            "AGENT ID",
            "STATE",
            "VERSION",
            "HEARTBEAT"
        ]
    );
    assert!(
        lines[1..61].iter().all(|l| l.contains(" online ")),
        "{stdout}"
    );
    assert_eq!(
        lines[61],
        "2 groups, 60 agents: 60 online, 0 offline, 0 not found, 0 unknown"
    );
    f.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_shows_only_its_state_and_keeps_the_exit_code_of_the_whole() {
    let f = fixture(0.8, 0.1).await;
    let truth = truth_states(&f);
    for (filter, state) in [
        ("online", "online"),
        ("offline", "offline"),
        ("not-found", "not_found"),
    ] {
        let out = query(&f.config, &["-o", "json", "--filter", filter]).await;
        assert_eq!(code(&out), 1, "{filter}: {}", text(&out.stderr));
        let got = json_states(&out);
        let expected: Vec<&String> = truth
            .iter()
            .filter(|(_, s)| **s == state)
            .map(|(k, _)| k)
            .collect();
        assert!(!expected.is_empty(), "the fleet has {state} agents");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected,
            "--filter {filter}"
        );
        assert!(got.values().all(|s| s == state));
    }
    let both = query(&f.config, &["-o", "json", "--filter", "offline,not-found"]).await;
    assert!(json_states(&both).values().all(|s| s != "online"));
    f.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_and_given_hosts_ask_only_for_those() {
    let f = fixture(0.8, 0.1).await;
    let out = query(&f.config, &["-o", "json", "--group", "db"]).await;
    let got = json_states(&out);
    assert_eq!(got.len(), DB.len());
    assert!(got.keys().all(|k| k.starts_with("db/")), "{got:?}");

    let with_id = f.truth[WEB]
        .iter()
        .find(|a| !a.bk_agent_id.is_empty())
        .unwrap();
    let legacy = f.truth[WEB]
        .iter()
        .find(|a| a.bk_agent_id.is_empty())
        .unwrap();
    let out = query(
        &f.config,
        &[
            "-o",
            "json",
            "--group=web",
            "--host",
            &with_id.bk_agent_id,
            "--host",
            &legacy.hosts_key(),
            "--host",
            "02000000000000000000000000009999",
        ],
    )
    .await;
    let got = json_states(&out);
    let expected = BTreeMap::from([
        (
            agent_key("web", "v2", with_id),
            expected_state(with_id).to_string(),
        ),
        (
            agent_key("web", "v2", legacy),
            expected_state(legacy).to_string(),
        ),
        (
            "web/02000000000000000000000000009999".to_string(),
            "not_found".to_string(),
        ),
    ]);
    assert_eq!(got, expected);
    assert_eq!(code(&out), 1, "an unknown host is not online");
    f.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_online_hosts_exit_0() {
    let f = fixture(0.8, 0.1).await;
    let online: Vec<String> = f.truth[DB]
        .iter()
        .filter(|a| a.known && a.online)
        .map(|a| a.hosts_key())
        .collect();
    let hosts = format!("--host={}", online.join(","));
    let out = query(&f.config, &["--group", "db", &hosts]).await;
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    f.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gse_exits_2_and_says_which_group() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let yaml = format!(
        "gse:\n  api: v2\n  url: http://127.0.0.1:{port}/api/bk-gse/prod\n  app_code: gse-exporter\n  app_secret: sim-secret\n  max_attempts: 1\ngroups:\n  - name: lost\n    bk_biz_id: 2\n    hosts: [\"0:10.0.0.1\", \"0:10.0.0.2\"]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gse.yml");
    std::fs::write(&config, yaml).unwrap();
    let out = query(&config, &["-o", "csv"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("group lost: GSE could not be asked for 2 agents"),
        "{stderr}"
    );
    assert!(
        stderr.contains("0 online, 0 offline, 0 not found, 2 unknown"),
        "{stderr}"
    );
    let rows = csv::Reader::from_reader(out.stdout.as_slice())
        .records()
        .count();
    assert_eq!(rows, 0, "nothing was learned: {}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topology_group_is_listed_without_the_business_name_query_never_shows() {
    let sim = start_sim(SimOptions {
        agents: 60,
        ..SimOptions::default()
    })
    .await;
    let yaml = format!(
        "{}groups:\n{}",
        gse_block(&sim, ""),
        cmdb_topology_group_yaml(&sim, "biz-2", 2, "")
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gse.yml");
    std::fs::write(&config, yaml).unwrap();
    let out = query(&config, &["-o", "json"]).await;
    let rows = json_states(&out);
    assert!(!rows.is_empty(), "{}", text(&out.stderr));
    let calls = |api: gse_sim::Api| -> usize {
        let tenants = sim.tenants().into_iter();
        tenants
            .filter(|((a, _), _)| *a == api)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(
        calls(gse_sim::Api::CmdbListHostsTopo),
        1,
        "the listing as configured"
    );
    assert_eq!(calls(gse_sim::Api::CmdbListHosts), 0);
    assert_eq!(
        calls(gse_sim::Api::CmdbSearchBusiness),
        0,
        "no business name asked"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_with_a_message() {
    let f = fixture(1.0, 0.0).await;
    let out = query(&f.config, &["--group", "nope"]).await;
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr)
            .contains("no group named \"nope\" in the configuration (groups: web, db)")
    );
    let out = query(&f.config, &["--host", "0:10.0.0.1"]).await;
    assert_eq!(code(&out), 2, "--host without --group");
    let out = query(&f.config, &["--group", "db", "--host", "0200000001"]).await;
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("GSE 1.x asks by cloud:ip"),
        "{}",
        text(&out.stderr)
    );
    f.sim.shutdown().await;
}

#[test]
fn completions_name_the_subcommands_and_the_man_page_is_roff() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        for word in ["query", "simulate", "completions", "config.file", "filter"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = text(&out.stdout);
    assert!(page.starts_with(".ie") || page.contains("\n.TH "), "{page}");
    assert!(page.contains(".TH gse_exporter"), "{page}");
    assert!(page.contains("query"), "the man page lists the subcommands");
}
