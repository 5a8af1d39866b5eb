//! A key's record and the pure rules that change it. Time is an argument (milliseconds on the
//! store's clock), so every rule is tested without a clock.
//!
//! A key (of a namespace) with no record is *free*. A claim makes it *claimed* by a holder until
//! its lease expires; a claim carries a *fence*, a number that grows with every claim in the
//! store, so a commit or a failure names the claim it belongs to and a stale one (its lease
//! expired and someone else claimed the key) is refused. A commit makes it *done* for good (with
//! an optional small output); a failure makes it *failed*, claimable again, with the error kept.
//! Records are per version: asking for a newer version treats older records as free; asking for
//! an older one than the record's is refused.

use serde::{Deserialize, Serialize};

/// Milliseconds on the store's clock (wall-clock milliseconds since the Unix epoch).
pub type Millis = u64;

/// A key's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The version it is for.
    pub version: u64,
    /// The fence of the latest claim.
    pub fence: u64,
    /// Claims of this version so far.
    pub attempts: u32,
    /// Where the key is.
    pub state: State,
}

/// Where a key is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Held by `holder` until `expires` (renewals push it on by `lease` each).
    Claimed {
        /// Who holds it.
        holder: String,
        /// The lease length, milliseconds.
        lease: Millis,
        /// When the claim lapses.
        expires: Millis,
    },
    /// Done for good.
    Done {
        /// When it was committed.
        at: Millis,
        /// Who committed it.
        by: String,
        /// The output committed with it, if any.
        output: Option<Vec<u8>>,
        /// For a durable graph task, the fingerprint of its definition (what it computes, from
        /// what); `None` for a key committed by a claim.
        definition: Option<u128>,
    },
    /// Failed; claimable again.
    Failed {
        /// When.
        at: Millis,
        /// Who failed it.
        by: String,
        /// Why.
        error: String,
    },
}

/// What a key's state is now, as counted and listed (a lapsed claim is free).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Claimable: no record, an older version, or a claim whose lease lapsed.
    Free,
    /// Held by a live claim.
    Claimed,
    /// Done.
    Done,
    /// Failed (claimable again).
    Failed,
}

impl Kind {
    /// The kind's name: `free`, `claimed`, `done`, `failed`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Free => "free",
            Kind::Claimed => "claimed",
            Kind::Done => "done",
            Kind::Failed => "failed",
        }
    }

    /// Parses a kind's name.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "free" => Kind::Free,
            "claimed" => Kind::Claimed,
            "done" => Kind::Done,
            "failed" => Kind::Failed,
            _ => return None,
        })
    }
}

impl Record {
    /// Whether the record says a durable graph task of `definition` is done at `version`: done
    /// at that version by a task of that definition or by a claim (a key is done whoever did
    /// it). Then its output.
    pub fn done_for(&self, version: u64, definition: u128) -> Option<&Option<Vec<u8>>> {
        match &self.state {
            State::Done {
                output,
                definition: d,
                ..
            } if self.version == version && d.is_none_or(|d| d == definition) => Some(output),
            _ => None,
        }
    }

    /// The record's kind at `now`.
    pub fn kind(&self, now: Millis) -> Kind {
        match &self.state {
            State::Claimed { expires, .. } if *expires > now => Kind::Claimed,
            State::Claimed { .. } => Kind::Free,
            State::Done { .. } => Kind::Done,
            State::Failed { .. } => Kind::Failed,
        }
    }
}

/// A change asked of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Claim version `version` for `holder` for `lease` milliseconds.
    Claim {
        /// The version.
        version: u64,
        /// Who asks.
        holder: String,
        /// Lease length, milliseconds.
        lease: Millis,
    },
    /// Push the claim with `fence` on by its lease.
    Renew {
        /// The claim's fence.
        fence: u64,
    },
    /// The claim with `fence` is done, with `output`.
    Commit {
        /// The claim's fence.
        fence: u64,
        /// Who commits.
        by: String,
        /// The output to keep.
        output: Option<Vec<u8>>,
    },
    /// Done by a durable graph task (no claim: the scheduler ran it): the key becomes done at
    /// `version` with `output`, over a claim or a failure; a done record of that version stays
    /// as it is unless a task of another definition made it (then the new one replaces it).
    Record {
        /// The version.
        version: u64,
        /// The fingerprint of the task's definition.
        definition: u128,
        /// Who made it.
        by: String,
        /// Its output, if small enough to keep.
        output: Option<Vec<u8>>,
    },
    /// The claim with `fence` failed with `error`.
    Fail {
        /// The claim's fence.
        fence: u64,
        /// Who fails it.
        by: String,
        /// Why.
        error: String,
    },
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Claimed, with this fence.
    Claimed {
        /// The claim's fence.
        fence: u64,
    },
    /// Done before (this version): not claimed.
    Done {
        /// Its output.
        output: Option<Vec<u8>>,
    },
    /// Held by someone else's live claim.
    Held {
        /// Who holds it.
        holder: String,
        /// In how many milliseconds the claim lapses unless renewed.
        expires_in: Millis,
    },
    /// The record is of a newer version than asked: not claimed.
    NewerVersion {
        /// The record's version.
        version: u64,
    },
    /// Renewed, committed or failed as asked.
    Applied,
    /// Refused: the claim named is not the key's current claim any more.
    Stale {
        /// Why, for the holder.
        reason: String,
    },
}

