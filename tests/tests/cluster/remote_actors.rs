//! Remote actors on a real cluster: a role actor spawned on a peer under its supervisor,
//! typed calls with deadlines, and monitors that report a stop, a failure and a node's death.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::mesh::Mesh;
use flotilla_actors::remote::{self, spawn_remote, Endpoint, RemoteActor, Role};
use flotilla_protocol::NodeId;
use flotilla_tests::{wait_until, TestCluster};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

/// The actors node `i` hosts besides its own endpoints (the checkpoint store).
fn spawned(cluster: &TestCluster, i: usize) -> Vec<String> {
    cluster
        .node(i)
        .host
        .actors()
        .into_iter()
        .filter(|a| a != flotilla_node::train::checkpoints::CHECKPOINT_STORE)
        .collect()
}

const DEADLINE: Duration = Duration::from_secs(60);

/// What a counter is asked over the mesh.
#[derive(Debug, Serialize, Deserialize)]
enum Ask {
    Add(i64),
    /// Makes the actor fail, as a bug would.
    Crash,
}

/// A real ractor actor: a running total.
struct Counter;

enum CounterMsg {
    Add(i64, RpcReplyPort<i64>),
    Crash,
}

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = i64;
    type Arguments = i64;

    async fn pre_start(
        &self,
        _: ActorRef<CounterMsg>,
        start: i64,
    ) -> Result<i64, ActorProcessingErr> {
        Ok(start)
    }

    async fn handle(
        &self,
        _: ActorRef<CounterMsg>,
        msg: CounterMsg,
        total: &mut i64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Add(n, reply) => {
                *total += n;
                let _ = reply.send(*total);
                Ok(())
            }
            CounterMsg::Crash => Err("asked to crash".into()),
        }
    }
}

struct CounterEndpoint(ActorRef<CounterMsg>);

#[async_trait::async_trait]
impl Endpoint for CounterEndpoint {
    async fn call(&self, _from: &NodeId, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        match remote::decode::<Ask>(&payload)? {
            Ask::Add(n) => {
                let total = ractor::call_t!(self.0, CounterMsg::Add, 5_000, n)
                    .map_err(|e| e.to_string())?;
                remote::encode(&total)
            }
            Ask::Crash => {
                self.0.cast(CounterMsg::Crash).map_err(|e| e.to_string())?;
                remote::encode(&0i64)
            }
        }
    }
}

struct CounterRole;

#[async_trait::async_trait]
impl Role for CounterRole {
    async fn spawn(
        &self,
        _name: &str,
        args: &[u8],
        supervisor: ActorCell,
    ) -> Result<(ActorCell, Arc<dyn Endpoint>), String> {
        let start: i64 = remote::decode(args)?;
        let (actor, _) = Actor::spawn_linked(None, Counter, start, supervisor)
            .await
            .map_err(|e| e.to_string())?;
        Ok((actor.get_cell(), Arc::new(CounterEndpoint(actor))))
    }
}

