//! A minimum s-t cut by maximum flow (Dinic's algorithm), with a work budget.
//!
//! Arcs are collected, then laid out per node with their residual twins; the flow is computed
//! by Boykov and Kolmogorov's two-tree augmenting paths, iteratively (deep networks cannot
//! overflow the stack). Every arc looked at costs one unit of work: a solve that would
//! exceed its budget stops and says so, which makes the refinement's cut-off deterministic
//! (the same graph always stops at the same point, however loaded the machine).

/// Capacity that no cut can pay: every finite capacity is at most [`MAX_WEIGHT`], and a
/// network holds far fewer than 2^22 of them per unit of this.
pub(crate) const INFINITE: u64 = 1 << 62;
/// Largest finite capacity: larger weights are clamped (an output of more than a TiB moves or
/// not the same way as one of a TiB).
pub(crate) const MAX_WEIGHT: u64 = 1 << 40;

const NONE: u32 = u32::MAX;

/// An arc of the residual network: its head, its residual twin's index, its room.
#[derive(Debug, Clone, Copy)]
struct Arc {
    to: u32,
    rev: u32,
    cap: u64,
}

/// A flow network with source 0 and sink 1. Arcs are collected, then laid out per node
/// (compressed rows) for the solve: each node's arcs are contiguous, which the searches
/// read in order.
#[derive(Debug, Default)]
pub(crate) struct Network {
    nodes: u32,
    pending: Vec<(u32, u32, u64)>,
    start: Vec<u32>,
    arcs: Vec<Arc>,
    /// Scratch of the layout.
    fill: Vec<u32>,
}

/// The source node.
pub(crate) const SOURCE: u32 = 0;
/// The sink node.
pub(crate) const SINK: u32 = 1;

impl Network {
    /// Empties the network to `nodes` nodes (source and sink included), keeping its memory.
    pub fn reset(&mut self, nodes: usize) {
        self.nodes = nodes.max(2) as u32;
        self.pending.clear();
    }

    /// Adds a node and returns it.
    pub fn node(&mut self) -> u32 {
        self.nodes += 1;
        self.nodes - 1
    }

    /// Adds an arc `a -> b` of capacity `cap` (and its residual). Zero capacities are skipped.
    pub fn arc(&mut self, a: u32, b: u32, cap: u64) {
        if cap == 0 || a == b {
            return;
        }
        self.pending.push((a, b, cap));
    }

    /// Lays the collected arcs out per node.
    fn build(&mut self) {
        let n = self.nodes as usize;
        self.start.clear();
        self.start.resize(n + 1, 0);
        for &(a, b, _) in &self.pending {
            self.start[a as usize + 1] += 1;
            self.start[b as usize + 1] += 1;
        }
        for i in 1..=n {
            self.start[i] += self.start[i - 1];
        }
        self.fill.clear();
        self.fill.extend_from_slice(&self.start[..n]);
        let fill = &mut self.fill;
        self.arcs.clear();
        self.arcs.resize(
            2 * self.pending.len(),
            Arc {
                to: 0,
                rev: 0,
                cap: 0,
            },
        );
        for &(a, b, cap) in &self.pending {
            let p = fill[a as usize];
            fill[a as usize] += 1;
            let q = fill[b as usize];
            fill[b as usize] += 1;
            self.arcs[p as usize] = Arc { to: b, rev: q, cap };
            self.arcs[q as usize] = Arc {
                to: a,
                rev: p,
                cap: 0,
            };
        }
    }

