//! The Rust progress API on a real `scheduler` process over QUIC: loops on one key list with
//! commits waited for and queued, `run_once`'s four outcomes, and the look-ups.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Cluster;
use drover::progress::{ClaimOptions, Kind, Progress, RunOnce, State};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// Three loops of two clients over the same 600 keys, one waiting for each commit, one
/// queueing them, one failing every tenth key: every key is claimed by exactly one loop, the
/// failed ones are left for the next loop, and each summary knows how many are not done.
#[test]
fn loops_on_one_key_list_share_the_keys_and_count_what_is_left() {
    let cluster = Cluster::start();
    let access = cluster.access();
    runtime().block_on(async {
        let keys: Vec<String> = (0..600).map(|i| format!("k{i:03} ключ")).collect();
        let a = Progress::connect(&access).await.unwrap();
        let b = Progress::connect(&access).await.unwrap();
        let options = ClaimOptions {
            batch: 16,
            lease: Duration::from_secs(30),
            ..ClaimOptions::default()
        };
        let run = |p: Progress, mode: u8| {
            let keys = keys.clone();
            let options = options.clone();
            tokio::spawn(async move {
                let mut claims = p.claims("api", keys, options);
                let mut mine = Vec::new();
                while let Some(claim) = claims.next().await {
                    let claim = claim.unwrap();
                    mine.push(claim.key().to_owned());
                    match mode {
                        0 => {
                            let output = claim.key().as_bytes().to_vec();
                            claim.done(Some(output)).await.unwrap()
                        }
                        1 => claim.done_later(None),
                        _ if mine.len() % 10 == 0 => claim.fail_later("every tenth"),
                        _ => claim.done_later(None),
                    }
                }
                (mine, claims.finish().await.unwrap())
            })
        };
        let loops = vec![run(a.clone(), 0), run(b.clone(), 1), run(b.clone(), 2)];
        let mut claimed = Vec::new();
        let mut failed = BTreeSet::new();
        let mut summaries = Vec::new();
        for l in loops {
            let (mine, summary) = l.await.unwrap();
            claimed.extend(mine);
            failed.extend(summary.failed.iter().map(|(k, _)| k.clone()));
            summaries.push(summary);
        }
        claimed.sort();
        let mut all = keys.clone();
        all.sort();
        assert_eq!(claimed, all, "every key claimed once, by one loop");
        assert!(!failed.is_empty());
        // The last loop to end counts the failures of all as not done (those ending earlier
        // also count keys still at work elsewhere); none counts fewer.
        let least = summaries.iter().map(|s| s.not_done).min().unwrap();
        assert_eq!(least, failed.len() as u64);
        // A loop waiting for each commit stored the outputs.
        let committed_by_a = &summaries[0].committed;
        assert!(!committed_by_a.is_empty());
        let r = a.record("api", &committed_by_a[0]).await.unwrap().unwrap();
        assert!(
            matches!(&r.state, State::Done { output: Some(o), .. } if o == committed_by_a[0].as_bytes())
        );
        // A new loop (it joins later) takes only the failed keys, and then all are done.
        let mut again = a.claims("api", keys.clone(), options.clone());
        let mut retried = BTreeSet::new();
        while let Some(claim) = again.next().await {
            let claim = claim.unwrap();
            retried.insert(claim.key().to_owned());
            claim.done_later(None);
        }
        let summary = again.finish().await.unwrap();
        assert_eq!(retried, failed);
        assert_eq!(summary.not_done, 0);
        assert_eq!(summary.skipped_done, (keys.len() - failed.len()) as u64);
        let counts = a.counts(Some("api")).await.unwrap();
        assert_eq!(counts[0].1.done, 600);
        // Look-ups page in key order; a reset frees keys.
        let page = a.list("api", "k00", Some(Kind::Done), None, 5).await.unwrap();
        let listed: Vec<&str> = page.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(listed, all[..5].iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(a.reset("api", Some(vec![all[0].clone()])).await.unwrap(), 1);
        assert_eq!(a.record("api", &all[0]).await.unwrap(), None);
    });
}

/// `run_once` on a scheduler: computed, done before (with the stored output), in progress
/// elsewhere, and a failure that frees the key.
#[test]
fn run_once_has_four_outcomes() {
    let cluster = Cluster::start();
    let access = cluster.access();
    runtime().block_on(async {
        let p = Progress::connect(&access).await.unwrap();
        let o = ClaimOptions::default();
        let first = p
            .run_once("once", "x", &o, || Ok::<_, String>(Some(b"42".to_vec())))
            .await
            .unwrap();
        assert_eq!(first, RunOnce::Computed(Some(b"42".to_vec())));
        let again = p
            .run_once("once", "x", &o, || -> Result<_, String> {
                panic!("must not run")
            })
            .await
            .unwrap();
        assert_eq!(again, RunOnce::DoneBefore(Some(b"42".to_vec())));
        let failed = p
            .run_once("once", "y", &o, || Err::<Option<Vec<u8>>, _>("no luck"))
            .await
            .unwrap();
        assert_eq!(failed, RunOnce::Failed("no luck".to_owned()));
        // Someone else holds "z": skipped.
        let other = Progress::connect(&access).await.unwrap();
        let mut held = other.claims("once", vec!["z".to_owned()], o.clone());
        let claim = held.next().await.unwrap().unwrap();
        let skipped = p
            .run_once("once", "z", &o, || -> Result<_, String> {
                panic!("must not run")
            })
            .await
            .unwrap();
        assert_eq!(
            skipped,
            RunOnce::InProgressElsewhere {
                holder: other.holder().to_owned()
            }
        );
        claim.done(None).await.unwrap();
        held.finish().await.unwrap();
        // The failed key is free again: it computes now.
        let retried = p
            .run_once("once", "y", &o, || Ok::<_, String>(None))
            .await
            .unwrap();
        assert_eq!(retried, RunOnce::Computed(None));
    });
}
