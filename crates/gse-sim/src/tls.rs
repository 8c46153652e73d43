//! HTTPS for the simulator, so tests can check the exporter's upstream TLS.
//!
//! Owns [`SimTls`] (certificate, key, optional client CA), the rustls server
//! configuration built from it, and [`TlsListener`], which accepts through a
//! [`SimListener`] and completes each handshake in its own task (one slow or
//! failed handshake never holds up the next client). The plain HTTP path never
//! comes here. Nothing else: routes, faults and replies are the same on both.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

use super::conn::{ConnTag, KillableStream, SimListener};

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve HTTPS with this certificate; with `client_ca_pem`, require a client
/// certificate signed by that CA.
#[derive(Clone, Default)]
pub struct SimTls {
    /// The server certificate chain (PEM), leaf first.
    pub cert_pem: String,
    /// The server's private key (PEM).
    pub key_pem: String,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca_pem: Option<String>,
}

impl fmt::Debug for SimTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTls")
            .field("client_certs_required", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

fn invalid(what: &str, err: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("simulator TLS {what}: {err}"),
    )
}

/// The rustls acceptor for `tls` (HTTP/1.1 only, as the simulator serves).
pub(crate) fn acceptor(tls: &SimTls) -> io::Result<TlsAcceptor> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|_| invalid("key", "not a PEM private key"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("protocol versions", e))?;
    let builder = match &tls.client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                let cert = cert.map_err(|e| invalid("client CA", e))?;
                roots.add(cert).map_err(|e| invalid("client CA", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid("client CA", e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid("certificate and key", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Hands axum connections whose TLS handshake has completed.
#[derive(Debug)]
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<KillableStream>, ConnTag)>,
}

impl TlsListener {
    /// Accepts on `plain` in a task of its own until this listener is dropped.
    pub fn new(plain: SimListener, acceptor: TlsAcceptor) -> Self {
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(plain, acceptor, tx));
        Self { ready }
    }
}

type Ready = mpsc::Sender<(TlsStream<KillableStream>, ConnTag)>;

async fn accept_loop(mut plain: SimListener, acceptor: TlsAcceptor, ready: Ready) {
    loop {
        let (stream, tag) = tokio::select! {
            accepted = plain.accept() => accepted,
            () = ready.closed() => return,
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, tag)).await;
                }
                Ok(Err(err)) => tracing::debug!(error = %err, "simulator TLS handshake failed"),
                Err(_) => tracing::debug!("simulator TLS handshake timed out"),
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<KillableStream>;
    type Addr = ConnTag;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task is gone (it never ends while we live): stall.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnTag::default())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ConnTag {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
