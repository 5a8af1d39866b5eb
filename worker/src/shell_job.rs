//! The map-reduce job of `drover map` (Hadoop Streaming's style, for any language), on every
//! stock worker: the map command gets one input on standard input (and in `$DROVER_INPUT`;
//! `{}` in the command stands for it) and writes `key<TAB>value` lines; the reduce command gets
//! one key's `key<TAB>value` lines on standard input and writes its result (each line of it one
//! value). Without a reduce command, a key's values are kept as they are.

use std::io::Write;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::context::TaskContext;
use crate::mapreduce::{MapReduceJob, Pairs};

/// How much of a failed command's stderr is kept.
const STDERR_TAIL: usize = 2048;

/// The commands of a `drover map` job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellCommands {
    /// The map command (run with `sh -c`).
    pub map: String,
    /// The reduce command, if any.
    pub reduce: Option<String>,
}

/// The job `drover map` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellJob;

/// Runs `command` with `sh -c`, `stdin` on its standard input and `input` in `$DROVER_INPUT`:
/// its standard output, or why it failed (exit code and the tail of stderr).
fn run(command: &str, input: &str, stdin: &[u8]) -> Result<String, String> {
    let script = command.replace("{}", "\"$DROVER_INPUT\"");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&script)
        .env("DROVER_INPUT", input)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::guard::guard(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
    let mut pipe = child.stdin.take().expect("piped");
    let data = stdin.to_vec();
    // Written from a thread: a command that does not read its input must not block us.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for the command: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        let tail_start = out.stderr.len().saturating_sub(STDERR_TAIL);
        let tail = String::from_utf8_lossy(&out.stderr[tail_start..]);
        let how = match out.status.code() {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".to_owned(),
        };
        return Err(format!("{how}; stderr: {}", tail.trim_end()));
    }
    String::from_utf8(out.stdout).map_err(|_| "the command's output is not UTF-8 text".to_owned())
}

impl MapReduceJob for ShellJob {
    const NAME: &'static str = "drover.shell";
    type Input = String;
    type Key = String;
    type Value = String;
    type Reduced = Vec<String>;
    type Params = ShellCommands;

    fn map(
        &self,
        _: &TaskContext,
        commands: &ShellCommands,
        input: String,
    ) -> Result<Pairs<Self>, String> {
        let mut stdin = input.clone().into_bytes();
        stdin.push(b'\n');
        let out = run(&commands.map, &input, &stdin)?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once('\t') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect())
    }

    fn reduce(
        &self,
        _: &TaskContext,
        commands: &ShellCommands,
        key: &String,
        values: Vec<String>,
    ) -> Result<Vec<String>, String> {
        let Some(reduce) = &commands.reduce else {
            return Ok(values);
        };
        let mut stdin = Vec::new();
        for v in &values {
            stdin.extend_from_slice(key.as_bytes());
            stdin.push(b'\t');
            stdin.extend_from_slice(v.as_bytes());
            stdin.push(b'\n');
        }
        let out = run(reduce, key, &stdin)?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_commands_map_and_reduce_lines() {
        let ctx = TaskContext::standalone("t");
        let c = ShellCommands {
            map: "tr ' ' '\\n' | sed 's/$/\\t1/'".into(),
            reduce: Some("wc -l | tr -d ' '".into()),
        };
        let pairs = ShellJob.map(&ctx, &c, "a b a".into()).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0], ("a".to_owned(), "1".to_owned()));
        let r = ShellJob
            .reduce(&ctx, &c, &"a".into(), vec!["1".into(), "1".into()])
            .unwrap();
        assert_eq!(r, vec!["2".to_owned()]);
        // {} is the input, quoted: spaces and quotes pass as they are.
        let echo = ShellCommands {
            map: "printf '%s\\tx\\n' {}".into(),
            reduce: None,
        };
        let pairs = ShellJob.map(&ctx, &echo, "it's a \"b\"".into()).unwrap();
        assert_eq!(pairs, vec![("it's a \"b\"".to_owned(), "x".to_owned())]);
        let err = ShellJob
            .map(
                &ctx,
                &ShellCommands {
                    map: "echo oops >&2; exit 4".into(),
                    reduce: None,
                },
                "i".into(),
            )
            .unwrap_err();
        assert_eq!(err, "exit code 4; stderr: oops");
        // Without a reduce command, values stay as they are.
        assert_eq!(
            ShellJob
                .reduce(&ctx, &echo, &"k".into(), vec!["1".into(), "2".into()])
                .unwrap(),
            vec!["1".to_owned(), "2".to_owned()]
        );
    }
}
