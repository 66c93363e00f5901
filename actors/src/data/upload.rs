//! Uploads: parsed records cut into shards as they stream in, each shard hashed, placed by
//! rendezvous hashing and pushed to its holders, and the dataset's first catalog record.
//!
//! [`ShardBuilder`] holds at most one shard's records: it cuts a shard when it reaches
//! `records_per_shard` records or when the next record would take it past `bytes_per_shard`
//! bytes of body (a single record larger than that makes a shard of its own; records are never
//! split). Shard `i` of `dataset@version` is named by [`ShardId`] and its hash is blake3 of its
//! body, the hash the catalog records.
//!
//! [`upload`] drives a whole upload: ingest (with `--on-error skip|fail` and the malformed-line
//! report of [`super::ingest`]), shards, placement, pushes. If the input turns out to be bad
//! halfway (not UTF-8, a malformed line under `fail`), the shards already pushed are deleted
//! and no catalog record is produced.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use flotilla_protocol::catalog::{DatasetRecord, FieldType, Lineage, SchemaField};
use flotilla_protocol::services::data::{RequestBody, ShardId, ShardMeta};
use flotilla_protocol::NodeId;
use tracing::warn;

use super::error::{Error, Result};
use super::ingest::{Ingest, IngestReport, OnError, Options};
use super::peers::DataPeers;
use super::record::Record;
use super::replication::replicas;
use super::shard::{encode_body, meta_of};
use super::transfer;
use super::version::{clip, UPLOAD};

/// Default records per shard.
pub const DEFAULT_RECORDS_PER_SHARD: usize = 10_000;
/// Default body bytes per shard.
pub const DEFAULT_BYTES_PER_SHARD: usize = 64 << 20;

/// A finished shard: its metadata and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltShard {
    pub meta: ShardMeta,
    pub body: Vec<u8>,
}

/// What a builder saw, once finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    /// Every shard's metadata, in index order.
    pub shards: Vec<ShardMeta>,
    pub records: u64,
    /// Each field name with the number of records that have it.
    pub fields: BTreeMap<String, u64>,
}

impl Built {
    /// The schema: every field as text, nullable when some record lacks it.
    pub fn schema(&self) -> Vec<SchemaField> {
        self.fields
            .iter()
            .map(|(name, n)| SchemaField {
                name: name.clone(),
                field_type: FieldType::Text,
                nullable: *n < self.records,
            })
            .collect()
    }
}

/// Cuts a stream of records into shards.
#[derive(Debug)]
pub struct ShardBuilder {
    dataset: String,
    version: u64,
    max_records: usize,
    max_bytes: usize,
    current: Vec<Record>,
    current_bytes: usize,
    built: Built,
}

/// The size of a record's canonical encoding.
fn encoded_size(r: &Record) -> usize {
    12 + r
        .fields
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>()
}

impl ShardBuilder {
    /// A builder for `dataset@version` cutting at `max_records` records or `max_bytes` bytes.
    pub fn new(dataset: &str, version: u64, max_records: usize, max_bytes: usize) -> Result<Self> {
        if max_records == 0 {
            return Err(Error::invalid(
                "upload",
                "records_per_shard",
                "must be at least 1",
            ));
        }
        if max_bytes < 64 {
            return Err(Error::invalid(
                "upload",
                "bytes_per_shard",
                "must be at least 64",
            ));
        }
        Ok(Self {
            dataset: dataset.to_string(),
            version,
            max_records,
            max_bytes,
            current: Vec::new(),
            current_bytes: 8,
            built: Built::default(),
        })
    }

    /// Adds a record; returns the shards it completed (none, or one; two when a record too big
    /// to share a shard follows a partial one).
    pub fn push(&mut self, r: Record) -> Vec<BuiltShard> {
        let mut out = Vec::new();
        let size = encoded_size(&r);
        if !self.current.is_empty() && self.current_bytes + size > self.max_bytes {
            out.push(self.cut());
        }
        self.built.records += 1;
        for k in r.fields.keys() {
            *self.built.fields.entry(k.clone()).or_default() += 1;
        }
        self.current_bytes += size;
        self.current.push(r);
        if self.current.len() >= self.max_records || self.current_bytes >= self.max_bytes {
            out.push(self.cut());
        }
        out
    }

    /// The last, partial shard (if any records are left) and what the builder saw.
    pub fn finish(mut self) -> (Option<BuiltShard>, Built) {
        let last = (!self.current.is_empty()).then(|| self.cut());
        (last, self.built)
    }

    fn cut(&mut self) -> BuiltShard {
        let records = std::mem::take(&mut self.current);
        self.current_bytes = 8;
        let index = self.built.shards.len() as u32;
        let body = encode_body(&records);
        let meta = meta_of(
            ShardId::new(&self.dataset, self.version, index),
            &body,
            records.len() as u64,
        );
        self.built.shards.push(meta.clone());
        BuiltShard { meta, body }
    }
}

/// How to upload.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dataset: String,
    /// The version to write (1 for a new dataset).
    pub version: u64,
    pub records_per_shard: usize,
    pub bytes_per_shard: usize,
    /// Replicas of each shard (capped by the live node count).
    pub replication: usize,
    /// Alive members now: the candidates for placement.
    pub alive: Vec<NodeId>,
    /// Chunk size on the wire.
    pub chunk_bytes: usize,
    /// Deadline of each call to a holder.
    pub call_deadline: Duration,
    /// Where the data came from (a file name), recorded in the lineage.
    pub source: String,
    pub created_at_ms: u64,
}

