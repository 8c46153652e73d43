//! The web configuration file (`--web.config.file`) in the format of
//! Prometheus' exporter-toolkit, so files written for node_exporter work here:
//! TLS for the HTTP server (certificate, versions, cipher suites, curves),
//! client certificates (`client_auth_type`, `client_ca_file`,
//! `client_allowed_sans`), response headers, `basic_auth_users` (bcrypt) and a
//! request `rate_limit`.
//!
//! Owns parsing and validating the file (every problem with its key path,
//! value and rule, with the same validator as the exporter's file) and turning it into a rustls
//! [`ServerConfig`] and a [`WebAccess`] the server consults. It never serves
//! HTTP and never checks a password itself: that is the HTTP layer's.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Deserialize;

use super::ConfigError;
use super::validate::Validator;
use super::watch::FileWatch;
use crate::model::{RateLimit, Secret};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebConfig {
    /// TLS for the server.
    pub tls_server_config: Option<RawTlsServer>,
    /// HTTP options.
    pub(crate) http_server_config: Option<RawHttpServer>,
    /// User name → bcrypt hash.
    #[serde(default, deserialize_with = "super::unique_keys")]
    pub basic_auth_users: BTreeMap<String, Secret>,
    /// Token bucket for all requests.
    pub(crate) rate_limit: Option<RawIntervalLimit>,
}

impl RawWebConfig {
    /// The files it names (certificate, key, client CA), as they are read.
    fn files(&self, base_dir: &Path) -> Vec<PathBuf> {
        let Some(tls) = &self.tls_server_config else {
            return Vec::new();
        };
        [&tls.cert_file, &tls.key_file, &tls.client_ca_file]
            .into_iter()
            .flatten()
            .map(|file| base_dir.join(file))
            .collect()
    }

    fn sets_nothing(&self) -> bool {
        self.tls_server_config.is_none()
            && self.http_server_config.is_none()
            && self.basic_auth_users.is_empty()
            && self.rate_limit.is_none()
    }
}

/// `tls_server_config:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsServer {
    /// Inline PEM certificate (chain).
    pub(crate) cert: Option<String>,
    /// Inline PEM key.
    pub(crate) key: Option<Secret>,
    /// Certificate (chain) file.
    pub(crate) cert_file: Option<PathBuf>,
    /// Key file.
    pub(crate) key_file: Option<PathBuf>,
    /// Inline PEM client CA.
    pub(crate) client_ca: Option<String>,
    /// Client CA file.
    pub(crate) client_ca_file: Option<PathBuf>,
    /// Go's `tls.ClientAuthType` names.
    pub client_auth_type: Option<String>,
    /// Client certificates must carry one of these subject alternative names.
    #[serde(default)]
    pub(crate) client_allowed_sans: Vec<String>,
    /// `TLS10` … `TLS13`.
    pub(crate) min_version: Option<String>,
    /// `TLS10` … `TLS13`.
    pub(crate) max_version: Option<String>,
    /// Go cipher suite names (TLS 1.2).
    #[serde(default)]
    pub(crate) cipher_suites: Vec<String>,
    /// Use the server's order of `cipher_suites` (default true).
    pub(crate) prefer_server_cipher_suites: Option<bool>,
    /// Go curve names.
    #[serde(default)]
    pub(crate) curve_preferences: Vec<String>,
}

/// `http_server_config:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpServer {
    /// HTTP/2 (accepted for compatibility; this server speaks HTTP/1.1).
    pub(crate) http2: Option<bool>,
    /// Security headers added to every response.
    #[serde(default, deserialize_with = "super::unique_keys")]
    pub(crate) headers: BTreeMap<String, String>,
}

/// `rate_limit:` as written, in the exporter-toolkit form (one request per
/// `interval`); it becomes the same [`RateLimit`] as `gse.rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIntervalLimit {
    /// Time between two requests (0 disables).
    pub(crate) interval: Option<String>,
    /// Burst size.
    pub(crate) burst: Option<u32>,
}

