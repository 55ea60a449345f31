//! TLS to upstreams: webpki roots plus per-route CA files, optional client certificates
//! (mutual TLS), and an explicit opt-out of verification.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::files::{
    CertificateFiles, TlsFileError, certificates, certified_key, private_key, provider,
};

/// TLS towards one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM CA files trusted in addition to the webpki roots.
    pub extra_roots: Vec<PathBuf>,
    /// Client certificate for mutual TLS.
    pub client_certificate: Option<CertificateFiles>,
    /// SNI and verification name instead of the URL's host.
    pub server_name: Option<String>,
    /// Skip certificate verification entirely.
    pub insecure_skip_verify: bool,
}

/// The configuration for upstreams with no TLS settings of their own: TLS 1.2 and 1.3, ring,
/// Mozilla's root store (webpki-roots), so behaviour does not depend on the host's CA bundle.
pub fn default_client_config() -> Arc<ClientConfig> {
    match client_config(&UpstreamTls::default()) {
        Ok(config) => config,
        // Without files to read nothing above can fail; stay panic-free regardless.
        Err(err) => {
            tracing::error!("TLS client configuration failed: {err}");
            Arc::new(
                ClientConfig::builder()
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    }
}

/// Builds the client configuration for one upstream.
pub fn client_config(tls: &UpstreamTls) -> Result<Arc<ClientConfig>, TlsFileError> {
    let provider = provider();
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for path in &tls.extra_roots {
        for cert in certificates(path)? {
            roots.add(cert).map_err(|err| TlsFileError::Unreadable {
                path: path.display().to_string(),
                reason: format!("not a usable CA certificate: {err}"),
            })?;
        }
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsFileError::Unreadable {
            path: "(built-in provider)".to_owned(),
            reason: err.to_string(),
        })?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match &tls.client_certificate {
        Some(files) => {
            // Load through `certified_key` first so a mismatched pair names both files.
            certified_key(files)?;
            let chain = certificates(&files.certificate)?;
            let key = private_key(&files.key)?;
            builder.with_client_auth_cert(chain, key).map_err(|err| TlsFileError::Unusable {
                certificate: files.certificate.display().to_string(),
                key: files.key.display().to_string(),
                reason: err.to_string(),
            })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts every server certificate while still checking handshake signatures; only used when
/// a route sets `insecure_skip_verify = true`, which is logged at start.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
