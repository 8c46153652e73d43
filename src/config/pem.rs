//! The one PEM reader of both configuration files: certificates and private
//! keys, from a file or from inline text, with one wording for every problem.
//! A key's content never appears in a problem.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::validate::Validator;

/// The rule a file or text breaks when it holds no usable certificate.
const NOT_CERTIFICATES: &str = "is not a PEM file of certificates (-----BEGIN CERTIFICATE-----)";
/// The rule a file or text breaks when it holds no usable private key.
const NOT_A_KEY: &str = "is not a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC, unencrypted)";

impl Validator<'_> {
    /// Every certificate of PEM `bytes` (at least one), or a problem at `key`
    /// showing `shown` (the file name; "" for inline text).
    pub(super) fn certificates(
        &mut self,
        key: &str,
        shown: &str,
        bytes: &[u8],
    ) -> Option<Vec<CertificateDer<'static>>> {
        let parsed: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_slice_iter(bytes).collect();
        match parsed {
            Ok(certs) if !certs.is_empty() => Some(certs),
            _ => {
                self.problem(key, shown, NOT_CERTIFICATES);
                None
            }
        }
    }

    /// The first private key of PEM `bytes`, or a problem that shows none of it.
    pub(super) fn private_key(
        &mut self,
        key: &str,
        shown: &str,
        bytes: &[u8],
    ) -> Option<PrivateKeyDer<'static>> {
        match PrivateKeyDer::from_pem_slice(bytes) {
            Ok(private) => Some(private),
            Err(_) => {
                self.problem(key, shown, NOT_A_KEY);
                None
            }
        }
    }

    /// Every certificate of a PEM file, or a problem at `key`.
    pub(super) fn certificates_file(
        &mut self,
        key: &str,
        file: &Path,
    ) -> Option<Vec<CertificateDer<'static>>> {
        let bytes = self.read_file(key, file, super::SMALL_FILE)?;
        self.certificates(key, &file.display().to_string(), &bytes)
    }

    /// The first private key of a PEM file, or a problem at `key`.
    pub(super) fn private_key_file(
        &mut self,
        key: &str,
        file: &Path,
    ) -> Option<PrivateKeyDer<'static>> {
        let bytes = self.read_file(key, file, super::SMALL_FILE)?;
        self.private_key(key, &file.display().to_string(), &bytes)
    }
}