/// The validated web configuration.
#[derive(Clone, Default)]
pub struct WebAccess {
    /// TLS for the server, if configured.
    pub(crate) tls: Option<Arc<ServerConfig>>,
    /// What a later file may not change until a restart.
    strength: Strength,
    /// User name → bcrypt hash; empty means no basic auth.
    pub(crate) users: BTreeMap<String, Secret>,
    /// Headers added to every response.
    pub(crate) headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
    /// The token bucket for all requests, if any.
    pub(crate) rate_limit: Option<RateLimit>,
}

impl fmt::Debug for WebAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebAccess")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

const ALLOWED_HEADERS: [&str; 5] = [
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
];

impl WebAccess {
    /// Reads and validates a web configuration file; relative paths in it
    /// resolve against its directory.
    pub fn load(path: &Path) -> Result<WebAccess, ConfigError> {
        WebAccess::from_raw(read_raw(path)?, base_dir(path))
    }

    /// Validates a parsed file.
    pub(crate) fn from_raw(raw: RawWebConfig, base_dir: &Path) -> Result<WebAccess, ConfigError> {
        let no_env = |_: &str| None;
        let mut v = Validator::new(&no_env, base_dir);
        if raw.sets_nothing() {
            // Also what a file caught empty in the middle of a rewrite looks like.
            v.problem(
                "<root>",
                "",
                "the file sets nothing (empty or only comments); omit --web.config.file for plain HTTP without auth",
            );
        }
        let (tls, client_checks) = match raw.tls_server_config.and_then(|t| v.tls_server(t)) {
            Some((tls, checks)) => (Some(Arc::new(tls)), Some(checks)),
            None => (None, None),
        };
        let users = v.users(raw.basic_auth_users);
        let access = WebAccess {
            strength: Strength {
                tls: client_checks,
                auth: !users.is_empty(),
            },
            tls,
            users,
            headers: v.headers(raw.http_server_config.unwrap_or_default()),
            rate_limit: raw.rate_limit.and_then(|r| v.web_rate_limit(r)),
        };
        v.finish(access)
    }
}

/// What the TLS block asks of client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    Request,
    RequireAny,
    VerifyIfGiven,
    RequireAndVerify,
}

impl ClientAuth {
    /// Go's `tls.ClientAuthType` name, as the file spells it.
    fn name(self) -> &'static str {
        match self {
            ClientAuth::None => "NoClientCert",
            ClientAuth::Request => "RequestClientCert",
            ClientAuth::RequireAny => "RequireAnyClientCert",
            ClientAuth::VerifyIfGiven => "VerifyClientCertIfGiven",
            ClientAuth::RequireAndVerify => "RequireAndVerifyClientCert",
        }
    }
}

