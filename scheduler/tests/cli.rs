//! The `scheduler` binary's command line.

use std::process::Command;

fn scheduler(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .args(args)
        .output()
        .expect("run scheduler")
}

#[test]
fn help_documents_every_flag() {
    let o = scheduler(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--listen",
        "--state-dir",
        "--advertise",
        "--max-worker-deaths",
        "--idle-timeout-secs",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn an_unusable_state_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let o = scheduler(&[
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        file.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("state dir") && err.contains("not-a-dir"),
        "{err}"
    );
}

#[test]
fn missing_state_dir_is_bad_usage() {
    let o = scheduler(&["--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2));
}
