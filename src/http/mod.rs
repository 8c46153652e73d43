//! The HTTP side: `/metrics` from cached bytes, the landing page, health and
//! readiness, access control, limits and graceful shutdown.
//!
//! Owns the accept loop (TLS from the web configuration, a cap on open
//! connections, a deadline for the TLS handshake and request headers),
//! routing, basic authentication and rate limiting on every route, a cap on
//! concurrent scrapes, content negotiation (Prometheus text or OpenMetrics,
//! gzip or not) and the page. It never polls GSE and never waits on a poll:
//! every handler reads the published exposition and returns. What the web
//! configuration means is [`crate::config::web`]'s; checking a password is
//! [`auth`]'s, the page is [`mod@landing`]'s. A reload is asked of whatever the
//! runner hands in as a [`Reload`]; this layer never loads a config itself.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) mod auth;
mod conn;
mod landing;

use auth::{BasicAuth, Verdict};
use conn::{Client, Connection, Connections};
use landing::landing;

use crate::config::ConfigError;
use crate::config::web::{Refresh, WebAccess, WebConfigFile};
use crate::expose::{Body, Exposition, Format, InflateError, PlainText, Published};
use crate::model::RateLimit;
use crate::pacing::quota;
use crate::telemetry::Rejection;

/// Largest request body a request may say it has (only `/-/reload` may have
/// one, which is never read).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long in-flight requests may finish after shutdown begins (within the
/// runner's whole shutdown deadline).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Longest telemetry path.
const MAX_TELEMETRY_PATH: usize = 256;

/// Limits that keep slow or greedy clients from exhausting the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has for the TLS handshake, each request's headers and a
    /// request body (slowloris protection).
    pub read_timeout: Duration,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// Concurrent `/metrics` requests at most (0: no limit); more get 503.
    pub max_scrapes: usize,
    /// A client that accepts no response bytes for this long is disconnected,
    /// so a reader that stalls cannot hold a scrape slot for ever.
    pub write_stall: Duration,
    /// `POST /-/reload` answers (`--web.enable-lifecycle`); without it, 403.
    pub enable_lifecycle: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_scrapes: 40,
            write_stall: Duration::from_secs(30),
            enable_lifecycle: false,
        }
    }
}

/// Re-reads the configuration on `POST /-/reload` (implemented by the runner).
pub trait Reload: std::fmt::Debug + Send + Sync {
    /// Reloads, in a reload that starts after the call; a bad file is
    /// refused and the running configuration stays.
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<(), Arc<ConfigError>>> + Send + '_>>;
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// The published exposition.
    pub(crate) published: Arc<Published>,
    /// The configured telemetry path (for the landing page).
    pub(crate) telemetry_path: String,
    /// Reloads the configuration file.
    pub(crate) reloader: Arc<dyn Reload>,
    /// TLS, users, headers and rate limit (`--web.config.file`).
    pub(crate) web: Arc<WebConfigFile>,
    /// Server limits.
    pub(crate) limits: Limits,
    /// Access checks with their caches and counters.
    pub(crate) gate: Arc<Gate>,
}

impl AppState {
    /// The web configuration in force, after looking whether its file
    /// changed; whether a change was applied or refused shows on `/metrics`
    /// at once.
    fn web_access(&self) -> Arc<WebAccess> {
        let refresh = self.web.refresh();
        if refresh != Refresh::Unchanged {
            let published = self.published.clone();
            published
                .telemetry()
                .record_web_config_reload(refresh == Refresh::Applied);
            tokio::task::spawn_blocking(move || published.refresh());
        }
        self.web.current()
    }
}

/// bcrypt checks run at once.
const BCRYPT_SLOTS: usize = 2;
/// bcrypt checks waiting for a slot (a burst of new scrapers, each about
/// 50-100 ms at the usual cost: about a second for the last); more are
/// refused with 429 at once.
const BCRYPT_QUEUE: usize = 24;
/// bcrypt checks one client address may have running or waiting; more of
/// its are refused with 429 at once. With one queue for all, ten
/// connections of one client guessing passwords filled it, and every other
/// client's first login was refused for as long as they kept at it.
const BCRYPT_PER_CLIENT: usize = 2;