/// Applies `op` to a key's record (none: free) at `now`; `next_fence` is the store's next
/// fence number, used by a claim. Returns the new record (none: unchanged) and the outcome.
pub fn apply(
    record: Option<&Record>,
    op: &Op,
    now: Millis,
    next_fence: u64,
) -> (Option<Record>, Outcome) {
    match op {
        Op::Claim {
            version,
            holder,
            lease,
        } => {
            let claim = |attempts: u32| {
                let r = Record {
                    version: *version,
                    fence: next_fence,
                    attempts: attempts + 1,
                    state: State::Claimed {
                        holder: holder.clone(),
                        lease: *lease,
                        expires: now.saturating_add(*lease),
                    },
                };
                (Some(r), Outcome::Claimed { fence: next_fence })
            };
            let Some(r) = record else {
                return claim(0);
            };
            if r.version < *version {
                return claim(0);
            }
            if r.version > *version {
                return (None, Outcome::NewerVersion { version: r.version });
            }
            match &r.state {
                State::Done { output, .. } => (
                    None,
                    Outcome::Done {
                        output: output.clone(),
                    },
                ),
                State::Claimed {
                    holder: h, expires, ..
                } if *expires > now && h != holder => (
                    None,
                    Outcome::Held {
                        holder: h.clone(),
                        expires_in: expires - now,
                    },
                ),
                // Free again: failed, lapsed, or asked again by its own holder.
                _ => claim(r.attempts),
            }
        }
        Op::Renew { fence } => match record {
            Some(
                r @ Record {
                    state: State::Claimed { holder, lease, .. },
                    ..
                },
            ) if r.fence == *fence => {
                let mut r = r.clone();
                r.state = State::Claimed {
                    holder: holder.clone(),
                    lease: *lease,
                    expires: now.saturating_add(*lease),
                };
                (Some(r), Outcome::Applied)
            }
            other => (None, stale(other, *fence)),
        },
        Op::Commit { fence, by, output } => match record {
            // The current claim, even if its lease lapsed meanwhile: nobody claimed it since.
            Some(
                r @ Record {
                    state: State::Claimed { .. },
                    ..
                },
            ) if r.fence == *fence => {
                let mut r = r.clone();
                r.state = State::Done {
                    at: now,
                    by: by.clone(),
                    output: output.clone(),
                    definition: None,
                };
                (Some(r), Outcome::Applied)
            }
            // The same commit again (its reply was lost): already done by it.
            Some(
                r @ Record {
                    state: State::Done { .. },
                    ..
                },
            ) if r.fence == *fence => (None, Outcome::Applied),
            other => (None, stale(other, *fence)),
        },
        Op::Record {
            version,
            definition,
            by,
            output,
        } => {
            let done = |fence: u64| Record {
                version: *version,
                fence,
                attempts: record
                    .filter(|r| r.version == *version)
                    .map_or(1, |r| r.attempts.max(1)),
                state: State::Done {
                    at: now,
                    by: by.clone(),
                    output: output.clone(),
                    definition: Some(*definition),
                },
            };
            match record {
                Some(r) if r.version > *version => {
                    (None, Outcome::NewerVersion { version: r.version })
                }
                Some(r) if r.done_for(*version, *definition).is_some() => (None, Outcome::Applied),
                _ => (Some(done(next_fence)), Outcome::Applied),
            }
        }
        Op::Fail { fence, by, error } => match record {
            Some(
                r @ Record {
                    state: State::Claimed { .. },
                    ..
                },
            ) if r.fence == *fence => {
                let mut r = r.clone();
                r.state = State::Failed {
                    at: now,
                    by: by.clone(),
                    error: error.clone(),
                };
                (Some(r), Outcome::Applied)
            }
            // The same failure again (its reply was lost).
            Some(
                r @ Record {
                    state: State::Failed { .. },
                    ..
                },
            ) if r.fence == *fence => (None, Outcome::Applied),
            other => (None, stale(other, *fence)),
        },
    }
}

