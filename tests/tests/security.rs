//! Private networks and allow-lists: peers without the key or outside the list never join.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::MemberState;
use flotilla_tests::{wait_until, TestCluster};

fn write_key(dir: &std::path::Path, name: &str, byte: u8) -> std::path::PathBuf {
    let hex: String = std::iter::repeat_n(format!("{byte:02x}"), 32).collect();
    let path = dir.join(name);
    std::fs::write(&path, format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_swarm_key_never_appears() -> anyhow::Result<()> {
    let keys = tempfile::tempdir()?;
    let good = write_key(keys.path(), "good.key", 0x11);
    let bad = write_key(keys.path(), "bad.key", 0x22);
    let good2 = good.clone();
    let mut cluster = TestCluster::start_with(
        2,
        Some(Box::new(
            move |_, c: &mut flotilla_node::config::NodeConfig| c.swarm_key = Some(good2.clone()),
        )),
    )
    .await?;
    wait_until(
        Duration::from_secs(30),
        "the keyed nodes to converge",
        || cluster.converged(),
    )
    .await?;

    let outsider = cluster
        .add_node_with(|c| c.swarm_key = Some(bad.clone()))
        .await?;
    let outsider_id = cluster.node(outsider).node_id();
    // Give it several failure-detection periods to (wrongly) get in.
    let wait = cluster.node(0).config().membership.dead_after * 2;
    tokio::time::sleep(wait).await;
    for i in 0..2 {
        assert_eq!(
            cluster.state_seen_by(i, &outsider_id).await,
            None,
            "node {i} sees the outsider"
        );
        assert_eq!(cluster.view(i).await?.len(), 2);
    }
    assert_eq!(
        cluster.view(outsider).await?.len(),
        1,
        "the outsider must see only itself"
    );
    assert!(cluster.node(outsider).connected_peers().await.is_empty());
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_allow_list_is_refused() -> anyhow::Result<()> {
    // Two nodes allow only each other. Their ids are fixed by pre-made identity keys.
    let dirs = tempfile::tempdir()?;
    let mut ids = Vec::new();
    for i in 0..2 {
        let d = dirs.path().join(format!("allowed-{i}"));
        let key = flotilla_node::identity::load_or_create(&d)?;
        ids.push((d, key.public().to_peer_id().to_string()));
    }
    let ids = Arc::new(ids);
    let ids2 = ids.clone();
    let mut cluster = TestCluster::start_with(
        2,
        Some(Box::new(
            move |i, c: &mut flotilla_node::config::NodeConfig| {
                if i < 2 {
                    c.data_dir = ids2[i].0.clone();
                    c.allow_peers = ids2.iter().map(|(_, id)| id.clone()).collect();
                }
            },
        )),
    )
    .await?;
    wait_until(
        Duration::from_secs(30),
        "the allowed nodes to converge",
        || cluster.converged(),
    )
    .await?;

    let stranger = cluster.add_node().await?;
    let stranger_id = cluster.node(stranger).node_id();
    tokio::time::sleep(cluster.node(0).config().membership.dead_after * 2).await;
    for i in 0..2 {
        assert_eq!(
            cluster.state_seen_by(i, &stranger_id).await,
            None,
            "node {i} admitted a stranger"
        );
    }
    assert_eq!(cluster.view(stranger).await?.len(), 1);
    // The allowed pair is unaffected.
    for i in 0..2 {
        let v = cluster.view(i).await?;
        assert_eq!(
            v.iter().filter(|m| m.state == MemberState::Alive).count(),
            2
        );
    }
    cluster.shutdown().await
}
