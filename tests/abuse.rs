//! The abuse corpus: what a hostile or careless user can hand the exporter
//! (configuration files, web configurations, hosts files, flags) is refused
//! with the key, a short quote and the rule; nothing hangs, crashes, floods a
//! log or a reply, or grows the process. The file corpus is in
//! `tests/fixtures/abuse/` (see its README); inputs that cannot be files in
//! git are made here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::binary::{Binary, run_to_end};
use crate::common::*;
use gse_sim::SimOptions;

/// Long enough for any refusal; a hang or a read of /dev/zero is not one.
const PROMPTLY: Duration = Duration::from_secs(10);

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/abuse")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

/// The `# expect:` and `# never:` lines of a corpus file.
fn expectations(path: &Path) -> (Vec<String>, Vec<String>) {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    let pick = |prefix: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .collect()
    };
    (pick("# expect: "), pick("# never: "))
}

/// A good configuration file in `dir`, for checking web configurations.
fn good_config(dir: &Path) -> PathBuf {
    let path = dir.join("gse.yml");
    std::fs::write(
        &path,
        "gse:\n  url: http://127.0.0.1:9\n  app_code: a\n  app_secret: b\ngroups: [{name: a, bk_biz_id: 1, hosts: [\"0:10.0.0.1\"]}]\n",
    )
    .unwrap();
    path
}

/// Runs `--config.check` promptly and checks that it refused the input
/// briefly, saying `expect` and never `never`.
fn check_refused(args: &[&str], expect: &[String], never: &[String], what: &str) {
    let mut all = vec!["--config.check"];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_to_end(&all, PROMPTLY);
    let printed = format!("{stdout}{stderr}");
    assert_eq!(status.code(), Some(1), "{what}: {printed}");
    for text in expect {
        assert!(
            printed.contains(text.as_str()),
            "{what}: {text:?} not in:\n{printed}"
        );
    }
    for text in never {
        assert!(
            !printed.contains(text.as_str()),
            "{what}: {text:?} printed:\n{printed}"
        );
    }
    assert!(!printed.contains("panicked"), "{what}: {printed}");
    assert!(
        printed.len() < 8192,
        "{what}: {} bytes printed",
        printed.len()
    );
    let longest = printed.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1024, "{what}: a line of {longest} bytes");
}

#[test]
fn every_configuration_of_the_corpus_is_refused_briefly() {
    let files = corpus("config");
    assert!(files.len() >= 20, "only {} corpus files", files.len());
    for file in files {
        let (expect, never) = expectations(&file);
        assert!(
            !expect.is_empty(),
            "{} has no '# expect:' line",
            file.display()
        );
        let flag = format!("--config.file={}", file.display());
        check_refused(&[&flag], &expect, &never, &file.display().to_string());
    }
}

#[test]
fn every_web_configuration_of_the_corpus_is_refused_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("--config.file={}", good_config(dir.path()).display());
    let empty = dir.path().join("empty.yml");
    std::fs::write(&empty, "").unwrap();
    let mut files = corpus("web");
    files.push(empty);
    for file in files {
        let (mut expect, never) = expectations(&file);
        if expect.is_empty() {
            expect.push("<root>: the file sets nothing".into());
        }
        let web = format!("--web.config.file={}", file.display());
        check_refused(
            &[&config, &web],
            &expect,
            &never,
            &file.display().to_string(),
        );
    }
}

#[test]
fn fifos_and_oversized_files_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let big = dir.path().join("big.hosts");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((64 << 20) + 1)
        .unwrap();
    let big_config = dir.path().join("big.yml");
    std::fs::File::create(&big_config)
        .unwrap()
        .set_len((128 << 20) + 1)
        .unwrap();
    let config_with = |name: &str, hosts_file: &Path| {
        let path = dir.path().join(name);
        let text = std::fs::read_to_string(good_config(dir.path())).unwrap()
            + &format!(
                "  - {{name: b, bk_biz_id: 1, hosts_file: {}}}\n",
                hosts_file.display()
            );
        std::fs::write(
            &path,
            text.replace(
                "groups: [{name: a, bk_biz_id: 1, hosts: [\"0:10.0.0.1\"]}]\n",
                "groups:\n  - {name: a, bk_biz_id: 1, hosts: [\"0:10.0.0.1\"]}\n",
            ),
        )
        .unwrap();
        format!("--config.file={}", path.display())
    };
    let good = format!("--config.file={}", good_config(dir.path()).display());
    let web_fifo = format!("--web.config.file={}", fifo.display());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![format!("--config.file={}", fifo.display())],
            "is a FIFO, not a regular file",
        ),
        (
            vec![config_with("fifo-hosts.yml", &fifo)],
            "groups[1].hosts_file",
        ),
        (
            vec![config_with("fifo-hosts2.yml", &fifo)],
            "is a FIFO, not a regular file",
        ),
        (
            vec![config_with("big-hosts.yml", &big)],
            "is larger than the limit of 67108864 bytes",
        ),
        (
            vec![format!("--config.file={}", big_config.display())],
            "is larger than the limit of 134217728 bytes",
        ),
        (vec![good, web_fifo], "is a FIFO, not a regular file"),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check_refused(&args, &[expect.to_string()], &[], &format!("{args:?}"));
    }
}

