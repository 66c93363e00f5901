//! The data stage on the node: what the HTTP API, the job runner and the re-replication task
//! share to reach the data cores (`flotilla_actors::data`).
//!
//! [`DataNode`] holds the local `DataShard` actor, the mesh-backed [`NetData`] peers, the
//! catalog and the membership view. Holders of a version's shards are not in the catalog (they
//! change as nodes die and copies are made), so every reader surveys the live nodes first.
//!
//! - [`upload`]: a file on local disk ingested into shards on a blocking thread.
//! - [`ops`]: dataset operations as jobs (`JobKind::DataOps`): submission and the run.
//! - [`replicate`]: the periodic task that restores the replication factor.
//! - [`reader`]: the training reader over the mesh (seeded order, K readers, resumable cursor).

pub mod ops;
pub mod reader;
pub mod replicate;
pub mod upload;

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_actors::data::peers::DataPeers;
use flotilla_actors::data::record::Record as DataRow;
use flotilla_actors::data::{export, survey, version};
use flotilla_actors::{catalog, membership};
use flotilla_protocol::catalog::{CatalogKey, DatasetRecord, Entry, Record, RecordKind};
use flotilla_protocol::services::data::{RequestBody, ShardId};
use flotilla_protocol::{MemberState, NodeId};
use tracing::warn;

use crate::net::data_net::NetData;

pub use crate::config::data::Settings;

/// What went wrong serving a data request, classed for the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dataset {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The caller's input or parameters are wrong.
    #[error("{0}")]
    Invalid(String),
    /// The cluster could not do it now (a holder or the catalog failed).
    #[error("{0}")]
    Unavailable(String),
}

impl From<flotilla_actors::data::Error> for Error {
    fn from(e: flotilla_actors::data::Error) -> Self {
        use flotilla_actors::data::Error as E;
        use flotilla_protocol::services::control::RemoteErrorKind as K;
        match &e {
            E::VersionNotFound { .. } => Error::NotFound(e.to_string()),
            E::NotUtf8 { .. }
            | E::MissingField { .. }
            | E::Malformed { .. }
            | E::InvalidParameter { .. }
            | E::Regex { .. }
            | E::Config { .. }
            | E::TooLarge { .. }
            | E::BadRequest(_) => Error::Invalid(e.to_string()),
            E::Remote { error, .. } if error.kind == K::BadRequest => Error::Invalid(e.to_string()),
            _ => Error::Unavailable(e.to_string()),
        }
    }
}

/// Result of the node's data functions.
pub type Result<T> = std::result::Result<T, Error>;

/// The data stage's parts on one node.
#[derive(Clone)]
pub struct DataNode {
    pub me: NodeId,
    pub peers: Arc<NetData>,
    pub catalog: catalog::Handle,
    pub membership: membership::Handle,
    pub settings: Settings,
    /// The runtime, for the job runner's blocking threads.
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for DataNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataNode").field("me", &self.me).finish()
    }
}

impl DataNode {
    /// Members this node sees alive (itself included), sorted.
    pub async fn alive(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = match self.membership.view().await {
            Ok(view) => view
                .into_iter()
                .filter(|m| m.state == MemberState::Alive || m.is_self)
                .map(|m| m.info.id)
                .collect(),
            Err(e) => {
                warn!(error = %e, "membership view unavailable; using this node alone");
                vec![]
            }
        };
        if !out.contains(&self.me) {
            out.push(self.me.clone());
        }
        out.sort();
        out
    }

    /// Every live version of every dataset, by name then version.
    pub async fn datasets(&self) -> Result<BTreeMap<String, BTreeMap<u64, DatasetRecord>>> {
        let entries = self
            .catalog
            .list(Some(RecordKind::Dataset))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let mut out: BTreeMap<String, BTreeMap<u64, DatasetRecord>> = BTreeMap::new();
        for (_, e) in entries {
            if let Entry::Register(r) = e {
                if let Some(Record::Dataset(d)) = r.value {
                    out.entry(d.name.clone()).or_default().insert(d.version, d);
                }
            }
        }
        Ok(out)
    }

