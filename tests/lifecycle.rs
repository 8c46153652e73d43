//! Never half-alive: a task that panics or ends stops the whole exporter
//! with the task named; SIGTERM ends the process within 5 s whatever an
//! upstream, a client or a file read is doing; flags that cannot be served
//! stop the start with status 2.

use std::time::Duration;

use crate::common::binary::{Binary, run_to_end};
use crate::common::*;
use gse_exporter::run::{Exporter, ExporterOptions, TaskError};
use gse_sim::{Faults, SimOptions};
use tokio::io::AsyncWriteExt;

/// What the issue asks of SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_stops_the_exporter_and_is_named() {
    let sim = start_sim(SimOptions {
        agents: 5,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let group = GroupSpec::web(&truth);
    let config = parse_config(&config_yaml(&sim, "", "interval: 1s\n", &[group]));
    let options = ExporterOptions {
        after_publish: Some(|| panic!("injected after the first publish")),
        ..ExporterOptions::default()
    };
    let exporter = Exporter::start(config, options).await.unwrap();
    let addr = exporter.addr();
    let ended = tokio::time::timeout(
        Duration::from_secs(20),
        exporter.run_until(std::future::pending()),
    )
    .await
    .expect("the exporter stops by itself");
    match ended {
        Err(TaskError::Panicked { task, message }) => {
            assert_eq!(task, "poll");
            assert!(message.contains("injected"), "{message}");
        }
        other => panic!("expected the poll task's panic, got {other:?}"),
    }
    assert!(
        reqwest::get(format!("http://{addr}/-/healthy"))
            .await
            .is_err(),
        "nothing serves once a task died"
    );
}

#[test]
fn a_telemetry_path_that_cannot_be_served_stops_the_start_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gse.yml");
    std::fs::write(
        &config,
        "gse:\n  url: http://127.0.0.1:9\n  app_code: a\n  app_secret: b\ngroups: [{name: a, bk_biz_id: 1, hosts: [\"0:10.0.0.1\"]}]\n",
    )
    .unwrap();
    let config_flag = format!("--config.file={}", config.display());
    for path in ["metrics", "", "/", "/-/healthy", "/{x}", "/a b"] {
        let flag = format!("--web.telemetry-path={path}");
        let (status, _, stderr) = run_to_end(
            &[&config_flag, &flag, "--web.listen-address=127.0.0.1:0"],
            Duration::from_secs(10),
        );
        assert_eq!(status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains("--web.telemetry-path"), "{flag}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flag}: {stderr}");
    }
}

/// A simulator whose every reply takes a minute, and a config that waits for it.
async fn slow_upstream() -> (gse_sim::RunningSim, tempfile::TempDir, std::path::PathBuf) {
    let sim = start_sim(SimOptions {
        agents: 20_000,
        online_share: 1.0,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    let truth = sim.truth();
    let group = GroupSpec::web(&truth);
    std::fs::write(
        &path,
        config_yaml(&sim, "  timeout: 5m\n", "interval: 10m\n", &[group]),
    )
    .unwrap();
    (sim, dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_within_5s_while_gse_and_a_client_stall() {
    let (sim, _dir, config) = slow_upstream().await;
    let binary = Binary::start(&[format!("--config.file={}", config.display())], &[]).await;
    // The first cycle completes (20,000 agents: a body larger than socket
    // buffers), then every reply takes a minute.
    wait_until("the first cycle", Duration::from_secs(60), || async {
        let body = reqwest::get(format!("http://{}/metrics", binary.addr))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.contains("gse_up{group=\"web\"} 1").then_some(())
    })
    .await;
    sim.set_faults(Faults {
        latency: Duration::from_secs(60),
        ..Faults::default()
    });
    let answered = sim.requests().len();
    let asked = sim.received();
    // A changed file reloads and starts a cycle that waits on GSE.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "# changed\n",
    )
    .unwrap();
    binary.signal("-HUP");
    wait_until(
        "a request waiting on GSE",
        Duration::from_secs(10),
        || async { (sim.received() > asked).then_some(()) },
    )
    .await;
    assert_eq!(sim.requests().len(), answered, "not answered yet");
    // A scraper that asks and never reads holds its connection open.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(binary.addr.parse().unwrap()).await.unwrap();
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
        .await
        .unwrap();
    // The scrape is in progress once its answer has begun.
    tokio::time::timeout(Duration::from_secs(10), stalled.readable())
        .await
        .expect("the exporter begins to answer")
        .unwrap();
    let (status, took, logs, _) = tokio::task::spawn_blocking(move || binary.stop_timed())
        .await
        .unwrap();
    assert!(took < STOP_WITHIN, "SIGTERM took {took:?}; logs:\n{logs}");
    assert!(status.success(), "{status:?}; logs:\n{logs}");
    drop(stalled);
}
