//! TLS to upstreams: certificate verification against the webpki roots.

use std::sync::Arc;

use rustls::ClientConfig;

/// The client configuration every HTTPS upstream uses by default: TLS 1.2 and 1.3, ring,
/// Mozilla's root store (webpki-roots), so behaviour does not depend on the host's CA bundle.
pub fn default_client_config() -> Arc<ClientConfig> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(config) => Arc::new(config),
        // The ring provider supports the default versions; this arm is unreachable in practice
        // but keeps start-up panic-free.
        Err(err) => {
            tracing::error!("TLS client configuration failed: {err}");
            Arc::new(
                ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    }
}
