//! A minimum s-t cut by maximum flow (Dinic's algorithm), with a work budget.
//!
//! Arcs are collected, then laid out per node with their residual twins; the flow is computed
//! by blocking flows on BFS level graphs with an iterative depth-first search, so deep graphs
//! cannot overflow the stack. Every arc looked at costs one unit of work: a solve that would
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
    // Scratch of the solve, kept to reuse the memory.
    level: Vec<u32>,
    current: Vec<u32>,
    queue: Vec<u32>,
    path: Vec<u32>,
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
        self.current.clear();
        self.current.extend_from_slice(&self.start[..n]);
        let fill = &mut self.current;
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
    pub fn min_cut(&mut self, budget: &mut u64) -> Option<Vec<bool>> {
        take(budget, self.pending.len() as u64)?;
        self.build();
        let n = self.nodes as usize;
        loop {
            if !self.levels(budget)? {
                let side = self.level.iter().map(|&l| l != NONE).collect();
                return Some(side);
            }
            self.current.clear();
            self.current.extend_from_slice(&self.start[..n]);
            while self.augment(budget)? {}
        }
    }

    /// BFS levels from the source over arcs with room; whether the sink is reached.
    fn levels(&mut self, budget: &mut u64) -> Option<bool> {
        self.level.clear();
        self.level.resize(self.nodes as usize, NONE);
        self.queue.clear();
        self.level[SOURCE as usize] = 0;
        self.queue.push(SOURCE);
        let mut i = 0;
        while i < self.queue.len() {
            let v = self.queue[i] as usize;
            i += 1;
            let sink = self.level[SINK as usize];
            if sink != NONE && self.level[v] >= sink {
                // Levels only grow along the queue: nothing further leads to the sink.
                break;
            }
            let (from, to) = (self.start[v] as usize, self.start[v + 1] as usize);
            take(budget, (to - from) as u64 + 1)?;
            let next = self.level[v] + 1;
            for arc in &self.arcs[from..to] {
                if arc.cap > 0 && self.level[arc.to as usize] == NONE {
                    self.level[arc.to as usize] = next;
                    self.queue.push(arc.to);
                }
            }
        }
        Some(self.level[SINK as usize] != NONE)
    }

    /// Finds one augmenting path in the level graph and pushes flow along it; false when the
    /// level graph is blocked.
    fn augment(&mut self, budget: &mut u64) -> Option<bool> {
        self.path.clear();
        let mut v = SOURCE as usize;
        loop {
            if v == SINK as usize {
                let f = self
                    .path
                    .iter()
                    .map(|&a| self.arcs[a as usize].cap)
                    .min()
                    .unwrap_or(0);
                for &a in &self.path {
                    let arc = &mut self.arcs[a as usize];
                    arc.cap -= f;
                    let rev = arc.rev as usize;
                    self.arcs[rev].cap += f;
                }
                return Some(true);
            }
            let end = self.start[v + 1];
            let want = self.level[v].wrapping_add(1);
            let mut advanced = false;
            while self.current[v] < end {
                take(budget, 1)?;
                let a = self.current[v];
                let arc = self.arcs[a as usize];
                if arc.cap > 0 && self.level[arc.to as usize] == want {
                    self.path.push(a);
                    v = arc.to as usize;
                    advanced = true;
                    break;
                }
                self.current[v] += 1;
            }
            if advanced {
                continue;
            }
            // A dead end: no path to the sink through v in this level graph.
            self.level[v] = NONE;
            let Some(a) = self.path.pop() else {
                return Some(false);
            };
            v = self.arcs[self.arcs[a as usize].rev as usize].to as usize;
            self.current[v] += 1;
        }
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
            let (_, v) = solve(nodes, &arcs);
            let inner = nodes - 2;
            let best = (0..1u32 << inner)
                .map(|mask| {
                    let mut side = vec![true, false];
                    side.extend((0..inner).map(|i| mask >> i & 1 == 1));
                    cut_value(&side, &arcs)
                })
                .min()
                .unwrap();
            assert_eq!(v, best, "{arcs:?}");
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
