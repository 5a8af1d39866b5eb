//! A layered (Sugiyama-style) layout for pictures of graphs, top to bottom: layers by longest
//! path, long edges split by dummy points, crossings reduced by barycenter sweeps (the best
//! order kept), and x positions as close to the neighbours' as the order and spacing allow
//! (an isotonic regression per layer, solved exactly by pool-adjacent-violators). Pure: sizes
//! and edges in, rectangles and edge routes out.

/// Space between nodes of a layer.
const NODE_GAP: f64 = 28.0;
/// Space between layers (room for edge labels).
const LAYER_GAP: f64 = 64.0;
/// Width a dummy point (a long edge crossing a layer) takes in its layer.
const DUMMY_WIDTH: f64 = 10.0;
/// Ordering sweeps (each down then up).
const SWEEPS: usize = 12;

/// A placed node: its top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    /// Whether two rectangles overlap (touching edges do not).
    #[cfg(test)]
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// A laid-out graph. Coordinates start at (0, 0).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Each node's rectangle, in the input's order.
    pub nodes: Vec<Rect>,
    /// Each edge's route, in the input's order: from the source's border to the target's,
    /// through the points where it crosses layers between. Empty for a self-loop.
    pub routes: Vec<Vec<(f64, f64)>>,
    /// Each node's layer (0 at the top).
    #[cfg_attr(not(test), allow(dead_code))]
    pub layers: Vec<usize>,
    /// The bounds.
    pub width: f64,
    /// The bounds.
    pub height: f64,
    /// Edge crossings between adjacent layers in the final order.
    #[cfg_attr(not(test), allow(dead_code))]
    pub crossings: usize,
}

/// A slot of a layer: a node or a dummy point of a long edge.
#[derive(Debug, Clone, Copy)]
struct Slot {
    width: f64,
    /// The node, or `None` for a dummy.
    node: Option<usize>,
}

/// Lays out nodes of `sizes` (width, height) with `edges` (from, to). Nodes are expected in a
/// topological order (an edge to an earlier node is drawn upwards, as a back edge).
pub(crate) fn layout(sizes: &[(f64, f64)], edges: &[(usize, usize)]) -> Layout {
    let n = sizes.len();
    // Layered edges go from an upper node to a lower one.
    let down: Vec<Option<(usize, usize)>> = edges
        .iter()
        .map(|&(a, b)| match a.cmp(&b) {
            std::cmp::Ordering::Less => Some((a, b)),
            std::cmp::Ordering::Greater => Some((b, a)),
            std::cmp::Ordering::Equal => None,
        })
        .collect();
    let layers = assign_layers(n, &down);
    let depth = layers.iter().copied().max().map_or(0, |d| d + 1);

    // Slots per layer: nodes in input order, then dummies as edges need them.
    let mut slots: Vec<Vec<Slot>> = vec![Vec::new(); depth];
    let mut slot_of = vec![(0usize, 0usize); n];
    for v in 0..n {
        let l = layers[v];
        slot_of[v] = (l, slots[l].len());
        slots[l].push(Slot {
            width: sizes[v].0,
            node: Some(v),
        });
    }
    // Each layered edge as its chain of slots (layer, index), one per layer it spans.
    let mut chains: Vec<Vec<(usize, usize)>> = Vec::with_capacity(edges.len());
    for e in &down {
        let Some((a, b)) = *e else {
            chains.push(Vec::new());
            continue;
        };
        let mut chain = vec![slot_of[a]];
        for (l, layer) in slots
            .iter_mut()
            .enumerate()
            .take(layers[b])
            .skip(layers[a] + 1)
        {
            chain.push((l, layer.len()));
            layer.push(Slot {
                width: DUMMY_WIDTH,
                node: None,
            });
        }
        chain.push(slot_of[b]);
        chains.push(chain);
    }
    // Segments between adjacent layers: (upper slot, lower slot) per upper layer.
    let mut segments: Vec<Vec<(usize, usize)>> = vec![Vec::new(); depth];
    for chain in &chains {
        for w in chain.windows(2) {
            segments[w[0].0].push((w[0].1, w[1].1));
        }
    }
    let order = order_layers(&slots, &segments);
    let crossings = total_crossings(&order, &segments);
    let xs = place_x(&slots, &order, &segments);

    // Layer bands.
    let mut band_h = vec![0.0f64; depth];
    for v in 0..n {
        band_h[layers[v]] = band_h[layers[v]].max(sizes[v].1);
    }
    let mut band_y = vec![0.0f64; depth];
    let mut y = 0.0;
    for l in 0..depth {
        band_y[l] = y;
        y += band_h[l] + LAYER_GAP;
    }
    let height = if depth == 0 { 0.0 } else { y - LAYER_GAP };
    let mut nodes = vec![
        Rect {
            x: 0.0,
            y: 0.0,
            w: 0.0,
            h: 0.0
        };
        n
    ];
    let mut width = 0.0f64;
    for (l, layer) in slots.iter().enumerate() {
        for (i, s) in layer.iter().enumerate() {
            width = width.max(xs[l][i] + s.width / 2.0);
            if let Some(v) = s.node {
                let (w, h) = sizes[v];
                nodes[v] = Rect {
                    x: xs[l][i] - w / 2.0,
                    y: band_y[l] + (band_h[l] - h) / 2.0,
                    w,
                    h,
                };
            }
        }
    }
    let routes = chains
        .iter()
        .zip(edges)
        .map(|(chain, &(a, _))| {
            if chain.is_empty() {
                return Vec::new();
            }
            let last = chain.len() - 1;
            let mut pts: Vec<(f64, f64)> = chain
                .iter()
                .enumerate()
                .map(|(k, &(l, i))| {
                    let x = xs[l][i];
                    match slots[l][i].node {
                        // Leave the upper node at its bottom, enter the lower at its top.
                        Some(v) if k == 0 => (x, nodes[v].y + nodes[v].h),
                        Some(v) if k == last => (x, nodes[v].y),
                        _ => (x, band_y[l] + band_h[l] / 2.0),
                    }
                })
                .collect();
            // A back edge runs from its source below to its target above.
            if slots[chain[0].0][chain[0].1].node != Some(a) {
                pts.reverse();
            }
            pts
        })
        .collect();
    Layout {
        nodes,
        routes,
        layers,
        width,
        height,
        crossings,
    }
}

