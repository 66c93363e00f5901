//! mDNS discovery between two hosts: two network namespaces joined by a veth pair, one daemon in
//! each, no `--join`: they must find each other through multicast DNS alone.
//!
//! Needs root (to create namespaces), so it is ignored by default and the test report says why;
//! `.ci/run` runs it as root (`cargo test --workspace --test node -- --ignored mdns`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Namespaces {
    names: [String; 2],
    children: Vec<Child>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
#[ignore = "needs root (creates network namespaces); as root: cargo test --workspace --test node -- --ignored mdns"]
fn two_hosts_find_each_other_by_mdns_alone() {
    assert!(
        is_root(),
        "this test creates network namespaces and needs root; run it as root"
    );
    let tag = std::process::id() % 100_000;
    let ns = Namespaces {
        names: [format!("fl{tag}a"), format!("fl{tag}b")],
        children: vec![],
    };
    let mut ns = ns;
    let (a, b) = (ns.names[0].clone(), ns.names[1].clone());
    let (va, vb) = (format!("v{tag}a"), format!("v{tag}b"));
    // The subnet is private to these two namespaces; nothing outside them is addressed.
    let subnet = 100 + (tag % 100);
    sh(&["ip", "netns", "add", &a]);
    sh(&["ip", "netns", "add", &b]);
    sh(&[
        "ip", "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
    ]);
    for (n, v, host) in [(&a, &va, 1), (&b, &vb, 2)] {
        sh(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            &format!("10.213.{subnet}.{host}/24"),
            "dev",
            v,
        ]);
        sh(&["ip", "-n", n, "link", "set", v, "up", "multicast", "on"]);
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }

    let dir = tempfile::tempdir().unwrap();
    // Both hosts belong to one cluster: mDNS finds the address, the key lets them in.
    let token = flotilla_node::admission::random_cluster_token();
    for n in [&a, &b] {
        let child = Command::new("ip")
            .args(["netns", "exec", n, env!("CARGO_BIN_EXE_flotilla"), "up"])
            .args(["--data-dir", dir.path().join(n).to_str().unwrap()])
            .args([
                "--listen",
                "/ip4/0.0.0.0/tcp/7070",
                "--api-listen",
                "127.0.0.1:7080",
            ])
            .args([
                "--mdns",
                "true",
                "--mdns-query-interval",
                "1s",
                "--heartbeat-interval",
                "250ms",
            ])
            .args(["--suspect-after", "2s", "--dead-after", "4s"])
            .args(["--cluster-token", &token])
            .env("FLOTILLA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ns.children.push(child);
    }

    let deadline = Instant::now() + Duration::from_secs(40);
    let alive_seen_from = |n: &str| -> usize {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                n,
                env!("CARGO_BIN_EXE_flotilla"),
                "nodes",
                "--output",
                "json",
                "--peer",
                "http://127.0.0.1:7080",
            ])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v["members"]
                    .as_array()
                    .map(|m| m.iter().filter(|x| x["state"] == "Alive").count())
            })
            .unwrap_or(0)
    };
    loop {
        if alive_seen_from(&a) == 2 && alive_seen_from(&b) == 2 {
            println!(
                "discovered each other by mDNS after {:?}",
                Instant::now() - (deadline - Duration::from_secs(40))
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two hosts did not discover each other by mDNS within 40 s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
