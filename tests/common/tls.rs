//! Test certificates made at test time: a CA and the server and client
//! certificates it signs, written as PEM files into a temporary directory,
//! and reqwest clients that trust them.
#![allow(dead_code)]

use std::path::PathBuf;

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
