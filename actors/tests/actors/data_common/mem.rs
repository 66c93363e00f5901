//! In-memory nodes for the data tests: `DataShard` actors over a `CrashStore` each, and
//! `DataPeers` that route each call through the wire codec to the target node's
//! `service::serve`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actors::data::error::{Error, Result};
use flotilla_actors::data::peers::DataPeers;
use flotilla_actors::data::service;
use flotilla_actors::data::shard::{self, Handle};
use flotilla_actors::testing::CrashStore;
use flotilla_protocol::services::data::{self as wire, RequestBody, ResponseBody};
use flotilla_protocol::{NodeId, RequestId};

/// Every call's deadline in these tests.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One simulated node: its store and its shard actor.
pub struct Node {
    pub id: NodeId,
    pub store: Arc<CrashStore>,
    pub shards: Handle,
}

/// N nodes and the calls between them.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    dead: Mutex<BTreeSet<NodeId>>,
    /// Requests by kind, to check what travelled.
    pub calls: Mutex<BTreeMap<String, u64>>,
}

pub fn node_id(i: usize) -> NodeId {
    NodeId(format!("12D3KooWTestNode{i:02}"))
}

impl Cluster {
    /// `n` nodes with the default shard config except `chunk_bytes`.
    pub async fn start(n: usize, chunk_bytes: usize) -> Arc<Cluster> {
        let mut nodes = BTreeMap::new();
        for i in 0..n {
            let store = Arc::new(CrashStore::new());
            let config = shard::Config {
                chunk_bytes,
                ..shard::Config::default()
            };
            let (shards, _) = Handle::spawn(store.clone(), config).await.unwrap();
            let id = node_id(i);
            nodes.insert(id.clone(), Node { id, store, shards });
        }
        Arc::new(Cluster {
            nodes,
            dead: Mutex::new(BTreeSet::new()),
            calls: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().cloned().collect()
    }

    pub fn alive(&self) -> Vec<NodeId> {
        let dead = self.dead.lock().unwrap();
        self.nodes
            .keys()
            .filter(|n| !dead.contains(n))
            .cloned()
            .collect()
    }

    /// The node stops answering (its store is kept, as a crashed machine's disk would be).
    pub fn kill(&self, n: &NodeId) {
        self.dead.lock().unwrap().insert(n.clone());
    }

    pub fn node(&self, n: &NodeId) -> &Node {
        &self.nodes[n]
    }

    /// Which nodes hold which shards of `dataset@version`.
    pub async fn holders(&self, dataset: &str, version: u64) -> BTreeMap<u32, Vec<NodeId>> {
        let mut out: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
        for (id, n) in &self.nodes {
            for m in n.shards.list(Some(dataset.to_string())).await.unwrap() {
                if m.id.version == version {
                    out.entry(m.id.index).or_default().push(id.clone());
                }
            }
        }
        out
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.calls.lock().unwrap().get(kind).copied().unwrap_or(0)
    }
}

fn kind(b: &RequestBody) -> &'static str {
    match b {
        RequestBody::PutChunk { .. } => "PutChunk",
        RequestBody::GetChunk { .. } => "GetChunk",
        RequestBody::ReadRange { .. } => "ReadRange",
        RequestBody::List { .. } => "List",
        RequestBody::DeleteShard { .. } => "DeleteShard",
        RequestBody::DeleteVersion { .. } => "DeleteVersion",
        RequestBody::CopyFrom { .. } => "CopyFrom",
        RequestBody::Summarize { .. } => "Summarize",
        RequestBody::Apply { .. } => "Apply",
    }
}

#[async_trait::async_trait]
impl DataPeers for Cluster {
    async fn call(
        &self,
        peer: &NodeId,
        body: RequestBody,
        deadline: Duration,
    ) -> Result<ResponseBody> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(kind(&body).to_string())
            .or_default() += 1;
        let unreachable = || Error::Peer {
            peer: peer.to_string(),
            reason: "unreachable".into(),
        };
        if self.dead.lock().unwrap().contains(peer) {
            return Err(unreachable());
        }
        let node = self.nodes.get(peer).ok_or_else(unreachable)?;
        // Through the codec both ways, as on the wire.
        let req = wire::Request {
            id: RequestId(1),
            body,
        };
        let bytes = wire::encode_request(&req).map_err(|e| Error::Corrupt(e.to_string()))?;
        let req = wire::decode_request(&bytes).map_err(|e| Error::Corrupt(e.to_string()))?;
        let answer = tokio::time::timeout(
            deadline,
            service::serve(&node.shards, self, req.body, deadline),
        )
        .await
        .map_err(|_| Error::Peer {
            peer: peer.to_string(),
            reason: format!("no answer within {deadline:?}"),
        })?;
        let resp = wire::Response {
            id: req.id,
            body: answer,
        };
        let bytes = wire::encode_response(&resp).map_err(|e| Error::Corrupt(e.to_string()))?;
        let resp = wire::decode_response(&bytes).map_err(|e| Error::Corrupt(e.to_string()))?;
        resp.body.map_err(|error| Error::Remote {
            peer: peer.to_string(),
            error,
        })
    }
}
