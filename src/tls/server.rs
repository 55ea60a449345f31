//! TLS on listeners: certificates chosen by SNI, ALPN `h2` and `http/1.1`, and reloading the
//! files without a restart.
//!
//! The resolver holds the loaded certificates behind a lock that each handshake reads once;
//! a reload builds a complete new set and swaps it in, so a handshake sees either the old set
//! or the new one, and connections already established are never touched.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use super::files::{CertificateFiles, TlsFileError, certified_key, provider};

/// Certificates a TLS listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Served when the client sends no SNI or no entry matches.
    pub default: CertificateFiles,
    /// Certificates chosen by server name, first match wins.
    pub sni: Vec<SniCertificate>,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

/// A certificate and the server names that select it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCertificate {
    /// Lower-case names; `*.example` matches one label.
    pub names: Vec<String>,
    /// The certificate files.
    pub files: CertificateFiles,
}

/// The loaded certificates of one listener.
#[derive(Debug)]
struct Loaded {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl Loaded {
    fn load(tls: &ListenerTls) -> Result<Loaded, TlsFileError> {
        let default = Arc::new(certified_key(&tls.default)?);
        let mut by_name = Vec::new();
        for entry in &tls.sni {
            let key = Arc::new(certified_key(&entry.files)?);
            for name in &entry.names {
                by_name.push((name.clone(), key.clone()));
            }
        }
        Ok(Loaded { default, by_name })
    }

    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        server_name
            .and_then(|name| {
                self.by_name.iter().find(|(pattern, _)| name_matches(pattern, name)).map(|(_, k)| k)
            })
            .unwrap_or(&self.default)
            .clone()
    }
}

/// `a.example` matches itself; `*.example` matches exactly one label before `.example`.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Chooses the certificate for each handshake and reloads the files on demand.
#[derive(Debug)]
pub struct CertResolver {
    tls: ListenerTls,
    loaded: RwLock<Arc<Loaded>>,
    /// Modification times at the last (attempted) load, to notice changed files.
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl CertResolver {
    fn new(tls: &ListenerTls) -> Result<CertResolver, TlsFileError> {
        let loaded = Loaded::load(tls)?;
        let resolver = CertResolver {
            tls: tls.clone(),
            loaded: RwLock::new(Arc::new(loaded)),
            stamps: Mutex::new(Vec::new()),
        };
        let stamps = resolver.current_stamps();
        *resolver.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        Ok(resolver)
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.tls.default)
            .chain(self.tls.sni.iter().map(|s| &s.files))
            .flat_map(|f| [&f.certificate, &f.key])
    }

    fn current_stamps(&self) -> Vec<Option<SystemTime>> {
        self.paths().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
    }

    /// Re-reads every file. On success new handshakes use the new certificates; on failure the
    /// old ones stay in use and the error is returned for logging.
    pub fn reload(&self) -> Result<(), TlsFileError> {
        let stamps = self.current_stamps();
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        let loaded = Loaded::load(&self.tls)?;
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Reloads if any file's modification time changed since the last attempt; returns
    /// whether a reload was attempted and how it went.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsFileError>> {
        let changed = {
            let stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            *stamps != self.current_stamps()
        };
        changed.then(|| self.reload())
    }

    /// How often the files should be checked.
    pub fn reload_interval(&self) -> Duration {
        self.tls.reload_interval
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner()).clone();
        Some(loaded.pick(hello.server_name()))
    }
}

/// A listener's TLS acceptor and the resolver behind it (kept for reloads).
#[derive(Clone)]
pub struct TlsListener {
    /// Accepts TLS connections with the current certificates.
    pub acceptor: TlsAcceptor,
    /// The certificates, reloadable.
    pub resolver: Arc<CertResolver>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener").field("resolver", &self.resolver).finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Loads the certificates and builds the acceptor: TLS 1.2 and 1.3, ALPN `h2` then
    /// `http/1.1`.
    pub fn new(tls: &ListenerTls) -> Result<TlsListener, TlsFileError> {
        let resolver = Arc::new(CertResolver::new(tls)?);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsFileError::Unusable {
                certificate: tls.default.certificate.display().to_string(),
                key: tls.default.key.display().to_string(),
                reason: err.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsListener { acceptor: TlsAcceptor::from(Arc::new(config)), resolver })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_patterns() {
        assert!(name_matches("a.example", "A.Example"));
        assert!(!name_matches("a.example", "b.example"));
        assert!(name_matches("*.example", "a.example"));
        assert!(!name_matches("*.example", "a.b.example"));
        assert!(!name_matches("*.example", "example"));
        assert!(!name_matches("*.example", ".example"));
    }
}