impl Validator<'_> {
    fn tls_server(&mut self, raw: RawTlsServer) -> Option<(ServerConfig, TlsChecks)> {
        const AT: &str = "tls_server_config";
        let before = self.problems.total();
        let certs = self.pem_certs(
            &format!("{AT}.cert"),
            raw.cert.as_deref(),
            raw.cert_file.as_deref(),
            true,
        );
        let key = self.pem_key(raw.key.as_ref(), raw.key_file.as_deref());
        let client_auth = self.client_auth(raw.client_auth_type.as_deref());
        let client_roots = self.pem_certs(
            &format!("{AT}.client_ca"),
            raw.client_ca.as_deref(),
            raw.client_ca_file.as_deref(),
            false,
        );
        let versions = self.versions(raw.min_version.as_deref(), raw.max_version.as_deref());
        let provider = self.provider(&raw);
        // A CA named but unreadable has its own problem: not a second one
        // saying that none is named.
        let names_ca = raw.client_ca.is_some() || raw.client_ca_file.is_some();
        self.check_client_auth_rules(client_auth, names_ca, &raw.client_allowed_sans);
        if self.problems.total() > before {
            return None;
        }
        let provider = Arc::new(provider?);
        let versions = versions?;
        let checks = TlsChecks {
            client_auth,
            client_sans: !raw.client_allowed_sans.is_empty(),
            tls12: versions.contains(&&rustls::version::TLS12),
        };
        let verifier = self.client_verifier(
            client_auth,
            client_roots,
            raw.client_allowed_sans,
            &provider,
        )?;
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|err| self.problem(AT, "", &format!("unusable TLS settings: {err}")))
            .ok()?;
        let mut config = builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key?)
            .map_err(|err| {
                self.problem(
                    format!("{AT}.key"),
                    "",
                    &format!("does not match the certificate: {err}"),
                )
            })
            .ok()?;
        config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some((config, checks))
    }

    /// Certificates from inline PEM or a file (one of them; `required` says
    /// whether none at all is a problem).
    fn pem_certs(
        &mut self,
        key: &str,
        inline: Option<&str>,
        file: Option<&Path>,
        required: bool,
    ) -> Vec<CertificateDer<'static>> {
        let certs = match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, "", &format!("set {key} or {key}_file, not both"));
                None
            }
            (Some(text), None) => self.certificates(key, "", text.as_bytes()),
            (None, Some(path)) => {
                let full = self.base_dir.join(path);
                self.certificates_file(&format!("{key}_file"), &full)
            }
            (None, None) => {
                if required {
                    let rule = format!("{key}_file (or inline {key}) is required");
                    self.problem(key, "", &rule);
                }
                None
            }
        };
        certs.unwrap_or_default()
    }

    fn pem_key(
        &mut self,
        inline: Option<&Secret>,
        file: Option<&Path>,
    ) -> Option<PrivateKeyDer<'static>> {
        const KEY: &str = "tls_server_config.key";
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(KEY, "", "set key or key_file, not both");
                None
            }
            (Some(secret), None) => self.private_key(KEY, "", secret.expose().as_bytes()),
            (None, Some(path)) => {
                let full = self.base_dir.join(path);
                self.private_key_file("tls_server_config.key_file", &full)
            }
            (None, None) => {
                self.problem(KEY, "", "key_file (or inline key) is required");
                None
            }
        }
    }

    fn client_auth(&mut self, text: Option<&str>) -> ClientAuth {
        match text.unwrap_or("NoClientCert") {
            "" | "NoClientCert" => ClientAuth::None,
            "RequestClientCert" => ClientAuth::Request,
            "RequireAnyClientCert" => ClientAuth::RequireAny,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
            other => {
                self.problem(
                    "tls_server_config.client_auth_type",
                    other,
                    "must be NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert",
                );
                ClientAuth::None
            }
        }
    }

    fn check_client_auth_rules(&mut self, auth: ClientAuth, has_ca: bool, sans: &[String]) {
        const AT: &str = "tls_server_config.client_auth_type";
        let verifies = matches!(
            auth,
            ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify
        );
        if verifies && !has_ca {
            self.problem(
                AT,
                auth.name(),
                "needs client_ca_file (or inline client_ca) to verify client certificates",
            );
        }
        if auth == ClientAuth::None && has_ca {
            self.problem(AT, "NoClientCert", "a client CA is configured without a client auth policy: set RequireAndVerifyClientCert");
        }
        if !sans.is_empty()
            && !matches!(auth, ClientAuth::RequireAny | ClientAuth::RequireAndVerify)
        {
            self.problem(
                "tls_server_config.client_allowed_sans",
                sans.join(","),
                "needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert",
            );
        }
        for (i, san) in sans.iter().enumerate() {
            if ServerName::try_from(san.as_str()).is_err() {
                self.problem(
                    format!("tls_server_config.client_allowed_sans[{i}]"),
                    san,
                    "only DNS names and IP addresses can be matched",
                );
            }
        }
    }

    fn versions(
        &mut self,
        min: Option<&str>,
        max: Option<&str>,
    ) -> Option<Vec<&'static rustls::SupportedProtocolVersion>> {
        let min = self.version("tls_server_config.min_version", min.unwrap_or("TLS12"))?;
        let max = self.version("tls_server_config.max_version", max.unwrap_or("TLS13"))?;
        if max < 12 {
            self.problem(
                "tls_server_config.max_version",
                format!("TLS{max}"),
                "this server supports TLS12 and TLS13 only",
            );
            return None;
        }
        if min > max {
            self.problem(
                "tls_server_config.min_version",
                format!("TLS{min}"),
                "must not be above max_version",
            );
            return None;
        }
        let mut versions = Vec::new();
        if min <= 12 {
            versions.push(&rustls::version::TLS12);
        }
        if max >= 13 {
            versions.push(&rustls::version::TLS13);
        }
        Some(versions)
    }

    fn version(&mut self, key: &str, text: &str) -> Option<u8> {
        match text {
            // TLS 1.0 and 1.1 are never offered; a minimum below 1.2 means 1.2.
            "TLS10" => Some(10),
            "TLS11" => Some(11),
            "TLS12" => Some(12),
            "TLS13" => Some(13),
            other => {
                self.problem(key, other, "must be TLS10, TLS11, TLS12 or TLS13");
                None
            }
        }
    }

    /// The crypto provider narrowed to the configured suites and curves, in
    /// their order.
    fn provider(&mut self, raw: &RawTlsServer) -> Option<CryptoProvider> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if !raw.cipher_suites.is_empty() {
            let all = provider.cipher_suites.clone();
            let mut chosen: Vec<_> = all
                .iter()
                .filter(|s| s.tls13().is_some())
                .copied()
                .collect();
            for (i, name) in raw.cipher_suites.iter().enumerate() {
                let found = all.iter().find(|s| {
                    s.tls13().is_none() && go_suite_names(s.suite()).contains(&name.as_str())
                });
                match found {
                    Some(suite) => chosen.push(*suite),
                    None => self.problem(
                        format!("tls_server_config.cipher_suites[{i}]"),
                        name,
                        "is not a supported TLS 1.2 suite (supported: ECDHE with AES-GCM or ChaCha20-Poly1305)",
                    ),
                }
            }
            provider.cipher_suites = chosen;
        }
        if !raw.curve_preferences.is_empty() {
            let all = provider.kx_groups.clone();
            let mut chosen = Vec::new();
            for (i, name) in raw.curve_preferences.iter().enumerate() {
                let group = go_curve(name);
                match all.iter().find(|g| Some(g.name()) == group) {
                    Some(g) => chosen.push(*g),
                    None => self.problem(
                        format!("tls_server_config.curve_preferences[{i}]"),
                        name,
                        "must be X25519, CurveP256 or CurveP384",
                    ),
                }
            }
            provider.kx_groups = chosen;
        }
        Some(provider)
    }

    fn client_verifier(
        &mut self,
        auth: ClientAuth,
        roots: Vec<CertificateDer<'static>>,
        allowed_sans: Vec<String>,
        provider: &Arc<CryptoProvider>,
    ) -> Option<Arc<dyn ClientCertVerifier>> {
        let inner: Arc<dyn ClientCertVerifier> = match auth {
            ClientAuth::None => return Some(WebPkiClientVerifier::no_client_auth()),
            ClientAuth::Request | ClientAuth::RequireAny => Arc::new(AnyClientCert {
                mandatory: auth == ClientAuth::RequireAny,
                provider: provider.clone(),
            }),
            ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
                let mut store = rustls::RootCertStore::empty();
                let (_, rejected) = store.add_parsable_certificates(roots);
                if rejected > 0 || store.is_empty() {
                    self.problem(
                        "tls_server_config.client_ca_file",
                        "",
                        "holds a certificate that is not a usable CA",
                    );
                    return None;
                }
                let builder =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone());
                let builder = if auth == ClientAuth::VerifyIfGiven {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                match builder.build() {
                    Ok(verifier) => verifier,
                    Err(err) => {
                        self.problem(
                            "tls_server_config.client_ca_file",
                            "",
                            &format!("unusable: {err}"),
                        );
                        return None;
                    }
                }
            }
        };
        if allowed_sans.is_empty() {
            return Some(inner);
        }
        Some(Arc::new(AllowedSans {
            inner,
            allowed: allowed_sans,
        }))
    }

    fn users(&mut self, users: BTreeMap<String, Secret>) -> BTreeMap<String, Secret> {
        for (name, hash) in &users {
            if bcrypt_cost(hash.expose()).is_none() {
                // The hash is not a password, but is still not shown.
                self.problem(format!("basic_auth_users.{name}"), "", "is not a bcrypt hash ($2a$, $2b$ or $2y$); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`");
            }
            if name.contains(':') {
                self.problem("basic_auth_users", name, "a user name must not contain ':'");
            }
        }
        users
    }

    fn headers(
        &mut self,
        raw: RawHttpServer,
    ) -> Vec<(axum::http::HeaderName, axum::http::HeaderValue)> {
        let _ = raw.http2; // HTTP/1.1 only; the key is accepted so toolkit files load.
        let mut out = Vec::new();
        for (name, value) in raw.headers {
            let key = format!("http_server_config.headers.{name}");
            let Some(canonical) = ALLOWED_HEADERS
                .iter()
                .find(|h| h.eq_ignore_ascii_case(&name))
            else {
                self.problem(
                    &key,
                    "",
                    &format!("is not one of {}", ALLOWED_HEADERS.join(", ")),
                );
                continue;
            };
            if let Some(rule) = header_value_rule(canonical, &value) {
                self.problem(&key, &value, rule);
                continue;
            }
            if value.is_empty() {
                continue;
            }
            match axum::http::HeaderValue::from_str(&value) {
                Ok(v) => out.push((axum::http::HeaderName::from_static(lowercase(canonical)), v)),
                Err(_) => self.problem(&key, &value, "is not a valid header value"),
            }
        }
        out
    }

    fn web_rate_limit(&mut self, raw: RawIntervalLimit) -> Option<RateLimit> {
        let interval_text = raw.interval.unwrap_or_else(|| "0s".into());
        let interval = match humantime::parse_duration(&interval_text) {
            Ok(d) => d,
            Err(_) => {
                self.problem(
                    "rate_limit.interval",
                    &interval_text,
                    "is not a duration (examples: 100ms, 1s)",
                );
                return None;
            }
        };
        if interval.is_zero() {
            return None;
        }
        match raw.burst {
            Some(burst) if burst > 0 => Some(RateLimit {
                period: interval,
                burst,
            }),
            other => {
                self.problem(
                    "rate_limit.burst",
                    other.map(|b| b.to_string()).unwrap_or_default(),
                    "must be at least 1 when interval is set",
                );
                None
            }
        }
    }
}