    /// Computes a maximum flow. Returns the nodes on the source side of a minimum cut
    /// (`side[v]` true), or `None` when the solve would have taken more than `budget` units
    /// of work (then `budget` is left at 0). Spent work is taken off `budget`.
    ///
    /// Boykov and Kolmogorov's algorithm: a search tree grows from the source and one from the
    /// sink; where they touch there is a path to augment; the arcs it saturates cut subtrees
    /// off, whose nodes look for new parents in their tree (or leave it). The trees are kept
    /// between augmentations instead of being searched again, which on these networks (many
    /// nodes tied to a terminal, short paths) is much cheaper than new searches. At the end
    /// the source tree is exactly the nodes reachable from the source in the residual network:
    /// the minimal minimum cut, whatever the order of the arcs.
    pub fn min_cut(&mut self, budget: &mut u64) -> Option<Vec<bool>> {
        take(budget, self.pending.len() as u64)?;
        self.build();
        let mut bk = Trees::new(self.nodes as usize);
        bk.run(self, budget)?;
        Some(bk.tree.iter().map(|&t| t == S).collect())
    }
}

const FREE: u8 = 0;
const S: u8 = 1;
const T: u8 = 2;

/// The two search trees of [`Network::min_cut`].
struct Trees {
    /// Per node: FREE, S or T.
    tree: Vec<u8>,
    /// Per node: the arc (in its own row) to its parent; NONE for the terminals and orphans.
    parent: Vec<u32>,
    /// Per node: when its distance to its terminal was last known to hold, and that distance.
    stamp: Vec<u32>,
    dist: Vec<u32>,
    time: u32,
    active: std::collections::VecDeque<u32>,
    orphans: Vec<u32>,
}

impl Trees {
    fn new(n: usize) -> Trees {
        let mut t = Trees {
            tree: vec![FREE; n],
            parent: vec![NONE; n],
            stamp: vec![0; n],
            dist: vec![0; n],
            time: 1,
            active: std::collections::VecDeque::new(),
            orphans: Vec::new(),
        };
        for (node, side) in [(SOURCE, S), (SINK, T)] {
            t.tree[node as usize] = side;
            t.active.push_back(node);
        }
        t
    }

    /// Whether the arc `a` of node `p`'s row (p -> q) has room in the direction of `p`'s tree:
    /// away from the source in S (p -> q), towards the sink in T (q -> p).
    #[inline]
    fn room(net: &Network, side: u8, a: u32) -> bool {
        let arc = &net.arcs[a as usize];
        if side == S {
            arc.cap > 0
        } else {
            net.arcs[arc.rev as usize].cap > 0
        }
    }

    /// Whether the arc `a` of node `p`'s row (p -> q) could make q p's parent in `side`'s
    /// tree: room from q to p in S (towards p, away from the source), from p to q in T.
    #[inline]
    fn links(net: &Network, side: u8, a: u32) -> bool {
        let arc = &net.arcs[a as usize];
        if side == S {
            net.arcs[arc.rev as usize].cap > 0
        } else {
            arc.cap > 0
        }
    }

    fn run(&mut self, net: &mut Network, budget: &mut u64) -> Option<()> {
        while let Some(p) = self.active.pop_front() {
            let side = self.tree[p as usize];
            if side == FREE {
                continue;
            }
            let (from, to) = (net.start[p as usize], net.start[p as usize + 1]);
            take(budget, u64::from(to - from) + 1)?;
            let mut meet = None;
            for a in from..to {
                if !Self::room(net, side, a) {
                    continue;
                }
                let q = net.arcs[a as usize].to as usize;
                match self.tree[q] {
                    FREE => {
                        self.tree[q] = side;
                        self.parent[q] = net.arcs[a as usize].rev;
                        self.stamp[q] = 0;
                        self.active.push_back(q as u32);
                    }
                    other if other != side => {
                        // The middle arc, from the source's tree to the sink's.
                        meet = Some(if side == S {
                            a
                        } else {
                            net.arcs[a as usize].rev
                        });
                        break;
                    }
                    _ => {}
                }
            }
            if let Some(m) = meet {
                self.time += 1;
                self.augment(net, m, budget)?;
                self.adopt(net, budget)?;
                // It may have more to give.
                if self.tree[p as usize] != FREE {
                    self.active.push_front(p);
                }
            }
        }
        Some(())
    }

