//! The app secret never leaves the process: not in logs at any level, `Debug`
//! output, `/metrics`, the landing page, error replies or `--config.check`.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use gse_exporter::sim::{Faults, SimOptions};

const CANARY: &str = "canary-7f3a9c2e-secret";

fn config_text(sim: &gse_exporter::sim::RunningSim, interval: &str) -> String {
    let truth = sim.truth();
    let hosts: Vec<String> = truth
        .iter()
        .take(30)
        .map(|a| format!("\"{}\"", a.v2_id()))
        .collect();
    format!(
        "gse:\n  api: v2\n  url: {}\n  app_code: gse-exporter\n  app_secret: ${{BK_APP_SECRET}}\n  max_attempts: 2\n  initial_backoff: 10ms\n\
         interval: {interval}\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts: [{}]\n",
        sim.v2_url(),
        hosts.join(", ")
    )
}

#[test]
fn debug_output_and_config_check_never_show_the_secret() {
    let yaml = "gse:\n  url: https://x.example.com\n  app_code: a\n  app_secret: canary-7f3a9c2e-secret\ngroups: [{name: a, bk_biz_id: 1, hosts: [\"0:10.0.0.1\"]}]\n";
    let config = parse_config(yaml);
    assert!(
        !format!("{config:?}").contains(CANARY),
        "Config's Debug shows the secret"
    );
    let client = gse_exporter::gse::GseClient::new(&config.gse).unwrap();
    assert!(!format!("{client:?}").contains(CANARY));

    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("good.yml", yaml.to_string()),
        (
            "bad.yml",
            yaml.replace("bk_biz_id: 1", "bk_biz_id: -1")
                .replace("x.example.com", "not a url"),
        ),
        ("env.yml", yaml.replace(CANARY, "${GSE_TEST_UNSET_CANARY}")),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
            .args(["--config.check", "--config.file"])
            .arg(&path)
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !printed.contains(CANARY),
            "--config.check on {name} printed the secret:\n{printed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_never_appears_in_anything_printed_or_served() {
    let sim = start_sim(SimOptions {
        agents: 40,
        app_secret: CANARY.into(),
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    std::fs::write(&path, config_text(&sim, "300ms")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .arg(format!("--config.file={}", path.display()))
        .args([
            "--web.listen-address=127.0.0.1:0",
            "--log.level=debug",
            "--log.format=json",
        ])
        .env("BK_APP_SECRET", CANARY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    let _ = tx.send(String::from_utf8_lossy(&all).to_string());
                }
            }
        }
        String::from_utf8_lossy(&all).to_string()
    });
    let addr = wait_until(
        "the listen address in the logs",
        Duration::from_secs(20),
        || {
            let latest = rx.try_iter().last();
            async move {
                let text = latest?;
                let start = text.find("\"addr\":\"")? + 8;
                let end = text[start..].find('"')? + start;
                Some(text[start..end].to_string())
            }
        },
    )
    .await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut served = String::new();
    wait_until("a successful poll", Duration::from_secs(20), || async {
        let body = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.contains("gse_up{group=\"web\"} 1").then_some(())
    })
    .await;
    // Faults: a GSE outage, an auth rejection and a failed reload.
    for faults in [
        Faults {
            outage: true,
            ..Faults::default()
        },
        Faults {
            code: Some(1640001),
            ..Faults::default()
        },
    ] {
        sim.set_faults(faults);
        wait_until(
            "the fault in the metrics",
            Duration::from_secs(20),
            || async {
                let body = client
                    .get(format!("{base}/metrics"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                body.contains("gse_up{group=\"web\"} 0").then_some(())
            },
        )
        .await;
        served.push_str(
            &client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    sim.set_faults(Faults::default());
    std::fs::write(
        &path,
        config_text(&sim, "300ms").replace("interval:", "intervall:"),
    )
    .unwrap();
    served.push_str(
        &client
            .post(format!("{base}/-/reload"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    for page in ["/", "/metrics", "/-/ready", "/-/healthy"] {
        served.push_str(
            &client
                .get(format!("{base}{page}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    let openmetrics = client
        .get(format!("{base}/metrics"))
        .header("Accept", "application/openmetrics-text")
        .send()
        .await
        .unwrap();
    served.push_str(&openmetrics.text().await.unwrap());
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    let logs = reader.join().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success());
    assert!(
        logs.contains("DEBUG") || logs.contains("\"level\":\"DEBUG\""),
        "debug logging was on"
    );
    assert!(
        logs.contains("reload failed"),
        "the failed reload was logged"
    );
    for (what, text) in [
        ("logs", &logs),
        ("stdout", &stdout),
        ("served pages", &served),
    ] {
        assert!(!text.contains(CANARY), "the secret leaked into {what}");
    }
}
