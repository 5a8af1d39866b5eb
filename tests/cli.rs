//! The `drover` command on good and bad graph files: output, exit codes, messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .output()
        .expect("run drover")
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p: PathBuf = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_prints_a_table_and_the_estimate() {
    let o = drover(&["check", &data("pools.json")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("  ")
                .filter(|s| !s.is_empty())
                .map(str::trim)
                .collect()
        })
        .collect();
    assert!(rows.contains(&vec!["run_in_a", "A", "forward"]), "{out}");
    assert!(rows.contains(&vec!["run_in_b", "B", "forward"]), "{out}");
    assert!(rows.contains(&vec!["side", "-", "any"]), "{out}");
    assert!(rows.contains(&vec!["source", "B", "backward"]), "{out}");
    assert!(out.contains("without the pass"), "{out}");
}

#[test]
fn check_json_has_the_fixed_shape() {
    let o = drover(&["check", "--json", &data("pools.json")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 9);
    assert_eq!(
        tasks[0],
        serde_json::json!({"key": "a", "pool": "A", "reason": "pinned"})
    );
    assert_eq!(
        tasks[4],
        serde_json::json!({"key": "a.mean()", "pool": "A", "reason": "forward"})
    );
    assert_eq!(
        tasks[6],
        serde_json::json!({"key": "side", "pool": null, "reason": "any"})
    );
    let est = &v["transfer_estimate"];
    let (without, forward, full) = (
        est["without"].as_u64().unwrap(),
        est["forward"].as_u64().unwrap(),
        est["full"].as_u64().unwrap(),
    );
    // a.mean() -> run_in_b (8) and a -> side (800, any-pool shares no pool) still cross.
    assert_eq!(full, 808);
    assert!(full < forward && forward < without, "{est}");
}

#[test]
fn bad_json_exits_1_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(
        &dir,
        "bad.json",
        "{\"tasks\": [\n  {\"key\": \"a\" \"function\": \"f\"}\n]}",
    );
    let o = drover(&["check", &f]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 2, column"), "{}", stderr(&o));
}

#[test]
fn bad_graphs_exit_1_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"tasks": [{"key": "a", "function": "f"}, {"key": "a", "function": "g"}]}"#,
            "duplicate key \"a\"",
        ),
        (
            r#"{"tasks": [{"key": "a", "function": "f", "inputs": ["ghost"]}]}"#,
            "task \"a\" has unknown input \"ghost\"",
        ),
        (
            r#"{"tasks": [{"key": "x", "function": "f", "inputs": ["y"]}, {"key": "y", "function": "f", "inputs": ["x"]}]}"#,
            "cycle: ",
        ),
        (
            r#"{"tasks": [{"key": "a", "function": "f", "pool": "A", "any_pool": true}]}"#,
            "both \"pool\"",
        ),
        (
            r#"{"tasks": [{"key": "a", "function": "f", "pool": ""}]}"#,
            "pool name is empty",
        ),
        (
            r#"{"tasks": [{"key": "a", "function": "f", "resources": {"gpu": -1}}]}"#,
            "not negative",
        ),
        (
            r#"{"tasks": [{"key": "a", "function": "f", "resources": {"gpu": "one"}}]}"#,
            "not a number",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = write_temp(&dir, &format!("g{i}.json"), text);
        for cmd in [
            vec!["check", f.as_str()],
            vec!["export", f.as_str(), "--format", "dot", "-o", "-"],
        ] {
            let o = drover(&cmd);
            assert_eq!(o.status.code(), Some(1), "{text}: {}", stderr(&o));
            assert!(stderr(&o).contains(want), "{text}: {}", stderr(&o));
            assert!(o.stdout.is_empty());
        }
    }
}

