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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_fails_with_its_payload_and_the_worker_lives_on() {
    let mut registry = Registry::with_builtins();
    registry.register_raw("explode", |_, _, _| panic!("kaboom at step 3"));
    let cluster = LocalCluster::start(&ClusterSpec::plain(1, 1), registry)
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let mut g = Graph::new();
    let boom = g.task("explode", &()).key("boom").add();
    g.task("concat", &()).key("after_boom").input(boom).add();
    g.task("bytes", &serde_json::json!({"n": 1}))
        .key("unrelated")
        .add();
    let mut run = client.submit(&g).await.unwrap();
    let report = run.wait().await.unwrap();
    let boom = report.task("boom").unwrap();
    assert_eq!(boom.status, "failed");
    assert_eq!(
        boom.error.as_deref(),
        Some("task panicked: kaboom at step 3")
    );
    let after = report.task("after_boom").unwrap();
    assert!(
        after
            .error
            .as_deref()
            .unwrap()
            .starts_with("input \"boom\" failed"),
        "{after:?}"
    );
    assert_eq!(report.task("unrelated").unwrap().status, "finished");
    // The same (only) worker runs the next graph.
    let mut g = Graph::new();
    g.task("bytes", &serde_json::json!({"n": 2}))
        .key("later")
        .add();
    let mut run = client.submit(&g).await.unwrap();
    assert_eq!(run.wait().await.unwrap().finished, 1);
    assert_eq!(&run.get_bytes("later").await.unwrap()[..], b"xx");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_function_past_its_timeout_fails_and_its_late_result_is_dropped() {
    let mut registry = Registry::with_builtins();
    // Sleeps far past its timeout, then returns a result nobody may see.
    registry.register_raw("dawdle", |_, _, _| {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        Ok(b"too late".to_vec())
    });
    let cluster = LocalCluster::start(&ClusterSpec::plain(1, 2), registry)
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let mut g = Graph::new();
    let slow = g
        .task("dawdle", &())
        .key("slow")
        .timeout(std::time::Duration::from_millis(100))
        .add();
    g.task("len", &()).key("after").input(slow).add();
    g.task("bytes", &serde_json::json!({"n": 3}))
        .key("other")
        .add();
    let mut run = client.submit(&g).await.unwrap();
    let report = run.wait().await.unwrap();
    // It sleeps on past its deadline: its thread is given up.
    let error = report.task("slow").unwrap().error.clone().unwrap();
    assert!(
        error.starts_with(
            "task timed out after 0.1 s; its function did not stop, so its thread was given up"
        ),
        "{error}"
    );
    assert!(report
        .task("after")
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .starts_with("input \"slow\" failed"));
    assert_eq!(report.task("other").unwrap().status, "finished");
    cluster.shutdown().await;
}

/// Client `c`'s graph: 100 shared tasks (the same keys for every client), 100 of its own that
/// read them, and a sink summing their lengths.
fn client_graph(c: usize) -> (Graph, String, usize) {
    let mut g = Graph::new();
    let mut mine = Vec::new();
    let mut expected = 0;
    for i in 0..100 {
        let n = i % 7 + 1;
        let shared = g
            .task("bytes", &serde_json::json!({"n": n}))
            .key(format!("shared-{i}"))
            .add();
        mine.push(
            g.task("concat", &())
                .key(format!("c{c}-{i}"))
                .input(shared)
                .input(shared)
                .add(),
        );
        expected += 2 * n;
    }
    let sink = format!("c{c}-total");
    g.task("len", &()).key(sink.clone()).inputs(mine).add();
    (g, sink, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_at_once_share_keys_and_a_leaver_disturbs_nobody() {
    let cluster = LocalCluster::start(
        &ClusterSpec::parse("2", 2).unwrap(),
        Registry::with_builtins(),
    )
    .await
    .unwrap();
    // A client that submits slow work and leaves mid-run.
    let leaver = cluster.client().await.unwrap();
    let mut slow = Graph::new();
    for i in 0..50 {
        slow.task("sleep", &serde_json::json!({"ms": 20}))
            .key(format!("slow-{i}"))
            .add();
    }
    let mut leaving_run = leaver.submit(&slow).await.unwrap();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..20 {
        let client = cluster.client().await.unwrap();
        clients.spawn(async move {
            let (g, sink, expected) = client_graph(c);
            let mut run = client.submit(&g).await.unwrap();
            let report = run.wait().await.unwrap();
            assert_eq!(report.failed, 0);
            let got = run.get_bytes(&sink).await.unwrap();
            assert_eq!(
                std::str::from_utf8(&got).unwrap(),
                expected.to_string(),
                "client {c}"
            );
        });
    }
    // The leaver goes after its first task; everyone else must be unaffected.
    leaving_run.next_event().await;
    leaver.close();
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
    cluster.shutdown().await;
}