/// Per-server access state: the password cache, the scrape slots, the rate limiter.
#[derive(Debug)]
pub(crate) struct Gate {
    auth: BasicAuth,
    /// bcrypt runs at most [`BCRYPT_SLOTS`] at a time, so a password-guessing
    /// flood cannot take the CPU from polling; cached credentials skip it.
    bcrypt_slots: Semaphore,
    /// Checks waiting for a bcrypt slot, at most [`BCRYPT_QUEUE`].
    bcrypt_waiting: std::sync::atomic::AtomicUsize,
    /// Checks running or waiting by client, at most [`BCRYPT_PER_CLIENT`]
    /// each (a client with none has no entry).
    bcrypt_clients: parking_lot::Mutex<HashMap<Client, usize>>,
    scrapes: Option<Arc<Semaphore>>,
    rate: parking_lot::Mutex<Option<RateLimiter>>,
}

#[derive(Debug)]
struct RateLimiter {
    setting: RateLimit,
    bucket: governor::DefaultDirectRateLimiter,
}

impl Gate {
    /// Access state for `limits`.
    pub(crate) fn new(limits: &Limits) -> Gate {
        Gate {
            auth: BasicAuth::default(),
            bcrypt_slots: Semaphore::new(BCRYPT_SLOTS),
            bcrypt_waiting: std::sync::atomic::AtomicUsize::new(0),
            bcrypt_clients: parking_lot::Mutex::new(HashMap::new()),
            scrapes: (limits.max_scrapes > 0).then(|| Arc::new(Semaphore::new(limits.max_scrapes))),
            rate: parking_lot::Mutex::new(None),
        }
    }

    /// Whether the web configuration's token bucket has room for a request.
    fn rate_allows(&self, setting: Option<RateLimit>) -> bool {
        let Some(limit) = setting else {
            return true;
        };
        let mut rate = self.rate.lock();
        if rate.as_ref().map(|r| r.setting) != setting {
            *rate = quota(limit).map(|q| RateLimiter {
                setting: limit,
                bucket: governor::RateLimiter::direct(q),
            });
        }
        rate.as_ref().is_none_or(|r| r.bucket.check().is_ok())
    }
}

/// A turn at bcrypt: a slot, and the client's count of checks, both given
/// back when it is dropped.
struct BcryptTurn<'a> {
    _slot: tokio::sync::SemaphorePermit<'a>,
    _client: Option<ClientChecks<'a>>,
}

/// One check of a client, counted while it runs or waits.
struct ClientChecks<'a> {
    counts: &'a parking_lot::Mutex<HashMap<Client, usize>>,
    client: Client,
}

impl<'a> ClientChecks<'a> {
    /// Counts a check of `client`; `None` when it has its share already.
    fn take(
        counts: &'a parking_lot::Mutex<HashMap<Client, usize>>,
        client: Client,
    ) -> Option<ClientChecks<'a>> {
        let mut all = counts.lock();
        let count = all.entry(client).or_default();
        if *count >= BCRYPT_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(ClientChecks { counts, client })
    }
}

impl Drop for ClientChecks<'_> {
    fn drop(&mut self) {
        let mut all = self.counts.lock();
        if let Some(count) = all.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                all.remove(&self.client);
            }
        }
    }
}

/// Builds the router.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(&state.telemetry_path.clone(), get(metrics))
        .route("/", get(landing))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), access))
        .with_state(state)
}

/// A run of failed accepts (out of descriptors, most often): each waits
/// longer, 5 ms doubling to 1 s, as Go's server does, and only the first is
/// logged at warn, then the end of the run; 20 warnings a second filled the
/// log while a flood of connections lasted.
#[derive(Default)]
struct AcceptFailures {
    count: u64,
    delay: Duration,
}