fn header_value_rule(name: &str, value: &str) -> Option<&'static str> {
    match name {
        "X-Frame-Options"
            if !value.is_empty()
                && !value.eq_ignore_ascii_case("deny")
                && !value.eq_ignore_ascii_case("sameorigin") =>
        {
            Some("must be deny or sameorigin")
        }
        "X-Content-Type-Options" if !value.is_empty() && !value.eq_ignore_ascii_case("nosniff") => {
            Some("must be nosniff")
        }
        _ => None,
    }
}

fn lowercase(canonical: &'static str) -> &'static str {
    match canonical {
        "Content-Security-Policy" => "content-security-policy",
        "X-Frame-Options" => "x-frame-options",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "strict-transport-security",
    }
}

/// The cost of a bcrypt hash, if it is one.
pub(crate) fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = hash
        .strip_prefix("$2a$")
        .or_else(|| hash.strip_prefix("$2b$"))
        .or_else(|| hash.strip_prefix("$2y$"))?;
    let (cost, tail) = rest.split_once('$')?;
    (tail.len() == 53).then_some(())?;
    cost.parse().ok().filter(|c| (4..=31).contains(c))
}

/// Go's names for a TLS 1.2 suite (with and without the `_SHA256` suffix Go
/// gives ChaCha20).
fn go_suite_names(suite: rustls::CipherSuite) -> &'static [&'static str] {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => &["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => &["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => &["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => &["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => &[
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ],
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => &[
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ],
        _ => &[],
    }
}

fn go_curve(name: &str) -> Option<rustls::NamedGroup> {
    match name {
        "X25519" => Some(rustls::NamedGroup::X25519),
        "CurveP256" => Some(rustls::NamedGroup::secp256r1),
        "CurveP384" => Some(rustls::NamedGroup::secp384r1),
        _ => None,
    }
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked for
/// (and, if mandatory, required) but not checked against a CA.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `client_allowed_sans`: after the policy's own check, the client
/// certificate must name one of the allowed DNS names or IP addresses.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let matches = self.allowed.iter().any(|san| {
            ServerName::try_from(san.as_str())
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        });
        if matches {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What the web configuration in force at start fixed until a restart:
/// whether the server speaks TLS and what it checks of clients there, and
/// whether it asks for a password. A file caught half-written can be valid
/// and yet stop short of `client_auth_type` (as an edit can drop it): it
/// must not turn client certificates off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Strength {
    tls: Option<TlsChecks>,
    auth: bool,
}

