//! A throwaway certificate authority and a server certificate for 127.0.0.1 and localhost,
//! so the stand-ins can speak real TLS and clients verify them the way they verify Azure:
//! against a CA bundle, with no "insecure" switch. Clients are pointed at `ca_file()`
//! through SSL_CERT_FILE (OpenSSL, rustls-native-certs) or REQUESTS_CA_BUNDLE (Python).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The names the server certificate is valid for: the stand-ins listen on loopback only.
pub const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

pub struct Tls {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl Tls {
    /// A new CA and server certificate, written as PEM files into a fresh temp dir.
    pub fn new() -> Tls {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "task-agent test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        // Strict verifiers (OpenSSL's X509_STRICT, as Python 3.13 sets it; webpki) want a CA
        // that says it signs certificates, and a leaf that names its issuer's key.
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("server key");
        let names: Vec<String> = SERVER_NAMES.iter().map(|name| name.to_string()).collect();
        let mut server_params = CertificateParams::new(names).expect("server params");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.use_authority_key_identifier_extension = true;
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server certificate");

        let dir = tempfile::tempdir().expect("temp dir for certificates");
        fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        fs::write(dir.path().join("server.pem"), server_cert.pem()).expect("write server.pem");
        fs::write(
            dir.path().join("server-key.pem"),
            server_key.serialize_pem(),
        )
        .expect("write server-key.pem");

        Tls {
            dir,
            ca_der: ca_cert.der().clone(),
            server_der: server_cert.der().clone(),
            server_key_der: server_key.serialize_der(),
        }
    }

    /// The CA bundle (PEM) that clients must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM), for servers that take files, such as Azurite's `--cert`.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server certificate's private key (PKCS#8 PEM), for Azurite's `--key`.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A rustls server configuration presenting the server certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::try_from(self.server_key_der.clone()).expect("server key DER");
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.server_der.clone()], key)
            .expect("server TLS config");
        Arc::new(config)
    }

    /// A rustls client configuration that trusts the test CA and nothing else.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA is a usable root");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// The CA certificate as PEM text, for clients configured with data rather than a file.
    pub fn ca_pem(&self) -> String {
        fs::read_to_string(self.ca_file()).expect("read ca.pem")
    }
}

impl Default for Tls {
    fn default() -> Tls {
        Tls::new()
    }
}

/// The crypto provider named explicitly: the build may carry more than one, and then rustls
/// refuses to pick a process default by itself.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
