//! The README's shell blocks, checked so the README cannot drift from the code:
//!
//! * every command's program exists (binaries, examples, benches), and every `--flag` it uses
//!   is one its `--help` lists;
//! * the blocks marked `<!-- readme-test: run -->` (the real-cluster start, the pools example on
//!   it, `drover map`) run as written, in a fresh directory where `target/release` is this
//!   build's binaries, with two substitutions a single machine needs: the scheduler's fixed
//!   port becomes an ephemeral one, and `/var/lib/drover` a temporary directory.
//!
//! The README's Rust snippets are doctests of the `drover` crate (`src/lib.rs`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{binary, target_dir, Proc};

/// The marker line put just before a shell block that this test runs.
const RUN_MARKER: &str = "<!-- readme-test: run -->";

/// A fenced `sh` block of the README.
#[derive(Debug)]
struct Block {
    /// The line of its opening fence (1-based).
    line: usize,
    /// Marked to run.
    run: bool,
    /// Its commands: continuation lines joined, comments removed.
    commands: Vec<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// `line` without its shell comment (a `#` starting a word, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && prev != '\\' => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

/// The README's `sh` blocks.
fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```sh" {
            i += 1;
            continue;
        }
        let run = i > 0 && lines[i - 1].trim() == RUN_MARKER;
        let line = i + 1;
        let mut commands: Vec<String> = Vec::new();
        let mut continued = false;
        i += 1;
        while i < lines.len() && !lines[i].starts_with("```") {
            let raw = lines[i];
            i += 1;
            let code = strip_comment(raw).trim_end();
            if code.trim().is_empty() {
                continued = false;
                continue;
            }
            let (code, more) = match code.strip_suffix('\\') {
                Some(c) => (c.trim_end(), true),
                None => (code, false),
            };
            // A continued line, or an indented synopsis line (`    [--flag X]`), joins the
            // command before it.
            if (continued || raw.starts_with(' ')) && !commands.is_empty() {
                let last = commands.last_mut().expect("a command");
                last.push(' ');
                last.push_str(code.trim());
            } else {
                commands.push(code.trim().to_owned());
            }
            continued = more;
        }
        out.push(Block {
            line,
            run,
            commands,
        });
        i += 1;
    }
    out
}

/// The subcommands a clap `--help` text lists.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn help(program: &Path, path: &[&str]) -> String {
    let out = Command::new(program)
        .args(path)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(
        out.status.success(),
        "{} {} --help failed: {}",
        program.display(),
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The long flags a command uses (`[--jobs` and `--format dot|json|svg` count as `--jobs` and
/// `--format`).
fn flags(words: &[&str]) -> Vec<String> {
    words
        .iter()
        .map(|w| w.trim_start_matches('['))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.split(['=', ']', '|'])
                .next()
                .unwrap_or(w)
                .trim_end_matches(['.', ','])
                .to_owned()
        })
        .collect()
}

/// Checks one command: its program exists and knows its flags. `None` when the command is not
/// one of the project's (`seq`, `mkdir`, `cd fuzz && ...`).
fn check_command(command: &str) -> Option<()> {
    // `ID=$(drover submit ...)` is the command inside.
    let command = match command.split_once("=$(") {
        Some((var, inner)) if !var.contains(' ') => inner.trim_end_matches(')'),
        _ => command,
    };
    let words: Vec<&str> = command.split_whitespace().collect();
    let first = *words.first()?;
    if first == "cargo" {
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .map(|i| words[i + 1].to_owned())
        };
        if let Some(example) = after("--example") {
            let path = repo().join("examples").join(format!("{example}.rs"));
            assert!(path.exists(), "README: `{command}`: no {}", path.display());
        }
        if let Some(bench) = after("--bench") {
            let path = repo().join("benches").join(format!("{bench}.rs"));
            assert!(path.exists(), "README: `{command}`: no {}", path.display());
        }
        return Some(());
    }
    let name = first.strip_prefix("target/release/").unwrap_or(first);
    if !matches!(name, "drover" | "scheduler" | "worker") {
        if let Some(example) = name.strip_prefix("examples/") {
            assert!(
                repo()
                    .join("examples")
                    .join(format!("{example}.rs"))
                    .exists(),
                "README: `{command}`: no example {example}"
            );
        }
        return None;
    }
    let program = binary(name);
    // The subcommand path: leading words its parent's help lists as subcommands.
    let mut path: Vec<&str> = Vec::new();
    for word in &words[1..] {
        if subcommands(&help(&program, &path))
            .iter()
            .any(|s| s == word)
        {
            path.push(word);
        } else {
            break;
        }
    }
    let text = help(&program, &path);
    for flag in flags(&words) {
        assert!(
            text.contains(&format!("{flag} ")) || text.contains(&format!("{flag}\n")),
            "README: `{command}`: `{name} {}` has no flag {flag}; its help:\n{text}",
            path.join(" ")
        );
    }
    Some(())
}

