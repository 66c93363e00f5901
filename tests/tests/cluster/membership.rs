//! Membership acceptance tests on real in-process clusters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flotilla_protocol::MemberState;
use flotilla_tests::{wait_until, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_given_one_bootstrap_address_converge() -> anyhow::Result<()> {
    let cluster = TestCluster::start(5).await?;
    let took = wait_until(
        Duration::from_secs(30),
        "5 nodes to see each other alive",
        || cluster.converged(),
    )
    .await?;
    eprintln!("5-node convergence: {took:?}");
    for i in 0..5 {
        let view = cluster.view(i).await?;
        assert_eq!(view.len(), 5, "node {i} view: {view:?}");
        assert!(view.iter().all(|m| m.state == MemberState::Alive));
        assert_eq!(view.iter().filter(|m| m.is_self).count(), 1);
        // Heartbeats carry the machine's facts.
        assert!(view
            .iter()
            .all(|m| m.info.cores >= 1 && m.info.ram_bytes > 0 && m.info.compute_score > 0.0));
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_death_is_detected_within_the_bound_and_graceful_stop_is_left() -> anyhow::Result<()>
{
    let mut cluster = TestCluster::start(4).await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;
    let dead_after = cluster.node(0).config().membership.dead_after;
    let tick = cluster.node(0).config().membership.tick_interval();
    let heartbeat = cluster.node(0).config().membership.heartbeat_interval;

    let victim = cluster.node(3).node_id();
    cluster.kill(3).await;
    // The bound: no heartbeat for dead_after (the last one may have been sent up to one heartbeat
    // interval before the kill), plus one detector tick, plus slack for a loaded machine.
    let bound = dead_after + heartbeat + tick + Duration::from_secs(2);
    let took = wait_until(
        bound,
        "all survivors to declare the killed node dead",
        || async {
            for i in 0..3 {
                if cluster.state_seen_by(i, &victim).await != Some(MemberState::Dead) {
                    return false;
                }
            }
            true
        },
    )
    .await?;
    eprintln!("failure detection: configured dead_after {dead_after:?}, measured {took:?}");
    assert!(
        took >= dead_after - heartbeat,
        "declared dead before dead_after: {took:?}"
    );

    let leaver = cluster.node(2).node_id();
    cluster.stop(2).await?;
    wait_until(
        Duration::from_secs(5),
        "survivors to mark the stopped node left",
        || async {
            cluster.state_seen_by(0, &leaver).await == Some(MemberState::Left)
                && cluster.state_seen_by(1, &leaver).await == Some(MemberState::Left)
        },
    )
    .await?;
    // It stays left, not dead, well past the death timeout.
    tokio::time::sleep(dead_after + Duration::from_millis(500)).await;
    assert_eq!(
        cluster.state_seen_by(0, &leaver).await,
        Some(MemberState::Left)
    );

    // The transitions are counted in the node's metrics.
    let metrics = reqwest::get(format!("{}/metrics", cluster.node(0).api_url()))
        .await?
        .text()
        .await?;
    let count = |state: &str| {
        let prefix = format!("flotilla_membership_transitions_total{{state=\"{state}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count("dead") >= 1.0 && count("left") >= 1.0 && count("alive") >= 3.0,
        "{metrics}"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_the_same_data_dir_keeps_the_id_and_rejoins() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;
    let id = cluster.node(1).node_id();
    cluster.kill(1).await;
    wait_until(
        Duration::from_secs(10),
        "node 1 to be declared dead",
        || async { cluster.state_seen_by(0, &id).await == Some(MemberState::Dead) },
    )
    .await?;
    cluster.restart(1).await?;
    assert_eq!(
        cluster.node(1).node_id(),
        id,
        "identity must survive a restart"
    );
    wait_until(
        Duration::from_secs(30),
        "the restarted node to rejoin",
        || cluster.converged(),
    )
    .await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_can_come_back() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(2).await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;
    let id = cluster.node(1).node_id();
    cluster.stop(1).await?;
    wait_until(Duration::from_secs(5), "left", || async {
        cluster.state_seen_by(0, &id).await == Some(MemberState::Left)
    })
    .await?;
    cluster.restart(1).await?;
    wait_until(
        Duration::from_secs(30),
        "the node to be alive again",
        || cluster.converged(),
    )
    .await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_listening_only_on_quic_converge() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(
        3,
        // QUIC cannot carry the cluster key's handshake: a QUIC-only mesh is an open one.
        Some(Box::new(|_, c: &mut flotilla_node::config::NodeConfig| {
            c.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()];
            c.swarm_key = None;
            c.cluster_token = None;
            c.open = true;
        })),
    )
    .await?;
    assert!(cluster
        .node(0)
        .listen_addrs()
        .iter()
        .all(|a| a.to_string().contains("/quic-v1")));
    wait_until(Duration::from_secs(30), "3 QUIC nodes to converge", || {
        cluster.converged()
    })
    .await?;
    cluster.shutdown().await
}
