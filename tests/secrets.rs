//! The app secret never leaves the process: not in logs at any level, `Debug`
//! output, `/metrics`, the landing page, error replies or `--config.check`;
//! nor do the web configuration's password hashes, TLS key or the passwords
//! clients send.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::binary::Binary;
use crate::common::*;
use gse_sim::{Faults, SimOptions};

const CANARY: &str = "canary-7f3a9c2e-secret";

fn config_text(sim: &gse_sim::RunningSim, interval: &str) -> String {
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
    let client = gse_exporter::upstream::gse::GseClient::new(&config.gse).unwrap();
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
        let (_, printed) = crate::common::binary::config_check(&path, None);
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
    let binary = Binary::start(
        &[
            format!("--config.file={}", path.display()),
            "--log.level=debug".into(),
            "--log.format=json".into(),
            "--web.enable-lifecycle".into(),
        ],
        &[("BK_APP_SECRET", CANARY)],
    )
    .await;
    let addr = binary.addr.clone();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut served = String::new();
    wait_until("a successful poll", Duration::from_secs(20), || async {
        let body = get_text(&client, &format!("{base}/metrics")).await?;
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
                let body = get_text(&client, &format!("{base}/metrics")).await?;
                body.contains("gse_up{group=\"web\"} 0").then_some(())
            },
        )
        .await;
        served.push_str(
            &get_text(&client, &format!("{base}/metrics"))
                .await
                .expect("page"),
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
            &get_text(&client, &format!("{base}{page}"))
                .await
                .expect("page"),
        );
    }
    let openmetrics = client
        .get(format!("{base}/metrics"))
        .header("Accept", "application/openmetrics-text")
        .send()
        .await
        .unwrap();
    served.push_str(&openmetrics.text().await.unwrap());
    let (status, logs, stdout) = binary.stop();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_passwords_hashes_and_keys_never_appear_in_anything_printed_or_served() {
    const GOOD: &str = "canary-good-pw-51d2";
    const WRONG: &str = "canary-wrong-pw-93ab";
    let sim = start_sim(SimOptions {
        agents: 20,
        ..SimOptions::default()
    })
    .await;
    let ca = crate::common::tls::TestCa::new("secrets");
    let server = ca.server(&["localhost"]);
    let hash = bcrypt::hash(GOOD, 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    let key_body = crate::common::tls::key_material(&server.key_pem);
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key: |\n{}\nbasic_auth_users:\n  prometheus: {hash}\n",
            server.cert_file.display(),
            indent(&server.key_pem),
        ),
    )
    .unwrap();
    let config = dir.path().join("gse.yml");
    std::fs::write(
        &config,
        config_text(&sim, "300ms").replace("${BK_APP_SECRET}", "sim-secret"),
    )
    .unwrap();
    let binary = Binary::start(
        &[
            format!("--config.file={}", config.display()),
            format!("--web.config.file={}", web.display()),
            "--log.level=debug".into(),
        ],
        &[],
    )
    .await;
    let port = binary.addr.rsplit(':').next().unwrap().to_string();
    let client = ca.https_client(None);
    let mut served = String::new();
    for (password, expected) in [(WRONG, 401), (GOOD, 200), (GOOD, 200)] {
        for page in ["/metrics", "/", "/-/ready"] {
            let response = client
                .get(format!("https://localhost:{port}{page}"))
                .basic_auth("prometheus", Some(password))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), expected, "{page} with {password}");
            served.push_str(&format!("{:?}", response.headers()));
            served.push_str(&response.text().await.unwrap());
        }
    }
    // A broken web config (the key cut short) is refused at run time and by --config.check.
    let broken = std::fs::read_to_string(&web)
        .unwrap()
        .replace(&key_body[..40], "");
    std::fs::write(&web, &broken).unwrap();
    let _ = client
        .get(format!("https://localhost:{port}/"))
        .send()
        .await;
    let (passed, checked) = crate::common::binary::config_check(&config, Some(&web));
    assert!(!passed, "a broken web config fails the check");
    let (_, logs, stdout) = binary.stop();
    assert!(logs.contains("level=debug"), "debug logging was on: {logs}");
    for (what, text) in [
        ("logs", &logs),
        ("stdout", &stdout),
        ("served pages", &served),
        ("--config.check", &checked),
    ] {
        for secret in [GOOD, WRONG, hash.as_str(), &key_body[40..100]] {
            assert!(!text.contains(secret), "{secret:?} leaked into {what}");
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body of a GET, or None if the request or the read failed.
async fn get_text(client: &reqwest::Client, url: &str) -> Option<String> {
    client.get(url).send().await.ok()?.text().await.ok()
}

/// A gateway that answers every request with an error quoting the request
/// back (its headers and body, so the secret) and a megabyte of padding: as
/// an error envelope, as an HTTP 500, and as a `data` of the wrong type.
async fn echo_gateway() -> std::net::SocketAddr {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let echo = move |headers: HeaderMap, body: String| {
        let n = served.fetch_add(1, Ordering::Relaxed);
        async move {
            let echoed = format!("you sent {headers:?} {body} {}", "#".repeat(1 << 20));
            let (status, reply) = match n % 3 {
                0 => (
                    StatusCode::OK,
                    serde_json::json!({"code": 1640001, "result": false, "message": echoed}),
                ),
                1 => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"code": 1650200, "message": echoed}),
                ),
                _ => (
                    StatusCode::OK,
                    serde_json::json!({"code": 0, "result": true, "data": echoed}),
                ),
            };
            (status, axum::Json(reply))
        }
    };
    let app = axum::Router::new().fallback(axum::routing::any(echo));
    serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_echoing_the_request_never_puts_the_secret_or_a_megabyte_in_the_log() {
    let gateway = echo_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    std::fs::write(
        &path,
        format!(
            "gse:\n  api: v2\n  url: http://{gateway}/api/bk-gse/prod\n  app_code: gse-exporter\n  app_secret: ${{BK_APP_SECRET}}\n  max_attempts: 2\n  initial_backoff: 10ms\n\
             interval: 300ms\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts: [\"0:10.0.0.1\"]\n  - name: old\n    bk_biz_id: 3\n    gse_api: v1\n    hosts: [\"0:10.0.0.2\"]\n",
        )
        .replace("  url: ", "  v1_url: http://GATEWAY/api/c/compapi/v2/gse\n  url: ")
        .replace("GATEWAY", &gateway.to_string()),
    )
    .unwrap();
    let binary = Binary::start(
        &[
            format!("--config.file={}", path.display()),
            "--log.level=debug".into(),
        ],
        &[("BK_APP_SECRET", CANARY)],
    )
    .await;
    wait_until("several failed cycles", Duration::from_secs(30), || async {
        let failed = binary.logs().matches("could not ask GSE").count();
        (failed >= 4).then_some(())
    })
    .await;
    let (_, logs, _) = binary.stop();
    assert!(!logs.contains(CANARY), "the secret leaked into the log");
    let longest = logs.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    assert!(
        logs.contains("<redacted>"),
        "the echo reached the log, redacted"
    );
}

