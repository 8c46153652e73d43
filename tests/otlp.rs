//! OTLP push against receivers run inside the test (OTLP/HTTP on axum, OTLP/gRPC
//! on tonic), decoding with `opentelemetry-proto`: the pushed data points equal
//! `/metrics` (names, values, attributes), carry the resource attributes, follow
//! an agent going offline and an agent leaving the configuration, and a failing
//! or hanging collector is counted without touching polling or scraping.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::binary::Binary;
use crate::common::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gse_exporter::config::{Config, parse_raw};
use gse_exporter::run::{Exporter, ExporterOptions};
use gse_sim::{AgentTruth, RunningSim, SimOptions};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as PointValue;
use parking_lot::Mutex;
use prost::Message;

/// How the HTTP receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Accept,
    Status(u16),
    Hang,
}

/// What a receiver got: every decoded request and the headers of the last one.
#[derive(Default)]
struct Received {
    requests: Vec<ExportMetricsServiceRequest>,
    headers: BTreeMap<String, String>,
    attempts: usize,
}

#[derive(Clone)]
struct Receiver {
    received: Arc<Mutex<Received>>,
    mode: Arc<Mutex<Mode>>,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver {
            received: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Accept)),
        }
    }

    fn count(&self) -> usize {
        self.received.lock().requests.len()
    }

    fn attempts(&self) -> usize {
        self.received.lock().attempts
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    /// The first request accepted after the first `after` ones, waiting for it.
    async fn request_after(&self, after: usize) -> ExportMetricsServiceRequest {
        wait_until("an OTLP push", Duration::from_secs(20), || async {
            self.received.lock().requests.get(after).cloned()
        })
        .await
    }
}

/// An OTLP/HTTP receiver on loopback: `POST /v1/metrics`.
async fn start_http_receiver() -> (SocketAddr, Receiver) {
    let receiver = Receiver::new();
    let app = axum::Router::new()
        .route("/v1/metrics", post(accept_http))
        .with_state(receiver.clone());
    let addr = serve(app).await;
    (addr, receiver)
}

async fn accept_http(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Vec<u8>) {
    receiver.received.lock().attempts += 1;
    let mode = *receiver.mode.lock();
    match mode {
        Mode::Hang => std::future::pending().await,
        Mode::Status(code) => (StatusCode::from_u16(code).unwrap(), Vec::new()),
        Mode::Accept => {
            let request = ExportMetricsServiceRequest::decode(body).expect("a valid OTLP body");
            let mut received = receiver.received.lock();
            received.requests.push(request);
            received.headers = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let reply = ExportMetricsServiceResponse::default().encode_to_vec();
            (StatusCode::OK, reply)
        }
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut received = self.received.lock();
        received.attempts += 1;
        received.headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        received.requests.push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on loopback.
async fn start_grpc_receiver() -> (SocketAddr, Receiver) {
    let receiver = Receiver::new();
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream_of(listener);
    let service = MetricsServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
    });
    (addr, receiver)
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

/// One decoded data point.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    name: String,
    attributes: BTreeMap<String, String>,
    value: f64,
}

fn text(kv: &KeyValue) -> (String, String) {
    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    };
    (kv.key.clone(), value)
}

fn points(request: &ExportMetricsServiceRequest) -> Vec<Point> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                let Some(Data::Gauge(gauge)) = &metric.data else {
                    panic!("{} is not a gauge", metric.name);
                };
                for p in &gauge.data_points {
                    let value = match p.value {
                        Some(PointValue::AsDouble(d)) => d,
                        Some(PointValue::AsInt(i)) => i as f64,
                        None => f64::NAN,
                    };
                    out.push(Point {
                        name: metric.name.clone(),
                        attributes: p.attributes.iter().map(text).collect(),
                        value,
                    });
                }
            }
        }
    }
    out
}