/// What an upload produced.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The version's catalog record (validated), to be written by the caller.
    pub record: DatasetRecord,
    /// Records read and malformed lines (the first few with line numbers).
    pub report: IngestReport,
    /// Holders of each shard.
    pub placement: BTreeMap<u32, Vec<NodeId>>,
}

/// Parses `input`, cuts shards and pushes each to its holders, and builds the version's
/// catalog record.
pub async fn upload<R: Read + Send>(
    input: R,
    opts: Options,
    plan: &Plan,
    peers: &dyn DataPeers,
) -> Result<Uploaded> {
    let mut ingest = Ingest::new(input, opts.clone())?;
    let (built, placement) = upload_records(ingest.by_ref(), plan, peers).await?;
    let report = ingest.report().clone();
    let mut parameters = BTreeMap::new();
    let mut param = |k: &str, v: String| {
        parameters.insert(k.to_string(), v);
    };
    param("source", plan.source.clone());
    param("format", format!("{:?}", opts.format).to_lowercase());
    param("text_field", opts.text_field.clone());
    if let Some(l) = &opts.label_field {
        param("label_field", l.clone());
    }
    let on_error = match opts.on_error {
        OnError::Skip => "skip",
        OnError::Fail => "fail",
    };
    param("on_error", on_error.into());
    param("malformed", report.malformed.to_string());
    let record = match version_record(plan, &built, parameters) {
        Ok(r) => r,
        Err(e) => {
            clean_up(peers, plan).await;
            return Err(e);
        }
    };
    Ok(Uploaded {
        record,
        report,
        placement,
    })
}

/// The streaming core of an upload: cuts `records` into shards and pushes each to its holders
/// as soon as it is cut. On any error (from the records or a holder) the shards already
/// pushed are deleted. An input without records is an error.
pub async fn upload_records<I>(
    records: I,
    plan: &Plan,
    peers: &dyn DataPeers,
) -> Result<(Built, BTreeMap<u32, Vec<NodeId>>)>
where
    I: Iterator<Item = Result<Record>> + Send,
{
    if plan.alive.is_empty() {
        return Err(Error::BadRequest("no live node to hold the shards".into()));
    }
    let result = cut_and_push(records, plan, peers).await;
    if result.is_err() {
        clean_up(peers, plan).await;
    }
    result
}

async fn clean_up(peers: &dyn DataPeers, plan: &Plan) {
    for n in &plan.alive {
        let body = RequestBody::DeleteVersion {
            dataset: plan.dataset.clone(),
            version: plan.version,
        };
        if let Err(e) = peers.call(n, body, plan.call_deadline).await {
            warn!(node = %n, error = %e, "could not clean up a failed upload");
        }
    }
}

async fn cut_and_push<I>(
    records: I,
    plan: &Plan,
    peers: &dyn DataPeers,
) -> Result<(Built, BTreeMap<u32, Vec<NodeId>>)>
where
    I: Iterator<Item = Result<Record>> + Send,
{
    let mut builder = ShardBuilder::new(
        &plan.dataset,
        plan.version,
        plan.records_per_shard,
        plan.bytes_per_shard,
    )?;
    let mut placement = BTreeMap::new();
    for r in records {
        for s in builder.push(r?) {
            placement.insert(s.meta.id.index, place(peers, plan, &s).await?);
        }
    }
    let (last, built) = builder.finish();
    if let Some(s) = last {
        placement.insert(s.meta.id.index, place(peers, plan, &s).await?);
    }
    if built.records == 0 {
        return Err(Error::BadRequest("no records in the input".into()));
    }
    Ok((built, placement))
}

/// The catalog record of an uploaded version: lineage `upload` with `parameters` plus the
/// shard layout and replication of `plan`.
pub fn version_record(
    plan: &Plan,
    built: &Built,
    mut parameters: BTreeMap<String, String>,
) -> Result<DatasetRecord> {
    parameters.insert("records".into(), built.records.to_string());
    parameters.insert(
        "records_per_shard".into(),
        plan.records_per_shard.to_string(),
    );
    parameters.insert("bytes_per_shard".into(), plan.bytes_per_shard.to_string());
    parameters.insert("replication".into(), plan.replication.to_string());
    let record = DatasetRecord {
        name: plan.dataset.clone(),
        version: plan.version,
        schema: built.schema(),
        record_count: built.records,
        shard_hashes: built.shards.iter().map(|m| m.hash.clone()).collect(),
        lineage: Lineage {
            parent_version: None,
            operation: UPLOAD.to_string(),
            parameters: parameters.into_iter().map(|(k, v)| (k, clip(&v))).collect(),
        },
        created_at_ms: plan.created_at_ms,
    };
    record.validate().map_err(|e| Error::Config {
        what: format!("dataset record {}@{}", plan.dataset, plan.version),
        reason: e.to_string(),
    })?;
    Ok(record)
}

/// Pushes a shard to every holder placement picks for it.
async fn place(peers: &dyn DataPeers, plan: &Plan, s: &BuiltShard) -> Result<Vec<NodeId>> {
    let holders = replicas(&s.meta.id, &plan.alive, plan.replication);
    for h in &holders {
        transfer::push(
            peers,
            h,
            &s.meta,
            &s.body,
            plan.chunk_bytes,
            plan.call_deadline,
        )
        .await?;
    }
    Ok(holders)
}
