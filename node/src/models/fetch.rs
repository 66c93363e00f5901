//! Model artifacts from peers, by content hash only.
//!
//! A node that needs a model version's files asks the live nodes which of the version's blobs
//! they hold (`HeldBlobs`), then downloads each missing blob in pieces from every holder at
//! once (`FetchBlob`; one worker per holder takes the next piece, and a piece a holder fails
//! goes back to the others). The pieces are written in place; the whole blob is hashed before
//! it is moved into the [`BlobStore`](super::blobs::BlobStore), and a blob whose length
//! differs from the catalog's record is refused at its first piece. A node never asks for, and
//! never serves, a file by path.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_actors::serving::remote::ServingTransport;
use flotilla_protocol::services::serving::{
    Request, RequestBody, ResponseBody, MAX_ARTIFACT_CHUNK, MAX_BLOBS_PER_QUERY,
};
use flotilla_protocol::RequestId;
use tracing::{debug, info};

use super::artifacts::ServedModel;
use super::blobs::{BlobStore, Incoming};

/// How long one piece may take.
const PIECE_DEADLINE: Duration = Duration::from_secs(30);
/// How long a holder may take to say what it holds.
const QUERY_DEADLINE: Duration = Duration::from_secs(5);
/// The slowest transfer rate a whole download is allowed, on top of [`BASE_DEADLINE`].
const MIN_BYTES_PER_SEC: u64 = 1024 * 1024;
const BASE_DEADLINE: Duration = Duration::from_secs(60);

/// The deadline of a whole download of `bytes` bytes.
pub fn download_deadline(bytes: u64) -> Duration {
    BASE_DEADLINE + Duration::from_secs(bytes / MIN_BYTES_PER_SEC)
}

fn request(body: RequestBody) -> Request {
    Request {
        id: RequestId(rand::random()),
        body,
    }
}

async fn call(
    transport: &dyn ServingTransport,
    node: &str,
    body: RequestBody,
    deadline: Duration,
) -> anyhow::Result<ResponseBody> {
    let target = super::files::artifacts_endpoint(node);
    let response = transport
        .call(&target, request(body), deadline)
        .await
        .map_err(|e| anyhow::anyhow!("{node}: {e}"))?;
    response.body.map_err(|e| anyhow::anyhow!("{node}: {e}"))
}

/// Which of `blobs` each of `nodes` holds: blob → holders, in the order of `nodes`.
pub async fn holders(
    transport: &dyn ServingTransport,
    nodes: &[String],
    blobs: &[String],
) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let asks = nodes.iter().map(|n| async move {
        let mut held = Vec::new();
        for part in blobs.chunks(MAX_BLOBS_PER_QUERY) {
            let body = RequestBody::HeldBlobs {
                blobs: part.to_vec(),
            };
            match call(transport, n, body, QUERY_DEADLINE).await {
                Ok(ResponseBody::HeldBlobs(h)) => held.extend(h),
                Ok(other) => debug!(node = %n, ?other, "unexpected answer to HeldBlobs"),
                Err(e) => debug!(node = %n, error = %e, "holder query failed"),
            }
        }
        (n.clone(), held)
    });
    let wanted: BTreeSet<&String> = blobs.iter().collect();
    for (node, held) in futures::future::join_all(asks).await {
        for b in held {
            // Only what was asked: a peer cannot add blobs to the download.
            if wanted.contains(&b) {
                found.entry(b).or_default().push(node.clone());
            }
        }
    }
    found
}

/// The pieces of a download still to fetch, shared by the holders' workers.
struct Pieces {
    queue: VecDeque<u64>,
    done: u64,
}

