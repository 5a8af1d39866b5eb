//! Lifelines: how the scheduler notices within moments that a worker or client process died.
//!
//! QUIC runs over UDP, so a peer that dies says nothing: the scheduler would only notice at the
//! connection's idle timeout (10 s by default). A process that dies on a machine that is still up
//! has its sockets closed by the operating system, though, and a closed TCP socket is seen at
//! once by the other end. So after the handshake the scheduler offers a [`Lifeline`]: the
//! newcomer opens one TCP connection to the scheduler's lifeline port, writes the offer's
//! 16-byte nonce, and keeps the connection open for the session's life, sending nothing more.
//! When the scheduler reads end-of-stream or an error on it, the session is over and its QUIC
//! connection is closed. A machine that vanishes or a cut network closes nothing; the idle
//! timeout still covers those.
//!
//! The lifeline carries no secret and no data: the nonce only ties it to its session, is random
//! per session and is accepted once. TCP keep-alives keep middleboxes from dropping it while idle.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::messages::Lifeline;

/// How long a new lifeline connection may take to send its nonce.
const NONCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a lifeline may take before the newcomer goes on without one.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

type Waiting = Arc<Mutex<HashMap<[u8; 16], oneshot::Sender<TcpStream>>>>;

/// The scheduler's side: a TCP listener matching incoming lifelines to their sessions.
#[derive(Debug)]
pub struct LifelineServer {
    port: u16,
    waiting: Waiting,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for LifelineServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl LifelineServer {
    /// Listens on an ephemeral TCP port of `ip`.
    pub async fn bind(ip: IpAddr) -> std::io::Result<LifelineServer> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let port = listener.local_addr()?.port();
        let waiting: Waiting = Arc::default();
        let accept = tokio::spawn(accept_loop(listener, waiting.clone()));
        Ok(LifelineServer {
            port,
            waiting,
            accept,
        })
    }

    /// The port lifelines connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A fresh offer for one session, and the watch that tells when its lifeline closes.
    pub fn offer(&self) -> (Lifeline, LifelineWatch) {
        use rand::RngCore;
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(nonce, tx);
        let watch = LifelineWatch {
            nonce,
            waiting: self.waiting.clone(),
            opened: Some(rx),
        };
        (
            Lifeline {
                port: self.port,
                nonce,
            },
            watch,
        )
    }
}

async fn accept_loop(listener: TcpListener, waiting: Waiting) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let waiting = waiting.clone();
        tokio::spawn(async move {
            let mut nonce = [0u8; 16];
            let read = tokio::time::timeout(NONCE_TIMEOUT, stream.read_exact(&mut nonce)).await;
            if !matches!(read, Ok(Ok(_))) {
                return;
            }
            let sender = waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&nonce);
            if let Some(tx) = sender {
                let _ = tx.send(stream);
            }
        });
    }
}

/// One session's lifeline as the scheduler sees it. Dropping it withdraws the offer.
#[derive(Debug)]
pub struct LifelineWatch {
    nonce: [u8; 16],
    waiting: Waiting,
    opened: Option<oneshot::Receiver<TcpStream>>,
}

impl Drop for LifelineWatch {
    fn drop(&mut self) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.nonce);
    }
}

impl LifelineWatch {
    /// Resolves when the lifeline, once opened, closes (end of stream or an error): the other
    /// process is gone. Never resolves for a lifeline that was never opened.
    pub async fn closed(&mut self) {
        let Some(rx) = self.opened.take() else {
            return std::future::pending().await;
        };
        let Ok(mut stream) = rx.await else {
            return std::future::pending().await;
        };
        tracing::debug!(peer = ?stream.peer_addr().ok(), "lifeline open");
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // nothing is expected; ignore it
            }
        }
    }
}

/// The newcomer's side: opens the lifeline offered by the scheduler at `scheduler` and returns
/// the connection, to be kept open (dropped when the session ends).
pub async fn open(scheduler: SocketAddr, lifeline: &Lifeline) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::new(scheduler.ip(), lifeline.port);
    let connect = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(&lifeline.nonce).await?;
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(stream)
    };
    tokio::time::timeout(OPEN_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no lifeline to {addr} within {OPEN_TIMEOUT:?}"),
            ))
        })
}

/// Opens the lifeline when one is offered, logging (not failing) when it cannot be opened:
/// the session then relies on the idle timeout alone.
pub async fn open_if_offered(
    scheduler: SocketAddr,
    lifeline: Option<&Lifeline>,
) -> Option<TcpStream> {
    let lifeline = lifeline?;
    match open(scheduler, lifeline).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the lifeline to the scheduler; a crash of this process will be noticed only at the idle timeout");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_lifeline_is_seen_at_once_and_nonces_are_single_use() {
        let server = LifelineServer::bind("127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        let (offer, mut watch) = server.offer();
        let sched: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let stream = open(sched, &offer).await.unwrap();
        // A second connection with the same nonce is not matched to anything.
        let _again = open(sched, &offer).await.unwrap();
        drop(stream);
        tokio::time::timeout(Duration::from_secs(10), watch.closed())
            .await
            .expect("closing the lifeline is noticed");
        // A withdrawn offer leaves nothing behind.
        let (_, w) = server.offer();
        drop(w);
        assert!(server.waiting.lock().unwrap().is_empty());
    }
}
