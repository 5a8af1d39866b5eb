//! The `worker` binary's command line.

use std::process::Command;

fn worker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(args)
        .output()
        .expect("run worker")
}

#[test]
fn help_documents_every_flag() {
    let o = worker(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--access-file",
        "--resources",
        "--nthreads",
        "--name",
        "--idle-timeout-secs",
        "--reconnect-secs",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn malformed_resources_exit_2_quoting_the_bad_part() {
    for (resources, quoted) in [
        ("pool-A=1,gpu=lots", "\"lots\""),
        ("pool-A", "\"pool-A\""),
        ("gpu=-1", "\"gpu\""),
    ] {
        let o = worker(&["--access-file", "/nonexistent", "--resources", resources]);
        assert_eq!(o.status.code(), Some(2), "{resources}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(quoted), "{resources}: {err}");
    }
}

#[test]
fn a_missing_access_file_exits_2_naming_it() {
    let o = worker(&["--access-file", "/nonexistent/access.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/access.json"));
}
