//! Evicting a member at run time: the cluster key is shared, so a node is removed by its id,
//! through a replicated eviction record every node applies — also nodes that were down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flotilla_protocol::{MemberState, NodeId};
use flotilla_tests::{wait_until, TestCluster};

async fn post_evict(api: &str, id: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{api}/api/v1/nodes/{id}/evict"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Whether node `i` refuses `evicted`: not connected to it, and not seeing it alive.
async fn refuses(cluster: &TestCluster, i: usize, evicted: &NodeId) -> bool {
    let state = cluster.state_seen_by(i, evicted).await;
    let connected = cluster.node(i).connected_peers().await.contains(evicted);
    !connected && matches!(state, None | Some(MemberState::Left))
}

/// How many other members node `i` sees alive.
async fn others_alive(cluster: &TestCluster, i: usize) -> usize {
    cluster
        .view(i)
        .await
        .unwrap()
        .iter()
        .filter(|m| !m.is_self && m.state == MemberState::Alive)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_node_is_refused_by_every_node_also_after_a_restart() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(4).await?;
    wait_until(Duration::from_secs(60), "4 nodes to converge", || {
        cluster.converged()
    })
    .await?;
    let api = cluster.node(0).api_url();
    let evicted = cluster.node(2).node_id();
    let dead_after = cluster.node(0).config().membership.dead_after;

    // Bad requests are refused, naming the problem.
    let (status, body) = post_evict(&api, cluster.node(0).node_id().as_str()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("cannot evict itself"), "{body}");
    let (status, body) = post_evict(&api, "not-a-node-id").await;
    assert_eq!(status, 400, "{body}");
    let stranger = libp2p::PeerId::random().to_string();
    let (status, body) = post_evict(&api, &stranger).await;
    assert_eq!(status, 404, "{body}");

    // Node 3 is down while node 2 is evicted through node 0's API.
    cluster.stop(3).await?;
    let (status, body) = post_evict(&api, evicted.as_str()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["already_evicted"], false, "{body}");
    assert_eq!(body["eviction"]["node"], evicted.as_str(), "{body}");

    // Node 1 hears of it through the catalog; both running nodes drop node 2 ...
    wait_until(
        Duration::from_secs(30),
        "nodes 0 and 1 to drop node 2",
        || async { refuses(&cluster, 0, &evicted).await && refuses(&cluster, 1, &evicted).await },
    )
    .await?;
    // ... and node 2, refused everywhere, sees its peers die.
    wait_until(
        dead_after * 4,
        "the evicted node to lose every peer",
        || async { others_alive(&cluster, 2).await == 0 },
    )
    .await?;
    // Its reconnection attempts (it redials its join address every few seconds) keep failing.
    tokio::time::sleep(dead_after * 2).await;
    for i in [0, 1] {
        assert!(
            refuses(&cluster, i, &evicted).await,
            "node {i} took the evicted node back"
        );
        assert_eq!(
            cluster.state_seen_by(i, &evicted).await,
            Some(MemberState::Left)
        );
    }
    assert_eq!(others_alive(&cluster, 2).await, 0);
    assert_eq!(
        others_alive(&cluster, 0).await,
        1,
        "node 0 still sees node 1"
    );

    // The node that was down comes back, catches up and refuses node 2 as well.
    cluster.restart(3).await?;
    let node3 = cluster.node(3).api_url();
    wait_until(
        Duration::from_secs(30),
        "the restarted node to hold the eviction",
        || async {
            let r = reqwest::get(format!("{node3}/api/v1/evictions")).await;
            let Ok(r) = r else { return false };
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            v["evictions"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x["node"] == evicted.as_str()))
        },
    )
    .await?;
    wait_until(
        Duration::from_secs(30),
        "the restarted node to see nodes 0 and 1 and refuse node 2",
        || async { others_alive(&cluster, 3).await == 2 && refuses(&cluster, 3, &evicted).await },
    )
    .await?;
    tokio::time::sleep(dead_after * 2).await;
    assert!(refuses(&cluster, 3, &evicted).await);
    assert_eq!(others_alive(&cluster, 2).await, 0);

    // Every view lists the eviction; evicting again changes nothing.
    let view: serde_json::Value = reqwest::get(format!("{api}/api/v1/cluster"))
        .await?
        .json()
        .await?;
    assert_eq!(view["evicted"], serde_json::json!([evicted.as_str()]));
    let (status, body) = post_evict(&node3, evicted.as_str()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["already_evicted"], true, "{body}");
    cluster.shutdown().await
}
