//! Access to the exporter's HTTP server: the exporter-toolkit web
//! configuration (TLS, client certificates, basic auth) with real TLS
//! clients, and the server's limits (slow headers, open connections,
//! concurrent scrapes, request bodies, methods).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::common::tls::TestCa;
use crate::common::*;
use gse_exporter::config::web::WebAccess;
use gse_exporter::http::Limits;
use gse_exporter::run::{Exporter, ExporterOptions};
use gse_sim::{RunningSim, SimOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const DEADLINE: Duration = Duration::from_secs(30);

/// A simulator, an exporter polling it (every second for small fleets, so
/// counters show up soon; rarely for large ones, whose first cycle must be
/// complete), and the web config file.
struct Served {
    _sim: RunningSim,
    exporter: Exporter,
    web_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn serve(web_yaml: Option<&str>, limits: Limits, agents: usize) -> Served {
    let dir = tempfile::tempdir().expect("temp dir");
    let web_file = dir.path().join("web.yml");
    if let Some(yaml) = web_yaml {
        std::fs::write(&web_file, yaml).expect("write web config");
    }
    let sim = start_sim(SimOptions {
        agents,
        online_share: 1.0,
        unknown_share: 0.0,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let group = GroupSpec::web(&truth);
    let yaml = config_yaml(
        &sim,
        "  rate_limit: { requests_per_second: 500, burst: 100 }\n",
        if agents > 1000 {
            "interval: 60s\n"
        } else {
            "interval: 1s\n"
        },
        &[group],
    );
    let options = ExporterOptions {
        web_config_file: web_yaml.map(|_| web_file.clone()),
        limits,
        ..ExporterOptions::default()
    };
    let exporter = Exporter::start(parse_config(&yaml), options)
        .await
        .expect("exporter starts");
    wait_cycles(&exporter, 1, DEADLINE).await;
    Served {
        _sim: sim,
        exporter,
        web_file,
        _dir: dir,
    }
}

fn tls_yaml(server: &crate::common::tls::Pair, extra: &str) -> String {
    format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{extra}",
        server.cert_file.display(),
        server.key_file.display()
    )
}

fn https_url(served: &Served, path: &str) -> String {
    format!("https://localhost:{}{path}", served.exporter.addr().port())
}

/// The value of one rejection counter, read over `client` at `url`.
async fn rejected(client: &reqwest::Client, url: &str, reason: &str) -> f64 {
    let text = client
        .get(url)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    value(
        &parse(&text),
        "gse_exporter_http_requests_rejected_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_the_ca_and_refuses_others() {
    let ca = TestCa::new("exporter");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let served = serve(Some(&tls_yaml(&server, "")), Limits::default(), 50).await;
    let good = ca.https_client(None);
    let response = good
        .get(https_url(&served, "/metrics"))
        .send()
        .await
        .expect("TLS scrape");
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("gse_agent_online{"));

    let other = TestCa::new("stranger").https_client(None);
    assert!(
        other
            .get(https_url(&served, "/metrics"))
            .send()
            .await
            .is_err(),
        "a client that does not trust the CA must fail the handshake"
    );
    // Plain HTTP gets no metrics, and a 400 that says why (as from Go's
    // server), not a bare TLS alert.
    let plain = reqwest::get(format!("http://{}/metrics", served.exporter.addr()))
        .await
        .expect("an HTTP answer");
    assert_eq!(plain.status(), 400);
    let text = plain.text().await.unwrap();
    assert_eq!(text, "Client sent an HTTP request to an HTTPS server.\n");
    wait_until("the failed handshakes counted", DEADLINE, || async {
        (rejected(&good, &https_url(&served, "/metrics"), "tls_handshake").await >= 2.0)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_admits_the_right_password_only() {
    let ca = TestCa::new("auth");
    let server = ca.server(&["localhost"]);
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    let users = format!("basic_auth_users:\n  prometheus: {hash}\n");
    let served = serve(Some(&tls_yaml(&server, &users)), Limits::default(), 50).await;
    let client = ca.https_client(None);
    let url = https_url(&served, "/metrics");

    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let challenge = anonymous.headers().get("www-authenticate").unwrap();
    assert!(challenge.to_str().unwrap().starts_with("Basic"));
    for (user, password) in [
        ("prometheus", "wrong"),
        ("nobody", "correct horse"),
        ("prometheus", ""),
    ] {
        let response = client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{user}:{password}");
    }
    let healthy = client
        .get(https_url(&served, "/-/healthy"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthy.status(), 401, "every route is protected");

    let authed = || {
        client
            .get(&url)
            .basic_auth("prometheus", Some("correct horse"))
    };
    assert_eq!(authed().send().await.unwrap().status(), 200);
    // The second request is served from the cache of verified credentials.
    let text = authed().send().await.unwrap().text().await.unwrap();
    assert!(text.contains("gse_agent_online{"));
    wait_until("the refusals counted", DEADLINE, || async {
        let text = authed().send().await.ok()?.text().await.ok()?;
        let count = value(
            &parse(&text),
            "gse_exporter_http_requests_rejected_total",
            &[("reason", "unauthorized")],
        )?;
        (count >= 5.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified() {
    let ca = TestCa::new("mtls");
    let server = ca.server(&["localhost"]);
    let extra = format!(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
        ca.cert_file.display()
    );
    let served = serve(Some(&tls_yaml(&server, &extra)), Limits::default(), 50).await;
    let url = https_url(&served, "/metrics");

    let scraper = ca.client(&["scraper.example"]);
    let with_cert = ca.https_client(Some(&scraper)).get(&url).send().await;
    assert_eq!(
        with_cert.expect("client certificate accepted").status(),
        200
    );

    assert!(
        ca.https_client(None).get(&url).send().await.is_err(),
        "no client certificate must fail"
    );
    let foreign = TestCa::new("foreign").client(&["scraper.example"]);
    assert!(
        ca.https_client(Some(&foreign))
            .get(&url)
            .send()
            .await
            .is_err(),
        "a client certificate from another CA must fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_allowed_sans_admit_only_named_clients() {
    let ca = TestCa::new("sans");
    let server = ca.server(&["localhost"]);
    let extra = format!(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n  client_allowed_sans: [scraper.example, 10.0.0.9]\n",
        ca.cert_file.display()
    );
    let served = serve(Some(&tls_yaml(&server, &extra)), Limits::default(), 50).await;
    let url = https_url(&served, "/metrics");
    for (names, allowed) in [
        (&["scraper.example"][..], true),
        (&["10.0.0.9"][..], true),
        (&["intruder.example"][..], false),
    ] {
        let cert = ca.client(names);
        let result = ca.https_client(Some(&cert)).get(&url).send().await;
        assert_eq!(
            result.map(|r| r.status() == 200).unwrap_or(false),
            allowed,
            "client certificate for {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_web_config_never_stops_checking_client_certificates() {
    // A file caught half-written can stop short of the client checks and
    // still be valid: it turned them off until the file was whole.
    let ca = TestCa::new("mtls-kept");
    let server = ca.server(&["localhost"]);
    let ca_line = format!("  client_ca_file: {}\n", ca.cert_file.display());
    let mtls = format!(
        "{ca_line}  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [scraper.example]\n  min_version: TLS13\n"
    );
    let served = serve(Some(&tls_yaml(&server, &mtls)), Limits::default(), 20).await;
    let url = https_url(&served, "/metrics");
    let scraper = ca.https_client(Some(&ca.client(&["scraper.example"])));
    let reload_ok = || async {
        let text = scraper.get(&url).send().await.ok()?.text().await.ok()?;
        value(
            &parse(&text),
            "gse_exporter_web_config_last_reload_successful",
            &[],
        )
    };
    let weaker = [
        ("cut after key_file", String::new()),
        (
            "asking for any certificate",
            "  client_auth_type: RequireAnyClientCert\n  min_version: TLS13\n".to_string(),
        ),
        (
            "without allowed names",
            format!(
                "{ca_line}  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n"
            ),
        ),
        (
            "TLS 1.2 let in",
            format!(
                "{ca_line}  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [scraper.example]\n"
            ),
        ),
    ];
    for (what, extra) in weaker {
        std::fs::write(&served.web_file, tls_yaml(&server, &extra)).unwrap();
        wait_until(what, DEADLINE, || async {
            (reload_ok().await == Some(0.0)).then_some(())
        })
        .await;
        assert!(
            ca.https_client(None).get(&url).send().await.is_err(),
            "{what}: a client without a certificate is still refused"
        );
        let other = ca.https_client(Some(&ca.client(&["intruder.example"])));
        assert!(
            other
                .get(&url)
                .send()
                .await
                .map(|r| r.status() != 200)
                .unwrap_or(true),
            "{what}: a certificate without an allowed name is still refused"
        );
    }
    // The same checks written anew apply.
    std::fs::write(&served.web_file, tls_yaml(&server, &mtls)).unwrap();
    wait_until("the whole file again", DEADLINE, || async {
        (reload_ok().await == Some(1.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_applies_though_the_web_config_is_unchanged() {
    // cert-manager and certbot rewrite the certificate and key files and
    // leave web.yml alone: the old certificate was served until it expired.
    let (old_ca, new_ca) = (TestCa::new("before"), TestCa::new("renewed"));
    let server = old_ca.server(&["localhost"]);
    let renewed = new_ca.server(&["localhost"]);
    let served = serve(Some(&tls_yaml(&server, "")), Limits::default(), 20).await;
    let url = https_url(&served, "/-/healthy");
    let trusts_new = new_ca.https_client(None);
    assert!(
        trusts_new.get(&url).send().await.is_err(),
        "the old certificate first"
    );
    // The key first: until the certificate follows, the two do not match and
    // the file is refused; once it does, it is tried again and applies.
    std::fs::write(&server.key_file, &renewed.key_pem).unwrap();
    let trusts_old = old_ca.https_client(None);
    let metrics = https_url(&served, "/metrics");
    wait_until("the mismatched key refused", DEADLINE, || async {
        let text = trusts_old
            .get(&metrics)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let ok = value(
            &parse(&text),
            "gse_exporter_web_config_last_reload_successful",
            &[],
        );
        (ok == Some(0.0)).then_some(())
    })
    .await;
    std::fs::write(&server.cert_file, &renewed.cert_pem).unwrap();
    wait_until("the renewed certificate served", DEADLINE, || async {
        let answer = trusts_new.get(&url).send().await.ok()?;
        (answer.status() == 200).then_some(())
    })
    .await;
    // A new connection (the old client keeps its connection of before).
    let fresh = old_ca.https_client(None);
    assert!(fresh.get(&url).send().await.is_err(), "the old one is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_refuses_older_clients() {
    let ca = TestCa::new("versions");
    let server = ca.server(&["localhost"]);
    let served = serve(
        Some(&tls_yaml(&server, "  min_version: TLS13\n")),
        Limits::default(),
        50,
    )
    .await;
    let url = https_url(&served, "/metrics");
    let tls12 = ca
        .client_builder()
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(
        tls12.get(&url).send().await.is_err(),
        "TLS 1.2 client must be refused"
    );
    assert_eq!(
        ca.https_client(None)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_config_changes_apply_and_a_bad_one_keeps_the_last_good() {
    let users = |password: &str| {
        format!(
            "basic_auth_users:\n  prometheus: {}\n",
            bcrypt::hash(password, 4).unwrap()
        )
    };
    let served = serve(Some(&users("first")), Limits::default(), 50).await;
    let url = format!("http://{}/metrics", served.exporter.addr());
    let client = reqwest::Client::new();
    let status = |password: &'static str| {
        let request = client.get(&url).basic_auth("prometheus", Some(password));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("first").await, 200);

    std::fs::write(&served.web_file, users("second")).unwrap();
    wait_until("the new password to apply", DEADLINE, || async {
        (status("second").await == 200).then_some(())
    })
    .await;
    assert_eq!(status("first").await, 401);

    std::fs::write(&served.web_file, "basic_auth_users: [not, a, map]\n").unwrap();
    // Any request re-reads the changed file; the broken one must not apply.
    assert_eq!(status("second").await, 200);
    assert_eq!(status("second").await, 200);
}

/// A client guessing passwords on many connections at once takes only its
/// share of the password checks: another client's first login (not yet
/// cached) is checked and let in meanwhile. With one queue for all, ten
/// such connections had every other client refused with 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_guessing_client_does_not_lock_others_out() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    // A real cost, so that checks queue up behind the guesses.
    let users = format!(
        "basic_auth_users:\n  prometheus: {}\n  second: {}\n",
        bcrypt::hash("first password", 10).unwrap(),
        bcrypt::hash("second password", 10).unwrap()
    );
    let served = serve(Some(&users), Limits::default(), 50).await;
    let addr = served.exporter.addr();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let refused = std::sync::Arc::new(AtomicU64::new(0));
    let guessing: Vec<_> = (0..12)
        .map(|_| {
            let (stop, refused) = (stop.clone(), refused.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let status = client
                        .get(format!("http://{addr}/-/healthy"))
                        .basic_auth("prometheus", Some("a guess"))
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    if status.is_ok_and(|s| s == 429) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    wait_until("the guesses to be over their share", DEADLINE, || async {
        (refused.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;
    // Another address: 127.0.0.2 is the loopback too.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for _ in 0..3 {
        let status = other
            .get(format!("http://{addr}/-/healthy"))
            .basic_auth("second", Some("second password"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "another client's first login");
    }
    stop.store(true, Ordering::Relaxed);
    for task in guessing {
        task.await.unwrap();
    }
}

/// What a client without credentials saw while the web config was rewritten.
#[derive(Default)]
struct Hammered {
    requests: std::sync::atomic::AtomicU64,
    weaker: std::sync::Mutex<Vec<String>>,
}

/// Requests `/-/healthy` over and over, on a new connection each time: over
/// TLS without a password (must be 401) and over plain HTTP (must get no
/// answer but the 400 that says the port speaks TLS).
async fn hammer(tls: reqwest::Client, port: u16, seen: std::sync::Arc<Hammered>) {
    use std::sync::atomic::Ordering;
    let plain = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    loop {
        let anonymous = tls
            .get(format!("https://localhost:{port}/-/healthy"))
            .send()
            .await;
        match anonymous {
            Ok(r) if r.status() == 401 => {}
            other => seen.weaker.lock().unwrap().push(format!(
                "TLS without a password: {:?}",
                other.map(|r| r.status())
            )),
        }
        if let Ok(r) = plain
            .get(format!("http://127.0.0.1:{port}/-/healthy"))
            .send()
            .await
            && r.status() != 400
        {
            seen.weaker
                .lock()
                .unwrap()
                .push(format!("plain HTTP answered {}", r.status()));
        }
        seen.requests.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_web_config_is_never_served_weaker_than_configured() {
    use std::sync::atomic::Ordering;
    let ca = TestCa::new("never-weaker");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let users = |password: &str| {
        format!(
            "basic_auth_users:\n  prometheus: {}\n",
            bcrypt::hash(password, 4).unwrap()
        )
    };
    let good = tls_yaml(&server, &users("first"));
    let served = serve(Some(&good), Limits::default(), 20).await;
    let port = served.exporter.addr().port();
    let seen = std::sync::Arc::new(Hammered::default());
    let tls = ca
        .client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let hammering = tokio::spawn(hammer(tls, port, seen.clone()));
    let authed = ca.https_client(None);
    let web_config_ok = |password: &'static str| {
        let request = authed
            .get(https_url(&served, "/metrics"))
            .basic_auth("prometheus", Some(password));
        async move {
            let response = request.send().await.ok()?;
            if response.status() != 200 {
                return None;
            }
            let text = response.text().await.ok()?;
            value(
                &parse(&text),
                "gse_exporter_web_config_last_reload_successful",
                &[],
            )
        }
    };
    // After each change: enough requests that every one of them was served
    // under the changed file, none weaker than configured, and the metric
    // saying whether the change was applied.
    let settle = |what: &'static str, applied: f64, password: &'static str| {
        let seen = seen.clone();
        async move {
            let after = seen.requests.load(Ordering::Relaxed) + 20;
            wait_until("requests under the changed file", DEADLINE, || async {
                (seen.requests.load(Ordering::Relaxed) >= after).then_some(())
            })
            .await;
            let weaker = seen.weaker.lock().unwrap().clone();
            assert!(
                weaker.is_empty(),
                "{what}: served weaker than configured {} times, first: {:?}",
                weaker.len(),
                weaker.first()
            );
            wait_until(what, DEADLINE, || async {
                (web_config_ok(password).await == Some(applied)).then_some(())
            })
            .await;
        }
    };
    let path = &served.web_file;
    let refused: Vec<(&str, String)> = vec![
        ("emptied", String::new()),
        ("only a comment", "# rotated by hand\n".into()),
        ("a quarter written", good[..good.len() / 4].into()),
        ("half written", good[..good.len() / 2].into()),
        ("three quarters written", good[..good.len() * 3 / 4].into()),
        ("without TLS", users("first")),
        ("without users", tls_yaml(&server, "")),
        ("not YAML", "tls_server_config: [\n".into()),
    ];
    for (what, text) in refused {
        std::fs::write(path, text).unwrap();
        settle(what, 0.0, "first").await;
    }
    std::fs::remove_file(path).unwrap();
    settle("deleted", 0.0, "first").await;
    // Copied over in place, as `cp` does: truncated, then written in two parts.
    let mut file = std::fs::File::create(path).unwrap();
    use std::io::Write;
    file.write_all(&good.as_bytes()[..good.len() / 2]).unwrap();
    settle("copied in place, half way", 0.0, "first").await;
    file.write_all(&good.as_bytes()[good.len() / 2..]).unwrap();
    drop(file);
    settle("copied in place", 1.0, "first").await;
    // Users and certificates still rotate.
    std::fs::write(path, tls_yaml(&server, &users("second"))).unwrap();
    settle("a new password", 1.0, "second").await;
    assert_eq!(
        web_config_ok("first").await,
        None,
        "the old password is refused"
    );
    hammering.abort();
    assert!(seen.weaker.lock().unwrap().is_empty());
    assert!(seen.requests.load(Ordering::Relaxed) > 200);
}

#[test]
fn invalid_web_configs_name_the_key_the_value_and_the_rule() {
    let ca = TestCa::new("invalid");
    let server = ca.server(&["localhost"]);
    let tls = |extra: &str| tls_yaml(&server, extra);
    let cases: Vec<(String, &[&str])> = vec![
        ("tls_server_config:\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n".into(), &["tls_server_config.cert_file", "/nonexistent/cert.pem", "cannot be read"]),
        ("tls_server_config:\n  key_file: x.pem\n".into(), &["tls_server_config.cert", "required"]),
        (tls("  client_auth_type: Sometimes\n"), &["tls_server_config.client_auth_type", "Sometimes", "must be NoClientCert"]),
        (tls("  client_auth_type: RequireAndVerifyClientCert\n"), &["client_auth_type", "needs client_ca_file"]),
        (tls(&format!("  client_ca_file: {}\n", ca.cert_file.display())), &["client_auth_type", "without a client auth policy"]),
        (tls("  max_version: TLS11\n"), &["tls_server_config.max_version", "TLS11", "TLS12 and TLS13 only"]),
        (tls("  min_version: SSL3\n"), &["tls_server_config.min_version", "SSL3", "must be TLS10"]),
        (tls("  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"), &["cipher_suites[0]", "TLS_RSA_WITH_RC4_128_SHA", "not a supported"]),
        (tls("  curve_preferences: [CurveP999]\n"), &["curve_preferences[0]", "CurveP999"]),
        (tls("  client_auth_type: RequestClientCert\n  client_allowed_sans: [a.example]\n"), &["client_allowed_sans", "RequireAnyClientCert"]),
        ("basic_auth_users:\n  alice: plaintext-password\n".into(), &["basic_auth_users.alice", "not a bcrypt hash"]),
        ("http_server_config:\n  headers:\n    X-Powered-By: rust\n".into(), &["http_server_config.headers.X-Powered-By", "is not one of"]),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n".into(), &["X-Frame-Options", "allow", "deny or sameorigin"]),
        ("rate_limit:\n  interval: soon\n  burst: 1\n".into(), &["rate_limit.interval", "soon", "not a duration"]),
        ("tls_server_confg: {}\n".into(), &["unknown field", "tls_server_confg"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("web-{i}.yml"));
        std::fs::write(&path, yaml).unwrap();
        let err = WebAccess::load(&path).expect_err(yaml);
        let message = err.problems().join("\n");
        for part in *expected {
            assert!(
                message.contains(part),
                "case {i}: {message:?} lacks {part:?}"
            );
        }
        assert!(
            !message.contains("PRIVATE KEY"),
            "case {i} shows key material"
        );
    }
    // A good file for comparison.
    let good = dir.path().join("good.yml");
    std::fs::write(&good, tls("  min_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519, CurveP256]\nhttp_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n")).unwrap();
    WebAccess::load(&good).expect("a good toolkit file loads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_web_config_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(&path, "basic_auth_users:\n  alice: not-a-hash\n").unwrap();
    let sim = start_sim(SimOptions::default()).await;
    let truth = sim.truth();
    let group = GroupSpec::web(&truth[..1]);
    let config = parse_config(&config_yaml(&sim, "", "", &[group]));
    let options = ExporterOptions {
        web_config_file: Some(path),
        ..ExporterOptions::default()
    };
    let err = Exporter::start(config, options)
        .await
        .expect_err("must not start");
    assert!(err.to_string().contains("basic_auth_users.alice"), "{err}");
}

async fn connect(served: &Served) -> TcpStream {
    TcpStream::connect(served.exporter.addr())
        .await
        .expect("connect")
}

/// Reads until the server closes the connection; fails at the deadline.
async fn closed_by_server(stream: &mut TcpStream, deadline: Duration) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open past {deadline:?}"
    );
}

/// Sends a scrape and never reads the answer, with a small receive buffer so
/// that the (large) body cannot fit in the socket buffers.
async fn stalled_scrape(addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
        .await
        .unwrap();
    answer_begun(&stream).await;
    stream
}

/// Waits until the server has begun to answer on `stream` (so the request
/// is in progress there), without reading anything.
async fn answer_begun(stream: &TcpStream) {
    tokio::time::timeout(DEADLINE, stream.readable())
        .await
        .expect("the server begins to answer")
        .unwrap();
}

fn short_read_timeout() -> Limits {
    Limits {
        read_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_headers_are_cut_off() {
    let served = serve(None, short_read_timeout(), 50).await;
    let mut slow = connect(&served).await;
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_by_server(&mut slow, Duration::from_secs(10)).await;

    let mut silent = connect(&served).await;
    closed_by_server(&mut silent, Duration::from_secs(10)).await;
    assert_eq!(get_status(served.exporter.addr(), "/metrics").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tls_handshakes_are_cut_off() {
    let ca = TestCa::new("slow");
    let server = ca.server(&["localhost"]);
    let served = serve(Some(&tls_yaml(&server, "")), short_read_timeout(), 50).await;
    let mut silent = connect(&served).await;
    closed_by_server(&mut silent, Duration::from_secs(10)).await;
}

/// Holds `count` idle connections open (never sending a byte), opening a
/// new one whenever the server closes one, until aborted. `full` is told
/// when the server first closes one of them: every slot was taken.
async fn hold_idle_connections(addr: std::net::SocketAddr, count: usize, full: Arc<Notify>) {
    let mut held: Vec<TcpStream> = Vec::new();
    loop {
        // Still open: nothing to read yet. Closed: 0 bytes, or an error.
        let before = held.len();
        held.retain(|stream| {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        if held.len() < before {
            full.notify_one();
        }
        while held.len() < count {
            match TcpStream::connect(addr).await {
                Ok(stream) => held.push(stream),
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_idle_connections_cannot_lock_others_out() {
    let limits = Limits {
        max_connections: 16,
        ..Limits::default()
    };
    let served = serve(None, limits, 50).await;
    let addr = served.exporter.addr();
    let full = Arc::new(Notify::new());
    let flood = tokio::spawn(hold_idle_connections(addr, 24, full.clone()));
    // The flood fills every slot first: the server closes one of its
    // connections to make room for another of them.
    tokio::time::timeout(DEADLINE, full.notified())
        .await
        .expect("the flood takes every slot");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..40 {
        let path = if i % 2 == 0 { "/metrics" } else { "/-/healthy" };
        let answer = client.get(format!("http://{addr}{path}")).send().await;
        assert_eq!(
            answer
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string()),
            Ok(200),
            "request {i} to {path} while a client holds idle connections"
        );
    }
    flood.abort();
    wait_until(
        "idle connections counted as closed to make room",
        DEADLINE,
        || async {
            let text = reqwest::get(format!("http://{addr}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let closed = value(
                &parse(&text),
                "gse_exporter_http_requests_rejected_total",
                &[("reason", "idle_closed")],
            )?;
            (closed > 0.0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_busy_a_new_one_is_closed_at_once() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    // Bodies larger than socket buffers: a client that never reads keeps
    // its connection busy.
    let served = serve(None, limits, 20_000).await;
    let addr = served.exporter.addr();
    let first = stalled_scrape(addr).await;
    let second = stalled_scrape(addr).await;
    let mut third = connect(&served).await;
    closed_by_server(&mut third, Duration::from_secs(10)).await;
    drop((first, second));
    wait_until("a free connection slot", DEADLINE, || async {
        reqwest::get(format!("http://{addr}/-/healthy"))
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
}

/// A reload whose body comes a byte at a time is answered without waiting
/// for it, so its connection is not busy for the read timeout: clients
/// holding every connection that way locked every scraper out of
/// `/metrics` and `/-/healthy` (the cap refuses a new connection only when
/// every one is busy; an answered one is made room from).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reload_bodies_do_not_lock_scrapers_out() {
    let limits = Limits {
        max_connections: 2,
        enable_lifecycle: true,
        ..Limits::default()
    };
    assert!(limits.read_timeout >= Duration::from_secs(10));
    let served = serve(None, limits, 50).await;
    let addr = served.exporter.addr();
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&served).await;
        stream
            .write_all(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\nx")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Both answered (this exporter has no file to reload: 500), with their
    // bodies still to come; not left waiting for them (408 after 10 s).
    for stream in &mut slow {
        let mut head = [0u8; 12];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut head))
            .await
            .expect("answered before the body ends")
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 500");
    }
    let started = std::time::Instant::now();
    assert_eq!(get_status(addr, "/-/healthy").await, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "healthy waited {:?}",
        started.elapsed()
    );
    // Said to be over the bound: refused at once, unread.
    let mut over = connect(&served).await;
    over.write_all(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(DEADLINE, over.read_exact(&mut head))
        .await
        .expect("refused at once")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_over_the_limit_get_503_until_a_slot_frees() {
    let limits = Limits {
        max_scrapes: 1,
        ..Limits::default()
    };
    // Enough agents that the body outgrows the socket buffers of a client
    // that never reads, so its scrape holds the one slot.
    let served = serve(None, limits, 20_000).await;
    let addr = served.exporter.addr();
    let stuck = stalled_scrape(addr).await;
    wait_until("a second scrape to be refused", DEADLINE, || async {
        (get_status(addr, "/metrics").await == 503).then_some(())
    })
    .await;
    assert_eq!(
        get_status(addr, "/-/healthy").await,
        200,
        "other routes are not limited"
    );
    drop(stuck);
    wait_until("the slot to free", DEADLINE, || async {
        (get_status(addr, "/metrics").await == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stalls_loses_its_scrape_slot() {
    let limits = Limits {
        max_scrapes: 1,
        write_stall: Duration::from_secs(1),
        ..Limits::default()
    };
    let served = serve(None, limits, 20_000).await;
    let addr = served.exporter.addr();
    let mut stuck = stalled_scrape(addr).await;
    // The stalled client is still connected, yet the slot comes back.
    wait_until("the stalled scrape to be dropped", DEADLINE, || async {
        (get_status(addr, "/metrics").await == 200).then_some(())
    })
    .await;
    closed_by_server(&mut stuck, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answers_get_and_head_only_and_reload_bodies_are_bounded() {
    let limits = Limits {
        enable_lifecycle: true,
        ..Limits::default()
    };
    let served = serve(None, limits, 50).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", served.exporter.addr());
    assert_eq!(
        client.head(url("/metrics")).send().await.unwrap().status(),
        200
    );
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = client
            .request(method.clone(), url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} /metrics");
        assert_eq!(response.headers()["allow"], "GET,HEAD");
        assert_eq!(response.text().await.unwrap(), "Method not allowed.\n");
    }
    // Refusals say what they are (their bodies were empty).
    let unknown = client.get(url("/metricz")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.text().await.unwrap(), "404 page not found\n");
    let huge = vec![b'x'; 200 * 1024];
    let status = client
        .post(url("/-/reload"))
        .body(huge)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 413);
}

#[test]
fn the_documented_example_has_the_shape_of_a_web_config() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/web.md")).unwrap();
    let start = doc
        .find("```yaml\ntls_server_config:")
        .expect("example in docs/web.md")
        + 8;
    let end = start + doc[start..].find("```").unwrap();
    let raw: gse_exporter::config::web::RawWebConfig =
        gse_exporter::config::parse_yaml(&doc[start..end]).expect("the example parses");
    let tls = raw.tls_server_config.expect("tls block");
    assert_eq!(
        tls.client_auth_type.as_deref(),
        Some("RequireAndVerifyClientCert")
    );
    assert_eq!(raw.basic_auth_users.len(), 1);
}

/// A connection closed to make room is closed at once, even part way
/// through a request's headers: it was asked to shut down gracefully, which
/// waits for that request until the header read timeout, so a client
/// sending a byte per connection held a descriptor per connection past the
/// cap (3,000 open with a cap of 512) and ran the process out of them.
/// One request on a kept-alive connection, its answer read whole.
async fn answered_on(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !content_read(&got) {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap_or(0);
        let shown = String::from_utf8_lossy(&got);
        assert!(n > 0, "closed before its answer: {shown:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Whether `got` holds a whole response (headers and `content-length` bytes).
fn content_read(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .and_then(|l| l.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_is_not_closed_to_make_room_for_answered_ones() {
    // A scraper opens its connection (a TLS handshake takes as long), and
    // meanwhile other clients are answered on kept-alive connections: it
    // became the idlest and was closed before it could ask.
    let limits = Limits {
        max_connections: 4,
        ..Limits::default()
    };
    let served = serve(None, limits, 50).await;
    let mut scraper = connect(&served).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&served).await;
        answered_on(&mut stream).await;
        others.push(stream);
    }
    for _ in 0..3 {
        let mut stream = connect(&served).await;
        answered_on(&mut stream).await;
        others.push(stream);
    }
    answered_on(&mut scraper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_to_make_room_mid_headers_is_closed_at_once() {
    let limits = Limits {
        max_connections: 4,
        ..Limits::default()
    };
    assert!(limits.read_timeout >= Duration::from_secs(10));
    let served = serve(None, limits, 50).await;
    let mut first = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&served).await;
        stream.write_all(b"G").await.unwrap();
        first.push(stream);
    }
    // Every slot taken by a connection part way through its headers, each
    // opened before (so idle longer than) any of the later ones.
    let mut later = Vec::new();
    for _ in 0..4 {
        later.push(connect(&served).await);
    }
    for stream in &mut first {
        closed_by_server(stream, Duration::from_secs(3)).await;
    }
}

/// An HTTP/1.1 request must name its host exactly once (RFC 9112 3.2):
/// without `Host`, or with two, it gets 400 (it was served); HTTP/1.0 may
/// leave it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_1_request_names_its_host_once() {
    let served = serve(None, Limits::default(), 50).await;
    let cases: [(&[u8], &[u8]); 4] = [
        (b"GET /-/healthy HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
        (
            b"GET /-/healthy HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"HTTP/1.1 400",
        ),
        (
            b"GET /-/healthy HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200",
        ),
        (b"GET /-/healthy HTTP/1.0\r\n\r\n", b"HTTP/1.0 200"),
    ];
    for (request, status) in cases {
        let mut stream = connect(&served).await;
        stream.write_all(request).await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut head))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&head),
            String::from_utf8_lossy(status),
            "{}",
            String::from_utf8_lossy(request)
        );
    }
}

/// A TLS 1.3 ClientHello naming `name` as the server (SNI), as
/// OpenSSL-based clients send an IP address given in a URL.
fn client_hello_with_sni(name: &str) -> Vec<u8> {
    let with_length = |kind: &[u8], body: &[u8]| {
        let mut out = kind.to_vec();
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
        out
    };
    let host = with_length(&[0], name.as_bytes());
    let list = with_length(&[], &host);
    let mut extensions = with_length(&[0, 0], &list);
    extensions.extend(with_length(&[0, 0x2b], &[2, 3, 4]));
    extensions.extend(with_length(&[0, 0x0a], &[0, 2, 0, 0x1d]));
    extensions.extend(with_length(&[0, 0x0d], &[0, 6, 4, 3, 8, 4, 8, 7]));
    let share = with_length(&[0, 0x1d], &[9; 32]);
    extensions.extend(with_length(&[0, 0x33], &with_length(&[], &share)));
    let mut hello = vec![3, 3];
    hello.extend([1; 32]);
    hello.extend([0, 0, 2, 0x13, 1, 1, 0]);
    hello.extend(with_length(&[], &extensions));
    let mut handshake = vec![1];
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    with_length(&[0x16, 3, 1], &handshake)
}

/// Clients that send an IP address as the TLS server name (OpenSSL-based
/// ones, given `https://<ip>:port`) write nothing to the log: rustls warned
/// once per handshake, before any auth or limit, at the default level, so
/// one client could write a line per connection (1,200 a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_as_the_tls_server_name_is_not_logged() {
    let sim = start_sim(SimOptions::default()).await;
    let ca = TestCa::new("sni");
    let server = ca.server(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gse.yml");
    let truth = sim.truth();
    let groups = [GroupSpec::web(&truth[..5])];
    std::fs::write(&config, config_yaml(&sim, "", "interval: 60s\n", &groups)).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            server.cert_file.display(),
            server.key_file.display()
        ),
    )
    .unwrap();
    let exporter = crate::common::binary::Binary::start(
        &[
            format!("--config.file={}", config.display()),
            format!("--web.config.file={}", web.display()),
        ],
        &[],
    )
    .await;
    let hello = client_hello_with_sni("127.0.0.1");
    for _ in 0..5 {
        let mut stream = TcpStream::connect(&exporter.addr).await.unwrap();
        stream.write_all(&hello).await.unwrap();
        let mut answer = [0u8; 5];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut answer))
            .await
            .expect("the server answers the hello")
            .unwrap();
    }
    // A request after them, answered: the log has had their lines by then.
    let client = ca.https_client(None);
    let url = format!("https://{}/-/healthy", exporter.addr);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    let logs = exporter.logs();
    assert!(!logs.contains("SNI"), "{logs}");
}
