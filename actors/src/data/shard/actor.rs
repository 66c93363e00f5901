//! The `DataShard` actor shell: one per node, holding the node's dataset shards in the store.
//!
//! Decisions and checks live in [`super::store::ShardStore`] and [`crate::data::job::worker`];
//! the shell assembles chunked uploads (bounded), keeps a small cache of verified shards and
//! runs hashing and operations on blocking threads so the runtime's workers stay free.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tracing::Instrument;

use flotilla_protocol::services::data::{ShardId, ShardMeta};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info};

use super::msg::Msg;
use super::store::ShardStore;
use super::{decode_body, encode_body, meta_of, Config};
use crate::data::error::{Error, Result};
use crate::data::job::worker;
use crate::data::record::Record;
use crate::store::Store;

/// The actor type.
#[derive(Debug)]
pub struct DataShard {
    /// The span its messages are handled in ([`crate::task::actor_span`]).
    pub(crate) span: tracing::Span,
}

/// What the actor starts from.
pub struct Args {
    pub store: Arc<dyn Store>,
    pub config: Config,
}

struct Upload {
    meta: ShardMeta,
    chunks: u32,
    next: u32,
    body: Vec<u8>,
}

/// A verified shard in memory.
#[derive(Clone)]
struct Cached {
    meta: ShardMeta,
    body: Arc<Vec<u8>>,
    records: Arc<Vec<Record>>,
}

/// The actor's state.
pub struct State {
    shards: ShardStore,
    config: Config,
    uploads: BTreeMap<ShardId, Upload>,
    cache: VecDeque<(ShardId, Cached)>,
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Corrupt(format!("shard work panicked or was aborted: {e}")))?
}

impl State {
    fn forget(&mut self, pred: impl Fn(&ShardId) -> bool) {
        self.cache.retain(|(id, _)| !pred(id));
    }

    /// The verified shard, from the cache or the store.
    async fn load(&mut self, id: &ShardId) -> Result<Cached> {
        if let Some((_, c)) = self.cache.iter().find(|(k, _)| k == id) {
            return Ok(c.clone());
        }
        let shards = self.shards.clone();
        let key = id.clone();
        let c = blocking(move || {
            let (meta, body) = shards.body(&key)?;
            let records = decode_body(&body)?;
            Ok(Cached {
                meta,
                body: Arc::new(body),
                records: Arc::new(records),
            })
        })
        .await?;
        if self.config.cache_shards > 0 {
            if self.cache.len() >= self.config.cache_shards {
                self.cache.pop_front();
            }
            self.cache.push_back((id.clone(), c.clone()));
        }
        Ok(c)
    }

    async fn put(&mut self, meta: ShardMeta, body: Vec<u8>) -> Result<()> {
        self.forget(|k| *k == meta.id);
        let shards = self.shards.clone();
        let id = meta.id.clone();
        blocking(move || shards.put(&meta, &body)).await?;
        debug!(shard = %id, "shard stored");
        Ok(())
    }

    async fn put_chunk(
        &mut self,
        meta: ShardMeta,
        chunk: u32,
        chunks: u32,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        if chunks == 0 || chunk >= chunks {
            return Err(Error::BadRequest(format!(
                "chunk {chunk} of {chunks} for shard {}",
                meta.id
            )));
        }
        if meta.bytes > self.config.max_shard_bytes {
            return Err(Error::TooLarge {
                what: format!("shard {}", meta.id),
                len: meta.bytes,
                cap: self.config.max_shard_bytes,
            });
        }
        if chunk == 0 {
            if !self.uploads.contains_key(&meta.id)
                && self.uploads.len() >= self.config.max_pending_uploads
            {
                return Err(Error::TooLarge {
                    what: "uploads in progress".into(),
                    len: self.uploads.len() as u64 + 1,
                    cap: self.config.max_pending_uploads as u64,
                });
            }
            let cap = meta.bytes.min(self.config.max_shard_bytes) as usize;
            self.uploads.insert(
                meta.id.clone(),
                Upload {
                    meta: meta.clone(),
                    chunks,
                    next: 0,
                    body: Vec::with_capacity(cap),
                },
            );
        }
        let id = meta.id.clone();
        let up = self.uploads.get_mut(&id).ok_or_else(|| {
            Error::BadRequest(format!("chunk {chunk} of shard {id} before chunk 0"))
        })?;
        if up.meta != meta || up.chunks != chunks || up.next != chunk {
            let expected = up.next;
            self.uploads.remove(&id);
            return Err(Error::BadRequest(format!(
                "chunk {chunk} of shard {id} out of sequence (expected {expected}); upload dropped"
            )));
        }
        if (up.body.len() + bytes.len()) as u64 > meta.bytes {
            self.uploads.remove(&id);
            return Err(Error::TooLarge {
                what: format!("chunks of shard {id}"),
                len: 0,
                cap: meta.bytes,
            });
        }
        up.body.extend_from_slice(&bytes);
        up.next += 1;
        if up.next < chunks {
            return Ok(false);
        }
        let Some(up) = self.uploads.remove(&id) else {
            return Ok(false);
        };
        self.put(up.meta, up.body).await?;
        Ok(true)
    }
}

