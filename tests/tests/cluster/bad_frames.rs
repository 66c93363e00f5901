//! Garbage and oversized frames on the control protocol are rejected, the offending connection
//! is closed, and the node keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flotilla_actors::mesh::Mesh;
use flotilla_protocol::codec;
use flotilla_protocol::services::control;
use flotilla_protocol::RequestId;
use flotilla_tests::raw_peer::RawOutcome;
use flotilla_tests::{wait_until, TestCluster};
use libp2p::PeerId;

async fn rejected_frames(url: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("flotilla_net_rejected_frames_total{service=\"control\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_are_rejected_while_the_node_keeps_serving(
) -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;
    let target = cluster.node(0);
    let target_peer: PeerId = target.peer_id;
    let addr = target.listen_addrs()[0].clone();

    let valid_body = control::encode_request(&control::Request {
        id: RequestId(1),
        body: control::RequestBody::Ping,
    })?;
    let mut with_trailing = (valid_body.len() as u64 + 3).to_be_bytes().to_vec();
    with_trailing.extend_from_slice(&valid_body);
    with_trailing.extend_from_slice(&[1, 2, 3]);
    let mut near_2_60 = ((1u64 << 60) - 1).to_be_bytes().to_vec();
    near_2_60.extend_from_slice(b"not really that long");
    let mut over_cap = (control::MAX_FRAME_BYTES as u64 + 1).to_be_bytes().to_vec();
    over_cap.extend_from_slice(&[0; 64]);
    let mut garbage_body = 32u64.to_be_bytes().to_vec();
    garbage_body.extend_from_slice(&[0xff; 32]);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length prefix near 2^60", near_2_60),
        ("length prefix one over the cap", over_cap),
        ("garbage body", garbage_body),
        ("valid request with trailing bytes", with_trailing),
    ];
    for (n, (name, bytes)) in cases.into_iter().enumerate() {
        let mut hostile = cluster.raw_member(control::PROTOCOL)?;
        hostile.connect(addr.clone(), target_peer).await?;
        let outcome = hostile.send(target_peer, bytes).await?;
        assert!(
            matches!(outcome, RawOutcome::Failed(_)),
            "{name}: node answered a bad frame: {outcome:?}"
        );
        assert!(
            !hostile
                .is_connected_after(target_peer, Duration::from_millis(500))
                .await,
            "{name}: connection left open"
        );
        let url = target.api_url();
        wait_until(
            Duration::from_secs(5),
            "the rejection to be counted",
            || {
                let url = url.clone();
                async move { rejected_frames(&url).await.unwrap_or(0) > n as u64 }
            },
        )
        .await?;
    }

    // A well-formed frame from the same kind of client is answered: the codec is not just
    // refusing everything.
    let mut polite = cluster.raw_member(control::PROTOCOL)?;
    polite.connect(addr.clone(), target_peer).await?;
    let frame = codec::encode_frame::<_, { control::MAX_FRAME_BYTES }>(
        "control",
        &control::Request {
            id: RequestId(7),
            body: control::RequestBody::Ping,
        },
    )?;
    match polite.send(target_peer, frame).await? {
        RawOutcome::Response(bytes) => {
            let resp: control::Response =
                codec::decode_frame::<_, { control::MAX_FRAME_BYTES }>("control", &bytes)?;
            assert_eq!(
                resp,
                control::Response {
                    id: RequestId(7),
                    body: Ok(control::ResponseBody::Pong)
                }
            );
        }
        other => panic!("valid ping failed: {other:?}"),
    }

    // The node still serves its API and its peers.
    let health = reqwest::get(format!("{}/health/ready", target.api_url())).await?;
    assert!(health.status().is_success());
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
    assert!(cluster.converged().await);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_requests_round_trip_between_nodes() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;
    let to = cluster.node(1).node_id();
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let echo = cluster
        .node(0)
        .mesh
        .control(
            &to,
            control::RequestBody::Echo(payload.clone()),
            Duration::from_secs(10),
        )
        .await?;
    assert_eq!(echo, control::ResponseBody::Echo(payload));
    match cluster
        .node(0)
        .mesh
        .control(
            &to,
            control::RequestBody::GetNodeInfo,
            Duration::from_secs(5),
        )
        .await?
    {
        control::ResponseBody::NodeInfo(info) => assert_eq!(info.id, to),
        other => panic!("unexpected {other:?}"),
    }
    // Over the cap: refused locally before anything is sent.
    let too_big = vec![0u8; control::MAX_FRAME_BYTES + 1];
    assert!(cluster
        .node(0)
        .mesh
        .control(
            &to,
            control::RequestBody::Echo(too_big),
            Duration::from_secs(5)
        )
        .await
        .is_err());
    // The connection survives our own refusal.
    assert_eq!(
        cluster
            .node(0)
            .mesh
            .control(&to, control::RequestBody::Ping, Duration::from_secs(5))
            .await?,
        control::ResponseBody::Pong
    );
    cluster.shutdown().await
}
