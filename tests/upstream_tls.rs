//! Upstream TLS against the simulator serving HTTPS: the exporter trusts a
//! private CA from `tls.ca_file`, refuses an unknown certificate (a transport
//! error, never "offline"), presents a client certificate when the server
//! requires one, skips verification only when told to (and warns each time a
//! configuration is applied), and never shows the private key.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::tls::TestPki;
use crate::common::*;
use gse_exporter::run::{Exporter, ExporterOptions};
use gse_sim::{RunningSim, SimOptions};

const DEADLINE: Duration = Duration::from_secs(20);

async fn https_sim(pki: &TestPki, require_client_cert: bool) -> RunningSim {
    let sim = start_sim(SimOptions {
        agents: 30,
        tls: Some(pki.sim_tls(require_client_cert)),
        ..SimOptions::default()
    })
    .await;
    assert_eq!(sim.scheme(), "https");
    sim
}

/// A config polling all of the simulator's v2 agents in group `web`, with
/// `tls` (lines under `tls:`, already indented) in the `gse:` block.
fn config_with_tls(sim: &RunningSim, tls: &str) -> String {
    let truth = sim.truth();
    let gse = format!("  max_attempts: 1\n  timeout: 5s\n  tls:\n{tls}");
    let specs = [GroupSpec::web(&truth)];
    config_yaml(sim, &gse, "interval: 60s\n", &specs)
}

fn ca_line(pki: &TestPki) -> String {
    format!("    ca_file: {}\n", pki.ca.cert_file.display())
}

fn client_lines(pki: &TestPki) -> String {
    format!(
        "    cert_file: {}\n    key_file: {}\n",
        pki.client.cert_file.display(),
        pki.client.key_file.display()
    )
}

/// Starts an exporter, waits for its first cycle, and returns its samples.
async fn first_cycle(yaml: &str) -> (Exporter, Vec<Sample>) {
    let exporter = start_exporter(parse_config(yaml)).await;
    wait_cycles(&exporter, 1, DEADLINE).await;
    let samples = parse(&scrape(exporter.addr()).await);
    (exporter, samples)
}

fn assert_up(samples: &[Sample], agents: usize) {
    assert_eq!(value(samples, "gse_up", &[("group", "web")]), Some(1.0));
    assert_eq!(by_agent(samples, "gse_agent_online").len(), agents);
}

/// Down through a transport (TLS) error: every agent is unknown, none offline.
fn assert_down_by_transport(samples: &[Sample], agents: usize) {
    assert_eq!(value(samples, "gse_up", &[("group", "web")]), Some(0.0));
    let transport = value(
        samples,
        "gse_exporter_api_requests_total",
        &[
            ("api", "v2_list_agent_state"),
            ("result", "transport_error"),
        ],
    );
    assert!(transport.unwrap_or(0.0) >= 1.0, "a transport error counted");
    let offline = value(
        samples,
        "gse_agents",
        &[("group", "web"), ("state", "offline")],
    );
    assert_eq!(offline.unwrap_or(0.0), 0.0, "no agent is called offline");
    let unknown = value(
        samples,
        "gse_agents",
        &[("group", "web"), ("state", "unknown")],
    );
    assert_eq!(unknown, Some(agents as f64), "every agent is unknown");
    assert!(by_agent(samples, "gse_agent_online").is_empty());
}