/// Longest-path layers (every edge points down), then sources moved down next to their
/// highest consumer so their edges stay short.
fn assign_layers(n: usize, down: &[Option<(usize, usize)>]) -> Vec<usize> {
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in down.iter().flatten() {
        parents[b].push(a);
        children[a].push(b);
    }
    let mut layer = vec![0usize; n];
    // Edges go from lower to higher index: one pass in index order.
    for v in 0..n {
        layer[v] = parents[v].iter().map(|&p| layer[p] + 1).max().unwrap_or(0);
    }
    for v in (0..n).rev() {
        if parents[v].is_empty() {
            if let Some(lowest) = children[v].iter().map(|&c| layer[c]).min() {
                layer[v] = lowest - 1;
            }
        }
    }
    // Close up empty layers (a source moved down may leave one).
    let depth = layer.iter().copied().max().map_or(0, |d| d + 1);
    let mut used = vec![false; depth];
    for &l in &layer {
        used[l] = true;
    }
    let mut shift = vec![0usize; depth];
    let mut empty = 0;
    for l in 0..depth {
        if !used[l] {
            empty += 1;
        }
        shift[l] = empty;
    }
    layer.iter().map(|&l| l - shift[l]).collect()
}

/// The order of each layer's slots (slot indices, left to right): barycenter sweeps down and
/// up, keeping the order with the fewest crossings.
fn order_layers(slots: &[Vec<Slot>], segments: &[Vec<(usize, usize)>]) -> Vec<Vec<usize>> {
    let depth = slots.len();
    let mut order: Vec<Vec<usize>> = slots.iter().map(|l| (0..l.len()).collect()).collect();
    let mut best = order.clone();
    let mut best_crossings = total_crossings(&order, segments);
    if best_crossings == 0 {
        return best;
    }
    // Neighbours of each slot above and below.
    let mut up: Vec<Vec<Vec<usize>>> = slots.iter().map(|l| vec![Vec::new(); l.len()]).collect();
    let mut below: Vec<Vec<Vec<usize>>> = slots.iter().map(|l| vec![Vec::new(); l.len()]).collect();
    for (l, segs) in segments.iter().enumerate() {
        for &(a, b) in segs {
            below[l][a].push(b);
            up[l + 1][b].push(a);
        }
    }
    for _ in 0..SWEEPS {
        for (l, ups) in up.iter().enumerate().skip(1) {
            reorder(&mut order, l, l - 1, ups);
        }
        for l in (0..depth.saturating_sub(1)).rev() {
            reorder(&mut order, l, l + 1, &below[l]);
        }
        let c = total_crossings(&order, segments);
        if c < best_crossings {
            best_crossings = c;
            best = order.clone();
            if c == 0 {
                break;
            }
        }
    }
    best
}

