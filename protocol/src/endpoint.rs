//! QUIC endpoints and the authenticated handshake: the connecting side opens one bidirectional
//! control stream and sends [`Hello`] (with the token) as its first frame; the accepting side
//! answers [`Welcome`].

use std::net::SocketAddr;
use std::time::Duration;

use crate::codec::{read_frame, write_frame, CodecError};
use crate::messages::{Hello, Lifeline, Welcome};
use crate::tls::{client_config, server_config, Identity, TlsError};

/// The largest hello frame (a worker lists its functions and certificate).
pub const MAX_HELLO_FRAME: usize = 1 << 20;

/// Errors of endpoints and handshakes.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// TLS or QUIC configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding the UDP socket failed.
    #[error("cannot bind {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: std::io::Error,
    },
    /// The TLS handshake failed: the other side's certificate is not the pinned one (or ours
    /// was refused). Not worth retrying.
    #[error("cannot connect to {addr}: TLS handshake failed (wrong certificate?): {error}")]
    Certificate {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: String,
    },
    /// Connecting failed (unreachable, timed out).
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: String,
    },
    /// The handshake failed.
    #[error("handshake with {addr} failed: {error}")]
    Handshake {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: String,
    },
    /// The other side refused us.
    #[error("refused by {addr}: {reason}")]
    Refused {
        /// The address.
        addr: SocketAddr,
        /// Its reason.
        reason: String,
    },
}

/// An endpoint that accepts connections presenting `identity`, and can connect out.
pub fn server_endpoint(
    identity: &Identity,
    bind: SocketAddr,
    idle_timeout: Duration,
) -> Result<quinn::Endpoint, EndpointError> {
    server_endpoint_on(identity, bind_udp(bind)?, idle_timeout)
}

/// Binds the UDP socket a server endpoint will use. Separate from [`server_endpoint_on`] so a
/// server can find its port taken before it writes anything (certificates, tokens).
pub fn bind_udp(bind: SocketAddr) -> Result<std::net::UdpSocket, EndpointError> {
    let socket = std::net::UdpSocket::bind(bind)
        .map_err(|error| EndpointError::Bind { addr: bind, error })?;
    // Bulk transfers arrive in bursts: a small receive buffer drops datagrams, and QUIC's
    // congestion control then slows the whole transfer down. The kernel caps these at its
    // limits (net.core.rmem_max, wmem_max); a refusal is harmless.
    let s = socket2::SockRef::from(&socket);
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    Ok(socket)
}

/// The UDP socket buffers asked for (the kernel may give less).
const UDP_BUFFER: usize = 16 << 20;

/// A server endpoint (as [`server_endpoint`]) on a socket already bound by [`bind_udp`].
pub fn server_endpoint_on(
    identity: &Identity,
    socket: std::net::UdpSocket,
    idle_timeout: Duration,
) -> Result<quinn::Endpoint, EndpointError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let config = server_config(identity, idle_timeout)?;
    let runtime = quinn::default_runtime().ok_or_else(|| EndpointError::Bind {
        addr,
        error: std::io::Error::other("no async runtime to drive the endpoint"),
    })?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )
    .map_err(|error| EndpointError::Bind { addr, error })
}

/// An endpoint that only connects out.
pub fn client_endpoint() -> Result<quinn::Endpoint, EndpointError> {
    let bind: SocketAddr = "0.0.0.0:0".parse().expect("valid address");
    let socket = bind_udp(bind)?;
    let runtime = quinn::default_runtime().ok_or_else(|| EndpointError::Bind {
        addr: bind,
        error: std::io::Error::other("no async runtime to drive the endpoint"),
    })?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .map_err(|error| EndpointError::Bind { addr: bind, error })
}

/// Connects to `addr`, trusting exactly the certificate `pinned`.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    pinned: &[u8],
    idle_timeout: Duration,
) -> Result<quinn::Connection, EndpointError> {
    let config = client_config(pinned, idle_timeout)?;
    let connecting = endpoint
        .connect_with(config, addr, crate::SERVER_NAME)
        .map_err(|e| EndpointError::Connect {
            addr,
            error: e.to_string(),
        })?;
    connecting.await.map_err(|e| match &e {
        // TLS alerts travel as QUIC "crypto" errors, codes 0x100 to 0x1ff.
        quinn::ConnectionError::TransportError(t)
            if (0x100..0x200).contains(&u64::from(t.code)) =>
        {
            EndpointError::Certificate {
                addr,
                error: e.to_string(),
            }
        }
        _ => EndpointError::Connect {
            addr,
            error: e.to_string(),
        },
    })
}

/// The control stream of an established session.
#[derive(Debug)]
pub struct Session {
    /// Frames to the other side.
    pub send: quinn::SendStream,
    /// Frames from the other side.
    pub recv: quinn::RecvStream,
    /// The id the scheduler gave us.
    pub id: u32,
    /// The lifeline the scheduler offers (see [`crate::lifeline`]).
    pub lifeline: Option<Lifeline>,
}

/// Opens the control stream, says hello, and waits for the welcome.
pub async fn say_hello(conn: &quinn::Connection, hello: &Hello) -> Result<Session, EndpointError> {
    let addr = conn.remote_address();
    let fail = |e: &dyn std::fmt::Display| EndpointError::Handshake {
        addr,
        error: e.to_string(),
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| fail(&e))?;
    write_frame(&mut send, hello).await.map_err(|e| fail(&e))?;
    match read_frame::<Welcome>(&mut recv, MAX_HELLO_FRAME).await {
        Ok(Some(Welcome::Accepted { id, lifeline })) => Ok(Session {
            send,
            recv,
            id,
            lifeline,
        }),
        Ok(Some(Welcome::Refused { reason })) => Err(EndpointError::Refused { addr, reason }),
        Ok(None) => Err(fail(&"connection closed before the welcome")),
        Err(CodecError::Stream(e)) => Err(EndpointError::Refused {
            addr,
            reason: format!("connection closed: {e}"),
        }),
        Err(e) => Err(fail(&e)),
    }
}

/// Accepts the control stream of a new connection and reads its hello.
pub async fn read_hello(
    conn: &quinn::Connection,
) -> Result<(quinn::SendStream, quinn::RecvStream, Hello), String> {
    let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
    match read_frame::<Hello>(&mut recv, MAX_HELLO_FRAME).await {
        Ok(Some(h)) => Ok((send, recv, h)),
        Ok(None) => Err("stream closed before hello".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