impl AcceptFailures {
    /// How long to wait after this failure.
    fn failed(&mut self, err: &std::io::Error) -> Duration {
        self.count += 1;
        self.delay = (self.delay * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
        if self.count == 1 {
            tracing::warn!(error = %err, "accepting a connection failed; retrying, with longer waits while it fails");
        } else {
            tracing::debug!(error = %err, failures = self.count, "accepting a connection failed again");
        }
        self.delay
    }

    /// A connection was accepted: the end of any run of failures.
    fn recovered(&mut self) {
        if self.count > 0 {
            tracing::info!(failures = self.count, "accepting connections again");
            *self = AcceptFailures::default();
        }
    }
}

/// Serves until `shutdown` resolves, then gives in-flight requests a grace
/// period to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(router(state.clone()));
    let connections = Arc::new(Connections::new(state.limits.max_connections));
    let (stopping, stop_watch) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    let mut failing = AcceptFailures::default();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    failing.recovered();
                    stream
                }
                Err(err) => {
                    // Out of descriptors and the like: let it pass, don't spin.
                    tokio::time::sleep(failing.failed(&err)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let telemetry = state.published.telemetry();
        let Some((slot, evicted)) = connections.admit() else {
            telemetry.record_rejection(Rejection::TooManyConnections);
            continue;
        };
        if evicted {
            telemetry.record_rejection(Rejection::IdleClosed);
        }
        let connection = Connection {
            state: state.clone(),
            service: service.clone(),
            connections: connections.clone(),
            slot,
            stopping: stop_watch.clone(),
            client: stream.peer_addr().ok().map(|a| conn::Client(a.ip())),
        };
        tokio::spawn(connection.run(stream));
    }
    drop(listener);
    let _ = stopping.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.all_closed())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
    Ok(())
}

impl Gate {
    /// A turn to run bcrypt for `client`, waiting behind at most
    /// [`BCRYPT_QUEUE`] others; `None` when the queue is full, or when the
    /// client already has [`BCRYPT_PER_CLIENT`] checks running or waiting.
    async fn bcrypt_turn(&self, client: Option<Client>) -> Option<BcryptTurn<'_>> {
        use std::sync::atomic::Ordering;
        let mine = match client {
            Some(client) => Some(ClientChecks::take(&self.bcrypt_clients, client)?),
            None => None,
        };
        if let Ok(permit) = self.bcrypt_slots.try_acquire() {
            return Some(BcryptTurn {
                _slot: permit,
                _client: mine,
            });
        }
        // Counted while it waits, and no longer once it stops waiting, even
        // when the request is dropped meanwhile (its client went away).
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let waiting = Waiting(&self.bcrypt_waiting);
        if self.bcrypt_waiting.fetch_add(1, Ordering::AcqRel) >= BCRYPT_QUEUE {
            return None;
        }
        let permit = self.bcrypt_slots.acquire().await.ok()?;
        drop(waiting);
        Some(BcryptTurn {
            _slot: permit,
            _client: mine,
        })
    }
}

/// Rate limit and basic authentication for every route, and the configured
/// security headers on every response.
async fn access(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let web = state.web_access();
    let mut response = if let Some(problem) = host_problem(&request) {
        (StatusCode::BAD_REQUEST, problem).into_response()
    } else {
        let client = request.extensions().get::<Client>().copied();
        match admit(&state, &web, request.headers(), client).await {
            Ok(()) => next.run(request).await,
            Err(rejection) => rejection,
        }
    };
    for (name, value) in &web.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// What is wrong with an HTTP/1.1 request's `Host` header, which must be
/// given exactly once (RFC 9112 3.2: a server answers 400 otherwise, as Go's
/// does); HTTP/1.0 may leave it out.
fn host_problem(request: &Request) -> Option<&'static str> {
    if request.version() != axum::http::Version::HTTP_11 {
        return None;
    }
    match request.headers().get_all(header::HOST).iter().count() {
        1 => None,
        0 => Some("Bad Request: missing required Host header.\n"),
        _ => Some("Bad Request: too many Host headers.\n"),
    }
}