/// Sorts layer `l` by the mean position of each slot's neighbours in layer `by`; slots
/// without neighbours keep their place.
fn reorder(order: &mut [Vec<usize>], l: usize, by: usize, neighbours: &[Vec<usize>]) {
    let mut pos = vec![0usize; order[by].len()];
    for (p, &s) in order[by].iter().enumerate() {
        pos[s] = p;
    }
    let mut keyed: Vec<(f64, usize, usize)> = order[l]
        .iter()
        .enumerate()
        .map(|(p, &s)| {
            let ns = &neighbours[s];
            let key = if ns.is_empty() {
                p as f64
            } else {
                ns.iter().map(|&t| pos[t] as f64).sum::<f64>() / ns.len() as f64
            };
            (key, p, s)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    order[l] = keyed.into_iter().map(|(_, _, s)| s).collect();
}

/// Crossings between adjacent layers: inversions among each layer pair's segments.
fn total_crossings(order: &[Vec<usize>], segments: &[Vec<(usize, usize)>]) -> usize {
    let mut total = 0;
    for (l, segs) in segments.iter().enumerate() {
        if segs.len() < 2 {
            continue;
        }
        let (mut pa, mut pb) = (
            vec![0usize; order[l].len()],
            vec![0usize; order[l + 1].len()],
        );
        for (p, &s) in order[l].iter().enumerate() {
            pa[s] = p;
        }
        for (p, &s) in order[l + 1].iter().enumerate() {
            pb[s] = p;
        }
        let mut pairs: Vec<(usize, usize)> = segs.iter().map(|&(a, b)| (pa[a], pb[b])).collect();
        pairs.sort_unstable();
        // Count inversions of the lower positions with a Fenwick tree.
        let size = order[l + 1].len();
        let mut tree = vec![0usize; size + 1];
        for (seen, &(_, b)) in pairs.iter().enumerate() {
            // Segments seen so far ending right of b cross this one.
            let mut i = b + 1;
            let mut not_right = 0;
            while i > 0 {
                not_right += tree[i];
                i -= i & i.wrapping_neg();
            }
            total += seen - not_right;
            let mut i = b + 1;
            while i <= size {
                tree[i] += 1;
                i += i & i.wrapping_neg();
            }
        }
    }
    total
}

/// Centre x of every slot, per layer (indexed by slot): each layer packed, then moved toward
/// its neighbours' centres a few times, down and up.
fn place_x(
    slots: &[Vec<Slot>],
    order: &[Vec<usize>],
    segments: &[Vec<(usize, usize)>],
) -> Vec<Vec<f64>> {
    let depth = slots.len();
    let mut xs: Vec<Vec<f64>> = slots.iter().map(|l| vec![0.0; l.len()]).collect();
    let mut nbrs: Vec<Vec<Vec<(usize, usize)>>> =
        slots.iter().map(|l| vec![Vec::new(); l.len()]).collect();
    for (l, segs) in segments.iter().enumerate() {
        for &(a, b) in segs {
            nbrs[l][a].push((l + 1, b));
            nbrs[l + 1][b].push((l, a));
        }
    }
    // Start: every layer packed and centred on the widest.
    let widths: Vec<f64> = order
        .iter()
        .enumerate()
        .map(|(l, o)| {
            o.iter().map(|&s| slots[l][s].width).sum::<f64>()
                + NODE_GAP * o.len().saturating_sub(1) as f64
        })
        .collect();
    let widest = widths.iter().copied().fold(0.0, f64::max);
    for l in 0..depth {
        let mut x = (widest - widths[l]) / 2.0;
        for &s in &order[l] {
            let w = slots[l][s].width;
            xs[l][s] = x + w / 2.0;
            x += w + NODE_GAP;
        }
    }
    let passes: Vec<usize> = (0..depth).chain((0..depth).rev()).collect();
    for _ in 0..4 {
        for &l in &passes {
            let desired: Vec<f64> = order[l]
                .iter()
                .map(|&s| {
                    let ns = &nbrs[l][s];
                    if ns.is_empty() {
                        xs[l][s]
                    } else {
                        ns.iter().map(|&(m, t)| xs[m][t]).sum::<f64>() / ns.len() as f64
                    }
                })
                .collect();
            let widths: Vec<f64> = order[l].iter().map(|&s| slots[l][s].width).collect();
            let placed = fit_in_order(&desired, &widths);
            for (k, &s) in order[l].iter().enumerate() {
                xs[l][s] = placed[k];
            }
        }
    }
    // Shift everything so the leftmost edge is at 0.
    let left = (0..depth)
        .flat_map(|l| order[l].iter().map(move |&s| (l, s)))
        .map(|(l, s)| xs[l][s] - slots[l][s].width / 2.0)
        .fold(f64::INFINITY, f64::min);
    if left.is_finite() {
        for row in &mut xs {
            for x in row {
                *x -= left;
            }
        }
    }
    xs
}

/// Centres as close as possible (least squares) to `desired` while keeping their order and
/// the spacing their `widths` need: with offsets o_i (the packed centres), y_i = x_i - o_i
/// must not decrease, which pool-adjacent-violators solves exactly.
fn fit_in_order(desired: &[f64], widths: &[f64]) -> Vec<f64> {
    let n = desired.len();
    let mut offset = vec![0.0f64; n];
    for i in 1..n {
        offset[i] = offset[i - 1] + widths[i - 1] / 2.0 + NODE_GAP + widths[i] / 2.0;
    }
    // Blocks of (mean, count).
    let mut blocks: Vec<(f64, usize)> = Vec::with_capacity(n);
    for i in 0..n {
        blocks.push((desired[i] - offset[i], 1));
        while blocks.len() > 1 {
            let (m2, c2) = blocks[blocks.len() - 1];
            let (m1, c1) = blocks[blocks.len() - 2];
            if m1 <= m2 {
                break;
            }
            blocks.pop();
            let c = c1 + c2;
            *blocks.last_mut().expect("two blocks") =
                ((m1 * c1 as f64 + m2 * c2 as f64) / c as f64, c);
        }
    }
    let mut out = Vec::with_capacity(n);
    for (m, c) in blocks {
        for _ in 0..c {
            let i = out.len();
            out.push(m + offset[i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(n: usize) -> Vec<(f64, f64)> {
        vec![(80.0, 40.0); n]
    }

    #[test]
    fn layers_follow_the_edges_and_sources_sit_above_their_consumers() {
        // 0 -> 2 -> 3, and 1 -> 3: 1 belongs just above 3.
        let l = layout(&boxes(4), &[(0, 2), (2, 3), (1, 3)]);
        assert_eq!(l.layers, [0, 1, 1, 2]);
        for &(a, b) in &[(0, 2), (2, 3), (1, 3)] {
            assert!(l.nodes[a].y + l.nodes[a].h < l.nodes[b].y);
        }
    }

    #[test]
    fn crossings_are_removed_when_an_order_without_them_exists() {
        // Sources 0, 1; 2 takes 1's output, 3 takes 0's: the input order crosses.
        let l = layout(&boxes(6), &[(1, 2), (0, 3), (0, 4), (1, 5)]);
        assert_eq!(l.crossings, 0);
    }

    #[test]
    fn nodes_never_overlap_and_long_edges_bend_through_their_layers() {
        let mut edges = vec![];
        for i in 1..30 {
            edges.push((i / 3, i));
            if i > 5 {
                edges.push((0, i));
            }
        }
        let l = layout(&boxes(30), &edges);
        for a in 0..30 {
            for b in a + 1..30 {
                assert!(!l.nodes[a].overlaps(&l.nodes[b]), "{a} {b}: {:?}", l.nodes);
            }
        }
        for (k, &(a, b)) in edges.iter().enumerate() {
            let r = &l.routes[k];
            assert_eq!(r.len(), l.layers[b] - l.layers[a] + 1);
            assert!(
                r.windows(2).all(|w| w[0].1 < w[1].1),
                "edge {a}->{b} goes down: {r:?}"
            );
        }
        assert!(l
            .nodes
            .iter()
            .all(|r| r.x >= 0.0 && r.x + r.w <= l.width + 1e-9));
    }

    #[test]
    fn back_edges_point_up() {
        let l = layout(&boxes(3), &[(0, 1), (1, 2), (2, 0)]);
        let back = &l.routes[2];
        assert!(back.first().unwrap().1 > back.last().unwrap().1, "{back:?}");
    }

    #[test]
    fn fitting_keeps_order_and_spacing_and_hits_free_targets() {
        let x = fit_in_order(&[0.0, 0.0, 500.0], &[40.0, 40.0, 40.0]);
        assert!(
            (x[1] - x[0] - 68.0).abs() < 1e-9 && (x[2] - 500.0).abs() < 1e-9,
            "{x:?}"
        );
        assert!((x[0] + x[1]).abs() < 1e-9, "{x:?}");
    }
}
