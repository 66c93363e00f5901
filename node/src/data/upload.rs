//! Uploads on the node: a file already on local disk (the HTTP handler spools the request body
//! there) ingested into shards, placed on the live nodes and recorded as version 1.
//!
//! The cores' [`upload::upload`] reads its input synchronously, so it runs on a blocking thread
//! that drives the async pushes with the runtime handle: the file is read a line at a time and
//! at most one shard is in memory, whatever the file's size.

use std::path::PathBuf;

use flotilla_actors::data::ingest::{IngestReport, Options};
use flotilla_actors::data::upload;
use flotilla_protocol::catalog::{CatalogKey, DatasetRecord, Record};
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};

use flotilla_actors::clock::wall_ms;

use super::{DataNode, Error, Result};

/// What an upload produced, as the API answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadAnswer {
    pub record: DatasetRecord,
    pub report: IngestReport,
    /// Holders of each shard by index.
    pub placement: std::collections::BTreeMap<u32, Vec<NodeId>>,
    pub bytes: u64,
}

impl DataNode {
    /// Ingests `path` as `name@1`. `records_per_shard` overrides the node's setting.
    pub async fn upload_file(
        &self,
        name: &str,
        path: PathBuf,
        opts: Options,
        source: String,
        records_per_shard: Option<usize>,
    ) -> Result<UploadAnswer> {
        if let Err(m) = flotilla_protocol::validation::name_problem(name) {
            return Err(Error::Invalid(format!("name: {m}")));
        }
        if self.catalog_has(name).await? {
            return Err(Error::Conflict(format!(
                "dataset {name} already exists; delete it first or choose another name"
            )));
        }
        let bytes = std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| Error::Unavailable(format!("spooled upload: {e}")))?;
        let plan = upload::Plan {
            dataset: name.to_string(),
            version: 1,
            records_per_shard: records_per_shard.unwrap_or(self.settings.records_per_shard),
            bytes_per_shard: self.settings.bytes_per_shard,
            replication: self.settings.replication,
            alive: self.alive().await,
            chunk_bytes: self.peers.shards.chunk_bytes(),
            call_deadline: self.settings.call_deadline,
            source,
            created_at_ms: wall_ms(),
        };
        let peers = self.peers.clone();
        let runtime = self.runtime.clone();
        let uploaded = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(|e| {
                // The spool file's path is the node's own business, not the client's.
                flotilla_actors::data::Error::Io(format!("the spooled upload: {e}"))
            })?;
            runtime.block_on(upload::upload(file, opts, &plan, &*peers))
        })
        .await
        .map_err(|e| Error::Unavailable(format!("upload thread: {e}")))??;
        self.catalog
            .put(Record::Dataset(uploaded.record.clone()))
            .await
            .map_err(|e| Error::Unavailable(format!("catalog write: {e}")))?;
        Ok(UploadAnswer {
            record: uploaded.record,
            report: uploaded.report,
            placement: uploaded.placement,
            bytes,
        })
    }

    async fn catalog_has(&self, name: &str) -> Result<bool> {
        let got = self
            .catalog
            .get(CatalogKey::dataset(name, 1))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(matches!(got, Some(e) if !e.is_tombstone()) || self.versions(name).await.is_ok())
    }
}