/// Exit code and peak resident memory (KiB) of `gse_exporter ARGS` run to
/// its end, as the kernel accounts the child (wait4's rusage).
fn peak_rss_kib(args: &[&str]) -> (Option<i32>, u64) {
    // Reaped by wait4 below, which std's `wait` would not report rusage of.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gse_exporter starts");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, usage.ru_maxrss as u64)
}

/// A configuration with `n` inline hosts in the `{ip, bk_cloud_id,
/// bk_agent_id}` form, as `bench/config.sh` writes them.
fn inline_hosts_config(n: usize) -> String {
    let mut text = String::from(
        "gse:\n  api: v2\n  url: http://127.0.0.1:9/api/bk-gse/prod\n  app_code: a\n  app_secret: b\n\
         groups:\n  - name: fleet\n    bk_biz_id: 2\n    hosts:\n",
    );
    for i in 0..n {
        let ip = format!("10.{}.{}.{}", i / 64_000 % 256, i / 250 % 256, i % 250 + 1);
        let id = format!(
            "0100{:016x}{i:012x}",
            (i as u64).wrapping_mul(2_654_435_761) % (1 << 32)
        );
        text.push_str(&format!(
            "      - {{ip: {ip}, bk_cloud_id: 0, bk_agent_id: \"{id}\"}}\n"
        ));
    }
    text
}

/// Parsing is bounded by the file's size: the memory `--config.check` needs
/// beyond a one-host configuration's stays under three times the file (about
/// 2× at 1M hosts on a release build, docs/performance.md), so a shard handed
/// a fleet's inline hosts is not killed at start. The YAML tree of every
/// host, as a buffering parser keeps it, cost 1.6 kB a host (18× the file).
#[test]
fn inline_hosts_cost_a_bounded_number_of_bytes_each() {
    const HOSTS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("one.yml"), dir.path().join("large.yml"));
    std::fs::write(&small, inline_hosts_config(1)).unwrap();
    let text = inline_hosts_config(HOSTS);
    std::fs::write(&large, &text).unwrap();
    let check = |path: &Path| {
        let flag = format!("--config.file={}", path.display());
        let (code, kib) = peak_rss_kib(&["--config.check", &flag]);
        assert_eq!(code, Some(0), "{}", path.display());
        kib * 1024
    };
    let baseline = check(&small);
    let peak = check(&large);
    let per_host = peak.saturating_sub(baseline) / HOSTS as u64;
    let file_per_host = text.len() as u64 / HOSTS as u64;
    assert!(
        per_host <= 3 * file_per_host,
        "{per_host} bytes a host above a one-host config ({baseline} bytes), \
         for {file_per_host} bytes of file a host"
    );
}

