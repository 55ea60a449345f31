//! Reading PEM certificates and keys, with errors that name the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file is missing, unreadable or not valid PEM.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The file has no certificate, or no private key, where one was expected.
    #[error("{path} contains no PEM {what}")]
    Missing {
        /// The file.
        path: String,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// The key cannot be used, or does not belong to the certificate.
    #[error("key {key} cannot be used with certificate {certificate}: {reason}")]
    Unusable {
        /// Certificate file.
        certificate: String,
        /// Key file.
        key: String,
        /// rustls's explanation.
        reason: String,
    },
}

/// The ring provider every TLS configuration in sluice uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn unreadable(path: &Path, err: pem::Error) -> TlsFileError {
    let reason = match err {
        pem::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    };
    TlsFileError::Unreadable { path: path.display().to_string(), reason }
}

/// Every certificate in a PEM file, in order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| unreadable(path, err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| unreadable(path, err))?;
    if certs.is_empty() {
        return Err(TlsFileError::Missing {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| match err {
        pem::Error::NoItemsFound => {
            TlsFileError::Missing { path: path.display().to_string(), what: "private key" }
        }
        other => unreadable(path, other),
    })
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn certified_key(files: &CertificateFiles) -> Result<CertifiedKey, TlsFileError> {
    let chain = certificates(&files.certificate)?;
    let key = private_key(&files.key)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|err| TlsFileError::Unusable {
        certificate: files.certificate.display().to_string(),
        key: files.key.display().to_string(),
        reason: err.to_string(),
    })
}
