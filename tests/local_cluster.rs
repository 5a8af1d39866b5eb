//! Graphs on an in-process LocalCluster: real scheduler and workers over loopback QUIC.

use drover::{ClusterSpec, Graph, LocalCluster, Registry, TaskStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_moves_data_peer_to_peer_and_sinks_are_fetched() {
    let cluster = LocalCluster::start(
        &ClusterSpec::parse("A=1,B=1", 1).unwrap(),
        Registry::with_builtins(),
    )
    .await
    .unwrap();
    let client = cluster.client().await.unwrap();
    let mut g = Graph::new();
    let a = g.pool("A", |g| {
        g.task("bytes", &serde_json::json!({"n": 1000, "fill": "a"}))
            .key("a")
            .add()
    });
    let b = g.pool("B", |g| {
        g.task("bytes", &serde_json::json!({"n": 10, "fill": "b"}))
            .key("b")
            .add()
    });
    let c = g.pool("B", |g| {
        g.task("concat", &()).key("c").input(b).input(a).add()
    });
    let l = g.task("len", &()).key("l").input(c).add();
    let mut run = client.submit(&g).await.unwrap();
    let report = run.wait().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.task("a").unwrap().pool.as_deref(), Some("A"));
    assert_eq!(report.task("c").unwrap().pool.as_deref(), Some("B"));
    // a's 1000 bytes crossed from A to B; l ran in B next to c.
    assert_eq!(report.bytes_between_pools, 1000);
    assert_eq!(report.task("l").unwrap().pool.as_deref(), Some("B"));
    let out = run.get_bytes("l").await.unwrap();
    assert_eq!(&out[..], b"1010");
    let _ = (l, TaskStatus::Finished);
    cluster.shutdown().await;
}
