//! The HTTP side: `/metrics` from cached bytes, the landing page, health and
//! readiness, and graceful shutdown.
//!
//! Owns routing, content negotiation (Prometheus text or OpenMetrics, gzip or
//! not) and the page. It never polls GSE and never waits on a poll: every
//! handler reads the published exposition and returns.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::exposition::{Exposition, Published};
use crate::metrics::Format;
use crate::state::GroupSnapshot;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The published exposition.
    pub published: Arc<Published>,
    /// The configured telemetry path (for the landing page).
    pub telemetry_path: String,
    /// Reloads the configuration file.
    pub reloader: Arc<crate::app::Reloader>,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(&state.telemetry_path.clone(), get(metrics))
        .route("/", get(landing))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Parses a Prometheus-style listen address: `:10909`, `0.0.0.0:10909`, `[::1]:10909`.
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.parse().map_err(|_| {
        format!("--web.listen-address {text:?} is not host:port (e.g. :10909 or 127.0.0.1:10909)")
    })
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let format = negotiate_format(&headers);
    let gzip = accepts_gzip(&headers);
    let exposition = state.published.current();
    let body = match format {
        Format::Prometheus => exposition.body(format).clone(),
        // Rendered at most once per snapshot, off the async workers.
        Format::OpenMetrics => match render_off_thread(exposition).await {
            Some(body) => body,
            None => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
    };
    let mut response = if gzip {
        Response::new(HttpBody::new(Chunks::new(body.gzip)))
    } else {
        Response::new(HttpBody::new(Chunks::new(body.plain)))
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// A response body made of ready chunks, with an exact length.
struct Chunks {
    chunks: std::collections::VecDeque<bytes::Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: Vec<bytes::Bytes>) -> Chunks {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            remaining,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let chunk = self.chunks.pop_front();
        if let Some(chunk) = &chunk {
            self.remaining -= chunk.len() as u64;
        }
        std::task::Poll::Ready(chunk.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

async fn render_off_thread(exposition: Arc<Exposition>) -> Option<crate::exposition::Body> {
    tokio::task::spawn_blocking(move || exposition.body(Format::OpenMetrics).clone())
        .await
        .ok()
}

/// OpenMetrics when the scraper lists it before (or without) the plain text format.
fn negotiate_format(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let openmetrics = accept.find("application/openmetrics-text");
    let plain = accept.find("text/plain");
    match (openmetrics, plain) {
        (Some(o), Some(p)) if o < p => Format::OpenMetrics,
        (Some(_), None) => Format::OpenMetrics,
        _ => Format::Prometheus,
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.trim().split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

async fn reload(State(state): State<AppState>) -> Response {
    let reloader = state.reloader.clone();
    match tokio::task::spawn_blocking(move || reloader.reload()).await {
        Ok(Ok(())) => (StatusCode::OK, "Configuration reloaded.\n").into_response(),
        Ok(Err(err)) => {
            let body = format!(
                "Reload failed; the running configuration stays.\n{}\n",
                err.problems().join("\n")
            );
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthy() -> &'static str {
    "Healthy.\n"
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.published.is_ready() {
        (StatusCode::OK, "Ready.\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the first poll cycle has not finished.\n",
        )
            .into_response()
    }
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let exposition = state.published.current();
    Html(landing_page(
        &state.telemetry_path,
        &exposition.snapshot().groups,
    ))
}

fn landing_page(telemetry_path: &str, groups: &[GroupSnapshot]) -> String {
    let mut rows = String::new();
    for g in groups {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}s</td><td>{}</td></tr>",
            escape(&g.name),
            escape(&g.bk_biz_id),
            if g.up { "up" } else { "<b>blind</b>" },
            g.counts.get(crate::state::AgentState::Online),
            g.counts.get(crate::state::AgentState::Offline),
            g.counts.get(crate::state::AgentState::NotFound)
                + g.counts.get(crate::state::AgentState::Unknown),
            g.poll_duration,
            g.last_success.map_or("never".into(), format_unix),
        );
    }
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>GSE Exporter</title></head><body>\
         <h1>GSE Exporter</h1><p>Version {version}. Reports whether BlueKing GSE agents are alive.</p>\
         <ul><li><a href=\"{path}\">Metrics</a></li><li><a href=\"/-/healthy\">Health</a></li>\
         <li><a href=\"/-/ready\">Readiness</a></li></ul>\
         <h2>Groups</h2><table border=\"1\" cellpadding=\"4\"><tr><th>group</th><th>bk_biz_id</th><th>GSE</th>\
         <th>online</th><th>offline</th><th>not found / unknown</th><th>last poll took</th><th>last full success (UTC)</th></tr>\
         {rows}</table></body></html>",
        version = env!("CARGO_PKG_VERSION"),
        path = escape(telemetry_path),
    )
}

fn format_unix(seconds: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(seconds.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn prometheus_2_accept_header_gets_openmetrics() {
        let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            negotiate_format(&headers(&[("accept", accept)])),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate_format(&headers(&[("accept", "text/plain")])),
            Format::Prometheus
        );
        assert_eq!(negotiate_format(&headers(&[])), Format::Prometheus);
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "deflate, gzip"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn listen_addresses_take_the_prometheus_form() {
        assert_eq!(parse_listen_address(":10909").unwrap().port(), 10909);
        assert!(parse_listen_address("127.0.0.1:0").is_ok());
        assert!(parse_listen_address("nonsense").is_err());
    }

    #[test]
    fn landing_page_escapes_group_names() {
        let page = landing_page("/metrics", &[]);
        assert!(page.contains("href=\"/metrics\""));
        assert_eq!(escape("<b>&"), "&lt;b&gt;&amp;");
    }
}