/// A gateway that redirects every request to `to` (307: method and body kept).
async fn redirecting_gateway(to: std::net::SocketAddr) -> std::net::SocketAddr {
    let redirect = move |uri: axum::http::Uri| async move {
        (
            axum::http::StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, format!("http://{to}{uri}"))],
        )
    };
    let app = axum::Router::new().fallback(axum::routing::any(redirect));
    serve(app).await
}

/// A server that answers every request as GSE would and counts them.
async fn counting_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let answer = move || {
        count.fetch_add(1, Ordering::SeqCst);
        async { axum::Json(serde_json::json!({"code": 0, "result": true, "data": []})) }
    };
    let app = axum::Router::new().fallback(axum::routing::any(answer));
    let addr = serve(app).await;
    (addr, asked)
}

/// A redirect from GSE's or CMDB's address is an error, never followed:
/// reqwest followed ten, and on a hop to another host kept the gateway's
/// `X-Bkapi-Authorization` header (and the ESB body), so the app secret went
/// wherever a reply pointed and that host's answer was taken as GSE's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_never_followed_with_the_secret() {
    let (elsewhere, asked) = counting_server().await;
    let gateway = redirecting_gateway(elsewhere).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    std::fs::write(
        &path,
        format!(
            "gse:\n  api: v2\n  url: http://{gateway}/api/bk-gse/prod\n  v1_url: http://{gateway}/api/c/compapi/v2/gse\n  \
             app_code: gse-exporter\n  app_secret: ${{BK_APP_SECRET}}\n  max_attempts: 1\n\
             interval: 300ms\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts: [\"0:10.0.0.1\"]\n\
             \x20 - name: old\n    bk_biz_id: 3\n    gse_api: v1\n    hosts: [\"0:10.0.0.2\"]\n\
             \x20 - name: found\n    bk_biz_id: 4\n    cmdb: {{}}\n\
             cmdb:\n  url: http://{gateway}\n  refresh_interval: 1s\n",
        ),
    )
    .unwrap();
    let binary = Binary::start(
        &[format!("--config.file={}", path.display())],
        &[("BK_APP_SECRET", CANARY)],
    )
    .await;
    wait_until(
        "failed cycles and a failed discovery",
        Duration::from_secs(30),
        || {
            let logs = binary.logs();
            let done = logs.matches("could not ask GSE").count() >= 4
                && logs.contains("CMDB discovery failed");
            async move { done.then_some(()) }
        },
    )
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", binary.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, logs, _) = binary.stop();
    assert_eq!(asked.load(Ordering::SeqCst), 0, "a redirect was followed");
    assert!(logs.contains("HTTP status 307"), "{logs}");
    assert!(logs.contains("redirect, not followed"), "{logs}");
    let all = parse(&metrics);
    for group in ["web", "old"] {
        assert_eq!(
            value(&all, "gse_up", &[("group", group)]),
            Some(0.0),
            "{group}"
        );
    }
}