async fn admit(
    state: &AppState,
    web: &Arc<WebAccess>,
    headers: &HeaderMap,
    client: Option<Client>,
) -> Result<(), Response> {
    let telemetry = state.published.telemetry();
    if !state.gate.rate_allows(web.rate_limit) {
        telemetry.record_rejection(Rejection::RateLimited);
        return Err((StatusCode::TOO_MANY_REQUESTS, "Too many requests.\n").into_response());
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match check_password(&state.gate, web, authorization, client).await {
        Verdict::Open | Verdict::Allowed => Ok(()),
        Verdict::Busy => {
            telemetry.record_rejection(Rejection::RateLimited);
            Err((
                StatusCode::TOO_MANY_REQUESTS,
                "Too many password checks at once; try again.\n",
            )
                .into_response())
        }
        Verdict::Denied => {
            telemetry.record_rejection(Rejection::Unauthorized);
            let mut response = (StatusCode::UNAUTHORIZED, "Unauthorized.\n").into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"gse_exporter\""),
            );
            Err(response)
        }
    }
}

/// Checks a request's credentials: from the cache, else with bcrypt, at
/// most [`BCRYPT_SLOTS`] at a time and [`BCRYPT_QUEUE`] waiting their turn;
/// past that a check is refused at once ([`Verdict::Busy`]). Missing or
/// malformed credentials are refused with no turn to wait for. Guesses
/// queued without a bound held their connections busy: at
/// `--web.max-connections` every new connection was closed, a scraper's
/// with a cached password too, and a request with no credentials waited
/// seconds for its 401.
async fn check_password(
    gate: &Arc<Gate>,
    web: &Arc<WebAccess>,
    authorization: Option<String>,
    client: Option<Client>,
) -> Verdict {
    if web.users.is_empty() {
        return Verdict::Open;
    }
    if let Some(verdict) = gate.auth.precheck(&web.users, authorization.as_deref()) {
        return verdict;
    }
    let Some(_turn) = gate.bcrypt_turn(client).await else {
        return Verdict::Busy;
    };
    let (gate, web) = (gate.clone(), web.clone());
    tokio::task::spawn_blocking(move || gate.auth.check(&web.users, authorization.as_deref()))
        .await
        .unwrap_or(Verdict::Denied)
}

/// Checks `--web.telemetry-path`: an absolute path of letters, digits and
/// `-_.~/`, at most 256 bytes, that is not `/` (the landing page) and not
/// under `/-/` (health, readiness, reload).
pub fn check_telemetry_path(path: &str) -> Result<(), &'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~/".contains(c);
    if !path.starts_with('/') {
        Err("must start with /")
    } else if path == "/" || path.starts_with("/-/") {
        Err("must not be / or under /-/: the landing page, health, readiness and reload live there")
    } else if path.len() > MAX_TELEMETRY_PATH {
        Err("must be at most 256 bytes")
    } else if !path.chars().all(allowed) || path.contains("//") {
        Err("may hold only letters, digits, '-', '_', '.', '~' and single '/'")
    } else {
        Ok(())
    }
}

