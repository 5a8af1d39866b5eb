//! The data path: large results between workers over TCP, authenticated and encrypted with
//! keys from a TLS 1.3 handshake, beside QUIC.
//!
//! QUIC (quinn) moves about 0.5 GB/s per connection on a loopback here, bound by its per-packet
//! work in user space; TCP leaves segmentation, acknowledgement and retransmission to the
//! kernel. A worker also listens on TCP (same address, any port). A connection starts with a
//! TLS 1.3 handshake in which the worker presents the *same* certificate its QUIC endpoint
//! presents: a fetcher pins it exactly as for QUIC, and every request carries the same token.
//!
//! After the handshake the connection leaves TLS's record layer for [`Sealed`] frames: each
//! is up to [`FRAME`] bytes sealed with AES-256-GCM, under a key per direction derived from the
//! handshake with the TLS exporter (RFC 8446, section 7.5), the frame's number as its nonce
//! and its length header as associated data. So a frame cannot be read, altered, replayed,
//! reordered or dropped without the receiver noticing, like TLS's records, but frames are 16
//! times larger and are opened in place in the receiver's own buffer: rustls copies every
//! 16 KiB record into a fresh buffer and out of it again, which halved the throughput.
//!
//! A fetch still starts on QUIC; the holder answers [`crate::FetchReply::Bulk`] for results
//! above [`BULK_MIN`] bytes, and the fetcher takes those over this path. Small results keep
//! QUIC's latency; nothing else changes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::codec::{encode, CodecError};
use crate::tls::{Identity, TlsError};

/// ALPN id of data connections (2: sealed frames after the handshake).
pub const DATA_ALPN: &[u8] = b"drover-data/2";

/// Results of at least this many bytes go over the data path.
pub const BULK_MIN: u64 = 256 << 10;

/// The most plaintext bytes in one sealed frame.
pub const FRAME: usize = 256 << 10;

/// Bytes of a frame's length header.
const HEAD: usize = 4;
/// Bytes of a frame's authentication tag.
const TAG: usize = 16;

/// What the holder sends, through TLS, once the handshake is done. The fetcher speaks only
/// after it and the holder only answers, so neither side's TLS layer has read anything of
/// the sealed frames when it is set aside.
const READY: &[u8] = b"drover data ready";

/// The TLS exporter label of the two frame keys (fetcher to holder, then holder to fetcher).
const EXPORTER_LABEL: &[u8] = b"EXPORTER-drover-data-frame-keys";

/// Socket buffers asked for on data connections (the kernel may give less).
const SOCKET_BUFFER: usize = 4 << 20;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts data connections: the TLS handshake, then sealed frames.
#[derive(Clone)]
pub struct Acceptor {
    tls: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Runs the handshake on an accepted socket and returns the sealed connection.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Sealed, String> {
        tune(&tcp);
        let mut tls = self
            .tls
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let keys = FrameKeys::export(|out| {
            tls.get_ref()
                .1
                .export_keying_material(out, EXPORTER_LABEL, None)
                .map(|_| ())
        })?;
        tls.write_all(READY)
            .await
            .map_err(|e| format!("cannot answer the handshake: {e}"))?;
        tls.flush()
            .await
            .map_err(|e| format!("cannot answer the handshake: {e}"))?;
        let (tcp, _) = tls.into_inner();
        Ok(Sealed::new(tcp, keys.to_fetcher, keys.to_holder))
    }
}

/// A listener for the data path on `ip` (any port), presenting `identity`.
pub async fn listen(
    identity: &Identity,
    ip: std::net::IpAddr,
) -> Result<(TcpListener, Acceptor), TlsError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(identity.cert.clone())], key)?;
    config.alpn_protocols = vec![DATA_ALPN.to_vec()];
    // Nothing may follow the handshake on the TLS layer but READY (and no connection resumes).
    config.send_tls13_tickets = 0;
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(|e| TlsError::Quic(format!("cannot listen for data on {ip}: {e}")))?;
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Ok((listener, Acceptor { tls }))
}

