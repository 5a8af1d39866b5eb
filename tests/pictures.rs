//! The pictures, rendered: `drover export --format svg` of the pools example, a 10-task, a
//! 100-task and a summarised 10,000-task graph, each rendered to a PNG under
//! `target/pictures/` (pure Rust, with resvg) for a person to look at, and checked: the
//! SVG parses and renders, the picture is not mostly empty, and it is not absurdly wide.

mod common;

use std::path::{Path, PathBuf};

use common::binary;
use serde_json::{json, Value};

/// Where the PNGs go: `target/pictures/`.
fn pictures_dir() -> PathBuf {
    let dir = common::target_dir()
        .parent()
        .expect("target/")
        .join("pictures");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `drover export GRAPH --format svg -o OUT`.
fn export(graph: &Path, out: &Path) {
    let o = std::process::Command::new(binary("drover"))
        .args(["export", graph.to_str().unwrap(), "--format", "svg", "-o"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// What a rendered picture looks like, in numbers.
#[derive(Debug)]
struct Picture {
    width: u32,
    height: u32,
    /// Share of pixel rows with anything drawn on them.
    rows_used: f64,
    /// Share of pixel columns with anything drawn on them.
    cols_used: f64,
}

/// Renders `svg` to `png` and measures it.
fn render(svg: &Path, png: &Path) -> Picture {
    let text = std::fs::read(svg).unwrap();
    let mut options = resvg::usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_data(&text, &options).expect("the SVG parses");
    let size = tree.size().to_int_size();
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(size.width(), size.height()).expect("a sane size");
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap.save_png(png).expect("the PNG is written");
    let (w, h) = (size.width() as usize, size.height() as usize);
    let data = pixmap.data();
    let drawn = |x: usize, y: usize| {
        let p = &data[(y * w + x) * 4..(y * w + x) * 4 + 3];
        p.iter().any(|&c| c < 235)
    };
    let rows = (0..h).filter(|&y| (0..w).any(|x| drawn(x, y))).count();
    let cols = (0..w).filter(|&x| (0..h).any(|y| drawn(x, y))).count();
    Picture {
        width: size.width(),
        height: size.height(),
        rows_used: rows as f64 / h as f64,
        cols_used: cols as f64 / w as f64,
    }
}

/// Writes `graph` to a file, exports and renders it as `name`; returns the measures.
fn picture_of(name: &str, graph: &Value) -> Picture {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.json"));
    std::fs::write(&file, graph.to_string()).unwrap();
    let svg = pictures_dir().join(format!("{name}.svg"));
    export(&file, &svg);
    let p = render(&svg, &pictures_dir().join(format!("{name}.png")));
    println!("{name}: {p:?}");
    p
}

/// A layered graph: `width` sources spread over pools, then layers each taking inputs from
/// the layer above (deterministic).
fn layered(layers: usize, width: usize, pools: &[&str]) -> Value {
    let mut tasks = Vec::new();
    let mut seed: u64 = 7;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    for l in 0..layers {
        for i in 0..width {
            let key = format!("t{l}_{i}");
            if l == 0 {
                let pool = pools[i % pools.len()];
                tasks.push(json!({"key": key, "function": "load", "pool": pool,
                    "size_hint": 1000 * (i + 1)}));
            } else {
                let a = next() % width;
                let b = next() % width;
                let mut inputs = vec![format!("t{}_{a}", l - 1)];
                if b != a {
                    inputs.push(format!("t{}_{b}", l - 1));
                }
                tasks.push(json!({"key": key, "function": format!("step{}", l % 3),
                    "inputs": inputs, "size_hint": 10 * (i + 1)}));
            }
        }
    }
    json!({ "tasks": tasks })
}

/// The checks every picture passes: it renders, and the drawing fills its frame (a tight
/// picture, not two thirds empty).
fn check(p: &Picture) {
    assert!(p.width > 100 && p.height > 100, "{p:?}");
    assert!(p.rows_used > 0.6, "mostly empty rows: {p:?}");
    assert!(p.cols_used > 0.6, "mostly empty columns: {p:?}");
}

#[test]
fn the_pools_example_picture() {
    let graph: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/pools.json").unwrap()).unwrap();
    let p = picture_of("pools", &graph);
    check(&p);
    assert!(p.width < 1200, "{p:?}");
}

#[test]
fn a_ten_task_picture() {
    let p = picture_of("ten", &layered(3, 3, &["A", "B"]));
    check(&p);
    // Was 2,062 px wide, flat.
    assert!(p.width < 1100 && p.height > 200, "{p:?}");
}

#[test]
fn a_hundred_task_picture() {
    let p = picture_of("hundred", &layered(10, 10, &["A", "B", "C"]));
    check(&p);
    assert!(p.width < 3000, "{p:?}");
}

#[test]
fn a_summarised_ten_thousand_task_picture() {
    let p = picture_of("ten-thousand", &layered(100, 100, &["A", "B", "C"]));
    check(&p);
    assert!(p.width < 2500 && p.height < 2500, "{p:?}");
}