    /// The arc that carries the flow between a node and its parent along parent arc `a`:
    /// from the parent down in the source's tree (the twin of `a`), up to it in the sink's.
    #[inline]
    fn carrier(net: &Network, side: u8, a: u32) -> u32 {
        if side == S {
            net.arcs[a as usize].rev
        } else {
            a
        }
    }

    /// Pushes the bottleneck along the path through middle arc `m`; saturated tree arcs
    /// make orphans.
    fn augment(&mut self, net: &mut Network, m: u32, budget: &mut u64) -> Option<()> {
        let x = net.arcs[net.arcs[m as usize].rev as usize].to;
        let y = net.arcs[m as usize].to;
        // Each half of the path: from the middle arc's end up to its tree's terminal.
        let halves = [(x, SOURCE, S), (y, SINK, T)];
        let mut f = net.arcs[m as usize].cap;
        for (start, terminal, side) in halves {
            let mut v = start;
            while v != terminal {
                take(budget, 1)?;
                let a = self.parent[v as usize];
                f = f.min(net.arcs[Self::carrier(net, side, a) as usize].cap);
                v = net.arcs[a as usize].to;
            }
        }
        let push = |net: &mut Network, a: u32| {
            net.arcs[a as usize].cap -= f;
            let rev = net.arcs[a as usize].rev;
            net.arcs[rev as usize].cap += f;
        };
        push(net, m);
        for (start, terminal, side) in halves {
            let mut v = start;
            while v != terminal {
                let a = self.parent[v as usize];
                let carrier = Self::carrier(net, side, a);
                push(net, carrier);
                let next = net.arcs[a as usize].to;
                if net.arcs[carrier as usize].cap == 0 {
                    self.parent[v as usize] = NONE;
                    self.orphans.push(v);
                }
                v = next;
            }
        }
        Some(())
    }

    /// The distance from `q` to its tree's terminal through parents, or `None` when the way up
    /// ends at an orphan. Nodes on a way found good are stamped with the current time.
    fn root_distance(&mut self, net: &Network, q: u32, budget: &mut u64) -> Option<Option<u32>> {
        let terminal = |v: u32| v == SOURCE || v == SINK;
        let mut v = q;
        let mut d = 0u32;
        loop {
            take(budget, 1)?;
            if terminal(v) {
                break;
            }
            if self.stamp[v as usize] == self.time {
                d = d.saturating_add(self.dist[v as usize]);
                break;
            }
            let a = self.parent[v as usize];
            if a == NONE {
                return Some(None);
            }
            v = net.arcs[a as usize].to;
            d += 1;
        }
        // Stamp the way with the distances found.
        let mut v = q;
        let mut left = d;
        while !terminal(v) && self.stamp[v as usize] != self.time {
            self.stamp[v as usize] = self.time;
            self.dist[v as usize] = left;
            left = left.saturating_sub(1);
            v = net.arcs[self.parent[v as usize] as usize].to;
        }
        Some(Some(d))
    }

    /// Finds orphans new parents in their trees, or frees them.
    fn adopt(&mut self, net: &Network, budget: &mut u64) -> Option<()> {
        while let Some(p) = self.orphans.pop() {
            let side = self.tree[p as usize];
            let (from, to) = (net.start[p as usize], net.start[p as usize + 1]);
            take(budget, u64::from(to - from) + 1)?;
            // The parent must be in the same tree with room towards p (S) or from p (T).
            let mut best: Option<(u32, u32)> = None;
            for a in from..to {
                let q = net.arcs[a as usize].to;
                if self.tree[q as usize] != side {
                    continue;
                }
                if !Self::links(net, side, a) {
                    continue;
                }
                if let Some(d) = self.root_distance(net, q, budget)? {
                    if best.is_none_or(|(_, bd)| d < bd) {
                        best = Some((a, d));
                    }
                }
            }
            if let Some((a, d)) = best {
                self.parent[p as usize] = a;
                self.stamp[p as usize] = self.time;
                self.dist[p as usize] = d + 1;
                continue;
            }
            // No parent: p leaves its tree; its children are orphans, its neighbours in the
            // tree that could reach it become active.
            for a in from..to {
                let q = net.arcs[a as usize].to;
                if self.tree[q as usize] != side {
                    continue;
                }
                if Self::links(net, side, a) {
                    self.active.push_back(q);
                }
                let qp = self.parent[q as usize];
                if qp != NONE && net.arcs[qp as usize].to == p {
                    self.parent[q as usize] = NONE;
                    self.orphans.push(q);
                }
            }
            self.tree[p as usize] = FREE;
        }
        Some(())
    }
}

