//! A stream flood and a connection flood from members: the node holds no more inbound frame
//! bytes than its budget, and another peer is still served meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flotilla_actors::mesh::Mesh;
use flotilla_node::config::largest_frame_bytes;
use flotilla_protocol::services::{control, jobs};
use flotilla_tests::stall_peer::Stall;
use flotilla_tests::{rss_kib, wait_until, TestCluster};

/// The target node's budget for frames over 64 KiB, all connections together.
const NODE_BUDGET: usize = 128 << 20;
/// What yamux lets every open stream hold before anyone reads it: outside the budget.
const YAMUX_WINDOW: usize = 256 << 10;
const FLOOD_STREAMS: usize = 256;
const CROWD: usize = 8;
const CROWD_STREAMS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_connection_floods_stay_within_the_byte_budget() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(
        2,
        Some(Box::new(|i, c| {
            if i == 0 {
                c.connection_budget_bytes = largest_frame_bytes();
                c.inbound_budget_bytes = NODE_BUDGET;
            }
        })),
    )
    .await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;
    let target = cluster.node(0);
    let (peer, addr) = (target.peer_id, target.listen_addrs()[0].clone());
    let before_kib = rss_kib();

    // Every stream announces a full jobs frame and sends all of it but the last byte.
    let cap = jobs::MAX_FRAME_BYTES as u64;
    let stall = Stall {
        announced: cap,
        send: cap - 1,
        hold: Duration::from_secs(40),
    };
    let mut floods = Vec::new();
    let mut written = Vec::new();
    let mut one = cluster.stall_member(jobs::PROTOCOL)?;
    one.connect(addr.clone(), peer).await?;
    written.push(one.written());
    floods.push(one.flood(peer, FLOOD_STREAMS, stall));
    for _ in 0..CROWD {
        let mut m = cluster.stall_member(jobs::PROTOCOL)?;
        m.connect(addr.clone(), peer).await?;
        written.push(m.written());
        floods.push(m.flood(peer, CROWD_STREAMS, stall));
    }
    let sent = || {
        written
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    // The flood offers more than the budget: the node must be refusing to read some of it.
    wait_until(
        Duration::from_secs(30),
        "the flood to exceed the budget",
        || {
            let s = sent();
            async move { s > NODE_BUDGET as u64 }
        },
    )
    .await?;

    // Meanwhile another peer is served, and the node's memory is watched for a while.
    let started = Instant::now();
    let mut peak_kib = rss_kib();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let pong = cluster
            .node(1)
            .mesh
            .control(
                &target.node_id(),
                control::RequestBody::Ping,
                Duration::from_secs(5),
            )
            .await?;
        assert_eq!(pong, control::ResponseBody::Pong);
        pings += 1;
        peak_kib = peak_kib.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let streams = FLOOD_STREAMS + CROWD * CROWD_STREAMS;
    let offered = streams as u64 * (cap - 1);
    let bound = (NODE_BUDGET + streams * YAMUX_WINDOW) as u64;
    let grown = (peak_kib.saturating_sub(before_kib)) * 1024;
    eprintln!(
        "flood offered {} MiB on {streams} streams, {} MiB taken by the transport; RSS grew {} MiB (bound {} MiB); {pings} pings answered",
        offered >> 20,
        sent() >> 20,
        grown >> 20,
        bound >> 20
    );
    // What the transport took off the wire is what the node read plus the unread windows: the
    // budget, not the flood, bounds it.
    assert!(
        sent() < bound,
        "the transport took {} MiB, over the budget plus windows ({} MiB)",
        sent() >> 20,
        bound >> 20
    );
    // And the node allocates only what it reads (never the announced length up front).
    assert!(
        grown < bound,
        "RSS grew {} MiB, over the budget plus transport windows ({} MiB)",
        grown >> 20,
        bound >> 20
    );
    for f in floods {
        f.abort();
    }
    cluster.shutdown().await
}