/// Prepares an accepted or dialled socket for bulk data.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let s = socket2::SockRef::from(stream);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
}

/// Connects to a data path at `addr`, trusting exactly the certificate `pinned`.
pub async fn connect(addr: SocketAddr, pinned: &[u8]) -> Result<Sealed, String> {
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
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} failed (wrong certificate?): {e}"))?;
    let mut ready = [0u8; READY.len()];
    tls.read_exact(&mut ready)
        .await
        .map_err(|e| format!("{addr} did not finish the data handshake: {e}"))?;
    // The holder sends nothing after READY until we speak: the TLS layer holds nothing more.
    let left = tls
        .get_mut()
        .1
        .process_new_packets()
        .map_err(|e| format!("{addr} broke the data handshake: {e}"))?;
    if ready != READY || left.plaintext_bytes_to_read() != 0 {
        return Err(format!("{addr} is not a drover data path"));
    }
    let keys = FrameKeys::export(|out| {
        tls.get_ref()
            .1
            .export_keying_material(out, EXPORTER_LABEL, None)
            .map(|_| ())
    })?;
    let (tcp, _) = tls.into_inner();
    Ok(Sealed::new(tcp, keys.to_holder, keys.to_fetcher))
}

/// The two directions' frame keys of one connection.
struct FrameKeys {
    to_holder: LessSafeKey,
    to_fetcher: LessSafeKey,
}

impl FrameKeys {
    fn export(
        export: impl FnOnce(&mut [u8]) -> Result<(), rustls::Error>,
    ) -> Result<FrameKeys, String> {
        let mut material = [0u8; 64];
        export(&mut material).map_err(|e| format!("cannot derive the data keys: {e}"))?;
        let key = |bytes: &[u8]| {
            UnboundKey::new(&AES_256_GCM, bytes)
                .map(LessSafeKey::new)
                .map_err(|_| "cannot make a data key".to_owned())
        };
        let keys = FrameKeys {
            to_holder: key(&material[..32])?,
            to_fetcher: key(&material[32..])?,
        };
        material.fill(0);
        Ok(keys)
    }
}

/// The nonce of frame number `n` of one direction (each direction has its own key).
fn nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// A data connection after its handshake: a byte stream in sealed frames (a little-endian
/// `u32` plaintext length, the ciphertext, a 16-byte tag). Writes gather frames and go out
/// about [`FRAME`] bytes at a time (and at [`Sealed::flush`]); reads open frames straight in
/// the caller's buffer when they fit.
pub struct Sealed {
    tcp: TcpStream,
    seal: LessSafeKey,
    sealed: u64,
    open: LessSafeKey,
    opened: u64,
    /// Frames sealed and not yet written.
    out: Vec<u8>,
    /// The plaintext of the last frame opened, `pending[taken..]` not yet read.
    pending: Vec<u8>,
    taken: usize,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Sealed")
            .field("peer", &self.tcp.peer_addr().ok())
            .field("sealed", &self.sealed)
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

impl Sealed {
    fn new(tcp: TcpStream, seal: LessSafeKey, open: LessSafeKey) -> Sealed {
        Sealed {
            tcp,
            seal,
            sealed: 0,
            open,
            opened: 0,
            out: Vec::with_capacity(2 * (HEAD + FRAME + TAG)),
            pending: Vec::new(),
            taken: 0,
        }
    }