/// Parses a Prometheus-style listen address: `:10909` (every interface),
/// `0.0.0.0:10909`, `[::1]:10909`, or a host name and port
/// (`localhost:10909`), the name resolved once, here, to its first IPv4
/// address if it has one, as Go's listeners do (a name was refused, though
/// every Go exporter takes `localhost:9100`). The node mode's
/// `--web.listen-address` is read here too.
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    if let Ok(addr) = full.parse() {
        return Ok(addr);
    }
    let bad = |why: &str| {
        let shown = crate::config::cut(text, crate::config::MAX_QUOTE_BYTES);
        format!(
            "--web.listen-address \"{shown}\" {why} (e.g. :10909, 127.0.0.1:10909 or localhost:10909)"
        )
    };
    let name_and_port = full.rsplit_once(':').filter(|(host, port)| {
        let name = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        !host.is_empty() && host.len() <= 253 && name && port.parse::<u16>().is_ok()
    });
    let Some((host, port)) = name_and_port else {
        return Err(bad("is not host:port"));
    };
    let port: u16 = port.parse().unwrap_or_default();
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| bad(&format!("cannot be resolved ({err})")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad("names no address"))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let slot = match &state.gate.scrapes {
        None => None,
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                state
                    .published
                    .telemetry()
                    .record_rejection(Rejection::TooManyScrapes);
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many concurrent scrapes; see --web.max-requests.\n",
                )
                    .into_response();
            }
        },
    };
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
    // The scrape slot is held until the body is sent (or the client leaves).
    let chunks = Chunks::new(body, gzip, slot);
    let mut response = Response::new(HttpBody::new(chunks));
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

/// A response body with an exact length: the gzip body's chunks as they
/// are, or the plain text a chunk at a time, its pieces held compressed
/// inflated as the client takes them. hyper asks for the next chunk only when
/// its write buffer has room, so a client that reads slowly holds a few
/// inflated chunks, never a whole inflated body.
struct Chunks {
    source: Source,
    remaining: u64,
    _slot: Option<OwnedSemaphorePermit>,
}

enum Source {
    Gzip(std::collections::VecDeque<bytes::Bytes>),
    Plain(PlainText),
}

