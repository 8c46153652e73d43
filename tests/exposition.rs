//! The `/metrics` body itself: it passes `promtool check metrics`, negotiates
//! OpenMetrics and gzip, and serves the same content in every encoding.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use gse_sim::SimOptions;

async fn polled_exporter() -> (gse_sim::RunningSim, gse_exporter::run::Exporter) {
    let sim = start_sim(SimOptions {
        agents: 400,
        junk_version_share: 0.1,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let specs = [
        GroupSpec {
            name: "web \"quoted\"",
            bk_biz_id: 2,
            api: "v2",
            agents: &truth[..200],
            labels: "tier: web",
        },
        GroupSpec {
            name: "legacy",
            bk_biz_id: 3,
            api: "v1",
            agents: &truth[200..],
            labels: "tier: \"db\\\\x\"",
        },
    ];
    let yaml = config_yaml(&sim, "", "interval: 30s\n", &specs);
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(30)).await;
    (sim, exporter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_check_metrics_reports_nothing() {
    let (_sim, exporter) = polled_exporter().await;
    let body = scrape(exporter.addr()).await;
    assert!(
        body.contains("gse_agent_online{"),
        "per-agent series present"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    assert_eq!(report.trim(), "", "promtool check metrics found problems");
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_and_gzip_are_negotiated_from_cached_bodies() {
    let (_sim, exporter) = polled_exporter().await;
    let url = format!("http://{}/metrics", exporter.addr());
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let get = |accept: &'static str, encoding: &'static str| {
        client
            .get(&url)
            .header("Accept", accept)
            .header("Accept-Encoding", encoding)
            .send()
    };
    let plain = get("text/plain", "identity").await.unwrap();
    assert_eq!(
        plain.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let plain = plain.text().await.unwrap();

    let zipped = get("text/plain", "gzip").await.unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&zipped.bytes().await.unwrap()[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain, "gzip body is the plain body");

    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let om = get(accept, "identity").await.unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(om.contains("# TYPE gse_exporter_api_requests counter"));
    let count = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("gse_agent_online{"))
            .count()
    };
    assert_eq!(count(&om), count(&plain));
    assert_eq!(count(&plain), 400);

    let post = client.post(&url).send().await.unwrap();
    assert_eq!(post.status(), 405, "/metrics answers only GET and HEAD");
    let head = client.head(&url).send().await.unwrap();
    assert!(head.status().is_success());
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_agent_metrics_off_and_metric_deny_cut_series_but_keep_counts() {
    let sim = start_sim(SimOptions {
        agents: 300,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let specs = [
        GroupSpec {
            name: "detailed",
            bk_biz_id: 2,
            api: "v2",
            agents: &truth[..100],
            labels: "",
        },
        GroupSpec {
            name: "counted",
            bk_biz_id: 3,
            api: "v2",
            agents: &truth[100..],
            labels: "",
        },
    ];
    let yaml = config_yaml(&sim, "", "interval: 30s\nmetric_deny: [gse_agent_heartbeat_age_seconds, \"gse_exporter_api_request_duration_.*\"]\n", &specs)
        .replace("  - name: counted\n", "  - name: counted\n    per_agent_metrics: false\n");
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(30)).await;
    let all = parse(&scrape(exporter.addr()).await);
    let groups_with_series: std::collections::BTreeSet<&str> = samples(&all, "gse_agent_online")
        .iter()
        .map(|s| s.label("group"))
        .collect();
    assert_eq!(
        groups_with_series.into_iter().collect::<Vec<_>>(),
        vec!["detailed"]
    );
    let online = truth[100..].iter().filter(|a| a.known && a.online).count() as f64;
    assert_eq!(
        value(
            &all,
            "gse_agents",
            &[("group", "counted"), ("state", "online")]
        ),
        Some(online)
    );
    assert!(
        samples(&all, "gse_agent_heartbeat_age_seconds").is_empty(),
        "denied by name"
    );
    assert!(
        !all.iter()
            .any(|s| s.name.starts_with("gse_exporter_api_request_duration_")),
        "denied by regex"
    );
    assert!(
        !samples(&all, "gse_agent_info").is_empty(),
        "other families stay"
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_names_the_commit_built() {
    let (_sim, exporter) = polled_exporter().await;
    let all = parse(&scrape(exporter.addr()).await);
    let info = samples(&all, "gse_exporter_build_info");
    assert_eq!(info.len(), 1, "{info:?}");
    let info = info[0];
    assert_eq!(info.label("version"), env!("CARGO_PKG_VERSION"));
    assert!(
        info.label("rustc_version").starts_with("rustc "),
        "{info:?}"
    );
    assert!(!info.label("branch").is_empty(), "{info:?}");
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head {
        assert_eq!(info.label("revision"), head, "built from a git checkout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_families_describe_this_process() {
    let (_sim, exporter) = polled_exporter().await;
    let all = parse(&scrape(exporter.addr()).await);
    let one = |name: &str| {
        let found = samples(&all, name);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0].value
    };
    let rss = one("process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 64e9, "resident {rss}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = one("process_start_time_seconds");
    // The test binary is the process: it started before this test, within a day.
    assert!(
        started <= now + 1.0 && started > now - 86_400.0,
        "start {started} now {now}"
    );
    assert!(one("process_cpu_seconds_total") > 0.0);
    let (open, max) = (one("process_open_fds"), one("process_max_fds"));
    assert!(open >= 3.0 && open < max, "open {open} max {max}");
}