    /// Sends `data` (written by [`Sealed::flush`] at the latest).
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(FRAME) {
            if self.out.len() + HEAD + chunk.len() + TAG > self.out.capacity() {
                self.write_out().await?;
            }
            let start = self.out.len();
            self.out
                .extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            self.out.extend_from_slice(chunk);
            let (head, body) = self.out[start..].split_at_mut(HEAD);
            let tag = self
                .seal
                .seal_in_place_separate_tag(nonce(self.sealed), Aad::from(&*head), body)
                .map_err(|_| broken("cannot seal a data frame"))?;
            self.sealed += 1;
            self.out.extend_from_slice(tag.as_ref());
            if self.out.len() >= FRAME {
                self.write_out().await?;
            }
        }
        Ok(())
    }

    /// Writes what was sent and not yet written.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.write_out().await?;
        self.tcp.flush().await
    }

    async fn write_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.tcp.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends one message as a codec frame.
    pub async fn send_message<M: Serialize + ?Sized>(&mut self, msg: &M) -> Result<(), CodecError> {
        let frame = encode(msg)?;
        self.send(&frame)
            .await
            .map_err(|e| CodecError::Stream(e.to_string()))
    }

    /// Reads one message of at most `max` bytes; `Ok(None)` when the peer closed the
    /// connection cleanly between messages.
    pub async fn recv_message<M: DeserializeOwned>(
        &mut self,
        max: usize,
    ) -> Result<Option<M>, CodecError> {
        let stream = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => CodecError::Truncated,
            _ => CodecError::Stream(e.to_string()),
        };
        if self.taken == self.pending.len() && !self.open_pending().await.map_err(stream)? {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.recv_exact(&mut len).await.map_err(stream)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            return Err(CodecError::TooLarge { len, max });
        }
        let mut body = vec![0u8; len];
        self.recv_exact(&mut body).await.map_err(stream)?;
        crate::codec::decode(&body).map(Some)
    }

    /// Fills `dest` with the next bytes of the stream.
    pub async fn recv_exact(&mut self, dest: &mut [u8]) -> io::Result<()> {
        let mut at = self.take_pending(dest);
        while at < dest.len() {
            let head = self
                .read_head()
                .await?
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            let n = u32::from_le_bytes(head) as usize;
            if n <= dest.len() - at {
                self.read_frame(head, &mut dest[at..at + n]).await?;
                at += n;
            } else {
                let mut pending = std::mem::take(&mut self.pending);
                pending.resize(n, 0);
                self.read_frame(head, &mut pending).await?;
                self.pending = pending;
                self.taken = 0;
                at += self.take_pending(&mut dest[at..]);
            }
        }
        Ok(())
    }

    /// Copies what is pending into the start of `dest`; how many bytes.
    fn take_pending(&mut self, dest: &mut [u8]) -> usize {
        let n = (self.pending.len() - self.taken).min(dest.len());
        dest[..n].copy_from_slice(&self.pending[self.taken..self.taken + n]);
        self.taken += n;
        n
    }

    /// Opens the next frame into the pending buffer; `false` at a clean end of the stream.
    async fn open_pending(&mut self) -> io::Result<bool> {
        let Some(head) = self.read_head().await? else {
            return Ok(false);
        };
        let mut pending = std::mem::take(&mut self.pending);
        pending.resize(u32::from_le_bytes(head) as usize, 0);
        self.read_frame(head, &mut pending).await?;
        self.pending = pending;
        self.taken = 0;
        Ok(true)
    }

    /// Reads a frame's length header; `None` if the stream ended cleanly before it.
    async fn read_head(&mut self) -> io::Result<Option<[u8; HEAD]>> {
        let mut head = [0u8; HEAD];
        let mut got = 0;
        while got < HEAD {
            match self.tcp.read(&mut head[got..]).await? {
                0 if got == 0 => return Ok(None),
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        let n = u32::from_le_bytes(head) as usize;
        if n == 0 || n > FRAME {
            return Err(broken("a data frame of a length never sent"));
        }
        Ok(Some(head))
    }

    /// Reads the body and tag of the frame `head` announced and opens it in `body` (its
    /// exact size).
    async fn read_frame(&mut self, head: [u8; HEAD], body: &mut [u8]) -> io::Result<()> {
        self.tcp.read_exact(body).await?;
        let mut tag = [0u8; TAG];
        self.tcp.read_exact(&mut tag).await?;
        self.open
            .open_in_place_separate_tag(
                nonce(self.opened),
                Aad::from(&head),
                Tag::from(tag),
                body,
                0..,
            )
            .map_err(|_| broken("a data frame failed authentication"))?;
        self.opened += 1;
        Ok(())
    }

    /// Writes what is left and closes the sending side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.tcp.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (Sealed, Sealed) {
        let id = Identity::generate().unwrap();
        let (listener, acceptor) = listen(&id, "127.0.0.1".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.unwrap()
        });
        let fetcher = connect(addr, &id.cert).await.unwrap();
        (fetcher, holder.await.unwrap())
    }

    #[tokio::test]
    async fn messages_and_bulk_bytes_cross_in_both_directions() {
        let (mut f, mut h) = pair().await;
        let big: Vec<u8> = (0..3 * FRAME + 123).map(|i| (i * 7 % 251) as u8).collect();
        f.send_message(&vec![1u32, 2, 3]).await.unwrap();
        f.flush().await.unwrap();
        let got: Vec<u32> = h.recv_message(1 << 10).await.unwrap().unwrap();
        assert_eq!(got, [1, 2, 3]);
        h.send_message("header").await.unwrap();
        h.send(&big).await.unwrap();
        h.send_message("after").await.unwrap();
        h.shutdown().await.unwrap();
        let header: String = f.recv_message(64).await.unwrap().unwrap();
        assert_eq!(header, "header");
        // Read in pieces that cut frames: the rest of a frame waits for the next read.
        let mut back = vec![0u8; big.len()];
        let (a, b) = back.split_at_mut(FRAME + 5);
        f.recv_exact(a).await.unwrap();
        f.recv_exact(b).await.unwrap();
        assert!(back == big);
        let after: String = f.recv_message(64).await.unwrap().unwrap();
        assert_eq!(after, "after");
        assert!(f.recv_message::<String>(64).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_altered_frame_fails_authentication() {
        let id = Identity::generate().unwrap();
        let (listener, acceptor) = listen(&id, "127.0.0.1".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A holder whose frames are altered on the wire: the fetcher must refuse them. (It
        // answers a request, as holders do: nothing may follow READY before the fetcher spoke.)
        let holder = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut h = acceptor.accept(tcp).await.unwrap();
            let _: Option<String> = h.recv_message(64).await.unwrap();
            h.send(b"genuine bytes").await.unwrap();
            h.out[HEAD + 2] ^= 1;
            h.flush().await.unwrap();
            h
        });
        let mut f = connect(addr, &id.cert).await.unwrap();
        f.send_message("request").await.unwrap();
        f.flush().await.unwrap();
        let mut got = [0u8; 13];
        let err = f.recv_exact(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("authentication"), "{err}");
        drop(holder.await.unwrap());
    }

    #[tokio::test]
    async fn a_frame_replayed_out_of_order_fails_authentication() {
        let (mut f, mut h) = pair().await;
        f.send_message("request").await.unwrap();
        f.flush().await.unwrap();
        let _: Option<String> = h.recv_message(64).await.unwrap();
        h.send(b"one").await.unwrap();
        let first = h.out.clone();
        h.send(b"two").await.unwrap();
        h.out.truncate(first.len());
        h.out.extend_from_slice(&first); // frame 0 again where frame 1 belongs
        h.flush().await.unwrap();
        let mut got = [0u8; 3];
        f.recv_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one");
        let err = f.recv_exact(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_wrong_certificate_is_refused_at_the_handshake() {
        let id = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let (listener, acceptor) = listen(&id, "127.0.0.1".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        let err = connect(addr, &other.cert).await.unwrap_err();
        assert!(err.contains("handshake"), "{err}");
    }
}