/// Takes `n` units off `budget`; `None` (and an empty budget) when it has fewer.
#[inline]
pub(crate) fn take(budget: &mut u64, n: u64) -> Option<()> {
    match budget.checked_sub(n) {
        Some(left) => {
            *budget = left;
            Some(())
        }
        None => {
            *budget = 0;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut_value(side: &[bool], arcs: &[(u32, u32, u64)]) -> u128 {
        arcs.iter()
            .filter(|(a, b, _)| a != b && side[*a as usize] && !side[*b as usize])
            .map(|(_, _, c)| u128::from(*c))
            .sum()
    }

    fn solve(nodes: usize, arcs: &[(u32, u32, u64)]) -> (Vec<bool>, u128) {
        let mut net = Network::default();
        net.reset(nodes);
        for &(a, b, c) in arcs {
            net.arc(a, b, c);
        }
        let side = net.min_cut(&mut u64::MAX.clone()).expect("no budget limit");
        let v = cut_value(&side, arcs);
        (side, v)
    }

    #[test]
    fn a_textbook_network() {
        // s=0, t=1; nodes 2..5. Max flow 23 (CLRS figure 26.1 relabelled).
        let arcs = [
            (0, 2, 16),
            (0, 3, 13),
            (2, 4, 12),
            (3, 2, 4),
            (3, 5, 14),
            (4, 3, 9),
            (4, 1, 20),
            (5, 4, 7),
            (5, 1, 4),
        ];
        let (side, v) = solve(6, &arcs);
        assert_eq!(v, 23);
        assert!(side[0] && !side[1]);
    }

    #[test]
    fn the_cut_equals_a_brute_force_minimum_on_small_networks() {
        // A deterministic pseudo-random family.
        let mut x = 12345u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..200 {
            let nodes = 2 + rnd(7) as usize;
            let arcs: Vec<(u32, u32, u64)> = (0..rnd(20))
                .map(|_| {
                    let c = if rnd(5) == 0 { INFINITE } else { rnd(10) };
                    (rnd(nodes as u64) as u32, rnd(nodes as u64) as u32, c)
                })
                .collect();
            let (side, v) = solve(nodes, &arcs);
            let inner = nodes - 2;
            let sides: Vec<Vec<bool>> = (0..1u32 << inner)
                .map(|mask| {
                    let mut side = vec![true, false];
                    side.extend((0..inner).map(|i| mask >> i & 1 == 1));
                    side
                })
                .collect();
            let best = sides.iter().map(|s| cut_value(s, &arcs)).min().unwrap();
            assert_eq!(v, best, "{arcs:?}");
            // The answer is the smallest minimum cut: inside every other one.
            for other in sides.iter().filter(|s| cut_value(s, &arcs) == best) {
                assert!(side.iter().zip(other).all(|(a, b)| !a || *b), "{arcs:?}");
            }
        }
    }

    #[test]
    fn a_budget_too_small_stops_the_solve() {
        let mut net = Network::default();
        net.reset(4);
        net.arc(0, 2, 5);
        net.arc(2, 3, 5);
        net.arc(3, 1, 5);
        let mut budget = 3;
        assert!(net.min_cut(&mut budget).is_none());
        assert_eq!(budget, 0);
    }
}