/// Reads and parses a web configuration file, unvalidated.
fn read_raw(path: &Path) -> Result<RawWebConfig, ConfigError> {
    // Small: it is re-read on the request path when it changes.
    let text = super::read_text(path, super::SMALL_FILE).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    super::parse_yaml(&text)
}

/// What relative paths in a web configuration file resolve against.
fn base_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The web configuration file and the files it names, watched for changes:
/// a renewed certificate or key (as cert-manager or certbot write them,
/// leaving the file alone) applies too, and a file refused for one of them
/// is tried again once that one is whole.
#[derive(Debug, Default)]
struct Watched {
    file: FileWatch,
    named: Vec<(PathBuf, FileWatch)>,
}

impl Watched {
    /// Whether any of them changed since the last look (each is looked at).
    fn changed(&mut self, path: &Path) -> bool {
        let named = self
            .named
            .iter_mut()
            .fold(false, |any, (file, watch)| watch.changed(file) | any);
        self.file.changed(path) | named
    }

    /// Reads the file, and watches what it names from before reading those.
    fn load(&mut self, path: &Path) -> Result<WebAccess, ConfigError> {
        let raw = read_raw(path)?;
        let base = base_dir(path);
        self.named = raw
            .files(base)
            .into_iter()
            .map(|file| {
                let watch = FileWatch::seen_now(&file);
                (file, watch)
            })
            .collect();
        WebAccess::from_raw(raw, base)
    }
}

