//! Admission: peers without the cluster key (a default node makes one, `--cluster-token` joins
//! one, `--swarm-key` names one) or outside the allow-list never join; an open node admits any.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use flotilla_node::config::NodeConfig;
use flotilla_protocol::MemberState;
use flotilla_tests::raw_peer::RawPeer;
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

/// Whether a bare TCP + Noise + yamux peer, holding no cluster key, gets a connection to `node`
/// that stays up.
async fn raw_peer_gets_in(node: &flotilla_node::RunningNode) -> anyhow::Result<bool> {
    let mut peer = RawPeer::new(flotilla_protocol::services::control::PROTOCOL)?;
    let addr = node.listen_addrs()[0].clone();
    if let Err(e) = peer.connect(addr, node.peer_id).await {
        tracing::info!(error = %e, "raw peer refused");
        return Ok(false);
    }
    Ok(peer
        .is_connected_after(node.peer_id, Duration::from_secs(1))
        .await)
}

/// The harness's nodes share a key file; these clear it so a node is configured as
/// `flotilla up` is by default (a new cluster whose key is made in its data dir).
fn as_by_default(c: &mut NodeConfig) {
    c.swarm_key = None;
    c.cluster_token = None;
    c.open = false;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_cluster_key_cannot_connect_to_a_default_node() -> anyhow::Result<()> {
    let cluster =
        TestCluster::start_with(1, Some(Box::new(|_, c: &mut NodeConfig| as_by_default(c))))
            .await?;
    let node = cluster.node(0);
    assert!(
        node.config().data_dir.join("swarm.key").exists(),
        "a default node makes its cluster key"
    );
    assert!(
        !raw_peer_gets_in(node).await?,
        "a peer without the key got a connection"
    );
    assert!(node.connected_peers().await.is_empty());
    cluster.shutdown().await?;

    // The same peer against an open node: it gets in, so the refusal above is the key's doing.
    let open = TestCluster::start_with(
        1,
        Some(Box::new(|_, c: &mut NodeConfig| {
            as_by_default(c);
            c.open = true;
        })),
    )
    .await?;
    assert!(!open.node(0).config().data_dir.join("swarm.key").exists());
    assert!(
        raw_peer_gets_in(open.node(0)).await?,
        "an open node refused a plain peer"
    );
    open.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_given_the_cluster_token_joins_and_one_without_it_does_not() -> anyhow::Result<()> {
    // Node 0 creates a cluster the way `flotilla up` does on a fresh data dir.
    let mut cluster = TestCluster::start_with(
        1,
        Some(Box::new(|i, c: &mut NodeConfig| {
            if i == 0 {
                as_by_default(c)
            }
        })),
    )
    .await?;
    let key_file = cluster.data_dir(0).join("swarm.key");
    let token = flotilla_node::admission::cluster_token_of(&key_file)?;
    assert_eq!(token.len(), 64);

    let joined = cluster
        .add_node_with(|c| {
            as_by_default(c);
            c.cluster_token = Some(token.clone());
        })
        .await?;
    wait_until(
        Duration::from_secs(30),
        "the node with the token to join",
        || cluster.converged(),
    )
    .await?;
    assert_eq!(
        std::fs::read_to_string(cluster.data_dir(joined).join("swarm.key"))?,
        std::fs::read_to_string(&key_file)?,
        "the token is saved as the joining node's key"
    );

    // A node started by default on its own data dir makes a cluster of its own.
    let stranger = cluster.add_node_with(as_by_default).await?;
    let stranger_id = cluster.node(stranger).node_id();
    tokio::time::sleep(cluster.node(0).config().membership.dead_after * 2).await;
    for i in [0, joined] {
        assert_eq!(
            cluster.state_seen_by(i, &stranger_id).await,
            None,
            "node {i} sees a node of another cluster"
        );
    }
    assert_eq!(cluster.view(stranger).await?.len(), 1);
    cluster.shutdown().await
}
