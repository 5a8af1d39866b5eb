//! A worker cut off from the network mid-graph: it runs in its own network namespace, joined to
//! this one by a veth pair, and the link is taken down. Needs root and `ip netns`; where the
//! machine does not allow that, the test says so on stderr and skips (never silently).

mod common;

use std::process::Command;

use common::{binary, drover_run, read_report, total_reruns, Cluster, Proc};

/// A network namespace with a veth link to this one; removed (with its processes) on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let id = std::process::id() % 100_000;
        let (name, host_if, ns_if) = (
            format!("drover{id}"),
            format!("dv{id}a"),
            format!("dv{id}b"),
        );
        let octet = id % 250 + 1;
        let (host_ip, ns_ip) = (format!("10.213.{octet}.1"), format!("10.213.{octet}.2"));
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name,
            host_if,
            host_ip,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&[
            "netns",
            "exec",
            &ns.name,
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ])?;
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", &ns_if, "up"])?;
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]).expect("take the link down");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_worker_cut_off_by_the_network_is_replaced_and_nothing_is_lost() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("SKIPPED a_worker_cut_off_by_the_network: cannot make a network namespace here ({e})");
            return;
        }
    };
    let mut c = Cluster::start_logging(
        &[
            "--idle-timeout-secs",
            "2",
            "--listen",
            "0.0.0.0:0",
            "--advertise",
            &ns.host_ip,
        ],
        "info,drover_scheduler::core=debug",
    );
    let access = c.access();
    c.add_worker(&binary("worker"), &[], "inside", "");
    // The other worker runs in the namespace, reachable only over the veth link.
    let worker = binary("worker");
    let mut outside = Proc::start(
        "outside",
        std::path::Path::new("ip"),
        &[
            "netns",
            "exec",
            &ns.name,
            worker.to_str().unwrap(),
            "--access-file",
            &access,
            "--name",
            "outside",
            "--idle-timeout-secs",
            "2",
        ],
    );
    outside.wait_for("worker connected");
    let joined = c.scheduler.wait_for("name=outside");
    let id: String = joined[joined.find("worker=").expect("worker id") + 7..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    let mut tasks = Vec::new();
    let mut all = Vec::new();
    for i in 0..6 {
        tasks.push(format!(
            r#"{{"key": "d{i}", "function": "bytes", "params": {{"n": 100, "fill": "{i}"}}}}"#
        ));
        tasks.push(format!(
            r#"{{"key": "s{i}", "function": "sleep", "inputs": ["d{i}"], "params": {{"ms": 300}}}}"#
        ));
        all.push(format!("\"d{i}\", \"s{i}\""));
    }
    tasks.push(format!(
        r#"{{"key": "n", "function": "len", "inputs": [{}]}}"#,
        all.join(", ")
    ));
    std::fs::write(&g, format!("{{\"tasks\": [{}]}}", tasks.join(","))).unwrap();
    let report = dir.path().join("r.json");
    let (g, report_s) = (
        g.to_str().unwrap().to_owned(),
        report.to_str().unwrap().to_owned(),
    );
    let access2 = access.clone();
    let run = std::thread::spawn(move || drover_run(&g, &access2, Some(&report_s)));
    // Cut the link once the scheduler holds a result of the worker outside.
    c.scheduler
        .wait_for_all(&["task finished", &format!("worker={id}")]);
    ns.cut();
    let (code, lines) = run.join().unwrap();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: n: 600"),
        "{}",
        lines.join("\n")
    );
    c.scheduler.wait_for("worker left");
    let r = read_report(&report);
    let tasks = r["tasks"].as_array().unwrap();
    assert!(tasks.iter().all(|t| t["status"] == "finished"), "{r}");
    let reruns = total_reruns(&r);
    assert!(
        reruns >= 1,
        "what the cut-off worker held had to be recomputed: {r}"
    );
}