/// What a TLS server asks of clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TlsChecks {
    client_auth: ClientAuth,
    /// Whether client certificates must carry one of some names.
    client_sans: bool,
    /// Whether TLS 1.2 is spoken (else only 1.3).
    tls12: bool,
}

/// What looking at the web configuration file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// The file did not change since the last look.
    Unchanged,
    /// It changed and the new file is in force.
    Applied,
    /// It changed and was refused: the last good one stays.
    Refused,
}

/// The web configuration file, re-read when it or a file it names changes
/// (so renewed certificates and changed users apply without a restart).
///
/// Never weaker than configured: TLS on or off and basic auth on or off are
/// fixed when the process starts. A changed file that would turn either off
/// (or on), or that cannot be read or parsed (deleted, empty, comment-only,
/// half-written), is refused with an error log and the last good one stays.
#[derive(Debug, Default)]
pub(crate) struct WebConfigFile {
    path: Option<PathBuf>,
    current: arc_swap::ArcSwap<WebAccess>,
    watch: parking_lot::Mutex<Watched>,
    fixed: Strength,
}

impl WebConfigFile {
    /// Loads `path` (no file: plain HTTP, no authentication).
    pub(crate) fn open(path: Option<&Path>) -> Result<WebConfigFile, ConfigError> {
        let Some(path) = path else {
            return Ok(WebConfigFile::default());
        };
        let mut watch = Watched {
            file: FileWatch::seen_now(path),
            named: Vec::new(),
        };
        let access = watch.load(path)?;
        Ok(WebConfigFile {
            path: Some(path.to_owned()),
            fixed: access.strength,
            current: arc_swap::ArcSwap::from_pointee(access),
            watch: parking_lot::Mutex::new(watch),
        })
    }

