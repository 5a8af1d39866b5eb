//! The fetch protocol, between workers and from clients to workers. A fetcher opens a stream on
//! a connection that pinned the holder's certificate, sends a [`FetchRequest`] with the token,
//! and reads, per result, a [`FetchReply`] header followed by the raw bytes (no re-encoding of
//! bulk data). A request without the right token is refused and logged.
//!
//! Large results (at least [`BULK_MIN`] bytes) between workers take the data path instead
//! (TCP keyed by a TLS handshake, same pinned certificate and token; see
//! [`drover_protocol::data`]): the holder answers [`FetchReply::Bulk`] on the QUIC stream, and
//! the fetcher reads those results on a data connection it keeps per peer. If the data path cannot be reached, the fetcher asks
//! again on QUIC for the whole result.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_protocol::codec::{read_frame, write_frame};
use drover_protocol::data::{self, BULK_MIN};
use drover_protocol::endpoint::connect;
use drover_protocol::{tokens_equal, FetchReply, FetchRequest, PeerInfo, TaskIdx, WorkerId};
use tokio::sync::Mutex;
use tracing::warn;

use crate::store::Store;

/// The largest fetch request frame.
const MAX_REQUEST: usize = 16 << 20;
/// The largest reply header frame.
const MAX_HEADER: usize = 4096;
/// Bytes reserved up front for a result; larger ones grow as data arrives, so a lying header
/// cannot make us allocate what was never sent.
const RESERVE_LIMIT: u64 = 1 << 30;

/// Serves fetches of the results in `store` on `endpoint` until the endpoint closes.
///
/// With `bulk`, results of at least [`BULK_MIN`] bytes are sent on the data path (see
/// [`serve_data`]) to fetchers that can take them.
pub async fn serve(endpoint: quinn::Endpoint, store: Arc<Store>, token: Arc<str>, bulk: bool) {
    while let Some(incoming) = endpoint.accept().await {
        let (store, token) = (store.clone(), token.clone());
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                let (store, token) = (store.clone(), token.clone());
                let remote = conn.remote_address();
                tokio::spawn(async move {
                    if let Err(e) = serve_fetch(send, recv, &store, &token, bulk).await {
                        warn!(%remote, error = %e, "peer fetch failed");
                    }
                });
            }
        });
    }
}

async fn serve_fetch(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    store: &Store,
    token: &str,
    bulk: bool,
) -> Result<(), String> {
    let req: FetchRequest = read_frame(&mut recv, MAX_REQUEST)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("stream ended before the request")?;
    if let Some(reason) = refusal(&req, token) {
        let _ = write_frame(
            &mut send,
            &FetchReply::Refused {
                reason: reason.to_owned(),
            },
        )
        .await;
        let _ = send.finish();
        return Err(format!("refused a fetch: {reason}"));
    }
    for id in req.ids {
        match store.get(id) {
            Some(bytes) if bulk && req.bulk && bytes.len() as u64 >= BULK_MIN => {
                let reply = FetchReply::Bulk {
                    id,
                    len: bytes.len() as u64,
                };
                write_frame(&mut send, &reply)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Some(bytes) => {
                write_frame(
                    &mut send,
                    &FetchReply::Data {
                        id,
                        len: bytes.len() as u64,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
                send.write_chunk(bytes).await.map_err(|e| e.to_string())?;
            }
            None => write_frame(&mut send, &FetchReply::Missing { id })
                .await
                .map_err(|e| e.to_string())?,
        }
    }
    send.finish().map_err(|e| e.to_string())
}

/// Why a request is refused (no token or a wrong one), if it is.
fn refusal(req: &FetchRequest, token: &str) -> Option<&'static str> {
    if tokens_equal(&req.token, token) {
        None
    } else if req.token.is_empty() {
        Some("no token")
    } else {
        Some("wrong token")
    }
}

/// Serves the data path: connections on `listener` (a TLS handshake, then sealed frames),
/// each a sequence of requests answered as on QUIC (a [`FetchReply`] header, then the raw
/// bytes), until the endpoint's worker ends.
pub async fn serve_data(
    listener: tokio::net::TcpListener,
    acceptor: data::Acceptor,
    store: Arc<Store>,
    token: Arc<str>,
) {
    loop {
        let Ok((tcp, remote)) = listener.accept().await else {
            continue;
        };
        let (acceptor, store, token) = (acceptor.clone(), store.clone(), token.clone());
        tokio::spawn(async move {
            let sealed = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(%remote, error = %e, "data connection: handshake failed");
                    return;
                }
            };
            if let Err(e) = serve_data_connection(sealed, &store, &token).await {
                warn!(%remote, error = %e, "data connection failed");
            }
        });
    }
}

