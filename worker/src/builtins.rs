//! The stock worker's built-in functions. Their outputs are plain bytes.
//!
//! | name | params | output |
//! | --- | --- | --- |
//! | `noop` | none | empty |
//! | `sleep` | `{"ms": N}` | empty, after N milliseconds |
//! | `bytes` | `{"n": N, "fill": "x"}` | N bytes of `fill` (one character, default `x`) |
//! | `concat` | none | its inputs' bytes joined in order |
//! | `len` | none | the total byte length of its inputs, as decimal text |
//! | `command` | `{"argv": [...], "env": {...}, "cwd": "..."}` | the command's stdout; a non-zero exit fails the task with the exit code and the tail of stderr |
//!
//! Outputs are bounded by the worker's memory: `bytes` (or `concat`) asked for more than the
//! worker's `--memory-limit`, or more than the machine has available, fails with a clear error
//! instead of aborting the process.
//!
//! `concat` and `len` also take once-cells made by the built-in loaders, whose objects are
//! bytes:
//!
//! | loader | params | object, loaded once per worker process |
//! | --- | --- | --- |
//! | `file` | `{"path": "..."}` | the file's contents |
//! | `command` | as the `command` function | the command's stdout (e.g. data a script prepares) |

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;

use crate::registry::{parse_params, Object, Registry, TaskContext};

