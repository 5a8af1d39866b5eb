//! The peer fetch protocol over real QUIC and the data path (TCP, keyed by a TLS handshake):
//! the right token gets the bytes; a wrong or missing token gets nothing; large results take
//! the data path, and come on QUIC when it cannot be reached.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_protocol::data::{self, BULK_MIN};
use drover_protocol::endpoint::{client_endpoint, server_endpoint};
use drover_protocol::tls::Identity;
use drover_protocol::{FetchReply, FetchRequest, PeerInfo};
use drover_worker::peer::{serve, serve_data, Fetcher};
use drover_worker::store::Store;

/// A holder serving `store` on QUIC and on a data path; its peer info.
async fn holder(store: Arc<Store>) -> (PeerInfo, Identity) {
    let id = Identity::generate().unwrap();
    let ep = server_endpoint(&id, "127.0.0.1:0".parse().unwrap(), Duration::from_secs(5)).unwrap();
    let (listener, acceptor) = data::listen(&id, "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let data_addr = listener.local_addr().unwrap();
    let token: Arc<str> = Arc::from("the-token");
    tokio::spawn(serve(ep.clone(), store.clone(), token.clone(), true));
    tokio::spawn(serve_data(listener, acceptor, store, token));
    let peer = PeerInfo {
        id: 1,
        name: "holder".into(),
        addr: ep.local_addr().unwrap(),
        cert: id.cert.clone(),
        data_addr: Some(data_addr),
    };
    (peer, id)
}

fn fetcher(token: &str) -> Fetcher {
    Fetcher::new(
        client_endpoint().unwrap(),
        token.into(),
        Duration::from_secs(5),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_need_the_token() {
    let store = Arc::new(Store::new());
    store.put(7, Bytes::from_static(b"secret result"));
    let (peer, _) = holder(store).await;
    let good = fetcher("the-token");
    let got = good.fetch(&peer, &[7]).await.unwrap();
    assert_eq!(&got[0].1[..], b"secret result");
    // Small results stay on QUIC.
    assert_eq!(good.data_results(), 0);
    let err = good.fetch(&peer, &[8]).await.unwrap_err();
    assert!(err.contains("does not hold result 8"), "{err}");
    for (token, why) in [("wrong", "wrong token"), ("", "no token")] {
        let err = fetcher(token).fetch(&peer, &[7]).await.unwrap_err();
        assert!(
            err.contains("refused the fetch") && err.contains(why),
            "{err}"
        );
    }
    // A fetcher pinning another certificate cannot even connect.
    let other = Identity::generate().unwrap();
    let wrong_cert = PeerInfo {
        cert: other.cert,
        ..peer
    };
    let err = good.fetch(&wrong_cert, &[7]).await.unwrap_err();
    assert!(err.contains("cannot reach"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_take_the_data_path_and_fall_back_to_quic() {
    let store = Arc::new(Store::new());
    let big: Vec<u8> = (0..(BULK_MIN as usize * 3))
        .map(|i| (i % 251) as u8)
        .collect();
    store.put(1, Bytes::from(big.clone()));
    store.put(2, Bytes::from_static(b"small"));
    store.put(3, Bytes::from(vec![9u8; BULK_MIN as usize]));
    let (peer, _) = holder(store).await;
    let f = fetcher("the-token");
    // Mixed: the small one on QUIC, the two large ones on the data path, in order.
    let got = f.fetch(&peer, &[1, 2, 3]).await.unwrap();
    let ids: Vec<u32> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, [2, 1, 3]);
    assert_eq!(&got[1].1[..], &big[..]);
    assert_eq!(&got[0].1[..], b"small");
    assert_eq!(got[2].1.len(), BULK_MIN as usize);
    assert_eq!(f.data_results(), 2);
    // Again: the data connection is reused.
    let got = f.fetch(&peer, &[1]).await.unwrap();
    assert_eq!(&got[0].1[..], &big[..]);
    assert_eq!(f.data_results(), 3);

    // A data path that cannot be reached: the result comes on QUIC instead.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let unreachable = PeerInfo {
        id: 2,
        data_addr: Some(dead_addr),
        ..peer.clone()
    };
    let g = fetcher("the-token");
    let got = g.fetch(&unreachable, &[1]).await.unwrap();
    assert_eq!(&got[0].1[..], &big[..]);
    assert_eq!(g.data_results(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_path_wants_the_token_and_the_pinned_certificate() {
    let store = Arc::new(Store::new());
    store.put(1, Bytes::from(vec![1u8; 10]));
    let (peer, id) = holder(store).await;
    let addr = peer.data_addr.unwrap();
    let mut conn = data::connect(addr, &id.cert).await.unwrap();
    let req = FetchRequest {
        token: "wrong".into(),
        ids: vec![1],
        bulk: false,
    };
    conn.send_message(&req).await.unwrap();
    conn.flush().await.unwrap();
    let reply: FetchReply = conn.recv_message(4096).await.unwrap().unwrap();
    assert!(
        matches!(&reply, FetchReply::Refused { reason } if reason == "wrong token"),
        "{reply:?}"
    );
    // Another certificate pinned: the handshake fails.
    let other = Identity::generate().unwrap();
    let err = data::connect(addr, &other.cert).await.unwrap_err();
    assert!(err.contains("TLS handshake"), "{err}");
}