/// Every command of every `sh` block names a program that exists, with flags it knows.
#[test]
fn every_readme_command_names_real_programs_and_flags() {
    let blocks = blocks(&readme());
    assert!(blocks.len() >= 10, "{blocks:?}");
    let mut checked = 0;
    for block in &blocks {
        for command in &block.commands {
            if check_command(command).is_some() {
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} commands checked");
    assert!(
        blocks.iter().filter(|b| b.run).count() >= 3,
        "the blocks marked to run are gone: {blocks:?}"
    );
}

/// The flag check catches a flag a program does not have.
#[test]
fn the_flag_check_fails_on_an_unknown_flag() {
    let bad = std::panic::catch_unwind(|| check_command("drover run g.json --no-such-flag"));
    assert!(bad.is_err());
    assert!(check_command("drover run g.json --local 2 [--nthreads T]").is_some());
    assert!(std::panic::catch_unwind(|| check_command("cargo bench --bench nothing")).is_err());
}

/// A directory laid out as the README assumes: `target/release` holds the binaries (this
/// build's), and the graph and inputs its commands name.
struct Here {
    dir: tempfile::TempDir,
    state: PathBuf,
    background: Vec<Proc>,
}

impl Here {
    fn new() -> Here {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::os::unix::fs::symlink(target_dir(), dir.path().join("target/release")).unwrap();
        let state = dir.path().join("var-lib-drover");
        Here {
            dir,
            state,
            background: Vec::new(),
        }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    /// The single-machine substitutions.
    fn local(&self, command: &str) -> String {
        command
            .replace("0.0.0.0:7878", "127.0.0.1:0")
            .replace("/var/lib/drover", self.state.to_str().unwrap())
    }

    /// Runs one command as the README says: a scheduler or worker in the background (waiting
    /// until it listens or has joined), anything else to its end, which must succeed.
    fn run(&mut self, command: &str) -> String {
        let command = self.local(command);
        let words: Vec<&str> = command.split_whitespace().collect();
        if words[0] == "cargo" {
            // `cargo build --release`: this test runs on the binaries cargo test built.
            assert!(words[1] == "build", "README: cannot run `{command}` here");
            return String::new();
        }
        let program = self.dir.path().join(words[0]);
        if words[0].ends_with("/scheduler") {
            let mut p = Proc::start("scheduler", &program, &words[1..]);
            p.wait_for("scheduler listening");
            // "copy access.json there": workers and clients here read ./access.json.
            std::fs::copy(
                self.state.join("access.json"),
                self.dir.path().join("access.json"),
            )
            .unwrap();
            self.background.push(p);
            return String::new();
        }
        if words[0].ends_with("/worker") || words.get(1) == Some(&"worker") {
            let mut p = start_in(self.dir.path(), &program, &words[1..]);
            p.wait_for("worker connected");
            self.background.push(p);
            return String::new();
        }
        let path = format!(
            "{}:{}",
            target_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .current_dir(self.dir.path())
            .env("PATH", path)
            .output()
            .expect("sh");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "README: `{command}` failed ({:?}):\n{stdout}\n{stderr}",
            out.status
        );
        stdout.into_owned()
    }
}

/// `program args` started in `dir` with `RUST_LOG=info`, output captured.
fn start_in(dir: &Path, program: &Path, args: &[&str]) -> Proc {
    // Relative paths (`access.json`) are the directory's: run through `env -C`.
    let mut full: Vec<&str> = vec!["-C", dir.to_str().unwrap(), program.to_str().unwrap()];
    full.extend_from_slice(args);
    Proc::start("worker", Path::new("/usr/bin/env"), &full)
}

/// The block after `heading` marked to run.
fn marked_block(heading: &str) -> Block {
    let text = readme();
    let at = text
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let line = text[..at].lines().count();
    blocks(&text)
        .into_iter()
        .find(|b| b.line > line && b.run)
        .unwrap_or_else(|| panic!("no block marked to run after {heading:?}"))
}

/// "Running on a real cluster", as written: a scheduler, workers in pools A and B (with a
/// GPU), a client running a graph; then the pools example's own workers and client on it.
#[cfg(unix)]
#[test]
fn the_real_cluster_blocks_run_as_written() {
    let mut here = Here::new();
    here.write(
        "graph.json",
        &serde_json::json!({"tasks": [
            {"key": "a", "function": "bytes", "params": {"n": 100}, "pool": "A"},
            {"key": "b", "function": "bytes", "params": {"n": 10}, "pool": "B"},
            {"key": "gpu", "function": "concat", "inputs": ["a", "b"], "resources": {"gpu": 1}},
            {"key": "size", "function": "len", "inputs": ["gpu"]}
        ]})
        .to_string(),
    );
    let cluster = marked_block("## Running on a real cluster");
    assert!(cluster.commands.len() >= 5, "{cluster:?}");
    for command in &cluster.commands {
        here.run(command);
    }
    let report = common::read_report(&here.dir.path().join("report.json"));
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["finished"], 4, "{report}");
    // The pools example on the same scheduler: its own workers, then its client.
    let pools = marked_block("The pools example registers its own functions");
    let mut last = String::new();
    for command in &pools.commands {
        last = here.run(command);
    }
    assert!(last.contains("results and placements check out"), "{last}");
}

/// `drover map` as the README shows it: word count with shell commands, on this machine.
#[cfg(unix)]
#[test]
fn the_drover_map_block_runs_as_written() {
    let mut here = Here::new();
    here.write("books.txt", "the cat\nthe dog\na cat\n");
    let block = marked_block("### From the shell: `drover map`");
    for command in &block.commands {
        here.run(command);
    }
    let counts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(here.dir.path().join("counts.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(counts["the"], serde_json::json!("2"), "{counts}");
    assert_eq!(counts["cat"], serde_json::json!("2"), "{counts}");
}

/// The examples are what a user copies: they use only the `drover` crate, never the
/// workspace's internal `drover-*` crates.
#[test]
fn examples_use_only_the_drover_crate() {
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains("drover_"),
                "{}:{}: uses an internal crate: {line}",
                path.display(),
                n + 1
            );
        }
    }
}

/// The quickstart example: `#[tokio::main]`, and its workers are processes of itself (each
/// calls `run_as_worker_if_asked` inside its own `#[tokio::main]`).
#[test]
fn the_quickstart_example_runs_its_own_workers_under_tokio_main() {
    let (stdout, stderr) = common::run_example("quickstart");
    assert!(stdout.contains("sum of squares 1..=10 = 385"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The README's sample output of the main job is what the pools example prints: the block
/// after "It prints:" is the start of its output, line for line.
#[test]
fn the_readme_shows_what_the_main_job_prints() {
    let text = readme();
    let at = text
        .find("It prints:\n\n```text\n")
        .expect("the sample output block");
    let block = &text[at + "It prints:\n\n```text\n".len()..];
    let block = &block[..block.find("```").expect("its end")];
    let (stdout, _) = common::run_example("pools");
    let printed: Vec<&str> = stdout.lines().take(block.lines().count()).collect();
    let shown: Vec<&str> = block.lines().collect();
    assert_eq!(
        printed, shown,
        "README.md's sample output differs from the example's"
    );
}