impl Actor for DataShard {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        _myself: ActorRef<Msg>,
        args: Args,
    ) -> std::result::Result<State, ActorProcessingErr> {
        args.config.validate()?;
        let shards = ShardStore::new(
            args.store,
            args.config.chunk_bytes,
            args.config.max_shard_bytes,
            args.config.max_listed,
        );
        info!(
            held = shards.list(None).map(|l| l.len()).unwrap_or(0),
            "data shard holder started"
        );
        Ok(State {
            shards,
            config: args.config,
            uploads: BTreeMap::new(),
            cache: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let span = self.span.clone();
        self.handle_message(myself, msg, state)
            .instrument(span)
            .await
    }
}

impl DataShard {
    /// What [`Actor::handle`] does, inside the actor's span.
    async fn handle_message(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        // Replies fail only when the caller gave up (its deadline passed): nothing to do.
        match msg {
            Msg::Put { meta, body, reply } => {
                let _ = reply.send(state.put(meta, body).await);
            }
            Msg::PutChunk {
                meta,
                chunk,
                chunks,
                bytes,
                reply,
            } => {
                let _ = reply.send(state.put_chunk(meta, chunk, chunks, bytes).await);
            }
            Msg::GetChunk {
                shard,
                chunk,
                chunk_bytes,
                reply,
            } => {
                let r = state.load(&shard).await.and_then(|c| {
                    let n = c.meta.chunks(chunk_bytes);
                    if chunk >= n {
                        return Err(Error::BadRequest(format!(
                            "shard {shard} has {n} chunks, asked for chunk {chunk}"
                        )));
                    }
                    let start = (chunk as usize).saturating_mul(chunk_bytes.max(1));
                    let end = start.saturating_add(chunk_bytes.max(1)).min(c.body.len());
                    let bytes = c.body.get(start..end).unwrap_or_default().to_vec();
                    Ok((c.meta, n, bytes))
                });
                let _ = reply.send(r);
            }
            Msg::ReadRange {
                shard,
                offset,
                limit,
                reply,
            } => {
                let r = state.load(&shard).await.and_then(|c| {
                    let total = c.records.len() as u64;
                    if offset > total {
                        return Err(Error::BadRequest(format!(
                            "offset {offset} is past the end of shard {shard} ({total} records)"
                        )));
                    }
                    let out = c
                        .records
                        .iter()
                        .skip(offset as usize)
                        .take(limit as usize)
                        .cloned()
                        .collect();
                    Ok((out, total))
                });
                let _ = reply.send(r);
            }
            Msg::List { dataset, reply } => {
                let _ = reply.send(state.shards.list(dataset.as_deref()));
            }
            Msg::DeleteShard { shard, reply } => {
                state.forget(|k| *k == shard);
                state.uploads.remove(&shard);
                let _ = reply.send(state.shards.delete(&shard));
            }
            Msg::DeleteVersion {
                dataset,
                version,
                reply,
            } => {
                state.forget(|k| k.dataset == dataset && k.version == version);
                state
                    .uploads
                    .retain(|k, _| !(k.dataset == dataset && k.version == version));
                let r = state.shards.delete_version(&dataset, version);
                if let Ok(n) = &r {
                    info!(dataset = %dataset, version, shards = n, "dataset version deleted");
                }
                let _ = reply.send(r);
            }
            Msg::Summarize {
                input,
                ops,
                decisions,
                reply,
            } => {
                let r = match state.load(&input).await {
                    Ok(c) => {
                        let records = c.records.clone();
                        blocking(move || worker::summarize(records.to_vec(), &ops, &decisions))
                            .await
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Msg::Apply {
                input,
                ops,
                decisions,
                output,
                reply,
            } => {
                let r = if output == input {
                    Err(Error::BadRequest(format!(
                        "an operation cannot overwrite its input shard {input}"
                    )))
                } else {
                    match state.load(&input).await {
                        Ok(c) => {
                            let records = c.records.clone();
                            let out = output.clone();
                            let built = blocking(move || {
                                let (records, report) =
                                    worker::apply(records.to_vec(), &ops, &decisions)?;
                                let body = encode_body(&records);
                                let meta = meta_of(out, &body, records.len() as u64);
                                Ok((meta, body, report))
                            })
                            .await;
                            match built {
                                Ok((meta, body, report)) => {
                                    state.put(meta.clone(), body).await.map(|()| (meta, report))
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    }
                };
                let _ = reply.send(r);
            }
        }
        Ok(())
    }
}