/// How much of a failed command's stderr is kept.
pub const STDERR_TAIL: usize = 2048;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepParams {
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BytesParams {
    n: u64,
    #[serde(default)]
    fill: Option<char>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandParams {
    argv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileParams {
    path: String,
}

/// Input `i`'s bytes: a byte-valued once-cell's object, or the producer's output.
fn input_bytes<'a>(ctx: &'a TaskContext, inputs: &'a [Bytes], i: usize) -> &'a Bytes {
    ctx.object(i)
        .and_then(|o| o.downcast_ref::<Bytes>())
        .unwrap_or(&inputs[i])
}

/// An empty buffer with room for `n` output bytes, or an error when `n` is more than this
/// worker may hold: its memory limit, or (from [`CHECK_BUDGET_FROM`] bytes) what the machine
/// has available. Never aborts the process: the allocation itself is fallible too.
fn output_buffer(ctx: &TaskContext, n: u64) -> Result<Vec<u8>, String> {
    if n >= CHECK_BUDGET_FROM || ctx.worker.memory_limit().is_some() {
        check_budget(ctx, n)?;
    }
    usize::try_from(n)
        .ok()
        .and_then(crate::buffers::take)
        .ok_or_else(|| format!("refusing to make a {n}-byte output: cannot allocate it"))
}

/// Outputs of fewer bytes than this are not checked against the memory the machine has
/// available (reading it costs a read of `/proc/meminfo`, more than a small task's whole
/// run); their allocation stays fallible, and a worker's memory limit is checked always.
const CHECK_BUDGET_FROM: u64 = 1 << 20;

/// An error when `n` bytes are more than this worker may hold.
fn check_budget(ctx: &TaskContext, n: u64) -> Result<(), String> {
    if let Some((budget, what)) = ctx.worker.memory_budget() {
        if n > budget {
            return Err(format!(
                "refusing to make a {n}-byte output: more than this worker's {what} ({budget} bytes)"
            ));
        }
    }
    Ok(())
}

fn no_params(params: Option<&str>) -> Result<(), String> {
    match params {
        None | Some("null") | Some("{}") => Ok(()),
        Some(p) => Err(format!("takes no params, got {p}")),
    }
}

/// Adds every built-in to `r`.
pub fn register(r: &mut Registry) {
    r.register_job(crate::shell_job::ShellJob);
    r.register_raw("noop", |_, p, _| no_params(p).map(|_| Vec::new()));
    r.register_raw("sleep", |ctx, p, _| {
        let p: SleepParams = parse_params(p)?;
        let want = std::time::Duration::from_millis(p.ms);
        // Stops at the task's deadline: its thread is free for the next task.
        if let Some(deadline) = ctx.deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if want > left {
                std::thread::sleep(left);
                return Err(crate::context::timeout_message(
                    ctx.timeout.unwrap_or_default(),
                ));
            }
        }
        std::thread::sleep(want);
        Ok(Vec::new())
    });
    r.register_raw("bytes", |ctx, p, _| {
        let p: BytesParams = parse_params(p)?;
        let fill = p.fill.unwrap_or('x');
        let mut buf = [0u8; 4];
        let unit = fill.encode_utf8(&mut buf).as_bytes();
        let total = (unit.len() as u64).saturating_mul(p.n);
        let mut out = output_buffer(ctx, total)?;
        if unit.len() == 1 {
            out.resize(total as usize, unit[0]);
        } else {
            for _ in 0..p.n {
                out.extend_from_slice(unit);
            }
        }
        Ok(out)
    });
    r.register_raw("concat", |ctx, p, inputs| {
        no_params(p)?;
        let total: u64 = (0..inputs.len())
            .map(|i| input_bytes(ctx, inputs, i).len() as u64)
            .sum();
        let mut out = output_buffer(ctx, total)?;
        for i in 0..inputs.len() {
            out.extend_from_slice(input_bytes(ctx, inputs, i));
        }
        Ok(out)
    });
    r.register_raw("len", |ctx, p, inputs| {
        no_params(p)?;
        Ok((0..inputs.len())
            .map(|i| input_bytes(ctx, inputs, i).len())
            .sum::<usize>()
            .to_string()
            .into_bytes())
    });
    r.register_raw("command", run_command);
    r.register_loader_raw("file", |_, p| {
        let p: FileParams = parse_params(p)?;
        let data = std::fs::read(&p.path).map_err(|e| format!("cannot read {:?}: {e}", p.path))?;
        Ok(std::sync::Arc::new(Bytes::from(data)) as Object)
    });
    r.register_loader_raw("command", |ctx, p| {
        run_command(ctx, p, &[]).map(|out| std::sync::Arc::new(Bytes::from(out)) as Object)
    });
}

fn run_command(ctx: &TaskContext, p: Option<&str>, _: &[Bytes]) -> Result<Vec<u8>, String> {
    let p: CommandParams = parse_params(p)?;
    let (program, args) = p.argv.split_first().ok_or("argv is empty")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .envs(&p.env)
        .stdin(std::process::Stdio::null());
    if let Some(cwd) = &p.cwd {
        // Checked first: a missing directory would read as a missing program.
        match std::fs::metadata(cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "cannot start {program:?}: its cwd {cwd:?} is not a directory"
                ))
            }
            Err(e) => return Err(format!("cannot start {program:?}: its cwd {cwd:?}: {e}")),
        }
        cmd.current_dir(cwd);
    }
    crate::guard::guard(&mut cmd);
    let out = match ctx.deadline {
        None => cmd
            .output()
            .map_err(|e| format!("cannot start {program:?}: {e}"))?,
        Some(deadline) => output_until(&mut cmd, deadline).map_err(|e| match e {
            Killed::AtDeadline => format!(
                "{}; process killed",
                crate::context::timeout_message(ctx.timeout.unwrap_or_default())
            ),
            Killed::Error(e) => format!("{program:?}: {e}"),
        })?,
    };
    if out.status.success() {
        return Ok(out.stdout);
    }
    let tail_start = out.stderr.len().saturating_sub(STDERR_TAIL);
    let tail = String::from_utf8_lossy(&out.stderr[tail_start..]);
    let how = match out.status.code() {
        Some(code) => format!("exit code {code}"),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                format!("killed by signal {}", out.status.signal().unwrap_or(0))
            }
            #[cfg(not(unix))]
            {
                "killed".to_owned()
            }
        }
    };
    Err(format!(
        "command {program:?} failed with {how}; stderr: {}",
        tail.trim_end()
    ))
}

/// Why [`output_until`] gave no output.
enum Killed {
    /// The deadline passed; the process was killed.
    AtDeadline,
    /// It could not be run or waited for.
    Error(String),
}