    /// The versions of `name`; `NotFound` when it has none.
    pub async fn versions(&self, name: &str) -> Result<BTreeMap<u64, DatasetRecord>> {
        self.datasets()
            .await?
            .remove(name)
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// `name@version`, or the latest version when `version` is `None`.
    pub async fn get(&self, name: &str, version: Option<u64>) -> Result<DatasetRecord> {
        let mut versions = self.versions(name).await?;
        let found = match version {
            Some(v) => versions.remove(&v),
            None => versions.pop_last().map(|(_, r)| r),
        };
        found.ok_or_else(|| {
            Error::NotFound(format!(
                "{name}@{}",
                version.map_or("latest".into(), |v| v.to_string())
            ))
        })
    }

    /// The chain of versions from `record` back to its upload, newest first.
    pub async fn chain(&self, record: &DatasetRecord) -> Result<Vec<DatasetRecord>> {
        let versions = self.versions(&record.name).await?;
        Ok(version::chain(&record.name, record.version, |_, v| {
            versions.get(&v).cloned()
        })?)
    }

    /// Holders of each shard of `record` among the live nodes now.
    pub async fn holders(&self, record: &DatasetRecord) -> BTreeMap<u32, Vec<NodeId>> {
        let alive = self.alive().await;
        survey::survey(
            &*self.peers,
            &alive,
            &record.name,
            record.version,
            self.settings.call_deadline,
        )
        .await
    }

    /// The first `limit` records of `record` (from its first shards), for `show`.
    pub async fn sample(&self, record: &DatasetRecord, limit: usize) -> Result<Vec<DataRow>> {
        let holders = self.holders(record).await;
        let mut out = Vec::new();
        for i in 0..record.shard_hashes.len() as u32 {
            if out.len() >= limit {
                break;
            }
            let id = ShardId::new(&record.name, record.version, i);
            let mut last = None;
            let mut got = None;
            for n in holders.get(&i).into_iter().flatten() {
                let req = RequestBody::ReadRange {
                    shard: id.clone(),
                    offset: 0,
                    limit: (limit - out.len()) as u32,
                };
                match self.peers.call(n, req, self.settings.call_deadline).await {
                    Ok(flotilla_protocol::services::data::ResponseBody::Records {
                        records,
                        ..
                    }) => {
                        got = Some(records);
                        break;
                    }
                    Ok(other) => last = Some(format!("{n}: unexpected answer {other:?}")),
                    Err(e) => last = Some(e.to_string()),
                }
            }
            match got {
                Some(rs) => out.extend(rs.into_iter().map(DataRow::from)),
                None => {
                    return Err(Error::Unavailable(format!(
                        "no live holder served shard {id}{}",
                        last.map(|l| format!(": {l}")).unwrap_or_default()
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Reads shard `index` of `record` from its first live holder that serves the recorded
    /// hash (export).
    pub async fn read_shard(
        &self,
        record: &DatasetRecord,
        index: u32,
        holders: &BTreeMap<u32, Vec<NodeId>>,
    ) -> Result<Vec<DataRow>> {
        let id = ShardId::new(&record.name, record.version, index);
        let want = record.shard_hashes.get(index as usize).cloned();
        let live: Vec<NodeId> = holders.get(&index).cloned().unwrap_or_default();
        let mut last = format!("no live holder of shard {id}");
        for n in flotilla_actors::rendezvous::rank(&id.placement_key(), &live) {
            match export::read_shard(&*self.peers, &n, &id, self.settings.call_deadline).await {
                Ok(rows) => {
                    let actual = flotilla_actors::data::record::shard_hash(&rows);
                    if Some(&actual) == want.as_ref() {
                        return Ok(rows);
                    }
                    last = format!("{n} served shard {id} with hash {actual}");
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Unavailable(last))
    }

    /// Deletes `name@version` (every version when `None`) from the catalog and every live
    /// holder; the number of versions deleted.
    pub async fn delete(&self, name: &str, version: Option<u64>) -> Result<usize> {
        let versions = self.versions(name).await?;
        let doomed: Vec<u64> = match version {
            Some(v) if versions.contains_key(&v) => vec![v],
            Some(v) => return Err(Error::NotFound(format!("{name}@{v}"))),
            None => versions.keys().copied().collect(),
        };
        let alive = self.alive().await;
        for v in &doomed {
            self.catalog
                .delete(CatalogKey::dataset(name, *v))
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            self.delete_shards(&alive, name, *v).await;
        }
        Ok(doomed.len())
    }

    /// Deletes every shard of `name@version` held by `nodes` (best effort, logged).
    pub async fn delete_shards(&self, nodes: &[NodeId], name: &str, version: u64) {
        for n in nodes {
            let body = RequestBody::DeleteVersion {
                dataset: name.to_string(),
                version,
            };
            if let Err(e) = self.peers.call(n, body, self.settings.call_deadline).await {
                warn!(node = %n, dataset = name, version, error = %e, "could not delete shards");
            }
        }
    }
}