impl Chunks {
    fn new(body: Body, gzip: bool, slot: Option<OwnedSemaphorePermit>) -> Chunks {
        let (source, remaining) = if gzip {
            let len = body.gzip_len();
            let chunks = body.gzip.into_iter().filter(|c| !c.is_empty());
            (Source::Gzip(chunks.collect()), len)
        } else {
            (Source::Plain(body.plain_text()), body.plain_len())
        };
        Chunks {
            source,
            remaining: remaining as u64,
            _slot: slot,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = InflateError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let chunk = match &mut self.source {
            Source::Gzip(chunks) => chunks.pop_front().map(Ok),
            Source::Plain(text) => text.next(),
        };
        if let Some(Ok(chunk)) = &chunk {
            self.remaining -= chunk.len() as u64;
        }
        std::task::Poll::Ready(chunk.map(|c| c.map(http_body::Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Gzip(chunks) => chunks.is_empty(),
            Source::Plain(text) => text.is_done(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

async fn render_off_thread(exposition: Arc<Exposition>) -> Option<Body> {
    tokio::task::spawn_blocking(move || exposition.body(Format::OpenMetrics).clone())
        .await
        .ok()
}

/// The format the scraper prefers by its `Accept` weights (RFC 9110 12.5.1,
/// as Prometheus' own negotiation reads them): OpenMetrics 1.0.0 or 0.0.1
/// (no version: the latest) against the plain text format (`text/plain`,
/// `text/*`, `*/*`); the heavier wins, the one listed first on a tie, and a
/// weight of zero refuses. Media types in any letter case; one that is
/// neither is passed over. Nothing acceptable: the plain text format.
fn negotiate_format(headers: &HeaderMap) -> Format {
    let mut best: Option<(f64, Format)> = None;
    let ranges = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for range in ranges {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut weight, mut version) = (1.0, None);
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => weight = value.trim().parse::<f64>().unwrap_or(0.0),
                "version" => version = Some(value.trim().trim_matches('"').to_string()),
                _ => {}
            }
        }
        let format = match media.as_str() {
            "application/openmetrics-text"
                if version
                    .as_deref()
                    .is_none_or(|v| v == "1.0.0" || v == "0.0.1") =>
            {
                Format::OpenMetrics
            }
            "text/plain" | "text/*" | "*/*" => Format::Prometheus,
            _ => continue,
        };
        if weight > 0.0 && best.is_none_or(|(top, _)| weight > top) {
            best = Some((weight, format));
        }
    }
    best.map_or(Format::Prometheus, |(_, format)| format)
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
            // A weight of zero refuses a coding (RFC 9110 12.4.2): `q` in
            // either case, zero in any spelling (`0`, `0.000`).
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(name, q)| {
                    name.trim().eq_ignore_ascii_case("q")
                        && q.trim().parse::<f64>().is_ok_and(|q| q == 0.0)
                })
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

async fn reload(State(state): State<AppState>, request: Request) -> Response {
    if !state.limits.enable_lifecycle {
        return (
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled (--web.enable-lifecycle); SIGHUP reloads.\n",
        )
            .into_response();
    }
    // The body means nothing and is not waited for: read, a body sent slowly
    // kept its connection busy (a request in progress) for up to the read
    // timeout, and a client with `--web.max-connections` of them locked
    // every scraper out. Unread, it is dropped after the answer, and the
    // connection with it. One said to be over the bound is refused at once.
    if body_declared_over(request.headers(), MAX_BODY_BYTES) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.\n").into_response();
    }
    drop(request);
    match state.reloader.reload().await {
        Ok(()) => (StatusCode::OK, "Configuration reloaded.\n").into_response(),
        Err(err) => {
            // Short, and never a value from a file: the log has the details.
            let body = format!(
                "Reload failed; the running configuration stays. {}.\n",
                err.brief()
            );
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}

/// Whether a request's `Content-Length` says its body is over `max` bytes
/// (a length that is not a number is hyper's to refuse).
fn body_declared_over(headers: &axum::http::HeaderMap, max: usize) -> bool {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length > max as u64)
}

/// An unknown path, said as Go's server says it (the answer was empty).
async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

/// A method the path does not take (its `Allow` header names those it does).
async fn method_not_allowed() -> (StatusCode, &'static str) {
    (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.\n")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::Rows;
    use crate::expose::fixtures::{fleet, heartbeats_moved, snapshot};
    use crate::telemetry::Telemetry;

    #[derive(Debug)]
    struct NoReload;

    impl Reload for NoReload {
        fn reload(
            &self,
        ) -> Pin<Box<dyn Future<Output = Result<(), Arc<ConfigError>>> + Send + '_>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A server on loopback for `published`; dropping the sender stops it.
    async fn server(published: Arc<Published>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits::default();
        let state = AppState {
            published,
            telemetry_path: "/metrics".into(),
            reloader: Arc::new(NoReload),
            web: Arc::new(WebConfigFile::open(None).unwrap()),
            limits,
            gate: Arc::new(Gate::new(&limits)),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    #[tokio::test]
    async fn plain_and_gzip_scrapes_of_a_body_held_partly_compressed_read_the_same() {
        let published = Arc::new(Published::new(Arc::new(Telemetry::default())));
        let groups = fleet(200);
        published.publish(snapshot(&groups, &[]), Rows::Drop);
        published.publish(snapshot(&heartbeats_moved(&groups), &[]), Rows::Drop);
        let body = published.current().body(Format::Prometheus).clone();
        assert!(
            body.compressed_pieces() > 0,
            "heartbeat segments held compressed"
        );
        let (addr, _stop) = server(published).await;
        let client = reqwest::Client::builder().no_gzip().build().unwrap();
        let get = |encoding: &'static str| {
            client
                .get(format!("http://{addr}/metrics"))
                .header(header::ACCEPT_ENCODING, encoding)
                .send()
        };
        let plain = get("identity").await.unwrap();
        let length = plain.headers()[header::CONTENT_LENGTH].to_str().unwrap();
        assert_eq!(length, body.plain_len().to_string());
        let plain = plain.bytes().await.unwrap();
        assert_eq!(plain.len(), body.plain_len());
        let zipped = get("gzip").await.unwrap();
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&zipped.bytes().await.unwrap()[..]),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, plain);
        let text = String::from_utf8(unzipped).unwrap();
        assert!(text.contains("gse_agent_heartbeat_age_seconds{group=\"group-0\""));
    }

    /// A response to a client that reads slowly asks for the next piece of
    /// text only when hyper has room to write it: each poll gives one chunk,
    /// a compressed piece inflated at most 64 KiB at a time.
    #[test]
    fn the_plain_body_gives_one_bounded_chunk_per_poll() {
        use http_body::Body as _;
        let published = Published::new(Arc::new(Telemetry::default()));
        let groups = fleet(200);
        published.publish(snapshot(&groups, &[]), Rows::Drop);
        published.publish(snapshot(&heartbeats_moved(&groups), &[]), Rows::Drop);
        let body = published.current().body(Format::Prometheus).clone();
        let total = body.plain_len() as u64;
        let mut chunks = std::pin::pin!(Chunks::new(body, false, None));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut sent = 0;
        while let std::task::Poll::Ready(Some(frame)) = chunks.as_mut().poll_frame(&mut cx) {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= 64 * 1024);
            sent += chunk.len() as u64;
            assert_eq!(chunks.size_hint().exact(), Some(total - sent));
        }
        assert_eq!(sent, total);
        assert!(chunks.is_end_stream());
    }

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

    /// Weights decide, not the order a format is named in; case does not
    /// matter; a refused or unknown type never wins (probe 3: the position
    /// of two substrings decided).
    #[test]
    fn accept_weights_and_case_decide_the_format() {
        let format = |accept: &'static str| negotiate_format(&headers(&[("accept", accept)]));
        let cases = [
            (
                "application/openmetrics-text;q=0, text/plain",
                Format::Prometheus,
            ),
            (
                "text/plain;q=0.1, application/openmetrics-text;q=0.9",
                Format::OpenMetrics,
            ),
            ("APPLICATION/OPENMETRICS-TEXT", Format::OpenMetrics),
            ("x-application/openmetrics-textual", Format::Prometheus),
            (
                "application/openmetrics-text;version=2.0.0",
                Format::Prometheus,
            ),
            (
                "application/openmetrics-text; version=\"1.0.0\"; Q=0.5, */*;q=0.6",
                Format::Prometheus,
            ),
            (
                "application/openmetrics-text;q=0.5, text/plain;q=0.5",
                Format::OpenMetrics,
            ),
            (
                "text/plain;q=0.5, application/openmetrics-text;q=0.5",
                Format::Prometheus,
            ),
            (
                "application/openmetrics-text;q=nonsense, text/plain;q=0.1",
                Format::Prometheus,
            ),
            ("application/json", Format::Prometheus),
        ];
        for (accept, want) in cases {
            assert_eq!(format(accept), want, "{accept}");
        }
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "deflate, gzip"
        )])));
        for refused in [
            "gzip;q=0",
            "gzip;Q=0",
            "gzip; q=0.000",
            "gzip ;q = 0.0",
            "br, gzip;q=00",
        ] {
            assert!(
                !accepts_gzip(&headers(&[("accept-encoding", refused)])),
                "{refused}"
            );
        }
        for accepted in [
            "gzip;q=0.001",
            "gzip;Q=1",
            "gzip;q=bad",
            "identity;q=0, gzip",
        ] {
            assert!(
                accepts_gzip(&headers(&[("accept-encoding", accepted)])),
                "{accepted}"
            );
        }
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn telemetry_paths_that_cannot_be_served_are_refused() {
        for good in ["/metrics", "/gse/metrics", "/metrics.txt", "/a-b_c~d"] {
            assert_eq!(check_telemetry_path(good), Ok(()), "{good}");
        }
        for bad in [
            "metrics",
            "",
            "/",
            "/-/healthy",
            "/-/metrics",
            "/{id}",
            "/:id",
            "/*rest",
            "/a b",
            "//metrics",
            "/metrics?x=1",
            "/métriques",
        ] {
            assert!(check_telemetry_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_telemetry_path(&format!("/{}", "m".repeat(300))).is_err());
    }

    #[test]
    fn listen_addresses_take_the_prometheus_form() {
        assert_eq!(parse_listen_address(":10909").unwrap().port(), 10909);
        assert!(parse_listen_address("127.0.0.1:0").is_ok());
        assert!(parse_listen_address("nonsense").is_err());
        assert!(parse_listen_address("[::1]:10910").is_ok());
        assert!(parse_listen_address("localhost").is_err(), "no port");
        assert_eq!(
            parse_listen_address("localhost:10909"),
            Ok("127.0.0.1:10909".parse().unwrap()),
            "a name, resolved"
        );
        let refused = parse_listen_address(&format!("{}:1", "x!".repeat(500))).unwrap_err();
        assert!(
            refused.len() < 250 && refused.contains("is not host:port"),
            "{refused}"
        );
    }

    /// At most [`BCRYPT_QUEUE`] checks wait for the [`BCRYPT_SLOTS`]; the
    /// next is refused at once, and a waiter whose request is dropped (its
    /// client went away) frees its place. Guesses queued without a bound held
    /// their connections busy, and every connection at the cap was closed.
    #[tokio::test]
    async fn password_checks_wait_in_a_bounded_queue() {
        use futures::FutureExt;
        let gate = Gate::new(&Limits::default());
        let running: Vec<_> = (0..BCRYPT_SLOTS)
            .map(|_| {
                gate.bcrypt_turn(None)
                    .now_or_never()
                    .flatten()
                    .expect("a free slot")
            })
            .collect();
        let mut waiting: Vec<_> = (0..BCRYPT_QUEUE)
            .map(|_| Box::pin(gate.bcrypt_turn(None)))
            .collect();
        for waiter in &mut waiting {
            assert!(waiter.as_mut().now_or_never().is_none(), "waits its turn");
        }
        assert!(
            matches!(gate.bcrypt_turn(None).now_or_never(), Some(None)),
            "refused at once"
        );
        waiting.pop();
        let mut next = Box::pin(gate.bcrypt_turn(None));
        assert!(
            next.as_mut().now_or_never().is_none(),
            "the dropped waiter's place is free"
        );
        drop(running);
        assert!(
            waiting[0].as_mut().now_or_never().flatten().is_some(),
            "first come, first served"
        );
    }

    /// A client has at most [`BCRYPT_PER_CLIENT`] checks running or
    /// waiting; its next is refused at once while another client's is
    /// taken, and a check that ends gives its share back.
    #[tokio::test]
    async fn each_client_has_its_share_of_password_checks() {
        use futures::FutureExt;
        let gate = Gate::new(&Limits::default());
        let client = |last: u8| Some(Client(std::net::IpAddr::from([127, 0, 0, last])));
        let mut guessing: Vec<_> = (0..BCRYPT_PER_CLIENT)
            .map(|_| {
                gate.bcrypt_turn(client(1))
                    .now_or_never()
                    .flatten()
                    .expect("a free slot")
            })
            .collect();
        assert!(
            matches!(gate.bcrypt_turn(client(1)).now_or_never(), Some(None)),
            "over its share: refused at once"
        );
        let mut other = Box::pin(gate.bcrypt_turn(client(2)));
        assert!(other.as_mut().now_or_never().is_none(), "waits its turn");
        guessing.pop();
        let taken = other.as_mut().now_or_never().flatten();
        assert!(taken.is_some(), "taken when a slot frees");
        let mut again = Box::pin(gate.bcrypt_turn(client(1)));
        assert!(
            again.as_mut().now_or_never().is_none(),
            "within its share again: waits"
        );
        assert!(gate.bcrypt_clients.lock().len() <= 2);
    }

    #[test]
    fn failed_accepts_wait_longer_each_time_and_start_over_once_one_succeeds() {
        let err = std::io::Error::from_raw_os_error(24);
        let mut failing = AcceptFailures::default();
        let waits: Vec<u128> = (0..10).map(|_| failing.failed(&err).as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        failing.recovered();
        assert_eq!(failing.failed(&err), Duration::from_millis(5));
    }
}