fn resource_attributes(request: &ExportMetricsServiceRequest) -> BTreeMap<String, String> {
    assert_eq!(request.resource_metrics.len(), 1, "one resource");
    let resource = request.resource_metrics[0].resource.as_ref().unwrap();
    resource.attributes.iter().map(text).collect()
}

/// Every sample of `/metrics` that belongs to a group, as points (sorted).
fn group_samples(all: &[Sample]) -> Vec<Point> {
    let mut out: Vec<Point> = all
        .iter()
        .filter(|s| s.labels.contains_key("group"))
        .map(|s| Point {
            name: s.name.clone(),
            attributes: s.labels.clone().into_iter().collect(),
            value: s.value,
        })
        .collect();
    sort(&mut out);
    out
}

fn sort(points: &mut [Point]) {
    points.sort_by(|a, b| (&a.name, &a.attributes).cmp(&(&b.name, &b.attributes)));
}

fn hosts(agents: &[AgentTruth]) -> String {
    agents
        .iter()
        .map(|a| format!("      - \"{}\"\n", a.v2_id()))
        .collect()
}

/// Two groups: `web` with per-agent series and labels, `batch` without per-agent series.
fn fleet_yaml(sim: &RunningSim, web: &[AgentTruth], batch: &[AgentTruth], otlp: &str) -> String {
    format!(
        "{}interval: 60s\ngroups:\n  - name: web\n    bk_biz_id: 2\n    labels: {{team: sre}}\n    hosts:\n{}  - name: batch\n    bk_biz_id: 5\n    per_agent_metrics: false\n    hosts:\n{}{otlp}",
        gse_block(sim, ""),
        hosts(web),
        hosts(batch),
    )
}

fn otlp_block(endpoint: &str, extra: &str) -> String {
    format!(
        "otlp:\n  endpoint: {endpoint}\n  interval: 300ms\n  timeout: 250ms\n  resource_attributes: {{deployment.environment: test}}\n{extra}"
    )
}

async fn start_from_file(path: &Path) -> Exporter {
    let config = Config::load(path).unwrap_or_else(|e| panic!("test config is invalid: {e}"));
    let options = ExporterOptions {
        config_file: Some(path.to_path_buf()),
        ..ExporterOptions::default()
    };
    Exporter::start(config, options)
        .await
        .expect("exporter starts")
}

/// Reloads (which polls at once) and returns a push collected after that
/// cycle was published: pushes run one at a time, so the second one to
/// arrive after the publication started after it.
async fn reload_and_push(exporter: &Exporter, receiver: &Receiver) -> Vec<Point> {
    let cycles = cycles_now(exporter);
    exporter.reloader().reload_now().await.unwrap();
    wait_cycles(exporter, cycles + 1, Duration::from_secs(20)).await;
    let request = receiver.request_after(receiver.count() + 1).await;
    points(&request)
}