    /// The configuration in force.
    pub(crate) fn current(&self) -> Arc<WebAccess> {
        self.current.load_full()
    }

    /// Re-reads the file if it changed since the last look, and applies it
    /// unless it is refused.
    pub(crate) fn refresh(&self) -> Refresh {
        let Some(path) = &self.path else {
            return Refresh::Unchanged;
        };
        // A request never waits behind another's re-read: it is served by
        // the configuration in force, which is never weaker.
        let Some(mut watch) = self.watch.try_lock() else {
            return Refresh::Unchanged;
        };
        if !watch.changed(path) {
            return Refresh::Unchanged;
        }
        match watch
            .load(path)
            .and_then(|access| self.keeps_strength(access))
        {
            Ok(access) => {
                tracing::info!(file = %path.display(), "web configuration reloaded");
                self.current.store(Arc::new(access));
                Refresh::Applied
            }
            Err(err) => {
                for problem in err.problems() {
                    tracing::error!(file = %path.display(), problem = %problem, "web configuration refused; the last good one stays");
                }
                Refresh::Refused
            }
        }
    }

    /// `access`, unless it turns TLS or basic auth on or off.
    fn keeps_strength(&self, access: WebAccess) -> Result<WebAccess, ConfigError> {
        let no_env = |_: &str| None;
        let mut v = Validator::new(&no_env, Path::new("."));
        let now = access.strength;
        if let (Some(was), Some(is)) = (self.fixed.tls, now.tls) {
            tls_checks_kept(&mut v, was, is);
        }
        if now.tls.is_some() != self.fixed.tls.is_some() {
            let rule = if self.fixed.tls.is_some() {
                "is missing: TLS was on when the exporter started and stays on until a restart"
            } else {
                "is set: TLS was off when the exporter started and stays off until a restart"
            };
            v.problem("tls_server_config", "", rule);
        }
        if now.auth != self.fixed.auth {
            let rule = if self.fixed.auth {
                "has no users: basic auth was on when the exporter started and stays on until a restart"
            } else {
                "has users: basic auth was off when the exporter started and stays off until a restart"
            };
            v.problem("basic_auth_users", "", rule);
        }
        v.finish(access)
    }
}

/// Problems for what a TLS server checks of clients, changed since start.
fn tls_checks_kept(v: &mut Validator<'_>, was: TlsChecks, is: TlsChecks) {
    const UNTIL: &str = "when the exporter started and stays so until a restart";
    if is.client_auth != was.client_auth {
        let rule = format!("was {} {UNTIL}", was.client_auth.name());
        v.problem(
            "tls_server_config.client_auth_type",
            is.client_auth.name(),
            &rule,
        );
    }
    if is.client_sans != was.client_sans {
        let rule = if was.client_sans {
            format!("is empty: client certificates had to carry one of some names {UNTIL}")
        } else {
            format!("is set: any verified client certificate was accepted {UNTIL}")
        };
        v.problem("tls_server_config.client_allowed_sans", "", &rule);
    }
    if is.tls12 && !was.tls12 {
        let rule = format!("lets TLS12 in: only TLS13 was spoken {UNTIL}");
        v.problem("tls_server_config.min_version", "TLS12", &rule);
    }
}