async fn serve_data_connection(
    mut conn: data::Sealed,
    store: &Store,
    token: &str,
) -> Result<(), String> {
    while let Some(req) = conn
        .recv_message::<FetchRequest>(MAX_REQUEST)
        .await
        .map_err(|e| e.to_string())?
    {
        if let Some(reason) = refusal(&req, token) {
            let reply = FetchReply::Refused {
                reason: reason.to_owned(),
            };
            let _ = conn.send_message(&reply).await;
            let _ = conn.shutdown().await;
            return Err(format!("refused a fetch: {reason}"));
        }
        for id in req.ids {
            match store.get(id) {
                Some(bytes) => {
                    let reply = FetchReply::Data {
                        id,
                        len: bytes.len() as u64,
                    };
                    conn.send_message(&reply).await.map_err(|e| e.to_string())?;
                    conn.send(&bytes).await.map_err(|e| e.to_string())?;
                }
                None => conn
                    .send_message(&FetchReply::Missing { id })
                    .await
                    .map_err(|e| e.to_string())?,
            }
        }
        conn.flush().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Whether `conn`'s peer presented exactly the certificate `cert`.
fn presents(conn: &quinn::Connection, cert: &[u8]) -> bool {
    conn.peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .is_some_and(|chain| chain.first().is_some_and(|c| c.as_ref() == cert))
}

/// Fetches results from peers, keeping one connection per peer.
pub struct Fetcher {
    endpoint: quinn::Endpoint,
    token: String,
    idle_timeout: Duration,
    conns: Mutex<HashMap<WorkerId, quinn::Connection>>,
    /// Idle data-path connections per peer, each for one fetch at a time.
    data: Mutex<HashMap<WorkerId, Vec<data::Sealed>>>,
    /// Results that came on the data path.
    data_results: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Fetcher")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher that connects from `endpoint` and presents `token`.
    pub fn new(endpoint: quinn::Endpoint, token: String, idle_timeout: Duration) -> Fetcher {
        Fetcher {
            endpoint,
            token,
            idle_timeout,
            conns: Mutex::new(HashMap::new()),
            data: Mutex::new(HashMap::new()),
            data_results: Default::default(),
        }
    }

    /// How many results came on the data path (TCP keyed by TLS) so far.
    pub fn data_results(&self) -> u64 {
        self.data_results.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn connection(&self, peer: &PeerInfo) -> Result<quinn::Connection, String> {
        {
            let conns = self.conns.lock().await;
            if let Some(c) = conns.get(&peer.id) {
                // Reuse it only while open and talking to the very certificate expected now.
                if c.close_reason().is_none() && presents(c, &peer.cert) {
                    return Ok(c.clone());
                }
            }
        }
        // Dial without holding the lock: a slow or dead peer must not hold up fetches from
        // others. Two fetches racing to the same new peer may both dial; the second keeps the
        // first's connection.
        let c = connect(&self.endpoint, peer.addr, &peer.cert, self.idle_timeout)
            .await
            .map_err(|e| e.to_string())?;
        let mut conns = self.conns.lock().await;
        if let Some(existing) = conns.get(&peer.id) {
            if existing.close_reason().is_none() && presents(existing, &peer.cert) {
                c.close(quinn::VarInt::from_u32(0), b"duplicate");
                return Ok(existing.clone());
            }
        }
        conns.insert(peer.id, c.clone());
        Ok(c)
    }

    /// Forgets the connection to a peer that left.
    pub async fn forget(&self, peer: WorkerId) {
        if let Some(c) = self.conns.lock().await.remove(&peer) {
            c.close(quinn::VarInt::from_u32(0), b"peer gone");
        }
        self.data.lock().await.remove(&peer);
    }

    /// Fetches `ids` from `peer` (each result with its id: those that came on QUIC first, then
    /// those that came on the data path); all or an error.
    pub async fn fetch(
        &self,
        peer: &PeerInfo,
        ids: &[TaskIdx],
    ) -> Result<Vec<(TaskIdx, Bytes)>, String> {
        let got = self.fetch_partial(peer, ids).await;
        match got.error {
            None => Ok(got.got),
            Some(e) => Err(e),
        }
    }

    /// Fetches `ids` from `peer` in one request and returns what arrived, what did not, and
    /// why (the first thing that went wrong).
    pub async fn fetch_partial(&self, peer: &PeerInfo, ids: &[TaskIdx]) -> Fetched {
        let mut out = Fetched {
            got: Vec::with_capacity(ids.len()),
            missing: Vec::new(),
            error: None,
        };
        let who = format!("worker {:?} at {}", peer.name, peer.addr);
        if let Err(e) = self.fetch_into(peer, ids, &who, &mut out).await {
            out.error = Some(e);
        }
        let got: std::collections::HashSet<TaskIdx> = out.got.iter().map(|(i, _)| *i).collect();
        for &i in ids {
            if !got.contains(&i) && !out.missing.contains(&i) {
                out.missing.push(i);
            }
        }
        out
    }

    async fn fetch_into(
        &self,
        peer: &PeerInfo,
        ids: &[TaskIdx],
        who: &str,
        out: &mut Fetched,
    ) -> Result<(), String> {
        let mut bulk = Vec::new();
        let quic = self.fetch_quic(peer, ids, true, who, out, &mut bulk).await;
        if !bulk.is_empty() {
            if let Err(e) = self.fetch_data(peer, &bulk, who, out).await {
                // The data path is blocked or broke: the whole results again, on QUIC.
                warn!(peer = %who, error = %e, "data path failed; fetching on QUIC");
                let again: Vec<TaskIdx> = bulk
                    .iter()
                    .map(|&(id, _)| id)
                    .filter(|id| !out.got.iter().any(|(g, _)| g == id))
                    .collect();
                self.fetch_quic(peer, &again, false, who, out, &mut Vec::new())
                    .await?;
            }
        }
        quic
    }

    /// Reads `bulk` (id, length) results from `peer`'s data path into `out`, on an idle data
    /// connection or a new one (kept for the next fetch if this one ends well).
    async fn fetch_data(
        &self,
        peer: &PeerInfo,
        bulk: &[(TaskIdx, u64)],
        who: &str,
        out: &mut Fetched,
    ) -> Result<(), String> {
        let addr = peer.data_addr.ok_or("no data path")?;
        let idle = self
            .data
            .lock()
            .await
            .get_mut(&peer.id)
            .and_then(|v| v.pop());
        let mut conn = match idle {
            Some(c) => c,
            None => data::connect(addr, &peer.cert).await?,
        };
        let req = FetchRequest {
            token: self.token.clone(),
            ids: bulk.iter().map(|&(id, _)| id).collect(),
            bulk: false,
        };
        conn.send_message(&req).await.map_err(|e| e.to_string())?;
        conn.flush().await.map_err(|e| e.to_string())?;
        for &(id, len) in bulk {
            let header: FetchReply = conn
                .recv_message(MAX_HEADER)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{who} ended the data connection early"))?;
            match header {
                FetchReply::Data { id: got, len: n } if got == id && n == len => {
                    let early = |e: std::io::Error| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => {
                            format!("{who} ended the transfer of result {id} early")
                        }
                        _ => format!("the transfer of result {id} from {who} failed: {e}"),
                    };
                    let cannot = || format!("cannot allocate {len} bytes for result {id}");
                    // At most RESERVE_LIMIT ahead of what arrived.
                    let mut buf = crate::buffers::take_len(len.min(RESERVE_LIMIT) as usize)
                        .ok_or_else(cannot)?;
                    conn.recv_exact(&mut buf).await.map_err(early)?;
                    while (buf.len() as u64) < len {
                        let at = buf.len();
                        let step = (len - at as u64).min(RESERVE_LIMIT) as usize;
                        buf.try_reserve_exact(step).map_err(|_| cannot())?;
                        buf.resize(at + step, 0);
                        conn.recv_exact(&mut buf[at..]).await.map_err(early)?;
                    }
                    out.got.push((id, crate::buffers::into_bytes(buf)));
                    self.data_results
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                FetchReply::Missing { id } => out.missing.push(id),
                FetchReply::Refused { reason } => {
                    return Err(format!("{who} refused the fetch: {reason}"))
                }
                other => return Err(format!("{who} answered {other:?} for result {id}")),
            }
        }
        self.data
            .lock()
            .await
            .entry(peer.id)
            .or_default()
            .push(conn);
        Ok(())
    }

    /// Fetches `ids` on QUIC; results the holder sends to the data path (when `bulk`) are
    /// listed in `to_data` with their lengths.
    async fn fetch_quic(
        &self,
        peer: &PeerInfo,
        ids: &[TaskIdx],
        bulk: bool,
        who: &str,
        out: &mut Fetched,
        to_data: &mut Vec<(TaskIdx, u64)>,
    ) -> Result<(), String> {
        let conn = self
            .connection(peer)
            .await
            .map_err(|e| format!("cannot reach {who}: {e}"))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("{who}: {e}"))?;
        let req = FetchRequest {
            token: self.token.clone(),
            ids: ids.to_vec(),
            bulk: bulk && peer.data_addr.is_some(),
        };
        write_frame(&mut send, &req)
            .await
            .map_err(|e| format!("{who}: {e}"))?;
        let _ = send.finish();
        let mut first_missing: Option<String> = None;
        for _ in ids {
            let header: FetchReply = read_frame(&mut recv, MAX_HEADER)
                .await
                .map_err(|e| format!("{who}: {e}"))?
                .ok_or_else(|| format!("{who} ended the transfer early"))?;
            match header {
                FetchReply::Data { id, len } => {
                    let mut buf = crate::buffers::take(len.min(RESERVE_LIMIT) as usize)
                        .ok_or_else(|| format!("cannot allocate {len} bytes for result {id}"))?;
                    while (buf.len() as u64) < len {
                        let want = (len - buf.len() as u64).min(1 << 20) as usize;
                        match recv
                            .read_chunk(want, true)
                            .await
                            .map_err(|e| format!("{who}: {e}"))?
                        {
                            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
                            None => {
                                return Err(format!(
                                    "{who} ended the transfer of result {id} early"
                                ))
                            }
                        }
                    }
                    out.got.push((id, crate::buffers::into_bytes(buf)));
                }
                FetchReply::Bulk { id, len } => to_data.push((id, len)),
                FetchReply::Missing { id } => {
                    out.missing.push(id);
                    first_missing.get_or_insert_with(|| format!("{who} does not hold result {id}"));
                }
                FetchReply::Refused { reason } => {
                    return Err(format!("{who} refused the fetch: {reason}"))
                }
            }
        }
        match first_missing {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// What [`Fetcher::fetch_partial`] brought.
#[derive(Debug)]
pub struct Fetched {
    /// Results that arrived, in order.
    pub got: Vec<(TaskIdx, Bytes)>,
    /// Results that did not.
    pub missing: Vec<TaskIdx>,
    /// Why some did not arrive.
    pub error: Option<String>,
}
