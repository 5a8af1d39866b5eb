//! Certificates and TLS configs. Every Drover endpoint has a self-signed certificate for the
//! name [`SERVER_NAME`](crate::SERVER_NAME); whoever connects pins the exact certificate it was
//! given (from `access.json`, or from the scheduler for peers), so no CA is involved.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate and its private key, DER-encoded.
#[derive(Clone)]
pub struct Identity {
    /// The DER certificate.
    pub cert: Vec<u8>,
    /// The PKCS#8 DER private key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert_len", &self.cert.len())
            .finish_non_exhaustive()
    }
}

/// Errors building TLS or QUIC configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration or certificate.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate is not usable for QUIC.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

impl Identity {
    /// A fresh self-signed certificate for [`SERVER_NAME`](crate::SERVER_NAME).
    pub fn generate() -> Result<Identity, TlsError> {
        let ck = rcgen::generate_simple_self_signed(vec![crate::SERVER_NAME.to_owned()])?;
        Ok(Identity {
            cert: ck.cert.der().to_vec(),
            key: ck.signing_key.serialize_der(),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport settings shared by every Drover connection: idle timeout and keep-alives, so a
/// vanished peer is noticed within seconds, and generous windows for bulk transfers.
pub fn transport(idle_timeout: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle_timeout).expect("idle timeout within QUIC's range"),
    ));
    t.keep_alive_interval(Some(idle_timeout / 4));
    t.stream_receive_window(quinn::VarInt::from_u32(64 << 20));
    t.receive_window(quinn::VarInt::from_u32(256 << 20));
    t.send_window(256 << 20);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024));
    // Datagrams stay at the endpoint default (1,472 bytes): bulk results take the data path
    // (TCP keyed by TLS, `crate::data`), and larger datagrams would make every endpoint's receive
    // buffers many times larger.
    Arc::new(t)
}

/// A QUIC server config presenting `identity`.
pub fn server_config(
    identity: &Identity,
    idle_timeout: Duration,
) -> Result<quinn::ServerConfig, TlsError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(identity.cert.clone())], key)?;
    crypto.alpn_protocols = vec![crate::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport(idle_timeout));
    Ok(config)
}

/// A QUIC client config that trusts exactly the certificate `pinned`.
pub fn client_config(
    pinned: &[u8],
    idle_timeout: Duration,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pinned.to_vec()))?;
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![crate::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport(idle_timeout));
    Ok(config)
}
