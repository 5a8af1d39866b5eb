//! The data path: large results between workers over TLS on TCP, beside QUIC.
//!
//! QUIC (quinn) moves about 0.5 GB/s per connection on a loopback here, bound by its per-packet
//! work in user space; TCP leaves segmentation, acknowledgement and retransmission to the
//! kernel, and TLS 1.3 on it costs little more than the cipher. So a worker also listens on TCP
//! (same address, any port), presenting the *same* certificate its QUIC endpoint presents: a
//! fetcher pins it exactly as for QUIC, and every request carries the same token. A fetch still
//! starts on QUIC; the holder answers [`crate::FetchReply::Bulk`] for results above
//! [`BULK_MIN`] bytes, and the fetcher takes those over this path. Small results keep QUIC's
//! latency; nothing else changes.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

use crate::tls::{Identity, TlsError};

/// ALPN id of data connections.
pub const DATA_ALPN: &[u8] = b"drover-data/1";

/// Results of at least this many bytes go over the data path.
pub const BULK_MIN: u64 = 256 << 10;

/// Accepts data connections (re-exported for the worker).
pub use tokio_rustls::TlsAcceptor;

/// A TLS stream of the data path, as the fetcher sees it.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
/// A TLS stream of the data path, as the holder sees it.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Socket buffers asked for on data connections (the kernel may give less).
const SOCKET_BUFFER: usize = 4 << 20;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener for the data path on `ip` (any port), presenting `identity`.
pub async fn listen(
    identity: &Identity,
    ip: std::net::IpAddr,
) -> Result<(TcpListener, tokio_rustls::TlsAcceptor), TlsError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(identity.cert.clone())], key)?;
    config.alpn_protocols = vec![DATA_ALPN.to_vec()];
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(|e| TlsError::Quic(format!("cannot listen for data on {ip}: {e}")))?;
    Ok((listener, tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Prepares an accepted or dialled socket for bulk data.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let s = socket2::SockRef::from(stream);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
}

/// Connects to a data path at `addr`, trusting exactly the certificate `pinned`.
pub async fn connect(addr: SocketAddr, pinned: &[u8]) -> Result<ClientStream, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pinned.to_vec()))
        .map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![DATA_ALPN.to_vec()];
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tune(&tcp);
    let name = ServerName::try_from(crate::SERVER_NAME).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} failed (wrong certificate?): {e}"))
}
