//! The peer fetch protocol over real QUIC: the right token gets the bytes; a wrong or missing
//! token gets nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_protocol::endpoint::{client_endpoint, server_endpoint};
use drover_protocol::tls::Identity;
use drover_protocol::PeerInfo;
use drover_worker::peer::{serve, Fetcher};
use drover_worker::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_need_the_token() {
    let id = Identity::generate().unwrap();
    let ep = server_endpoint(&id, "127.0.0.1:0".parse().unwrap(), Duration::from_secs(5)).unwrap();
    let store = Arc::new(Store::new());
    store.put(7, Bytes::from_static(b"secret result"));
    tokio::spawn(serve(ep.clone(), store, Arc::from("the-token")));
    let peer = PeerInfo {
        id: 1,
        name: "holder".into(),
        addr: ep.local_addr().unwrap(),
        cert: id.cert.clone(),
    };
    let good = Fetcher::new(
        client_endpoint().unwrap(),
        "the-token".into(),
        Duration::from_secs(5),
    );
    let got = good.fetch(&peer, &[7]).await.unwrap();
    assert_eq!(&got[0].1[..], b"secret result");
    let err = good.fetch(&peer, &[8]).await.unwrap_err();
    assert!(err.contains("does not hold result 8"), "{err}");
    for (token, why) in [("wrong", "wrong token"), ("", "no token")] {
        let bad = Fetcher::new(
            client_endpoint().unwrap(),
            token.into(),
            Duration::from_secs(5),
        );
        let err = bad.fetch(&peer, &[7]).await.unwrap_err();
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
