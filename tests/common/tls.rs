//! Test certificates made at test time with rcgen: a CA and the server and
//! client certificates it signs, written as PEM files into a temporary
//! directory; reqwest clients that trust them; the simulator's TLS option.
use std::path::PathBuf;

use gse_sim::SimTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as PEM text and as files.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A throwaway certificate authority.
pub struct TestCa {
    pub cert_pem: String,
    pub cert_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    dir: tempfile::TempDir,
    name: String,
}

impl TestCa {
    /// A new CA called `name`.
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        let cert_pem = cert.pem();
        let cert_file = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&cert_file, &cert_pem).expect("write CA");
        TestCa {
            cert_pem,
            cert_file,
            issuer: Issuer::new(params, key),
            dir,
            name: name.to_string(),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Pair {
        self.leaf("server", names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate naming `names` in its subject alternative names.
    pub fn client(&self, names: &[&str]) -> Pair {
        self.leaf("client", names, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, role: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pair {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(role));
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let stem = format!("{}-{role}-{}", self.name, names.join("_"));
        let cert_file = self.dir.path().join(format!("{stem}.pem"));
        let key_file = self.dir.path().join(format!("{stem}-key.pem"));
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        std::fs::write(&cert_file, &cert_pem).expect("write cert");
        std::fs::write(&key_file, &key_pem).expect("write key");
        Pair {
            cert_pem,
            key_pem,
            cert_file,
            key_file,
        }
    }

    /// A client builder trusting only this CA.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).expect("CA parses");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(std::time::Duration::from_secs(10))
    }

    /// A client trusting only this CA, presenting `identity` if given.
    pub fn https_client(&self, identity: Option<&Pair>) -> reqwest::Client {
        let mut builder = self.client_builder();
        if let Some(pair) = identity {
            let pem = format!("{}{}", pair.cert_pem, pair.key_pem);
            builder =
                builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        builder.build().expect("client builds")
    }
}

/// A private CA with a server certificate for 127.0.0.1/localhost and a client certificate.
pub struct TestPki {
    pub ca: TestCa,
    pub server: Pair,
    pub client: Pair,
}

impl TestPki {
    /// A fresh CA named `name`, with its server and client certificates.
    pub fn new(name: &str) -> TestPki {
        let ca = TestCa::new(name);
        let server = ca.server(&["127.0.0.1", "localhost"]);
        let client = ca.client(&[]);
        TestPki { ca, server, client }
    }

    /// The simulator's TLS option: this CA's server certificate, and client
    /// certificates of this CA required when `require_client_cert`.
    pub fn sim_tls(&self, require_client_cert: bool) -> SimTls {
        SimTls {
            cert_pem: self.server.cert_pem.clone(),
            key_pem: self.server.key_pem.clone(),
            client_ca_pem: require_client_cert.then(|| self.ca.cert_pem.clone()),
        }
    }

    /// A path in the PKI's folder (for extra files a test writes).
    pub fn path(&self, name: &str) -> PathBuf {
        self.ca.dir.path().join(name)
    }
}

/// The base64 body of a PEM block, without its armour lines.
pub fn key_material(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}
