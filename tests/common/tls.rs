//! Test certificates made at test time with rcgen: a CA, a server certificate
//! for 127.0.0.1/localhost and a client certificate, all written as PEM files
//! into a temporary folder.

use std::path::PathBuf;

use gse_exporter::sim::SimTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// One certificate and its key, as PEM text and as files.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A private CA with a server and a client certificate.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: Pair,
    pub server: Pair,
    pub client: Pair,
}

impl TestPki {
    /// A fresh CA named `name`, with its server and client certificates.
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = params.self_signed(&ca_key).expect("CA certificate");
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(params, ca_key);
        let leaf = |file: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, file);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).expect("leaf certificate");
            write_pair(&dir, file, cert.pem(), key.serialize_pem())
        };
        let server = leaf(
            "server",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf("client", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
        let ca = write_pair(&dir, "ca", ca_cert.pem(), ca_key_pem);
        TestPki {
            dir,
            ca,
            server,
            client,
        }
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
        self.dir.path().join(name)
    }
}

fn write_pair(dir: &tempfile::TempDir, name: &str, cert_pem: String, key_pem: String) -> Pair {
    let cert_file = dir.path().join(format!("{name}.crt"));
    let key_file = dir.path().join(format!("{name}.key"));
    std::fs::write(&cert_file, &cert_pem).expect("write certificate");
    std::fs::write(&key_file, &key_pem).expect("write key");
    Pair {
        cert_pem,
        key_pem,
        cert_file,
        key_file,
    }
}
