//! The node mode's own HTTP endpoint, for hosts without node_exporter:
//! `/metrics` (the last rendered checks), `/` (a landing page) and
//! `/-/healthy`.
//!
//! Owns the accept loop with its limits: at most [`MAX_CONNECTIONS`] open
//! connections (more are closed at once) and [`READ_TIMEOUT`] for a
//! client's request headers. Handlers only read the body published by the
//! check loop; a scrape never runs a check.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Open connections at most.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The latest rendered exposition.
pub(crate) type Body = watch::Receiver<Arc<String>>;

fn router(body: Body) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "OK\n" }))
        .route("/", get(landing))
        .with_state(body)
}

async fn metrics(State(body): State<Body>) -> impl IntoResponse {
    let text = body.borrow().clone();
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        text.as_str().to_owned(),
    )
}

async fn landing() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><title>gse_exporter node</title></head><body>\
         <h1>gse_exporter node</h1><p>Checks of this host's GSE agent, from the host itself.</p>\
         <p><a href=\"/metrics\">Metrics</a></p></body></html>",
    )
}

/// Serves until `stop` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    body: Body,
    stop: impl std::future::Future<Output = ()>,
) {
    let app = router(body);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
