//! The `tls:` block of `gse:` and `cmdb:`: how the exporter verifies the
//! upstream's certificate and which client certificate it presents.
//!
//! Owns the block's shape ([`RawTls`], [`TlsConfig`]) and its one validation
//! function: files must exist and parse as PEM, a client certificate needs
//! both halves and they must belong together. Files are read here, once per
//! load, so a reload picks up rotated files and the client never re-reads
//! them. Building the HTTP client from it belongs to [`crate::upstream`].
//!
//! The private key is a secret: it is kept only inside [`Secret`], and no
//! problem text or `Debug` output shows any of its content.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::sign::CertifiedKey;

use super::Validator;
use crate::model::Secret;

/// A `tls:` block as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    /// PEM file of CA certificates trusted in addition to the system roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (chain), for servers that ask for one.
    pub(crate) cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub(crate) key_file: Option<PathBuf>,
    /// Accept any server certificate (default false). Logs a warning.
    pub(crate) insecure_skip_verify: Option<bool>,
}

/// A validated `tls:` block, with its files already read.
#[derive(Clone, Default, PartialEq)]
pub(crate) struct TlsConfig {
    /// The CA file, as resolved against the config file's folder.
    pub(crate) ca_file: Option<PathBuf>,
    /// Its certificates (DER), added to the system roots.
    pub(crate) ca_certs: Vec<Vec<u8>>,
    /// The client certificate, if any.
    pub(crate) client: Option<ClientCert>,
    /// Skip verifying the server's certificate.
    pub(crate) insecure_skip_verify: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_file", &self.ca_file)
            .field("ca_certs", &self.ca_certs.len())
            .field("client", &self.client)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// A client certificate and its key.
#[derive(Clone, PartialEq)]
pub(crate) struct ClientCert {
    /// The certificate file.
    pub(crate) cert_file: PathBuf,
    /// The key file.
    pub(crate) key_file: PathBuf,
    /// Certificate chain then key, re-encoded as plain PEM blocks.
    identity_pem: Secret,
}

impl ClientCert {
    /// Certificate chain and key as PEM, for the one place that builds the client.
    pub(crate) fn identity_pem(&self) -> &[u8] {
        self.identity_pem.expose().as_bytes()
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl Validator<'_> {
    /// Validates the `tls:` block of `block` (`gse` or `cmdb`).
    pub(super) fn upstream_tls(&mut self, block: &str, raw: Option<RawTls>) -> TlsConfig {
        let raw = raw.unwrap_or_default();
        let key = |name: &str| format!("{block}.tls.{name}");
        let ca_file = raw.ca_file.map(|f| self.base_dir.join(f));
        let ca_certs = match &ca_file {
            Some(file) => self
                .certificates_file(&key("ca_file"), file)
                .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let client = match (raw.cert_file, raw.key_file) {
            (Some(cert), Some(private)) => {
                let cert = self.base_dir.join(cert);
                let private = self.base_dir.join(private);
                self.client_cert(block, cert, private)
            }
            (Some(_), None) => {
                let rule = "is required with cert_file (a client certificate needs both)";
                self.problem(key("key_file"), "", rule);
                None
            }
            (None, Some(_)) => {
                let rule = "is required with key_file (a client certificate needs both)";
                self.problem(key("cert_file"), "", rule);
                None
            }
            (None, None) => None,
        };
        TlsConfig {
            ca_file,
            ca_certs,
            client,
            insecure_skip_verify: raw.insecure_skip_verify.unwrap_or(false),
        }
    }

    fn client_cert(&mut self, block: &str, cert: PathBuf, private: PathBuf) -> Option<ClientCert> {
        let certs = self.certificates_file(&format!("{block}.tls.cert_file"), &cert);
        let key = self.private_key_file(&format!("{block}.tls.key_file"), &private);
        let (certs, key) = (certs?, key?);
        let chain = certs.clone();
        let provider = aws_lc_rs::default_provider();
        if CertifiedKey::from_der(chain, key.clone_key(), &provider).is_err() {
            let rule = "does not match cert_file (or is of an unsupported type)";
            self.problem(
                format!("{block}.tls.key_file"),
                private.display().to_string(),
                rule,
            );
            return None;
        }
        let mut pem = String::new();
        for der in &certs {
            push_pem(&mut pem, "CERTIFICATE", der.as_ref());
        }
        push_pem(&mut pem, key_label(&key), key.secret_der());
        Some(ClientCert {
            cert_file: cert,
            key_file: private,
            identity_pem: Secret::new(pem),
        })
    }
}

/// The PEM label reqwest expects for each key encoding.
fn key_label(key: &PrivateKeyDer<'_>) -> &'static str {
    match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    }
}

fn push_pem(out: &mut String, label: &str, der: &[u8]) {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
}

impl super::Config {
    /// Each `insecure_skip_verify` key that is on, with the upstreams it
    /// affects (`cmdb:` without a `tls:` block inherits `gse.tls`).
    pub(crate) fn unverified_tls(&self) -> Vec<(&'static str, &'static str)> {
        let cmdb = self.cmdb.as_ref().map(|c| &c.tls);
        let inherited = cmdb.is_some_and(|tls| *tls == self.gse.tls);
        let mut keys = Vec::new();
        if self.gse.tls.insecure_skip_verify {
            let upstreams = if inherited { "GSE and CMDB" } else { "GSE" };
            keys.push(("gse.tls.insecure_skip_verify", upstreams));
        }
        if cmdb.is_some_and(|tls| tls.insecure_skip_verify) && !inherited {
            keys.push(("cmdb.tls.insecure_skip_verify", "CMDB"));
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn config(gse_tls: &str, cmdb_tls: &str) -> Config {
        let yaml = format!(
            "gse:\n  url: https://gse.example\n  app_code: a\n  app_secret: s\n{gse_tls}\
             cmdb:\n  url: https://cmdb.example\n{cmdb_tls}\
             groups: [{{name: a, bk_biz_id: 1, hosts: [\"0:10.0.0.1\"]}}]\n"
        );
        Config::parse(&yaml, Path::new(".")).expect("valid config")
    }

    #[test]
    fn an_inherited_insecure_block_is_named_once_for_both_upstreams() {
        let insecure = "  tls: {insecure_skip_verify: true}\n";
        assert_eq!(
            config(insecure, "").unverified_tls(),
            [("gse.tls.insecure_skip_verify", "GSE and CMDB")]
        );
        assert_eq!(
            config(insecure, "  tls: {}\n").unverified_tls(),
            [("gse.tls.insecure_skip_verify", "GSE")]
        );
        assert_eq!(
            config("", insecure).unverified_tls(),
            [("cmdb.tls.insecure_skip_verify", "CMDB")]
        );
        assert!(config("", "").unverified_tls().is_empty());
    }
}