#[test]
fn bad_usage_exits_2() {
    let o = drover(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    let o = drover(&["export", &data("pools.json"), "--format", "png", "-o", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("png"), "{}", stderr(&o));
    let o = drover(&["check", "/nonexistent/graph.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read graph file /nonexistent/graph.json"),
        "{}",
        stderr(&o)
    );
    let o = drover(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn export_writes_dot_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for (format, file) in [("dot", "g.dot"), ("json", "g.json"), ("svg", "g.svg")] {
        let o = drover(&[
            "export",
            &data("pools.json"),
            "--format",
            format,
            "-o",
            &out(file),
        ]);
        assert!(o.status.success(), "{format}: {}", stderr(&o));
    }
    let dot = std::fs::read_to_string(out("g.dot")).unwrap();
    assert!(dot.starts_with("digraph drover {"));
    assert!(dot.contains("\"legend:pool:A\"") && dot.contains("\"legend:pool:B\""));
    assert!(
        dot.contains("label=\"run_in_b\\nconcat\\nB · forward\""),
        "{dot}"
    );
    assert!(dot.contains("label=\"800 B\""));
    assert!(
        dot.contains("style=\"filled,dashed,rounded\""),
        "any-pool looks different"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out("g.json")).unwrap()).unwrap();
    let nodes = json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 9);
    let run_in_b = nodes.iter().find(|n| n["key"] == "run_in_b").unwrap();
    assert_eq!(
        (&run_in_b["pool"], &run_in_b["reason"]),
        (&serde_json::json!("B"), &serde_json::json!("forward"))
    );
    let edge = json["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == "a.mean()")
        .unwrap();
    assert_eq!(
        (&edge["bytes"], &edge["cross_pool"]),
        (&serde_json::json!(8), &serde_json::json!(true))
    );

    let svg = std::fs::read_to_string(out("g.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("run_in_b") && svg.contains("pool A"));
}

/// Every error at once: a cycle is reported beside a bad pool name.
#[test]
fn a_cycle_and_a_bad_pool_are_both_reported() {
    let dir = tempfile::tempdir().unwrap();
    let g = write_temp(
        &dir,
        "g.json",
        r#"{"tasks": [{"key": "a", "function": "len", "inputs": ["b"], "pool": "bad pool!"},
                      {"key": "b", "function": "len", "inputs": ["a"]}]}"#,
    );
    let o = drover(&["check", &g]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("2 errors")
            && err.contains("pool name \"bad pool!\"")
            && err.contains("cycle: "),
        "{err}"
    );
}

/// `drover export g.json -o g.json` is refused; the graph stays as it was.
#[test]
fn export_refuses_to_overwrite_its_graph_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data("pools.json")).unwrap();
    let g = write_temp(&dir, "g.json", &text);
    let same = dir.path().join(".").join("g.json");
    let o = drover(&[
        "export",
        &g,
        "--format",
        "dot",
        "-o",
        same.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is the graph file itself"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&g).unwrap(), text);
}

/// A missing access file is named once, without a stutter.
#[test]
fn a_missing_access_file_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = write_temp(
        &dir,
        "g.json",
        r#"{"tasks": [{"key": "a", "function": "noop"}]}"#,
    );
    let o = drover(&["run", &g, "--access-file", "/nonexistent/access.json"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("access file /nonexistent/access.json"),
        "{err}"
    );
    assert_eq!(err.matches("access file").count(), 1, "{err}");
}

/// Report times are whole microseconds (no float noise such as 4.4772240000000005).
#[test]
fn report_times_are_whole_microseconds() {
    let dir = tempfile::tempdir().unwrap();
    let tasks: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"key": "t{i}", "function": "bytes", "params": {{"n": {i}}}}}"#))
        .collect();
    let g = write_temp(
        &dir,
        "g.json",
        &format!(r#"{{"tasks": [{}]}}"#, tasks.join(",")),
    );
    let report = dir.path().join("r.json");
    let o = drover(&[
        "run",
        &g,
        "--local",
        "1",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&report).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    for t in r["tasks"].as_array().unwrap() {
        let shown = t["at_ms"].to_string();
        let decimals = shown.split('.').nth(1).map_or(0, str::len);
        assert!(decimals <= 3, "{shown}");
    }
}

/// A task placed anywhere reports the pool of the worker it ran on.
#[test]
fn report_rows_name_the_pool_a_task_ran_in() {
    let dir = tempfile::tempdir().unwrap();
    let g = write_temp(
        &dir,
        "g.json",
        r#"{"tasks": [{"key": "free", "function": "noop", "any_pool": true}]}"#,
    );
    let report = dir.path().join("r.json");
    let o = drover(&[
        "run",
        &g,
        "--local",
        "A=1",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["tasks"][0]["pool"], "A", "{r}");
}

/// a (A, 10 B) -> a1 (100 B) -> c <- b (B, 15 B): the linear pass keeps a1 with a and moves b's
/// 15 bytes; the optimiser moves a1 and c to B and only a's 10 bytes cross.
const CHAIN: &str = r#"{"tasks": [
  {"key": "a", "function": "load", "pool": "A", "size_hint": 10},
  {"key": "b", "function": "load", "pool": "B", "size_hint": 15},
  {"key": "a1", "function": "f", "inputs": ["a"], "size_hint": 100},
  {"key": "c", "function": "g", "inputs": ["a1", "b"]}
]}"#;

#[test]
fn check_shows_the_optimised_pass_and_its_lower_bound_and_pass_linear_the_old_rule() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(&dir, "chain.json", CHAIN);
    let o = drover(&["check", &f, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |key: &str| {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        row("a1"),
        serde_json::json!({"key": "a1", "pool": "B", "reason": "optimised"})
    );
    let est = &v["transfer_estimate"];
    assert_eq!(est["linear"], 15);
    assert_eq!(est["full"], 10);
    assert_eq!(est["lower_bound"], 10);
    let text = stdout(&drover(&["check", &f]));
    assert!(
        text.contains("linear 15, optimised 10 (lower bound 10)"),
        "{text}"
    );

    let o = drover(&["check", &f, "--json", "--pass", "linear"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["transfer_estimate"]["full"], 15);
    assert!(v["transfer_estimate"].get("lower_bound").is_none());
    let text = stdout(&drover(&["check", &f, "--pass", "linear"]));
    assert!(text.contains("(the linear pass was asked for)"), "{text}");
    // The graph file can ask for it too.
    let linear = CHAIN.replacen('{', r#"{"pass": "linear", "#, 1);
    let f2 = write_temp(&dir, "linear.json", &linear);
    let v: serde_json::Value =
        serde_json::from_slice(&drover(&["check", &f2, "--json"]).stdout).unwrap();
    assert_eq!(v["transfer_estimate"]["full"], 15);
    // A bad pass is a usage error naming it.
    let o = drover(&["check", &f, "--pass", "fast"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fast"), "{}", stderr(&o));
}

#[test]
fn a_real_run_keeps_the_optimised_placement_and_the_linear_pass_on_request() {
    // The chain above with real built-ins: a1 is a ten times over (100 bytes, as hinted).
    let graph = |pass: &str| {
        format!(
            r#"{{{pass}"tasks": [
  {{"key": "a", "function": "bytes", "params": {{"n": 10}}, "pool": "A", "size_hint": 10}},
  {{"key": "b", "function": "bytes", "params": {{"n": 15}}, "pool": "B", "size_hint": 15}},
  {{"key": "a1", "function": "concat", "inputs": ["a","a","a","a","a","a","a","a","a","a"], "size_hint": 100}},
  {{"key": "c", "function": "concat", "inputs": ["a1", "b"]}}
]}}"#
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let pools_ran = |name: &str, text: &str| {
        let g = write_temp(&dir, name, text);
        let report = dir.path().join(format!("{name}.report.json"));
        let o = drover(&[
            "run",
            &g,
            "--local",
            "A=1,B=1",
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let pool = |key: &str| {
            r["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["key"] == key)
                .map(|t| t["pool"].clone())
                .unwrap()
        };
        (pool("a1"), pool("c"))
    };
    assert_eq!(pools_ran("opt.json", &graph("")), ("B".into(), "B".into()));
    let (a1, _) = pools_ran("lin.json", &graph(r#""pass": "linear", "#));
    assert_eq!(a1, "A");
}