/// Runs `cmd` to completion like `Command::output`, killing it at `deadline`.
fn output_until(
    cmd: &mut std::process::Command,
    deadline: std::time::Instant,
) -> Result<std::process::Output, Killed> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Killed::Error(format!("cannot start: {e}")))?;
    fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| Killed::Error(e.to_string()))? {
            break status;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            // The command and everything it started.
            crate::guard::stop(&mut child);
            return Err(Killed::AtDeadline);
        }
        std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(10)));
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, params: Option<&str>, inputs: &[Bytes]) -> Result<Vec<u8>, String> {
        let r = Registry::with_builtins();
        let ctx = TaskContext::standalone("k");
        r.get(name).unwrap()(&ctx, params, inputs)
    }

    #[test]
    fn builtins_do_what_they_say() {
        assert_eq!(call("noop", None, &[]).unwrap(), b"");
        assert_eq!(call("bytes", Some(r#"{"n": 3}"#), &[]).unwrap(), b"xxx");
        assert_eq!(
            call("bytes", Some(r#"{"n": 2, "fill": "é"}"#), &[]).unwrap(),
            "éé".as_bytes()
        );
        let ins = [Bytes::from_static(b"ab"), Bytes::from_static(b"c")];
        assert_eq!(call("concat", None, &ins).unwrap(), b"abc");
        assert_eq!(call("len", None, &ins).unwrap(), b"3");
        assert_eq!(call("sleep", Some(r#"{"ms": 1}"#), &[]).unwrap(), b"");
        assert!(call("bytes", Some(r#"{"count": 3}"#), &[])
            .unwrap_err()
            .contains("unknown field"));
        assert!(call("noop", Some(r#"{"x": 1}"#), &[])
            .unwrap_err()
            .contains("takes no params"));
    }

    #[test]
    fn command_returns_stdout_or_fails_with_code_and_stderr() {
        let ok = call(
            "command",
            Some(r#"{"argv": ["sh", "-c", "printf hi-$X"], "env": {"X": "there"}}"#),
            &[],
        );
        assert_eq!(ok.unwrap(), b"hi-there");
        let err = call(
            "command",
            Some(r#"{"argv": ["sh", "-c", "echo boom >&2; exit 3"]}"#),
            &[],
        )
        .unwrap_err();
        assert!(err.contains("exit code 3") && err.contains("boom"), "{err}");
        let err = call("command", Some(r#"{"argv": ["/no/such/program"]}"#), &[]).unwrap_err();
        assert!(err.contains("cannot start"), "{err}");
    }

    #[test]
    fn loaders_make_bytes_that_concat_and_len_read() {
        let r = Registry::with_builtins();
        let dir = std::env::temp_dir().join(format!("drover-loader-{}", std::process::id()));
        std::fs::write(&dir, b"data").unwrap();
        let ctx = TaskContext::standalone("c");
        let params = serde_json::json!({"path": dir.to_str().unwrap()}).to_string();
        let file = r.loader("file").unwrap()(&ctx, Some(&params)).unwrap();
        let cmd =
            r.loader("command").unwrap()(&ctx, Some(r#"{"argv": ["printf", "ab"]}"#)).unwrap();
        let ctx = TaskContext {
            objects: vec![Some(file), None, Some(cmd)],
            ..TaskContext::standalone("t")
        };
        let inputs = [Bytes::new(), Bytes::from_static(b"-"), Bytes::new()];
        assert_eq!(
            r.get("concat").unwrap()(&ctx, None, &inputs).unwrap(),
            b"data-ab"
        );
        assert_eq!(r.get("len").unwrap()(&ctx, None, &inputs).unwrap(), b"7");
        let err = r.loader("file").unwrap()(&ctx, Some(r#"{"path": "/no/such"}"#)).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn command_is_killed_at_its_deadline() {
        let r = Registry::with_builtins();
        let ctx = TaskContext {
            deadline: Some(std::time::Instant::now() + std::time::Duration::from_millis(100)),
            timeout: Some(std::time::Duration::from_millis(100)),
            ..TaskContext::standalone("k")
        };
        let started = std::time::Instant::now();
        let err =
            r.get("command").unwrap()(&ctx, Some(r#"{"argv": ["sleep", "30"]}"#), &[]).unwrap_err();
        assert_eq!(err, "task timed out after 0.1 s; process killed");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        let ctx = TaskContext {
            deadline: Some(std::time::Instant::now() + std::time::Duration::from_secs(60)),
            ..ctx
        };
        let ok =
            r.get("command").unwrap()(&ctx, Some(r#"{"argv": ["echo", "in time"]}"#), &[]).unwrap();
        assert_eq!(ok, b"in time\n");
    }
}