/// Downloads blob `hash` of `expected_len` bytes (if the catalog says) from `holders`, every
/// holder serving pieces at once, into `store`.
pub async fn download_blob(
    transport: &dyn ServingTransport,
    store: &Arc<BlobStore>,
    hash: &str,
    expected_len: Option<u64>,
    holders: &[String],
) -> anyhow::Result<()> {
    anyhow::ensure!(!holders.is_empty(), "no live node holds blob {hash}");
    // The first piece says the length; it must be what the catalog recorded.
    let mut first_err = None;
    let mut first = None;
    for h in holders {
        let body = RequestBody::FetchBlob {
            blob: hash.to_string(),
            offset: 0,
            len: MAX_ARTIFACT_CHUNK,
        };
        match call(transport, h, body, PIECE_DEADLINE).await {
            Ok(ResponseBody::Artifact { total, bytes }) => {
                first = Some((total, bytes));
                break;
            }
            Ok(other) => first_err = Some(anyhow::anyhow!("{h} answered {other:?}")),
            Err(e) => first_err = Some(e),
        }
    }
    let Some((total, bytes)) = first else {
        return Err(first_err.unwrap_or_else(|| anyhow::anyhow!("no holder answered")));
    };
    if let Some(want) = expected_len {
        anyhow::ensure!(
            total == want,
            "blob {hash} is {total} bytes at its holder; the catalog records {want}"
        );
    }
    let piece = u64::from(MAX_ARTIFACT_CHUNK);
    anyhow::ensure!(
        bytes.len() as u64 == piece.min(total),
        "the first piece of blob {hash} has {} bytes, not {}",
        bytes.len(),
        piece.min(total)
    );
    let incoming = Arc::new(store.receive(hash, total)?);
    incoming.write_at(0, &bytes)?;
    let count = total.div_ceil(piece).max(1);
    let pieces = Arc::new(Mutex::new(Pieces {
        queue: (1..count).collect(),
        done: 1,
    }));
    let deadline = Instant::now() + download_deadline(total);
    let workers = holders.iter().map(|h| {
        let (pieces, incoming) = (pieces.clone(), incoming.clone());
        async move {
            loop {
                let next = pieces
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .queue
                    .pop_front();
                // `None` when the queue is empty: this worker is done, with no failure.
                let i = next?;
                let offset = i * piece;
                let len = piece.min(total - offset);
                let left = deadline.saturating_duration_since(Instant::now());
                let body = RequestBody::FetchBlob {
                    blob: hash.to_string(),
                    offset,
                    len: len as u32,
                };
                let got = match call(transport, h, body, PIECE_DEADLINE.min(left)).await {
                    Ok(ResponseBody::Artifact { total: t, bytes })
                        if t == total && bytes.len() as u64 == len =>
                    {
                        incoming
                            .write_at(offset, &bytes)
                            .map_err(anyhow::Error::from)
                    }
                    Ok(ResponseBody::Artifact { total: t, bytes }) => Err(anyhow::anyhow!(
                        "{h} sent {} bytes of {t} at {offset}; expected {len} of {total}",
                        bytes.len()
                    )),
                    Ok(other) => Err(anyhow::anyhow!("{h} answered {other:?}")),
                    Err(e) => Err(e),
                };
                let mut p = pieces.lock().unwrap_or_else(|p| p.into_inner());
                match got {
                    Ok(()) => p.done += 1,
                    Err(e) => {
                        // Leave the piece to the other holders; this one stops.
                        p.queue.push_back(i);
                        return Some(e);
                    }
                }
            }
        }
    });
    let failures: Vec<anyhow::Error> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let done = pieces.lock().unwrap_or_else(|p| p.into_inner()).done;
    let incoming = Arc::try_unwrap(incoming)
        .map_err(|_| anyhow::anyhow!("a download worker outlived its download"))?;
    if done < count {
        incoming.abandon();
        let why = failures
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        anyhow::bail!("blob {hash}: {} of {count} pieces arrived ({why})", done);
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || finish(incoming, &store)).await??;
    Ok(())
}

fn finish(incoming: Incoming, store: &BlobStore) -> anyhow::Result<()> {
    incoming.finish(store)?;
    Ok(())
}

/// The blobs of `model` this node lacks or holds damaged (a damaged one is removed so that it
/// is fetched again).
fn missing(model: &ServedModel, store: &BlobStore) -> Vec<String> {
    let mut out = Vec::new();
    for hash in model.artifacts.values() {
        if !store.contains(hash) {
            out.push(hash.clone());
        } else if store.verify(hash).is_err() {
            let _ = store.remove(hash);
            out.push(hash.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Makes `model`'s files local: fetches the blobs this node lacks from the `peers` that hold
/// them, then links the version's view folder. Returns the model with `path` set to it.
pub async fn ensure_local(
    model: &ServedModel,
    store: &Arc<BlobStore>,
    transport: &dyn ServingTransport,
    peers: &[String],
) -> anyhow::Result<ServedModel> {
    let (m, s) = (model.clone(), store.clone());
    let missing = tokio::task::spawn_blocking(move || missing(&m, &s)).await?;
    if !missing.is_empty() {
        let held = holders(transport, peers, &missing).await;
        let sizes = model.sizes.clone();
        for hash in &missing {
            let from = held.get(hash).map(Vec::as_slice).unwrap_or_default();
            let name = model
                .artifacts
                .iter()
                .find(|(_, h)| *h == hash)
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            anyhow::ensure!(
                !from.is_empty(),
                "no live node holds {name} ({hash}) of {}@{}",
                model.name,
                model.version
            );
            download_blob(transport, store, hash, sizes.get(&name).copied(), from)
                .await
                .map_err(|e| anyhow::anyhow!("{name} of {}@{}: {e}", model.name, model.version))?;
            info!(model = %model.hash, file = %name, holders = from.len(), "artifact fetched and verified");
        }
    }
    let (m, s) = (model.clone(), store.clone());
    let dir = tokio::task::spawn_blocking(move || s.view(&m.hash, &m.artifacts)).await??;
    let mut local = model.clone();
    local.path = dir;
    Ok(local)
}
