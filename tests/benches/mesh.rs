//! Mesh benchmarks: convergence time, failure-detection latency, and the request-response RPC
//! path next to raw loopback TCP measured in the same run.
//!
//! Run: `cargo bench -p flotilla-tests --bench mesh --profile dev` (add `-- quick` for fewer
//! iterations and no 20-node convergence).

// A benchmark reports on stdout and may panic on a broken setup.
#![allow(
    clippy::print_stdout,
    clippy::print_literal,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::time::{Duration, Instant};

use flotilla_actors::mesh::Mesh;
use flotilla_protocol::services::control;
use flotilla_protocol::MemberState;
use flotilla_tests::{wait_until, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mib_per_s: f64,
    per_s: f64,
}

fn stats(mut samples: Vec<Duration>, bytes_each_way: usize, wall: Duration) -> Stats {
    samples.sort();
    let n = samples.len() as f64;
    Stats {
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        mib_per_s: n * bytes_each_way as f64 * 2.0 / wall.as_secs_f64() / (1 << 20) as f64,
        per_s: n / wall.as_secs_f64(),
    }
}

async fn bench_convergence(n: usize) -> anyhow::Result<()> {
    // Every in-process node shares two cores: a 1 s heartbeat keeps 20 of them from starving
    // each other's event loops, as separate machines would not.
    let beat = Duration::from_secs(1);
    let start = Instant::now();
    let cluster = TestCluster::start_with(
        n,
        Some(Box::new(
            move |_, c: &mut flotilla_node::config::NodeConfig| {
                c.membership.heartbeat_interval = beat;
                c.membership.suspect_after = beat * 4;
                c.membership.dead_after = beat * 10;
            },
        )),
    )
    .await?;
    let started = start.elapsed();
    let after_start = wait_until(Duration::from_secs(120), "convergence", || async {
        if std::env::var_os("FLOTILLA_BENCH_TRACE").is_some() {
            let mut alive = Vec::new();
            for i in cluster.running() {
                let v = cluster.view(i).await.unwrap_or_default();
                alive.push(v.iter().filter(|m| m.state == MemberState::Alive).count());
            }
            eprintln!("alive per view: {alive:?}");
        }
        cluster.converged().await
    })
    .await?;
    println!(
        "convergence  {n:>3} nodes (heartbeat {beat:?}): all started in {started:>9.2?}, every view complete {after_start:>9.2?} after the last start ({:.2?} total)",
        start.elapsed()
    );
    cluster.shutdown().await
}

async fn bench_failure_detection(rounds: usize) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3 + rounds).await?;
    wait_until(Duration::from_secs(60), "convergence", || {
        cluster.converged()
    })
    .await?;
    let cfg = cluster.node(0).config().membership.clone();
    let mut measured = Vec::new();
    for r in 0..rounds {
        let victim_index = 3 + r;
        let victim = cluster.node(victim_index).node_id();
        let killed = Instant::now();
        cluster.kill(victim_index).await;
        wait_until(Duration::from_secs(30), "death", || async {
            for i in 0..3 {
                if cluster.state_seen_by(i, &victim).await != Some(MemberState::Dead) {
                    return false;
                }
            }
            true
        })
        .await?;
        measured.push(killed.elapsed());
    }
    measured.sort();
    println!(
        "failure detection: configured dead_after {:?} (heartbeat {:?}, tick {:?}); measured kill→dead at all survivors: min {:.2?} median {:.2?} max {:.2?} over {rounds} kills",
        cfg.dead_after,
        cfg.heartbeat_interval,
        cfg.tick_interval(),
        measured[0],
        measured[measured.len() / 2],
        measured[measured.len() - 1]
    );
    cluster.shutdown().await
}

/// A raw TCP echo server with the same 8-byte length framing.
async fn raw_echo_server() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            sock.set_nodelay(true).ok();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut len = [0u8; 8];
                    if sock.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    buf.resize(u64::from_be_bytes(len) as usize, 0);
                    if sock.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    if sock.write_all(&len).await.is_err() || sock.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

async fn raw_round_trips(
    addr: std::net::SocketAddr,
    size: usize,
    n: usize,
) -> anyhow::Result<Stats> {
    let mut sock = tokio::net::TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let payload = vec![7u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(n);
    let wall = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        sock.write_all(&(size as u64).to_be_bytes()).await?;
        sock.write_all(&payload).await?;
        let mut len = [0u8; 8];
        sock.read_exact(&mut len).await?;
        sock.read_exact(&mut back).await?;
        samples.push(t.elapsed());
    }
    Ok(stats(samples, size, wall.elapsed()))
}

async fn mesh_round_trips(cluster: &TestCluster, size: usize, n: usize) -> anyhow::Result<Stats> {
    let to = cluster.node(1).node_id();
    let mesh = &cluster.node(0).mesh;
    let payload = vec![7u8; size];
    let mut samples = Vec::with_capacity(n);
    let wall = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let r = mesh
            .control(
                &to,
                control::RequestBody::Echo(payload.clone()),
                Duration::from_secs(30),
            )
            .await?;
        anyhow::ensure!(
            matches!(&r, control::ResponseBody::Echo(b) if b.len() == size),
            "bad echo"
        );
        samples.push(t.elapsed());
    }
    Ok(stats(samples, size, wall.elapsed()))
}

async fn bench_rpc(quick: bool) -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;
    let raw = raw_echo_server().await?;
    println!("rpc round trip, sequential, one connection (flotilla control echo vs raw loopback TCP echo, same framing):");
    println!(
        "  {:<8} {:>12} {:>12} {:>12} {:>12} {:>12}   {}",
        "payload", "p50", "p99", "req/s", "MiB/s", "raw MiB/s", "ratio (raw time / flotilla time)"
    );
    for (size, n) in [
        (1024usize, if quick { 500 } else { 3000 }),
        (4 << 20, if quick { 10 } else { 40 }),
    ] {
        // Warm both paths (connection, allocator, yamux windows) before measuring.
        mesh_round_trips(&cluster, size, 3).await?;
        raw_round_trips(raw, size, 3).await?;
        let m = mesh_round_trips(&cluster, size, n).await?;
        let r = raw_round_trips(raw, size, n).await?;
        let label = if size >= 1 << 20 {
            format!("{} MiB", size >> 20)
        } else {
            format!("{} KiB", size >> 10)
        };
        println!(
            "  {label:<8} {:>12.2?} {:>12.2?} {:>12.0} {:>12.1} {:>12.1}   {:.2}  (raw p50 {:.2?}, p99 {:.2?})",
            m.p50, m.p99, m.per_s, m.mib_per_s, r.mib_per_s, m.mib_per_s / r.mib_per_s, r.p50, r.p99
        );
    }
    cluster.shutdown().await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let quick = args.iter().any(|a| a == "quick");
    // Name benchmarks to run a subset: rpc, convergence, detection.
    let names: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "quick")
        .collect();
    let wanted = |name: &str| names.is_empty() || names.contains(&name);
    flotilla_tests::init_logging();
    if wanted("rpc") {
        bench_rpc(quick).await?;
    }
    if wanted("convergence") {
        bench_convergence(5).await?;
        if !quick {
            bench_convergence(20).await?;
        }
    }
    if wanted("detection") {
        bench_failure_detection(if quick { 2 } else { 5 }).await?;
    }
    Ok(())
}
