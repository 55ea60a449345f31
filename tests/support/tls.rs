//! A test certificate authority and certificates made at test time with rcgen.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA that signs leaf certificates for test servers.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
pub struct Leaf {
    /// DER certificate chain (leaf only).
    pub chain: Vec<CertificateDer<'static>>,
    /// DER private key.
    pub key: PrivateKeyDer<'static>,
}

impl TestCa {
    /// A fresh self-signed CA.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "sluice test CA");
        let key = KeyPair::generate().unwrap();
        let issuer = CertifiedIssuer::self_signed(params, key).unwrap();
        TestCa { issuer }
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` (DNS names or IP literals) signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A rustls server config presenting a leaf for `names`.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let leaf = self.leaf(names);
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(leaf.chain, leaf.key)
            .unwrap();
        Arc::new(config)
    }

    /// A rustls client config trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A leaf certificate in PEM form (what sluice reads from files), with its DER for comparing
/// against what a server presents.
pub struct PemLeaf {
    /// PEM certificate (leaf only).
    pub cert_pem: String,
    /// PEM private key (PKCS#8).
    pub key_pem: String,
    /// DER certificate.
    pub der: CertificateDer<'static>,
}

/// Where a leaf's PEM files were written.
pub struct LeafFiles {
    /// The certificate file.
    pub cert: std::path::PathBuf,
    /// The key file.
    pub key: std::path::PathBuf,
    /// DER certificate, for comparing with a peer certificate.
    pub der: CertificateDer<'static>,
}

impl PemLeaf {
    /// Writes `<stem>.pem` and `<stem>.key` into `dir` (each replaced atomically by a rename,
    /// so a reader never sees half a file) and returns their paths.
    pub fn write(&self, dir: &std::path::Path, stem: &str) -> LeafFiles {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        write_atomically(&cert, self.cert_pem.as_bytes());
        write_atomically(&key, self.key_pem.as_bytes());
        LeafFiles { cert, key, der: self.der.clone() }
    }

    /// The leaf as a rustls certificate chain and key.
    pub fn to_leaf(&self) -> Leaf {
        use rustls::pki_types::pem::PemObject;
        Leaf {
            chain: vec![self.der.clone()],
            key: PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap(),
        }
    }
}

/// Replaces `path` with `contents` by writing a sibling temporary file and renaming it.
pub fn write_atomically(path: &std::path::Path, contents: &[u8]) {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// A fresh, empty directory for test `name` under `CARGO_TARGET_TMPDIR`.
pub fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sluice-tls").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `path` as a TOML literal string.
pub fn toml_path(path: &std::path::Path) -> String {
    let text = path.display().to_string();
    assert!(!text.contains('\''), "test paths must not contain quotes: {text}");
    format!("'{text}'")
}

impl TestCa {
    /// A server leaf for `names` (DNS names or IP literals) in PEM form.
    pub fn leaf_pem(&self, names: &[&str]) -> PemLeaf {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        self.sign_pem(params)
    }

    /// A client-authentication leaf (extended key usage `clientAuth`) in PEM form.
    pub fn client_leaf_pem(&self, common_name: &str) -> PemLeaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_pem(params)
    }

    fn sign_pem(&self, params: CertificateParams) -> PemLeaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        PemLeaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    /// Writes the CA certificate to `<dir>/<stem>.pem` and returns the path.
    pub fn write_cert(&self, dir: &std::path::Path, stem: &str) -> std::path::PathBuf {
        let path = dir.join(format!("{stem}.pem"));
        write_atomically(&path, self.cert_pem().as_bytes());
        path
    }

    /// A rustls server config presenting a leaf for `names` that requires every client to
    /// present a certificate signed by `client_ca`.
    pub fn server_config_requiring_client_cert(
        &self,
        names: &[&str],
        client_ca: &TestCa,
    ) -> Arc<rustls::ServerConfig> {
        let leaf = self.leaf(names);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.cert_der()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(leaf.chain, leaf.key)
            .unwrap();
        Arc::new(config)
    }
}

/// A rustls client config trusting exactly the CAs in `cas`, offering the ALPN protocols
/// `alpn` (empty: no ALPN).
pub fn client_config_trusting(cas: &[&TestCa], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.cert_der()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