async fn wait_for_success(exporter: &Exporter) {
    wait_until("a counted success", Duration::from_secs(20), || async {
        let all = parse(&scrape(exporter.addr()).await);
        let ok = value(
            &all,
            "gse_exporter_otlp_exports_total",
            &[("result", "success")],
        );
        (ok.unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
}

fn online_of<'a>(points: &'a [Point], agent: &str) -> Option<&'a Point> {
    points
        .iter()
        .find(|p| p.name == "gse_agent_online" && p.attributes["bk_agent_id"] == agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_the_fleet_as_on_metrics_and_follows_offline_and_removed_agents() {
    let sim = start_sim(SimOptions {
        agents: 40,
        seed: 11,
        legacy_share: 0.0,
        unknown_share: 0.1,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let (web, batch) = (&truth[..30], &truth[30..]);
    let (addr, receiver) = start_http_receiver().await;
    let otlp = otlp_block(
        &format!("http://{addr}"),
        "  headers: {Authorization: Bearer t0ken}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    std::fs::write(&path, fleet_yaml(&sim, web, batch, &otlp)).unwrap();
    let exporter = start_from_file(&path).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;

    // One cycle only (60s interval): /metrics and the push show the same snapshot.
    let request = receiver.request_after(0).await;
    let mut pushed = points(&request);
    sort(&mut pushed);
    let scraped = parse(&scrape(exporter.addr()).await);
    assert_eq!(
        pushed,
        group_samples(&scraped),
        "the push carries every group series of /metrics, same names, attributes and values"
    );
    let online: Vec<&Point> = pushed
        .iter()
        .filter(|p| p.name == "gse_agent_online")
        .collect();
    assert_eq!(online.len(), web.len(), "per-agent points for web only");
    for agent in web {
        let point = online_of(&pushed, &agent.bk_agent_id).expect("a point per web agent");
        assert_eq!(
            point.value,
            f64::from(u8::from(agent.known && agent.online))
        );
        assert_eq!(point.attributes["group"], "web");
        assert_eq!(point.attributes["team"], "sre");
        assert_eq!(point.attributes["bk_biz_id"], "2");
    }
    assert!(
        pushed
            .iter()
            .any(|p| p.name == "gse_agents" && p.attributes["group"] == "batch"),
        "batch still has its per-group points"
    );
    let resource = resource_attributes(&request);
    assert_eq!(resource["service.name"], "gse_exporter");
    assert_eq!(resource["service.version"], env!("CARGO_PKG_VERSION"));
    assert!(
        resource["service.instance.id"].ends_with(&format!(":{}", exporter.addr().port())),
        "instance id is host:port: {resource:?}"
    );
    assert_eq!(resource["deployment.environment"], "test");
    let headers = receiver.received.lock().headers.clone();
    assert_eq!(headers["authorization"], "Bearer t0ken");
    assert_eq!(headers["content-type"], "application/x-protobuf");

    // An agent goes offline: the first push after the next cycle says so.
    let gone = web.iter().find(|a| a.known && a.online).unwrap();
    sim.set_online(std::slice::from_ref(&gone.bk_agent_id), false)
        .unwrap();
    let pushed = reload_and_push(&exporter, &receiver).await;
    assert_eq!(online_of(&pushed, &gone.bk_agent_id).unwrap().value, 0.0);
    // Self-telemetry is rendered with each published cycle.
    wait_for_success(&exporter).await;

    // It leaves the configuration: its points stop.
    let rest: Vec<AgentTruth> = web
        .iter()
        .filter(|a| a.bk_agent_id != gone.bk_agent_id)
        .cloned()
        .collect();
    // A second reload within the interval adds no cycle of its own: the
    // shorter interval it sets brings the next scheduled one.
    let shorter = fleet_yaml(&sim, &rest, batch, &otlp).replace("interval: 60s", "interval: 1s");
    std::fs::write(&path, shorter).unwrap();
    let pushed = reload_and_push(&exporter, &receiver).await;
    assert!(
        !pushed
            .iter()
            .any(|p| p.attributes.get("bk_agent_id") == Some(&gone.bk_agent_id)),
        "no point of a removed agent"
    );
    let online = pushed.iter().filter(|p| p.name == "gse_agent_online");
    assert_eq!(online.count(), rest.len());
    exporter.shutdown().await;
}

/// The families a push carries are exactly those docs/metrics.md marks
/// `pushed`, from a fleet where every family has data points: both APIs,
/// online, offline and unknown agents, a CMDB-discovered group with its
/// topology, and a group from a hosts file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_exactly_the_families_docs_metrics_md_marks_pushed() {
    let sim = start_sim(SimOptions {
        agents: 40,
        seed: 3,
        online_share: 0.7,
        unknown_share: 0.15,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let group = |name, bk_biz_id, api, agents| GroupSpec {
        name,
        bk_biz_id,
        api,
        agents,
        labels: "",
    };
    let specs = [
        group("web", 2, "v2", &truth[..20]),
        group("legacy", 3, "v1", &truth[20..]),
    ];
    let (addr, receiver) = start_http_receiver().await;
    let mut yaml = config_yaml(&sim, "", "interval: 60s\n", &specs);
    let dir = tempfile::tempdir().unwrap();
    let filed = hosts_file_group_yaml(dir.path(), "filed", 4, &truth[..5]);
    yaml.push_str(&cmdb_topology_group_yaml(&sim, "biz-5", 5, &filed));
    yaml.push_str(&otlp_block(&format!("http://{addr}"), ""));
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(30)).await;
    let request = receiver.request_after(0).await;
    let pushed: BTreeSet<String> = points(&request).into_iter().map(|p| p.name).collect();
    assert_eq!(
        pushed,
        crate::drift::docs_pushed(),
        "the families pushed, and those docs/metrics.md marks pushed"
    );
    exporter.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_info_is_pushed_as_on_metrics() {
    let sim = start_sim(SimOptions {
        agents: 60,
        ..SimOptions::default()
    })
    .await;
    let (addr, receiver) = start_http_receiver().await;
    let mut yaml = format!("{}interval: 60s\ngroups:\n", gse_block(&sim, ""));
    yaml.push_str(&cmdb_topology_group_yaml(&sim, "biz-2", 2, ""));
    yaml.push_str(&otlp_block(&format!("http://{addr}"), ""));
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;

    // One cycle only: /metrics and the push show the same snapshot.
    let mut pushed = points(&receiver.request_after(0).await);
    sort(&mut pushed);
    let scraped = parse(&scrape(exporter.addr()).await);
    assert_eq!(pushed, group_samples(&scraped));
    let topology: Vec<&Point> = pushed
        .iter()
        .filter(|p| p.name == "gse_agent_topology_info")
        .collect();
    assert_eq!(
        topology.len(),
        samples(&scraped, "gse_agent_online").len(),
        "a topology point per agent"
    );
    assert!(
        topology
            .iter()
            .all(|p| p.attributes["bk_biz_name"] == "Business 2"
                && !p.attributes["bk_module_name"].is_empty())
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_hanging_collector_is_counted_and_never_holds_up_polling() {
    let sim = start_sim(SimOptions {
        agents: 20,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let (addr, receiver) = start_http_receiver().await;
    receiver.set_mode(Mode::Status(503));
    let yaml = format!(
        "{}interval: 200ms\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts:\n{}{}",
        gse_block(&sim, ""),
        hosts(&truth),
        otlp_block(&format!("http://{addr}/v1/metrics"), ""),
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    let failures = |all: &[Sample]| {
        value(
            all,
            "gse_exporter_otlp_exports_total",
            &[("result", "failure")],
        )
        .unwrap_or(0.0)
    };
    wait_until("two failed pushes", Duration::from_secs(20), || async {
        let all = parse(&scrape(exporter.addr()).await);
        (failures(&all) >= 2.0).then_some(())
    })
    .await;
    assert!(
        receiver.attempts() > 2,
        "503 is retried within a push: {} attempts",
        receiver.attempts()
    );

    // A collector that never answers: pushes time out, polling goes on.
    receiver.set_mode(Mode::Hang);
    let before = failures(&parse(&scrape(exporter.addr()).await));
    wait_until("a timed-out push", Duration::from_secs(20), || async {
        let all = parse(&scrape(exporter.addr()).await);
        (failures(&all) >= before + 2.0).then_some(())
    })
    .await;
    wait_more_cycles(&exporter, 3, Duration::from_secs(20)).await;
    assert_eq!(get_status(exporter.addr(), "/-/ready").await, 200);
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(value(&all, "gse_up", &[("group", "web")]), Some(1.0));
    let successes = value(
        &all,
        "gse_exporter_otlp_exports_total",
        &[("result", "success")],
    );
    assert_eq!(successes, Some(0.0));

    // The collector recovers: pushes succeed again.
    receiver.set_mode(Mode::Accept);
    receiver.request_after(0).await;
    wait_for_success(&exporter).await;
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_grpc_with_metadata() {
    let sim = start_sim(SimOptions {
        agents: 10,
        ..SimOptions::default()
    })
    .await;
    let truth = sim.truth();
    let (addr, receiver) = start_grpc_receiver().await;
    let yaml = format!(
        "{}interval: 60s\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts:\n{}{}",
        gse_block(&sim, ""),
        hosts(&truth),
        otlp_block(
            &format!("http://{addr}"),
            "  protocol: grpc\n  headers: {x-api-key: k3y}\n"
        ),
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    let request = receiver.request_after(0).await;
    let mut pushed = points(&request);
    sort(&mut pushed);
    assert_eq!(
        pushed,
        group_samples(&parse(&scrape(exporter.addr()).await))
    );
    assert_eq!(
        resource_attributes(&request)["service.name"],
        "gse_exporter"
    );
    assert_eq!(receiver.received.lock().headers["x-api-key"], "k3y");
    exporter.shutdown().await;
}

#[test]
fn header_values_are_secrets_expanded_from_the_environment() {
    let yaml = "gse:\n  url: https://x.example.com\n  app_code: a\n  app_secret: s\ngroups: [{name: a, bk_biz_id: 1, hosts: [\"0:10.0.0.1\"]}]\n\
                otlp:\n  endpoint: https://otlp.example.com\n  headers: {Authorization: \"Bearer ${OTLP_TOKEN}\"}\n";
    let env = |name: &str| (name == "OTLP_TOKEN").then(|| "canary-0tlp-t0ken".to_string());
    let config = Config::from_raw(parse_raw(yaml).unwrap(), &env, Path::new(".")).unwrap();
    let otlp = config.otlp.as_ref().unwrap();
    assert_eq!(otlp.headers[0].0, "authorization");
    assert_eq!(otlp.headers[0].1.expose(), "Bearer canary-0tlp-t0ken");
    assert!(!format!("{config:?}").contains("canary-0tlp-t0ken"));

    let broken = yaml.replace("Bearer ${OTLP_TOKEN}", "canary-0tlp-t0ken\\nX");
    let err = Config::from_raw(parse_raw(&broken).unwrap(), &env, Path::new(".")).unwrap_err();
    let problems = err.problems().join("\n");
    assert!(
        problems.contains("otlp.headers.Authorization"),
        "{problems}"
    );
    assert!(!problems.contains("canary-0tlp-t0ken"), "{problems}");
}

#[tokio::test]
async fn grpc_and_http_configurations_build_exporters() {
    for protocol in ["grpc", "http/protobuf"] {
        let yaml = format!(
            "gse:\n  url: https://x.example.com\n  app_code: a\n  app_secret: s\ngroups: [{{name: a, bk_biz_id: 1, hosts: [\"0:10.0.0.1\"]}}]\n\
             otlp:\n  endpoint: https://otlp.example.com:4317\n  protocol: {protocol}\n  headers: {{x-token: t}}\n"
        );
        let config = parse_config(&yaml);
        let otlp = config.otlp.as_ref().unwrap();
        gse_exporter::expose::otlp::exporter(otlp, &Default::default())
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
    }
}

/// A collector that redirects is an error, never followed: opentelemetry's
/// own HTTP client followed ten redirects, carrying the push and every
/// configured header but `Authorization` (API keys, tenant ids) to wherever
/// a reply pointed, from HTTPS to plain HTTP too; and after a 301 or 302 it
/// sent an empty GET there, which counted as a successful push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_collector_is_a_failure_and_never_followed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sim = start_sim(SimOptions {
        agents: 4,
        ..SimOptions::default()
    })
    .await;
    let reached = Arc::new(AtomicUsize::new(0));
    let count = reached.clone();
    let elsewhere = serve(axum::Router::new().fallback(axum::routing::any(move || {
        count.fetch_add(1, Ordering::SeqCst);
        async { "ok" }
    })))
    .await;
    let served = Arc::new(AtomicUsize::new(0));
    let redirect = move || {
        let n = served.fetch_add(1, Ordering::SeqCst);
        async move {
            let codes = [301, 302, 307, 308];
            let status = axum::http::StatusCode::from_u16(codes[n % codes.len()]).unwrap();
            let to = format!("http://{elsewhere}/v1/metrics");
            (status, [(axum::http::header::LOCATION, to)])
        }
    };
    let collector = serve(axum::Router::new().fallback(axum::routing::any(redirect))).await;
    let yaml = format!(
        "{}interval: 200ms\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts:\n{}{}",
        gse_block(&sim, ""),
        hosts(&sim.truth()),
        otlp_block(
            &format!("http://{collector}/v1/metrics"),
            "  headers: {x-api-key: canary-key}\n"
        ),
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    let exports = |all: &[Sample], result: &str| {
        value(
            all,
            "gse_exporter_otlp_exports_total",
            &[("result", result)],
        )
        .unwrap_or(0.0)
    };
    wait_until("four failed pushes", Duration::from_secs(30), || async {
        let all = parse(&scrape(exporter.addr()).await);
        (exports(&all, "failure") >= 4.0).then_some(())
    })
    .await;
    let all = parse(&scrape(exporter.addr()).await);
    exporter.shutdown().await;
    assert_eq!(reached.load(Ordering::SeqCst), 0, "a redirect was followed");
    assert_eq!(exports(&all, "success"), 0.0);
}

/// A user and password in the endpoint URL are sent as basic auth (the docs
/// mask them, so they are taken as supported); they were never sent, and a
/// collector behind basic auth answered every push 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_and_password_in_the_endpoint_are_sent_as_basic_auth() {
    use base64::Engine;
    let sim = start_sim(SimOptions {
        agents: 4,
        ..SimOptions::default()
    })
    .await;
    let (addr, receiver) = start_http_receiver().await;
    let yaml = format!(
        "{}interval: 200ms\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts:\n{}{}",
        gse_block(&sim, ""),
        hosts(&sim.truth()),
        otlp_block(&format!("http://pusher:pa55%40word@{addr}/v1/metrics"), ""),
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    receiver.request_after(0).await;
    let authorization = receiver
        .received
        .lock()
        .headers
        .get("authorization")
        .cloned();
    exporter.shutdown().await;
    let expected = base64::engine::general_purpose::STANDARD.encode("pusher:pa55@word");
    assert_eq!(authorization, Some(format!("Basic {expected}")));
}

/// A collector that cannot be reached is logged with why: opentelemetry says
/// "network error" whatever the cause (refused, a name not found, TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_is_logged_with_the_cause() {
    let sim = start_sim(SimOptions {
        agents: 4,
        ..SimOptions::default()
    })
    .await;
    // A port nothing listens on: bound, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    let yaml = format!(
        "{}interval: 200ms\ngroups:\n  - name: web\n    bk_biz_id: 2\n    hosts:\n{}{}",
        gse_block(&sim, ""),
        hosts(&sim.truth()),
        otlp_block(&format!("http://pusher:pa55word@{closed}/v1/metrics"), ""),
    );
    std::fs::write(&path, yaml).unwrap();
    let binary = Binary::start(&[format!("--config.file={}", path.display())], &[]).await;
    wait_until("a failed push logged", Duration::from_secs(20), || async {
        binary.logs().contains("OTLP push failed").then_some(())
    })
    .await;
    let (_, logs, _) = binary.stop();
    let failed = logs
        .lines()
        .find(|l| l.contains("OTLP push failed"))
        .unwrap();
    assert!(failed.contains("Connection refused"), "{failed}");
    assert!(!logs.contains("pa55word"), "{logs}");
}