async fn next_down(rx: &mut tokio::sync::mpsc::Receiver<remote::Down>) -> remote::Down {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a down notice within 30 s")
        .expect("monitor channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawn_call_and_monitor_actors_on_peers() {
    let mut cluster = TestCluster::start(3).await.unwrap();
    wait_until(DEADLINE, "convergence", || cluster.converged())
        .await
        .unwrap();
    for i in 0..3 {
        cluster
            .node(i)
            .host
            .add_role("counter", Arc::new(CounterRole));
    }
    let mesh: Arc<dyn Mesh> = Arc::new(cluster.node(0).mesh.clone());
    let (n1, n2) = (cluster.node(1).node_id(), cluster.node(2).node_id());
    let deadline = Duration::from_secs(5);

    // Spawned on node 1 under its supervisor, reached by name with typed messages.
    let c1: RemoteActor<Ask, i64> =
        spawn_remote(mesh.clone(), n1.clone(), "counter", "c1", &10i64, deadline)
            .await
            .unwrap();
    assert_eq!(c1.call(&Ask::Add(2)).await.unwrap(), 12);
    assert_eq!(c1.call(&Ask::Add(-5)).await.unwrap(), 7);
    assert_eq!(spawned(&cluster, 1), vec!["c1".to_string()]);

    // Clear errors: a name taken, an unknown role, an unknown actor.
    let again =
        spawn_remote::<i64, Ask, i64>(mesh.clone(), n1.clone(), "counter", "c1", &0, deadline)
            .await;
    assert!(again.unwrap_err().to_string().contains("already runs"));
    let unknown =
        spawn_remote::<i64, Ask, i64>(mesh.clone(), n1.clone(), "no-such-role", "t", &0, deadline)
            .await;
    let e = unknown.unwrap_err().to_string();
    assert!(
        e.contains("no role \"no-such-role\"")
            && e.contains("counter")
            && e.contains("param_server"),
        "{e}"
    );
    let ghost: RemoteActor<Ask, i64> =
        RemoteActor::new(mesh.clone(), n1.clone(), "ghost", deadline);
    assert!(ghost
        .call(&Ask::Add(1))
        .await
        .unwrap_err()
        .to_string()
        .contains("no actor"));

    // Only the node that spawned an actor stops it: node 2 is refused and c1 runs on.
    let mesh2: Arc<dyn Mesh> = Arc::new(cluster.node(2).mesh.clone());
    let stranger: RemoteActor<Ask, i64> =
        RemoteActor::new(mesh2.clone(), n1.clone(), "c1", deadline);
    let e = stranger.stop().await.unwrap_err().to_string();
    assert!(e.contains("may not stop") && e.contains("c1"), "{e}");
    assert_eq!(c1.call(&Ask::Add(0)).await.unwrap(), 7, "c1 still runs");
    // The node's own endpoints are not stoppable by peers at all.
    let store: RemoteActor<Ask, i64> = RemoteActor::new(
        mesh2.clone(),
        n1.clone(),
        flotilla_node::train::checkpoints::CHECKPOINT_STORE,
        deadline,
    );
    assert!(store.stop().await.is_err());
    // A peer cannot fill a node with actors: spawns are limited per peer.
    for i in 0..remote::MAX_SPAWNS_PER_PEER {
        spawn_remote::<i64, Ask, i64>(
            mesh2.clone(),
            n1.clone(),
            "counter",
            &format!("s{i}"),
            &0,
            deadline,
        )
        .await
        .unwrap();
    }
    let over = spawn_remote::<i64, Ask, i64>(
        mesh2.clone(),
        n1.clone(),
        "counter",
        "one-more",
        &0,
        deadline,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(over.contains("at most"), "{over}");
    for i in 0..remote::MAX_SPAWNS_PER_PEER {
        RemoteActor::<Ask, i64>::new(mesh2.clone(), n1.clone(), &format!("s{i}"), deadline)
            .stop()
            .await
            .unwrap();
    }
    wait_until(DEADLINE, "node 2's actors to be gone", || async {
        spawned(&cluster, 1) == vec!["c1".to_string()]
    })
    .await
    .unwrap();

    // A monitor hears a requested stop.
    let host0 = cluster.node(0).host.clone();
    let membership0 = cluster.node(0).membership.clone();
    let mut down = host0.monitor(&membership0, &n1, "c1").await.unwrap();
    c1.stop().await.unwrap();
    let d = next_down(&mut down).await;
    assert_eq!((d.node.clone(), d.actor.as_str()), (n1.clone(), "c1"));
    assert!(d.reason.contains("stopped at the request of"), "{d:?}");
    wait_until(DEADLINE, "c1 to be gone", || async {
        spawned(&cluster, 1).is_empty()
    })
    .await
    .unwrap();

    // ... and a failure, without taking the node's other actors down.
    let c2: RemoteActor<Ask, i64> =
        spawn_remote(mesh.clone(), n2.clone(), "counter", "c2", &0i64, deadline)
            .await
            .unwrap();
    let c3: RemoteActor<Ask, i64> =
        spawn_remote(mesh.clone(), n2.clone(), "counter", "c3", &100i64, deadline)
            .await
            .unwrap();
    let mut down2 = host0.monitor(&membership0, &n2, "c2").await.unwrap();
    c2.call(&Ask::Crash).await.unwrap();
    let d = next_down(&mut down2).await;
    assert!(
        d.reason.contains("failed") && d.reason.contains("asked to crash"),
        "{d:?}"
    );
    assert_eq!(
        c3.call(&Ask::Add(1)).await.unwrap(),
        101,
        "a sibling keeps running"
    );

    // ... and the death of the actor's node.
    let mut down3 = host0.monitor(&membership0, &n2, "c3").await.unwrap();
    cluster.kill(2).await;
    let d = next_down(&mut down3).await;
    assert!(d.reason.contains("dead"), "{d:?}");
    // A call to the dead node fails within its deadline.
    let started = std::time::Instant::now();
    assert!(c3.call(&Ask::Add(1)).await.is_err());
    assert!(started.elapsed() < deadline + Duration::from_secs(2));
    cluster.shutdown().await.unwrap();
}