/// Why a claim with `fence` is not the key's current one.
fn stale(record: Option<&Record>, fence: u64) -> Outcome {
    let reason = match record {
        None => "the key has no claim (it was reset)".to_owned(),
        Some(r) if r.fence != fence => match &r.state {
            State::Claimed { holder, .. } => {
                format!("the claim lapsed and the key is now claimed by {holder:?}")
            }
            State::Done { by, .. } => format!("the claim lapsed and {by:?} committed the key"),
            State::Failed { by, .. } => format!("the claim lapsed and {by:?} failed the key since"),
        },
        Some(r) => match &r.state {
            State::Done { .. } => "the key is already done".to_owned(),
            State::Failed { .. } => "the key was failed".to_owned(),
            State::Claimed { .. } => "the claim is current".to_owned(),
        },
    };
    Outcome::Stale { reason }
}

/// A record restored after a restart: a live claim gets a fresh lease from `now` (clocks do not
/// survive processes, and its holder may renew it or let it lapse).
pub fn restored(mut r: Record, now: Millis) -> Record {
    if let State::Claimed { lease, expires, .. } = &mut r.state {
        *expires = now.saturating_add(*lease);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(v: u64, who: &str) -> Op {
        Op::Claim {
            version: v,
            holder: who.into(),
            lease: 1000,
        }
    }

    #[test]
    fn claim_commit_and_skip() {
        let (r, o) = apply(None, &claim(0, "a"), 10, 1);
        assert_eq!(o, Outcome::Claimed { fence: 1 });
        let r = r.unwrap();
        assert_eq!(r.kind(10), Kind::Claimed);
        // Others are told it is held, and for how long.
        let (none, o) = apply(Some(&r), &claim(0, "b"), 500, 2);
        assert!(none.is_none());
        assert_eq!(
            o,
            Outcome::Held {
                holder: "a".into(),
                expires_in: 510
            }
        );
        let commit = Op::Commit {
            fence: 1,
            by: "a".into(),
            output: Some(b"x".to_vec()),
        };
        let (done, o) = apply(Some(&r), &commit, 600, 2);
        assert_eq!(o, Outcome::Applied);
        let done = done.unwrap();
        assert_eq!(done.kind(600), Kind::Done);
        // Done is for good: a claim says so, with the output; the same commit again is fine.
        let (_, o) = apply(Some(&done), &claim(0, "b"), 700, 2);
        assert_eq!(
            o,
            Outcome::Done {
                output: Some(b"x".to_vec())
            }
        );
        assert_eq!(apply(Some(&done), &commit, 800, 2).1, Outcome::Applied);
    }

    #[test]
    fn a_lapsed_claim_is_taken_over_and_the_old_holder_is_refused() {
        let (r, _) = apply(None, &claim(0, "a"), 0, 1);
        let r = r.unwrap();
        assert_eq!(r.kind(1000), Kind::Free, "lapsed at its expiry");
        let (taken, o) = apply(Some(&r), &claim(0, "b"), 1000, 2);
        assert_eq!(o, Outcome::Claimed { fence: 2 });
        let taken = taken.unwrap();
        assert_eq!(taken.attempts, 2);
        let late = Op::Commit {
            fence: 1,
            by: "a".into(),
            output: None,
        };
        let (none, o) = apply(Some(&taken), &late, 1100, 3);
        assert!(none.is_none());
        assert!(
            matches!(&o, Outcome::Stale { reason } if reason.contains("now claimed by \"b\"")),
            "{o:?}"
        );
        // A renewal of the stale claim is refused too.
        assert!(matches!(
            apply(Some(&taken), &Op::Renew { fence: 1 }, 1100, 3).1,
            Outcome::Stale { .. }
        ));
        // But a late commit of a lapsed claim nobody took is accepted.
        let late_b = Op::Commit {
            fence: 2,
            by: "b".into(),
            output: None,
        };
        assert_eq!(apply(Some(&taken), &late_b, 5000, 3).1, Outcome::Applied);
    }

    #[test]
    fn renewals_push_the_lease_and_failures_free_the_key_with_the_error() {
        let (r, _) = apply(None, &claim(0, "a"), 0, 1);
        let (r, o) = apply(r.as_ref(), &Op::Renew { fence: 1 }, 900, 2);
        assert_eq!(o, Outcome::Applied);
        let r = r.unwrap();
        assert_eq!(r.kind(1500), Kind::Claimed);
        let fail = Op::Fail {
            fence: 1,
            by: "a".into(),
            error: "boom".into(),
        };
        let (r, _) = apply(Some(&r), &fail, 1000, 2);
        let r = r.unwrap();
        assert_eq!(r.kind(1000), Kind::Failed);
        assert!(matches!(&r.state, State::Failed { error, .. } if error == "boom"));
        // Claimable again at once.
        assert_eq!(
            apply(Some(&r), &claim(0, "b"), 1001, 2).1,
            Outcome::Claimed { fence: 2 }
        );
    }

    #[test]
    fn versions_start_over_and_older_ones_are_refused() {
        let (r, _) = apply(None, &claim(1, "a"), 0, 1);
        let done = apply(
            r.as_ref(),
            &Op::Commit {
                fence: 1,
                by: "a".into(),
                output: None,
            },
            1,
            2,
        )
        .0
        .unwrap();
        // Version 2: the done record of version 1 does not count.
        let (r2, o) = apply(Some(&done), &claim(2, "b"), 2, 2);
        assert_eq!(o, Outcome::Claimed { fence: 2 });
        assert_eq!((r2.as_ref().unwrap().version, r2.unwrap().attempts), (2, 1));
        // Version 0 against a record of version 1: refused.
        assert_eq!(
            apply(Some(&done), &claim(0, "c"), 3, 3).1,
            Outcome::NewerVersion { version: 1 }
        );
    }

    fn record(v: u64, definition: u128, output: &[u8]) -> Op {
        Op::Record {
            version: v,
            definition,
            by: "scheduler".into(),
            output: Some(output.to_vec()),
        }
    }

    #[test]
    fn graph_tasks_are_done_for_their_version_and_definition_or_by_a_claim() {
        let (r, o) = apply(None, &record(2, 7, b"x"), 10, 1);
        assert_eq!(o, Outcome::Applied);
        let r = r.unwrap();
        assert_eq!(r.kind(10), Kind::Done);
        assert_eq!(r.done_for(2, 7), Some(&Some(b"x".to_vec())));
        assert_eq!(r.done_for(2, 8), None, "another definition is not done");
        assert_eq!(r.done_for(3, 7), None, "another version is not done");
        // The same again keeps the first; another definition replaces it.
        let (same, o) = apply(Some(&r), &record(2, 7, b"y"), 20, 2);
        assert_eq!((same, o), (None, Outcome::Applied));
        let (other, _) = apply(Some(&r), &record(2, 8, b"z"), 20, 2);
        assert_eq!(other.unwrap().done_for(2, 8), Some(&Some(b"z".to_vec())));
        // An older version than the record's is refused.
        let (none, o) = apply(Some(&r), &record(1, 7, b"old"), 30, 2);
        assert_eq!((none, o), (None, Outcome::NewerVersion { version: 2 }));
        // A key committed by a claim is done for any definition; a graph task over a claim
        // or a failure makes it done.
        let (c, _) = apply(None, &claim(0, "a"), 0, 1);
        let c = c.unwrap();
        assert_eq!(c.done_for(0, 7), None);
        let commit = Op::Commit {
            fence: 1,
            by: "a".into(),
            output: None,
        };
        let done = apply(Some(&c), &commit, 5, 2).0.unwrap();
        assert_eq!(done.done_for(0, 123), Some(&None));
        let (over, o) = apply(Some(&c), &record(0, 7, b"g"), 6, 2);
        assert_eq!(o, Outcome::Applied);
        assert_eq!(over.unwrap().done_for(0, 7), Some(&Some(b"g".to_vec())));
    }

    #[test]
    fn a_restart_gives_live_claims_a_fresh_lease() {
        let (r, _) = apply(None, &claim(0, "a"), 0, 1);
        let r = restored(r.unwrap(), 50_000);
        assert_eq!(r.kind(50_999), Kind::Claimed);
        assert_eq!(r.kind(51_000), Kind::Free);
    }
}