#[tokio::test]
async fn ca_file_trusts_the_private_ca_and_without_it_the_upstream_is_down() {
    let pki = TestPki::new("upstream-tls test CA");
    let sim = https_sim(&pki, false).await;
    let agents = sim.truth().len();

    let (exporter, samples) = first_cycle(&config_with_tls(&sim, &ca_line(&pki))).await;
    assert_up(&samples, agents);
    exporter.shutdown().await;

    let no_ca = config_with_tls(&sim, "    insecure_skip_verify: false\n");
    let (exporter, samples) = first_cycle(&no_ca).await;
    assert_down_by_transport(&samples, agents);
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_the_server_requires_one() {
    let pki = TestPki::new("mutual-tls test CA");
    let sim = https_sim(&pki, true).await;
    let agents = sim.truth().len();

    let with_cert = format!("{}{}", ca_line(&pki), client_lines(&pki));
    let (exporter, samples) = first_cycle(&config_with_tls(&sim, &with_cert)).await;
    assert_up(&samples, agents);
    exporter.shutdown().await;

    let (exporter, samples) = first_cycle(&config_with_tls(&sim, &ca_line(&pki))).await;
    assert_down_by_transport(&samples, agents);
    exporter.shutdown().await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: the warnings are logged on the test's own thread,
// where the captured subscriber is the default.
#[tokio::test]
async fn insecure_skip_verify_works_and_warns_at_start_and_on_reload() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = TestPki::new("insecure test CA");
    let sim = https_sim(&pki, false).await;
    let agents = sim.truth().len();
    let path = pki.path("gse.yml");
    let yaml = config_with_tls(&sim, "    insecure_skip_verify: true\n");
    std::fs::write(&path, &yaml).unwrap();
    let options = ExporterOptions {
        config_file: Some(path.clone()),
        ..ExporterOptions::default()
    };
    let exporter = Exporter::start(parse_config(&yaml), options)
        .await
        .expect("exporter starts");
    wait_cycles(&exporter, 1, DEADLINE).await;
    assert_up(&parse(&scrape(exporter.addr()).await), agents);
    let warning = "TLS certificate verification is off for GSE (gse.tls.insecure_skip_verify)";
    assert_eq!(logs.text().matches(warning).count(), 1, "{}", logs.text());

    exporter.reloader().reload_now().await.expect("reload");
    assert_eq!(logs.text().matches(warning).count(), 2, "{}", logs.text());
    assert!(logs.text().contains("WARN"), "{}", logs.text());
    exporter.shutdown().await;
}

#[tokio::test]
async fn cmdb_discovery_trusts_its_own_ca_file() {
    let pki = TestPki::new("cmdb test CA");
    let sim = https_sim(&pki, false).await;
    let hosts = sim.cmdb_hosts(2);
    assert!(!hosts.is_empty());
    let tls = format!("  tls:\n{}", ca_line(&pki));
    let mut yaml = format!(
        "{}interval: 60s\ngroups:\n",
        gse_block(&sim, &format!("  max_attempts: 1\n{tls}"))
    );
    yaml.push_str(&cmdb_group_yaml(&sim, "biz-2", 2, ""));
    yaml.push_str(&tls);
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, DEADLINE).await;
    let samples = parse(&scrape(exporter.addr()).await);
    assert_eq!(
        value(
            &samples,
            "gse_exporter_discovery_success",
            &[("group", "biz-2")]
        ),
        Some(1.0),
    );
    assert_eq!(value(&samples, "gse_up", &[("group", "biz-2")]), Some(1.0));
    assert!(!by_agent(&samples, "gse_agent_online").is_empty());
    exporter.shutdown().await;

    // Without a tls block of its own CMDB inherits gse's; `tls: {}` trusts
    // the system roots only, so discovery fails while GSE stays trusted.
    let inherited = yaml.trim_end_matches(&tls).to_string();
    for (cmdb_tls, success) in [("", 1.0), ("  tls: {}\n", 0.0)] {
        let exporter = start_exporter(parse_config(&format!("{inherited}{cmdb_tls}"))).await;
        wait_cycles(&exporter, 1, DEADLINE).await;
        let samples = parse(&scrape(exporter.addr()).await);
        let discovered = value(
            &samples,
            "gse_exporter_discovery_success",
            &[("group", "biz-2")],
        );
        assert_eq!(discovered, Some(success), "cmdb tls {cmdb_tls:?}");
        exporter.shutdown().await;
    }
}

fn check_config(path: &Path) -> (bool, String) {
    crate::common::binary::config_check(path, None)
}

/// The middle line of a PEM body: key material that must never be shown.
fn key_material(pem: &str) -> String {
    let lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    lines[lines.len() / 2].to_string()
}

#[tokio::test]
async fn the_private_key_never_shows_and_a_mismatched_key_is_rejected() {
    let pki = TestPki::new("secret-key test CA");
    let sim = https_sim(&pki, true).await;
    let yaml = config_with_tls(&sim, &format!("{}{}", ca_line(&pki), client_lines(&pki)));
    let client_key = key_material(&pki.client.key_pem);
    let config = parse_config(&yaml);
    let shown = format!("{config:?}");
    assert!(
        shown.contains(&pki.client.key_file.display().to_string()),
        "the key file is named: {shown}"
    );
    assert!(!shown.contains(&client_key), "Debug shows the key");
    let client = gse_exporter::upstream::gse::GseClient::new(&config.gse).unwrap();
    assert!(!format!("{client:?}").contains(&client_key));

    let path = pki.path("good.yml");
    std::fs::write(&path, &yaml).unwrap();
    let (ok, printed) = check_config(&path);
    assert!(ok, "{printed}");

    // The server's key with the client's certificate: named, never shown.
    let server_key = key_material(&pki.server.key_pem);
    let mismatched = yaml.replace(
        &pki.client.key_file.display().to_string(),
        &pki.server.key_file.display().to_string(),
    );
    let path = pki.path("mismatched.yml");
    std::fs::write(&path, mismatched).unwrap();
    let (ok, printed) = check_config(&path);
    assert!(!ok, "a key of another certificate is rejected");
    let expected = format!(
        "gse.tls.key_file: {}: does not match cert_file",
        pki.server.key_file.display()
    );
    assert!(printed.contains(&expected), "{printed}");
    assert!(!printed.contains(&server_key) && !printed.contains(&client_key));

    // A key file that is not a key at all (a certificate) is named too.
    let not_a_key = yaml.replace(
        &pki.client.key_file.display().to_string(),
        &pki.client.cert_file.display().to_string(),
    );
    std::fs::write(&path, not_a_key).unwrap();
    let (ok, printed) = check_config(&path);
    assert!(!ok);
    assert!(printed.contains("is not a PEM private key"), "{printed}");
}