#[test]
fn a_yaml_document_nested_100000_deep_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.yml");
    let deep = format!(
        "gse: {{url: http://x, app_code: a, app_secret: b}}\ngroups: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(&path, deep).unwrap();
    let started = Instant::now();
    let flag = format!("--config.file={}", path.display());
    check_refused(
        &[&flag],
        &["line 2: nests flow collections".into()],
        &[],
        "100k deep",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn flags_out_of_range_stop_with_status_2_and_never_panic() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--web.read-timeout=5124095576030431h"],
            "--web.read-timeout",
        ),
        (&["--web.read-timeout=0s"], "--web.read-timeout"),
        (
            &["--web.max-requests=18446744073709551615"],
            "--web.max-requests",
        ),
        (&["--web.max-connections=0"], "--web.max-connections"),
        (
            &["--web.max-connections=4294967296"],
            "--web.max-connections",
        ),
        (&["--demo", "--demo.agents=99999999999999"], "--demo.agents"),
        (&["--demo", "--demo.agents=0"], "--demo.agents"),
        (&["--total-shards=0"], "--total-shards"),
        (&["--shard=5", "--total-shards=99999999"], "--total-shards"),
        (&["--web.telemetry-path=/-/ready"], "--web.telemetry-path"),
        (
            &["simulate", "--agents", "18446744073709551615"],
            "--agents",
        ),
        (&["simulate", "--online-share", "NaN"], "--online-share"),
        (&["simulate", "--unknown-share=-1"], "--unknown-share"),
        (
            &["simulate", "--churn-per-minute", "inf"],
            "--churn-per-minute",
        ),
        (&["simulate", "--latency", "5124095576030431h"], "--latency"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = format!("--config.file={}", good_config(dir.path()).display());
    for (args, flag) in cases {
        let mut all = args.to_vec();
        match args[0] {
            "simulate" => all.push("--listen-address=127.0.0.1:0"),
            "--demo" => all.push("--web.listen-address=127.0.0.1:0"),
            _ => all.extend(["--web.listen-address=127.0.0.1:0", &config]),
        }
        let (status, _, stderr) = run_to_end(&all, PROMPTLY);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn config_check_counts_hosts_from_every_source() {
    let dir = tempfile::tempdir().unwrap();
    let hosts: String = (0..2000)
        .map(|i| format!("0:10.1.{}.{}\n", i / 250, i % 250 + 1))
        .collect();
    std::fs::write(
        dir.path().join("big.hosts"),
        format!("# fleet\n{hosts}0:10.1.0.1\n"),
    )
    .unwrap();
    let path = dir.path().join("gse.yml");
    std::fs::write(
        &path,
        "gse:\n  url: http://127.0.0.1:9\n  app_code: a\n  app_secret: b\ngroups:\n\
         - {name: inline, bk_biz_id: 1, hosts: [\"0:10.0.0.1\", \"0:10.0.0.2\"]}\n\
         - {name: file, bk_biz_id: 1, hosts: [\"0:10.1.0.1\"], hosts_file: big.hosts}\n\
         - {name: cmdb, bk_biz_id: 3, cmdb: {}}\n\
         cmdb: {url: http://127.0.0.1:9}\n",
    )
    .unwrap();
    let (status, stdout, stderr) = run_to_end(
        &[
            "--config.check",
            &format!("--config.file={}", path.display()),
        ],
        PROMPTLY,
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("OK (3 groups, 2002 hosts; 1 group lists its hosts from CMDB at run time)"),
        "{stdout}"
    );
}

/// `--config.check` counts the hosts of a hosts file in memory that follows
/// the distinct hosts, not the lines: one host written two million times
/// cost every line's key (1 GB for 30 million lines), and millions of bad
/// lines are counted without writing each one out (88 CPU-seconds for 30
/// million), so the check answers promptly.
#[test]
fn config_check_of_a_hosts_file_of_millions_of_lines_is_bounded_by_the_distinct_hosts() {
    const LINES: usize = 2_000_000;
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, hosts: &str| {
        std::fs::write(dir.path().join(format!("{name}.hosts")), hosts).unwrap();
        let path = dir.path().join(format!("{name}.yml"));
        std::fs::write(
            &path,
            format!(
                "gse:\n  url: http://127.0.0.1:9\n  app_code: a\n  app_secret: b\n\
                 groups: [{{name: a, bk_biz_id: 1, hosts_file: {name}.hosts}}]\n"
            ),
        )
        .unwrap();
        format!("--config.file={}", path.display())
    };
    let one = config("one", "0100a\n");
    let repeated_text = "0100a\n".repeat(LINES);
    let repeated = config("repeated", &repeated_text);
    let (code, baseline) = peak_rss_kib(&["--config.check", &one]);
    assert_eq!(code, Some(0));
    let (code, peak) = peak_rss_kib(&["--config.check", &repeated]);
    assert_eq!(code, Some(0));
    let grown = (peak.saturating_sub(baseline)) * 1024;
    assert!(
        grown < 3 * repeated_text.len() as u64,
        "{grown} bytes over a one-host file to count one host written {LINES} times ({} bytes)",
        repeated_text.len()
    );
    let (status, stdout, _) = run_to_end(&["--config.check", &repeated], PROMPTLY);
    assert!(status.success());
    assert!(stdout.contains("OK (1 groups, 1 hosts)"), "{stdout}");

    let bad = config("bad", &"!\n".repeat(LINES));
    check_refused(
        &[&bad],
        &[
            "bad.hosts line 1: is neither cloud:ip nor an agent id".into(),
            format!("and {} more problems", LINES - 20),
        ],
        &[],
        "two million bad lines",
    );
}

/// A simulator and a configuration polling a few of its agents from a hosts
/// file every second; `extra` is appended to the file.
async fn hosts_file_fixture(
    extra: &str,
) -> (gse_sim::RunningSim, tempfile::TempDir, PathBuf, PathBuf) {
    let sim = start_sim(SimOptions {
        agents: 10,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("web.hosts");
    let lines: String = sim
        .truth()
        .iter()
        .map(|a| format!("{}\n", a.v2_id()))
        .collect();
    std::fs::write(&hosts, lines).unwrap();
    let config = dir.path().join("gse.yml");
    std::fs::write(
        &config,
        format!(
            "{}interval: 1s\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts_file: {}\n{extra}",
            gse_block(&sim, ""),
            hosts.display()
        ),
    )
    .unwrap();
    (sim, dir, config, hosts)
}

/// The number of GSE requests the exporter reports having made (None when
/// it does not answer within a few seconds).
async fn requests_made(addr: &str) -> Option<f64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()?;
    let response = client.get(format!("http://{addr}/metrics")).send().await;
    let all = parse(&response.ok()?.text().await.ok()?);
    let counts = samples(&all, "gse_exporter_api_requests_total");
    Some(counts.iter().map(|s| s.value).sum())
}

/// The binary with `config` and `--web.enable-lifecycle`, once it has asked
/// GSE at least once.
async fn polling_binary(config: &std::path::Path) -> Binary {
    let binary = Binary::start(
        &[
            format!("--config.file={}", config.display()),
            "--web.enable-lifecycle".into(),
        ],
        &[],
    )
    .await;
    let addr = binary.addr.clone();
    wait_until("polling", Duration::from_secs(20), || async {
        requests_made(&addr).await.filter(|n| *n > 0.0)
    })
    .await;
    binary
}

async fn post_reload(addr: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{addr}/-/reload"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_file_turned_fifo_never_stops_polling_reloads_or_sigterm() {
    let (_sim, dir, config, hosts) = hosts_file_fixture("").await;
    let binary = polling_binary(&config).await;
    let addr = binary.addr.clone();
    let fifo = dir.path().join("new.hosts");
    mkfifo(&fifo);
    std::fs::rename(&fifo, &hosts).unwrap();
    let before = requests_made(&addr).await.expect("an answer");
    // Looked at once it has gone unwritten for a while (the rename counts
    // as a write), and refused; polling goes on all along.
    wait_until("the FIFO refused", Duration::from_secs(20), || async {
        binary
            .logs()
            .contains("is a FIFO, not a regular file")
            .then_some(())
    })
    .await;
    wait_until("polling to go on", Duration::from_secs(20), || async {
        requests_made(&addr).await.filter(|n| *n >= before + 3.0)
    })
    .await;
    let answer = post_reload(&addr).await;
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    assert_eq!(status, 500, "{text}");
    assert!(
        text.contains("hosts_file: is a FIFO, not a regular file"),
        "{text}"
    );
    assert_eq!(get_status(addr.parse().unwrap(), "/-/ready").await, 200);
    let (status, took, logs, _) = tokio::task::spawn_blocking(move || binary.stop_timed())
        .await
        .unwrap();
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert!(status.success(), "{status:?}: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_file_pointed_at_dev_zero_is_refused_without_growing_the_process() {
    let (_sim, _dir, config, hosts) = hosts_file_fixture("").await;
    let binary = polling_binary(&config).await;
    let addr = binary.addr.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&hosts.display().to_string(), "/dev/zero"),
    )
    .unwrap();
    let started = Instant::now();
    let answer = post_reload(&addr).await;
    assert_eq!(answer.status(), 500);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let rss = binary.rss_kib();
    assert!(
        rss < 200 * 1024,
        "resident memory {rss} KiB after the reload"
    );
    let (status, _, logs, _) = tokio::task::spawn_blocking(move || binary.stop_timed())
        .await
        .unwrap();
    assert!(status.success(), "{logs}");
}

/// A hosts file rewritten, while the exporter runs, with millions of bad
/// lines costs the exporter about its text, not memory for every bad line
/// (each line's number and rule were kept, though 20 are logged: 16 bytes a
/// line, 480 MB for a 60 MB file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_file_rewritten_with_millions_of_bad_lines_grows_the_process_by_about_its_size() {
    const BAD: usize = 3_000_000;
    let (_sim, dir, config, hosts) = hosts_file_fixture("").await;
    let binary = polling_binary(&config).await;
    let before = binary.peak_kib() * 1024;
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&hosts).unwrap(),
        "!\n".repeat(BAD)
    );
    let next = dir.path().join("next.hosts");
    std::fs::write(&next, &text).unwrap();
    std::fs::rename(&next, &hosts).unwrap();
    let counted = format!("more={}", BAD - 20);
    wait_until("the bad lines counted", Duration::from_secs(60), || {
        let found = binary.logs().contains(&counted);
        async move { found.then_some(()) }
    })
    .await;
    let grown = (binary.peak_kib() * 1024).saturating_sub(before);
    assert!(
        grown < 3 * text.len() as u64,
        "peak grew {grown} bytes reading a {} byte hosts file",
        text.len()
    );
    assert!(
        binary
            .logs()
            .contains("skipping more bad lines of the hosts file")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_endpoint_credentials_never_reach_the_log() {
    let (_sim, _dir, config, _) = hosts_file_fixture(
        "otlp:\n  endpoint: http://pusher:pa55-canary@127.0.0.1:9/v1/metrics\n  interval: 200ms\n  timeout: 100ms\n",
    )
    .await;
    let binary = Binary::start(
        &[
            format!("--config.file={}", config.display()),
            "--log.level=debug".into(),
        ],
        &[],
    )
    .await;
    wait_until("a failed push logged", Duration::from_secs(20), || async {
        binary.logs().contains("OTLP push failed").then_some(())
    })
    .await;
    let (_, logs, _) = binary.stop();
    assert!(logs.contains("OTLP push enabled"), "{logs}");
    assert!(!logs.contains("pa55-canary"), "{logs}");
}

/// Sends raw bytes and returns the status of the answer, or None when the
/// server closed the connection without one. Fails the test if the server
/// neither answers nor closes within a few seconds.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 8192];
        while answer.len() < 64 << 10 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer and no close within 5 s");
    let head = String::from_utf8_lossy(&answer);
    assert!(
        !head.contains("root:x:0"),
        "a file's content in the answer: {head}"
    );
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_requests_get_a_4xx_or_a_closed_connection_and_the_server_stays_up() {
    let sim = start_sim(SimOptions {
        agents: 20,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let group = GroupSpec::web(&truth);
    let yaml = config_yaml(&sim, "", "interval: 1s\n", &[group]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    std::fs::write(&path, &yaml).unwrap();
    let config = parse_config(&yaml);
    let options = gse_exporter::run::ExporterOptions {
        config_file: Some(path),
        limits: gse_exporter::http::Limits {
            read_timeout: Duration::from_secs(1),
            enable_lifecycle: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let exporter = gse_exporter::run::Exporter::start(config, options)
        .await
        .unwrap();
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    let addr = exporter.addr();
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(64 << 10));
    let huge_header = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let endless_body = format!(
        "POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        "10000\r\n".to_string()
            + &"b".repeat(0x10000)
            + "\r\n10000\r\n"
            + &"b".repeat(0x10000)
            + "\r\n"
    );
    let pipelined = "GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n".repeat(500);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an unknown method", b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("DELETE /metrics", b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a path out of the root", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("an encoded path out of the root", b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("200 headers", format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes()),
        ("a 64 KiB path", long_path.into_bytes()),
        ("a 1 MiB header", huge_header.into_bytes()),
        ("a NUL in a header", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec()),
        ("an absurd Content-Length", b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec()),
        ("Content-Length and chunked", b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("a 128 KiB chunked reload body", endless_body.into_bytes()),
        ("an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("a TLS hello on plain HTTP", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
        ("bare garbage", vec![0xff; 4096]),
        ("a request line without a version", b"GET /metrics\r\n\r\n".to_vec()),
        ("an absolute-form target", b"GET http://elsewhere.example/metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a huge Accept-Encoding list", format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {}\r\n\r\n", "gzip;q=0, ".repeat(3000)).into_bytes()),
        ("500 pipelined requests", pipelined.into_bytes()),
    ];
    for (what, request) in cases {
        let status = raw_exchange(addr, &request).await;
        assert!(
            status.is_none_or(|s| s < 500),
            "{what}: answered {status:?}"
        );
        assert_eq!(get_status(addr, "/-/healthy").await, 200, "after {what}");
    }
    let all = parse(&scrape(addr).await);
    assert_eq!(value(&all, "gse_up", &[("group", "web")]), Some(1.0));
    exporter.shutdown().await;
}
