//! Host lists that change under a running exporter: hosts files, reloads by
//! SIGHUP and `POST /-/reload` (good and broken), hosts shared by groups.

use std::path::Path;
use std::time::Duration;

use crate::common::binary::Binary;
use crate::common::*;
use gse_exporter::run::ExporterOptions;
use gse_sim::{AgentTruth, Api, SimOptions};

fn lines(agents: &[AgentTruth]) -> String {
    agents
        .iter()
        .map(|a| format!("{}  # {}\n", a.v2_id(), a.ip))
        .collect()
}

fn online_keys(all: &[Sample], group: &str) -> std::collections::BTreeSet<String> {
    by_agent(all, "gse_agent_online")
        .into_keys()
        .filter(|k| k.starts_with(&format!("{group}/")))
        .collect()
}

fn expected_keys(group: &str, agents: &[AgentTruth]) -> std::collections::BTreeSet<String> {
    agents.iter().map(|a| agent_key(group, "v2", a)).collect()
}

/// An exporter polling group `web` of `sim` from the hosts file `file`
/// every second, once it has ended its first cycle.
async fn hosts_file_exporter(
    sim: &gse_sim::RunningSim,
    file: &Path,
) -> gse_exporter::run::Exporter {
    let yaml = format!(
        "{}interval: 1s\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts_file: {}\n",
        gse_block(sim, ""),
        file.display()
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    exporter
}

/// The simulated fleet of the hosts-file tests.
async fn sixty_agents() -> gse_sim::RunningSim {
    start_sim(SimOptions {
        agents: 60,
        ..SimOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_hosts_file_adds_and_removes_agents_without_a_restart() {
    let sim = sixty_agents().await;
    let truth = sim.truth();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.hosts");
    std::fs::write(&file, format!("# web hosts\n\n{}", lines(&truth[..20]))).unwrap();
    let exporter = hosts_file_exporter(&sim, &file).await;
    assert_eq!(
        online_keys(&parse(&scrape(exporter.addr()).await), "web"),
        expected_keys("web", &truth[..20])
    );

    std::fs::write(&file, lines(&truth[10..40])).unwrap();
    let want = expected_keys("web", &truth[10..40]);
    wait_until(
        "the edited hosts file on /metrics",
        Duration::from_secs(10),
        || async {
            (online_keys(&parse(&scrape(exporter.addr()).await), "web") == want).then_some(())
        },
    )
    .await;
    exporter.shutdown().await;
}

/// The group's `gse_exporter_hosts_file_read_success`, and its agents
/// online, on one scrape.
async fn file_read_and_keys(
    exporter: &gse_exporter::run::Exporter,
) -> (Option<f64>, std::collections::BTreeSet<String>) {
    let all = parse(&scrape(exporter.addr()).await);
    let read = samples(&all, "gse_exporter_hosts_file_read_success")
        .iter()
        .find(|s| s.label("group") == "web")
        .map(|s| s.value);
    (read, online_keys(&all, "web"))
}

/// A hosts file that cannot be read (deleted, then written as bytes that
/// are not text) says so on `/metrics`, where nothing did (only a log line
/// at each change), while its group keeps polling the last hosts read; once
/// it is written whole again it is read, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_file_that_cannot_be_read_says_so_and_keeps_its_hosts() {
    let sim = sixty_agents().await;
    let truth = sim.truth();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.hosts");
    std::fs::write(&file, lines(&truth[..20])).unwrap();
    let exporter = hosts_file_exporter(&sim, &file).await;
    let old = expected_keys("web", &truth[..20]);
    assert_eq!(
        file_read_and_keys(&exporter).await,
        (Some(1.0), old.clone())
    );

    std::fs::remove_file(&file).unwrap();
    let gone = wait_until("the deleted file said", Duration::from_secs(10), || async {
        let (read, keys) = file_read_and_keys(&exporter).await;
        (read == Some(0.0)).then_some(keys)
    })
    .await;
    assert_eq!(gone, old, "the last hosts are kept");
    std::fs::write(&file, b"\xff\xfe not text\n").unwrap();
    let cycles = cycles_now(&exporter);
    wait_until(
        "four cycles, the file still for two seconds",
        Duration::from_secs(10),
        || async { (cycles_now(&exporter) >= cycles + 4).then_some(()) },
    )
    .await;
    assert_eq!(file_read_and_keys(&exporter).await, (Some(0.0), old));

    std::fs::write(&file, lines(&truth[..30])).unwrap();
    let new = expected_keys("web", &truth[..30]);
    wait_until("the file read again", Duration::from_secs(15), || async {
        (file_read_and_keys(&exporter).await == (Some(1.0), new.clone())).then_some(())
    })
    .await;
    exporter.shutdown().await;
}

/// A hosts file rewritten in place by a slow writer (a shell's `>`, a
/// script writing as it queries CMDB) is never read half-written: every
/// scrape shows the old hosts or the new ones, never some of them, and never
/// an agent id cut short where the writer was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_file_rewritten_in_place_is_never_read_half_written() {
    use std::io::Write;
    let sim = sixty_agents().await;
    let truth = sim.truth();
    let ids = |agents: &[AgentTruth]| -> String {
        agents.iter().map(|a| format!("{}\n", a.v2_id())).collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.hosts");
    std::fs::write(&file, ids(&truth[..20])).unwrap();
    let exporter = hosts_file_exporter(&sim, &file).await;
    let old = expected_keys("web", &truth[..20]);
    assert_eq!(
        online_keys(&parse(&scrape(exporter.addr()).await), "web"),
        old
    );

    // Truncated, then written a piece every 150 ms (about 4 s in all),
    // each piece ending inside an agent id.
    let text = ids(&truth[20..50]);
    let writing = std::thread::spawn({
        let file = file.clone();
        move || {
            let mut out = std::fs::File::create(&file).unwrap();
            for piece in text.as_bytes().chunks(37) {
                out.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(150));
            }
        }
    });
    let want = expected_keys("web", &truth[20..50]);
    let cycles = cycles_now(&exporter);
    wait_until(
        "the rewritten hosts file on /metrics",
        Duration::from_secs(30),
        || async {
            let keys = online_keys(&parse(&scrape(exporter.addr()).await), "web");
            assert!(
                keys == old || keys == want,
                "a half-written hosts file was read: {} agents, {} of them in neither list",
                keys.len(),
                keys.iter()
                    .filter(|k| !old.contains(*k) && !want.contains(*k))
                    .count()
            );
            (keys == want).then_some(())
        },
    )
    .await;
    writing.join().unwrap();
    assert!(
        cycles_now(&exporter) >= cycles + 2,
        "cycles ran while the file was written"
    );
    exporter.shutdown().await;
}

/// A reload back to a group's earlier API reads its hosts file as it is
/// now: the list read under that API before (40 hosts) came back while the
/// file, cut to 10 hosts since, was being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_back_to_an_earlier_api_never_brings_back_an_old_host_list() {
    let sim = sixty_agents().await;
    let truth = sim.truth();
    let addresses = |agents: &[AgentTruth]| -> String {
        agents
            .iter()
            .map(|a| format!("{}:{}\n", a.bk_cloud_id, a.ip))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let (file, path) = (dir.path().join("web.hosts"), dir.path().join("gse.yml"));
    std::fs::write(&file, addresses(&truth[..40])).unwrap();
    let yaml = |api: &str| {
        format!(
            "{}interval: 1s\ngroups:\n  - name: web\n    bk_biz_id: 2\n    gse_api: {api}\n    hosts_file: {}\n",
            gse_block(&sim, ""),
            file.display()
        )
    };
    std::fs::write(&path, yaml("v2")).unwrap();
    let exporter = start_from_file(&path).await;
    let hosts = |all: &[Sample]| value(all, "gse_exporter_group_hosts", &[("group", "web")]);
    let reach = |want: f64| {
        let exporter = &exporter;
        async move {
            wait_until(
                "the group's hosts",
                Duration::from_secs(20),
                || async move {
                    (hosts(&parse(&scrape(exporter.addr()).await)) == Some(want)).then_some(())
                },
            )
            .await
        }
    };
    reach(40.0).await;
    std::fs::write(&path, yaml("v1")).unwrap();
    assert!(exporter.reloader().reload_now().await.is_ok());
    std::fs::write(&file, addresses(&truth[..10])).unwrap();
    reach(10.0).await;
    // Back to v2 while the file is written again (as far as its times say).
    let open = std::fs::File::options().append(true).open(&file).unwrap();
    open.set_modified(std::time::SystemTime::now()).unwrap();
    std::fs::write(&path, yaml("v2")).unwrap();
    assert!(exporter.reloader().reload_now().await.is_ok());
    let cycles = cycles_now(&exporter);
    // Every scrape until three more cycles ended, within a deadline.
    wait_until("three cycles", Duration::from_secs(20), || async {
        let all = parse(&scrape(exporter.addr()).await);
        assert_eq!(hosts(&all), Some(10.0), "the file's hosts as they are now");
        (cycles_now(&exporter) >= cycles + 3).then_some(())
    })
    .await;
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_in_two_groups_costs_one_lookup_and_appears_in_both() {
    let sim = start_sim(SimOptions {
        agents: 30,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let specs = [
        GroupSpec {
            name: "a",
            bk_biz_id: 2,
            api: "v2",
            agents: &truth[..20],
            labels: "",
        },
        GroupSpec {
            name: "b",
            bk_biz_id: 2,
            api: "v2",
            agents: &truth[10..30],
            labels: "",
        },
    ];
    let yaml = config_yaml(&sim, "", "interval: 60s\n", &specs);
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    let asked: usize = sim
        .requests()
        .iter()
        .filter(|r| r.api == Api::V2State)
        .map(|r| r.ids)
        .sum();
    assert_eq!(asked, 30, "30 distinct hosts, each asked for once");
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(online_keys(&all, "a"), expected_keys("a", &truth[..20]));
    assert_eq!(online_keys(&all, "b"), expected_keys("b", &truth[10..30]));
    exporter.shutdown().await;
}

fn reload_status(all: &[Sample]) -> (Option<f64>, Option<f64>) {
    (
        value(all, "gse_exporter_config_last_reload_successful", &[]),
        value(
            all,
            "gse_exporter_config_last_reload_success_timestamp_seconds",
            &[],
        ),
    )
}

fn two_group_yaml(sim: &gse_sim::RunningSim, truth: &[AgentTruth], second: bool) -> String {
    let mut specs = vec![GroupSpec {
        name: "stable",
        bk_biz_id: 2,
        api: "v2",
        agents: &truth[..10],
        labels: "",
    }];
    if second {
        specs.push(GroupSpec {
            name: "added",
            bk_biz_id: 3,
            api: "v2",
            agents: &truth[10..20],
            labels: "",
        });
    }
    config_yaml(sim, "", "interval: 1s\n", &specs)
}

/// A simulator of 20 agents and a config file polling 10 of them as "stable".
async fn reload_fixture() -> (gse_sim::RunningSim, Vec<AgentTruth>, tempfile::TempDir) {
    let sim = start_sim(SimOptions {
        agents: 20,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gse.yml"),
        two_group_yaml(&sim, &truth, false),
    )
    .unwrap();
    (sim, truth, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_rejects_a_broken_file_keeps_running_and_applies_a_fixed_one() {
    let (sim, truth, dir) = reload_fixture().await;
    let path = dir.path().join("gse.yml");
    let config = gse_exporter::config::Config::load(&path).unwrap();
    let options = ExporterOptions {
        config_file: Some(path.clone()),
        limits: gse_exporter::http::Limits {
            enable_lifecycle: true,
            ..Default::default()
        },
        ..ExporterOptions::default()
    };
    let exporter = gse_exporter::run::Exporter::start(config, options)
        .await
        .unwrap();
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    let reload_url = format!("http://{}/-/reload", exporter.addr());
    let client = reqwest::Client::new();

    std::fs::write(&path, "gse: {url: not a url}\ngroups: []\n").unwrap();
    let answer = client.post(&reload_url).send().await.unwrap();
    assert_eq!(answer.status(), 500);
    assert!(
        answer.text().await.unwrap().contains("gse.url"),
        "the failure names the key"
    );
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(
        reload_status(&all).0,
        Some(0.0),
        "the failed reload is visible at once"
    );
    let cycles = *exporter.cycles().borrow();
    wait_cycles(&exporter, cycles + 2, Duration::from_secs(20)).await;
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(
        online_keys(&all, "stable").len(),
        10,
        "the old configuration keeps running"
    );

    std::fs::write(&path, two_group_yaml(&sim, &truth, true)).unwrap();
    let answer = client.post(&reload_url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    wait_until(
        "the added group on /metrics",
        Duration::from_secs(10),
        || async {
            let all = parse(&scrape(exporter.addr()).await);
            (online_keys(&all, "added").len() == 10).then_some(())
        },
    )
    .await;
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(reload_status(&all).0, Some(1.0));
    exporter.shutdown().await;
}

/// Starts the binary on a config file.
async fn start_binary(config: &Path) -> Binary {
    Binary::start(&[format!("--config.file={}", config.display())], &[]).await
}

async fn scrape_url(addr: &str) -> Vec<Sample> {
    parse(
        &reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_an_unchanged_group_has_no_gap() {
    let (sim, truth, dir) = reload_fixture().await;
    let path = dir.path().join("gse.yml");
    let process = start_binary(&path).await;
    let addr = process.addr.clone();
    let hup = || process.signal("-HUP");
    wait_until("the first cycle", Duration::from_secs(20), || async {
        (online_keys(&scrape_url(&addr).await, "stable").len() == 10).then_some(())
    })
    .await;

    std::fs::write(
        &path,
        "gse:\n  url: https://x\n  app_code: a\n  app_secret: b\n  intervall: 1s\ngroups: []\n",
    )
    .unwrap();
    hup();
    wait_until(
        "the failed reload in the metrics",
        Duration::from_secs(10),
        || async {
            let all = scrape_url(&addr).await;
            assert_eq!(
                online_keys(&all, "stable").len(),
                10,
                "the stable group never leaves /metrics"
            );
            (reload_status(&all).0 == Some(0.0)).then_some(())
        },
    )
    .await;

    std::fs::write(&path, two_group_yaml(&sim, &truth, true)).unwrap();
    hup();
    wait_until(
        "the fixed configuration applied",
        Duration::from_secs(10),
        || async {
            let all = scrape_url(&addr).await;
            assert_eq!(
                online_keys(&all, "stable").len(),
                10,
                "the stable group never leaves /metrics"
            );
            (reload_status(&all).0 == Some(1.0) && online_keys(&all, "added").len() == 10)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_answers_only_with_web_enable_lifecycle() {
    let (sim, truth, dir) = reload_fixture().await;
    let path = dir.path().join("gse.yml");
    let exporter = start_from_file(&path).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    std::fs::write(&path, two_group_yaml(&sim, &truth, true)).unwrap();
    let answer = reqwest::Client::new()
        .post(format!("http://{}/-/reload", exporter.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("--web.enable-lifecycle")
    );
    let cycles = cycles_now(&exporter);
    wait_cycles(&exporter, cycles + 2, Duration::from_secs(20)).await;
    let all = parse(&scrape(exporter.addr()).await);
    assert!(
        online_keys(&all, "added").is_empty(),
        "nothing was reloaded"
    );
    exporter.shutdown().await;
}

/// The sliding-window maximum of requests within `window`.
fn most_within(times: &[std::time::Instant], window: Duration) -> usize {
    let mut most = 0;
    for (i, start) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < window)
            .count();
        most = most.max(within);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_storms_add_at_most_one_cycle_per_interval_and_keep_the_rate_limit() {
    let sim = start_sim(SimOptions {
        agents: 20,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    // Two files that differ in the gse block (not in its pace), so every
    // reload is a real change.
    let variant = |timeout: &str| {
        let specs = [GroupSpec {
            name: "storm",
            bk_biz_id: 2,
            api: "v2",
            agents: &truth,
            labels: "",
        }];
        config_yaml(
            &sim,
            &format!(
                "  timeout: {timeout}\n  rate_limit: {{ requests_per_second: 2, burst: 2 }}\n"
            ),
            "interval: 2s\n",
            &specs,
        )
    };
    std::fs::write(&path, variant("10s")).unwrap();
    let binary = Binary::start(
        &[
            format!("--config.file={}", path.display()),
            "--web.enable-lifecycle".into(),
        ],
        &[],
    )
    .await;
    wait_until("the first cycle", Duration::from_secs(20), || async {
        (!online_keys(&scrape_url(&binary.addr).await, "storm").is_empty()).then_some(())
    })
    .await;
    let url = format!("http://{}/-/reload", binary.addr);
    let storm = Duration::from_secs(6);
    let started = std::time::Instant::now();
    let mut posters = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        posters.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = 0u64;
            while started.elapsed() < storm {
                if client
                    .post(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
                {
                    answered += 1;
                }
            }
            answered
        }));
    }
    let mut flips = 0;
    while started.elapsed() < storm {
        flips += 1;
        std::fs::write(&path, variant(if flips % 2 == 0 { "10s" } else { "11s" })).unwrap();
        binary.signal("-HUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answered = 0;
    for poster in posters {
        answered += poster.await.unwrap();
    }
    let elapsed = started.elapsed();
    let times: Vec<std::time::Instant> = sim
        .requests()
        .iter()
        .filter(|r| r.api == Api::V2State && r.at >= started)
        .map(|r| r.at)
        .collect();
    let intervals = (elapsed.as_secs_f64() / 2.0).ceil() as usize;
    assert!(answered > 20, "only {answered} reloads answered");
    assert!(
        times.len() <= 2 * intervals + 1,
        "{} cycles in {elapsed:?} of {answered} reloads and {flips} SIGHUPs (interval 2s)",
        times.len()
    );
    assert!(
        most_within(&times, Duration::from_secs(1)) <= 4,
        "the 2/s, burst 2 rate limit was broken: {times:?}"
    );
    let (status, logs, _) = binary.stop();
    assert!(status.success(), "{logs}");
}

/// POSTs `/-/reload` and returns the status and the answer.
async fn post_reload(addr: &str) -> (u16, String) {
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/-/reload"))
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reloads_answer_short_and_never_quote_a_file() {
    let (sim, truth, dir) = reload_fixture().await;
    let path = dir.path().join("gse.yml");
    let binary = Binary::start(
        &[
            format!("--config.file={}", path.display()),
            "--web.enable-lifecycle".into(),
        ],
        &[],
    )
    .await;
    let good = two_group_yaml(&sim, &truth, false);
    let with_group = |extra: &str| format!("{good}  - name: extra\n    bk_biz_id: 9\n{extra}");
    let long_line = dir.path().join("long.hosts");
    std::fs::write(&long_line, format!("0:10.0.0.1\n{}\n", "x".repeat(5 << 20))).unwrap();
    let many: Vec<String> = (0..300).map(|i| format!("\"bad-host-{i}!\"")).collect();
    let cases = [
        (
            "hosts_file: /etc/passwd",
            with_group("    hosts_file: /etc/passwd\n"),
        ),
        (
            "a 5 MB line",
            with_group(&format!("    hosts_file: {}\n", long_line.display())),
        ),
        (
            "300 bad hosts",
            with_group(&format!("    hosts: [{}]\n", many.join(", "))),
        ),
    ];
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let first_passwd_line = passwd.lines().next().unwrap().to_string();
    for (what, text) in &cases {
        std::fs::write(&path, text).unwrap();
        let (status, answer) = post_reload(&binary.addr).await;
        assert_eq!(status, 500, "{what}: {answer}");
        assert!(
            answer.len() < 1024,
            "{what}: {} bytes: {answer}",
            answer.len()
        );
        assert!(answer.contains("problem"), "{what}: {answer}");
        assert!(!answer.contains(&first_passwd_line), "{what}: {answer}");
        assert!(!answer.contains("xxxxxxxx"), "{what}: {answer}");
    }
    let (_, logs, _) = binary.stop();
    let longest = logs.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    assert!(
        !logs.contains(&first_passwd_line),
        "the log quotes /etc/passwd"
    );
}
