//! One accepted connection, and the set of open ones.
//!
//! Owns what happens between `accept` and the router: the cap on open
//! connections with its fairness rule (when the cap is reached, the
//! connection idle the longest is closed to make room, so a client holding
//! idle connections cannot lock others out; only when every connection is
//! busy is a new one refused), the TLS handshake with its deadline, HTTP/1.1
//! with header and write deadlines, and closing connections on shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body as HttpBody;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use super::AppState;
use crate::telemetry::Rejection;

type Service = TowerToHyperService<Router>;

/// One open connection as the set of them sees it.
#[derive(Debug)]
pub(super) struct Slot {
    id: u64,
    /// Requests in progress (a response counts until its body is sent).
    busy: AtomicUsize,
    /// Whether a request of it has been answered.
    answered: AtomicBool,
    /// When it last became idle (or was opened), as a count of such events
    /// that only grows: of two connections, the one idle longer has the
    /// smaller number, even within one millisecond.
    idle_since: AtomicU64,
    /// Told to close (it was the idlest when room was needed).
    close: Notify,
}

/// The open connections, and which of them are idle.
#[derive(Debug)]
pub(super) struct Connections {
    max: usize,
    open: parking_lot::Mutex<HashMap<u64, Arc<Slot>>>,
    next: AtomicU64,
    closed: Notify,
    /// The next value of a [`Slot`]'s `idle_since`.
    ticks: AtomicU64,
}

impl Connections {
    pub(super) fn new(max: usize) -> Connections {
        Connections {
            max: max.max(1),
            open: parking_lot::Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            closed: Notify::new(),
            ticks: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::AcqRel)
    }

    /// Room for one more connection: at once under the cap, else by closing
    /// an idle connection (then `true`); `None` when every connection is
    /// busy. The one closed is the idlest of those that have had an answer,
    /// and only when none has, the idlest of those still to send their
    /// first request: a client whose kept-alive connection is closed opens
    /// another and asks again, but one closed before its first request (a
    /// scraper in its TLS handshake while others are answered) fails.
    pub(super) fn admit(&self) -> Option<(Arc<Slot>, bool)> {
        let mut open = self.open.lock();
        let evicted = open.len() >= self.max;
        if evicted {
            let idlest = open
                .values()
                .filter(|s| s.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|s| {
                    let waiting = !s.answered.load(Ordering::Acquire);
                    (waiting, s.idle_since.load(Ordering::Acquire))
                })?
                .id;
            if let Some(slot) = open.remove(&idlest) {
                slot.close.notify_one();
            }
        }
        let slot = Arc::new(Slot {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            busy: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
            idle_since: AtomicU64::new(self.now()),
            close: Notify::new(),
        });
        open.insert(slot.id, slot.clone());
        Some((slot, evicted))
    }

    fn release(&self, slot: &Slot) {
        self.open.lock().remove(&slot.id);
        self.closed.notify_waiters();
    }

    /// Waits until every connection has closed.
    pub(super) async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open.lock().is_empty() {
                return;
            }
            closed.await;
        }
    }
}

/// A request in progress on a connection, until its response body is sent
/// or dropped.
struct Busy {
    slot: Arc<Slot>,
    connections: Arc<Connections>,
}

impl Busy {
    fn new(slot: Arc<Slot>, connections: Arc<Connections>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy { slot, connections }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.connections.now();
        self.slot.idle_since.store(now, Ordering::Release);
        self.slot.answered.store(true, Ordering::Release);
        self.slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy until it is sent.
struct BusyBody {
    body: HttpBody,
    _busy: Busy,
}

impl http_body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The address a request came from (its connection's peer), in the
/// request's extensions for the layers that treat clients apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Client(pub(super) std::net::IpAddr);

/// The router behind a connection, counting the requests in progress.
struct BusyService {
    service: Service,
    slot: Arc<Slot>,
    connections: Arc<Connections>,
    client: Option<Client>,
}

type Answer = Result<hyper::Response<BusyBody>, Infallible>;

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for BusyService {
    type Response = hyper::Response<BusyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, mut request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let busy = Busy::new(self.slot.clone(), self.connections.clone());
        if let Some(client) = self.client {
            request.extensions_mut().insert(client);
        }
        let response = self.service.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| BusyBody { body, _busy: busy }))
        })
    }
}

/// One accepted connection.
pub(super) struct Connection {
    pub(super) state: AppState,
    pub(super) service: Service,
    pub(super) connections: Arc<Connections>,
    pub(super) slot: Arc<Slot>,
    /// True once the server shuts down.
    pub(super) stopping: watch::Receiver<bool>,
    /// Where it comes from.
    pub(super) client: Option<Client>,
}

impl Connection {
    pub(super) async fn run(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let Some(tls) = self.state.web_access().tls.clone() else {
            return self.http(stream).await;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let handshake = async move {
            if sends_plain_http(&stream).await {
                answer_plain_http(stream).await;
                return Err(std::io::Error::other(
                    "a plain HTTP request to the TLS port",
                ));
            }
            acceptor.accept(stream).await
        };
        let handshake = tokio::time::timeout(self.state.limits.read_timeout, handshake);
        let mut stopping = self.stopping.clone();
        let outcome = tokio::select! {
            outcome = handshake => outcome,
            () = self.slot.close.notified() => return self.release(),
            _ = stopping.wait_for(|s| *s) => return self.release(),
        };
        match outcome {
            Ok(Ok(stream)) => return self.http(stream).await,
            Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
        self.state
            .published
            .telemetry()
            .record_rejection(Rejection::TlsHandshake);
        self.release();
    }

    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.state.limits.read_timeout)
            .keep_alive(true);
        let io = StallGuard::new(io, self.state.limits.write_stall);
        let conn = builder.serve_connection(TokioIo::new(io), self.busy_service());
        tokio::pin!(conn);
        let mut stopping = self.stopping.clone();
        let mut closing = false;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                () = self.slot.close.notified(), if !closing => {
                    // Closed to make room, so idle when chosen: no request
                    // to finish unless one began since. A graceful shutdown
                    // would wait for a request part way through its headers
                    // until the header timeout, the descriptor held past the
                    // cap meanwhile.
                    if self.slot.busy.load(Ordering::Acquire) == 0 {
                        break Ok(());
                    }
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = stopping.wait_for(|s| *s), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(err) = result {
            tracing::debug!(error = %err, "HTTP connection ended with an error");
        }
        self.release();
    }

    /// The router, marking the connection busy from a request's headers to
    /// the end of its response.
    fn busy_service(&self) -> BusyService {
        BusyService {
            service: self.service.clone(),
            slot: self.slot.clone(),
            connections: self.connections.clone(),
            client: self.client,
        }
    }

    fn release(&self) {
        self.connections.release(&self.slot);
    }
}

/// Whether a client of the TLS port opened with plain HTTP: a TLS record
/// starts with a content type byte (22 for a handshake), an HTTP request
/// with a method's capital letter.
async fn sends_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// Answers a plain HTTP request on the TLS port with a 400 that says so, as
/// Go's server does (a scraper configured with `http://` saw a bare TLS alert
/// or "HTTP/0.9"), then closes.
async fn answer_plain_http(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The request read first (what has come of it), so that closing does
    // not reset the connection over unread bytes before the answer is read.
    let mut request = [0u8; 8192];
    let _ = stream.read(&mut request).await;
    const ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
    let _ = stream.write_all(ANSWER).await;
    let _ = stream.shutdown().await;
}

/// Fails writes that make no progress for a while (a client that stopped
/// reading); reads pass through.
struct StallGuard<I> {
    io: I,
    limit: Duration,
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> StallGuard<I> {
    fn new(io: I, limit: Duration) -> StallGuard<I> {
        StallGuard {
            io,
            limit,
            stalled_since: None,
        }
    }

    /// Passes a write's result on, arming the stall timer while it is pending.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if result.is_ready() {
            self.stalled_since = None;
            return result;
        }
        let limit = self.limit;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client stopped reading the response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for StallGuard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for StallGuard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_open(connections: &Connections, slot: &Slot) -> bool {
        connections.open.lock().contains_key(&slot.id)
    }

    /// An answer on `slot`: a request begun and its response sent.
    fn answer(connections: &Arc<Connections>, slot: &Arc<Slot>) {
        drop(Busy::new(slot.clone(), connections.clone()));
    }

    #[test]
    fn room_is_made_by_closing_an_answered_connection_before_a_waiting_one() {
        let connections = Arc::new(Connections::new(3));
        let (waiting, _) = connections.admit().unwrap();
        let (first, _) = connections.admit().unwrap();
        let (second, _) = connections.admit().unwrap();
        answer(&connections, &first);
        answer(&connections, &second);
        // `waiting` has been idle longest, but has not sent its first request.
        let (third, evicted) = connections.admit().unwrap();
        assert!(evicted);
        assert!(is_open(&connections, &waiting), "the waiting one is kept");
        assert!(
            !is_open(&connections, &first),
            "the idlest answered one is closed"
        );
        assert!(is_open(&connections, &second));
        // With no answered one idle, the idlest waiting one goes.
        let _busy = Busy::new(second.clone(), connections.clone());
        connections.admit().unwrap();
        assert!(!is_open(&connections, &waiting));
        assert!(is_open(&connections, &second) && is_open(&connections, &third));
        // Every one busy: no room.
        let open: Vec<Arc<Slot>> = connections.open.lock().values().cloned().collect();
        let _all: Vec<Busy> = open
            .into_iter()
            .filter(|s| s.id != second.id)
            .map(|s| Busy::new(s, connections.clone()))
            .collect();
        assert!(connections.admit().is_none());
    }

    #[test]
    fn among_equals_the_connection_idle_longest_is_closed() {
        // Many within one millisecond: the order is still exact.
        let connections = Arc::new(Connections::new(64));
        let slots: Vec<_> = (0..64).map(|_| connections.admit().unwrap().0).collect();
        for (i, slot) in slots.iter().enumerate() {
            connections.admit().unwrap();
            assert!(!is_open(&connections, slot), "connection {i}");
        }
    }
}
