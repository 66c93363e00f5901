//! Model artifacts from peers. The node that registered a version (its *origin*) serves it from
//! the registered folder; every other node fetches each file over `/flotilla/serving/1` in
//! chunks into `<data dir>/models/<version hash>/`, checks its blake3 against the catalog, and
//! only then moves it into place. A node that already holds a verified copy does not fetch
//! again, and may itself serve the files to others.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_actors::serving::remote::ServingTransport;
use flotilla_protocol::services::serving::{
    ErrorKind, Request, RequestBody, ResponseBody, ServingError, MAX_ARTIFACT_CHUNK,
};
use flotilla_protocol::RequestId;
use tracing::{info, warn};

use super::artifacts::{self, ServedModel};
use crate::net::serving_net::MeshTransport;

/// How long one chunk may take.
const CHUNK_DEADLINE: Duration = Duration::from_secs(30);

/// Where this node keeps a fetched copy of `model`.
pub fn cache_dir(root: &Path, model: &ServedModel) -> PathBuf {
    root.join(&model.hash)
}

/// Reads `len` bytes at `offset` of artifact `file` of `model` held in `dir`: `(file length,
/// bytes)`. Only files the catalog names are served, so no other path can be asked for.
pub fn read_chunk(
    model: &ServedModel,
    dir: &Path,
    file: &str,
    offset: u64,
    len: u32,
) -> Result<(u64, Vec<u8>), ServingError> {
    let not_found = |why: String| ServingError::new(ErrorKind::NotFound, why);
    if !model.artifacts.contains_key(file) {
        return Err(not_found(format!(
            "{file} is not an artifact of {}",
            model.hash
        )));
    }
    let files = artifacts::files(dir).map_err(|e| not_found(e.to_string()))?;
    let path = files
        .get(file)
        .ok_or_else(|| not_found(format!("{file} is missing here")))?;
    let io = |e: std::io::Error| ServingError::new(ErrorKind::Internal, e.to_string());
    let mut f = std::fs::File::open(path).map_err(io)?;
    let total = f.metadata().map_err(io)?.len();
    let len = u64::from(len.min(MAX_ARTIFACT_CHUNK)).min(total.saturating_sub(offset));
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut bytes = vec![0u8; len as usize];
    f.read_exact(&mut bytes).map_err(io)?;
    Ok((total, bytes))
}

async fn fetch_file(
    transport: &MeshTransport,
    holder: &str,
    model: &ServedModel,
    file: &str,
    want: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let part = dir.join(format!(".{file}.part"));
    let mut out = std::fs::File::create(&part)?;
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0u64;
    loop {
        let request = Request {
            id: RequestId(rand::random()),
            body: RequestBody::FetchArtifact {
                model_hash: model.hash.clone(),
                file: file.to_string(),
                offset,
                len: MAX_ARTIFACT_CHUNK,
            },
        };
        let target = super::replica_id(holder, "artifacts");
        let response = transport
            .call(&target, request, CHUNK_DEADLINE)
            .await
            .map_err(|e| anyhow::anyhow!("{holder}: {e}"))?;
        let (total, bytes) = match response.body {
            Ok(ResponseBody::Artifact { total, bytes }) => (total, bytes),
            Ok(other) => anyhow::bail!("{holder} answered {other:?}"),
            Err(e) => anyhow::bail!("{holder}: {e}"),
        };
        anyhow::ensure!(
            !bytes.is_empty() || offset >= total,
            "{holder} sent no bytes at {offset} of {total}"
        );
        hasher.update(&bytes);
        out.write_all(&bytes)?;
        offset += bytes.len() as u64;
        if offset >= total {
            break;
        }
    }
    out.sync_all()?;
    let got = hasher.finalize().to_hex().to_string();
    anyhow::ensure!(
        got == want,
        "{file} from {holder} has blake3 {got}, the catalog says {want}"
    );
    std::fs::rename(&part, dir.join(file))?;
    Ok(())
}

/// The folder this node loads `model` from, fetching it from `holders` (the origin first) when
/// this node is not its origin and holds no verified copy.
pub async fn ensure_local(
    model: &ServedModel,
    me: &str,
    root: &Path,
    transport: &MeshTransport,
    holders: &[String],
) -> anyhow::Result<ServedModel> {
    if model.origin == me {
        return Ok(model.clone());
    }
    let dir = cache_dir(root, model);
    let mut local = model.clone();
    local.path = dir.clone();
    let check = local.clone();
    if tokio::task::spawn_blocking(move || artifacts::verify(&check))
        .await?
        .is_ok()
    {
        return Ok(local);
    }
    std::fs::create_dir_all(&dir)?;
    let mut order = vec![model.origin.clone()];
    order.extend(
        holders
            .iter()
            .filter(|h| **h != model.origin && *h != me)
            .cloned(),
    );
    let mut last = anyhow::anyhow!("no node holds {}", model.hash);
    for holder in &order {
        let mut ok = true;
        for (file, want) in &model.artifacts {
            if let Err(e) = fetch_file(transport, holder, model, file, want, &dir).await {
                warn!(model = %model.hash, %holder, error = %e, "artifact fetch failed");
                last = e;
                ok = false;
                break;
            }
        }
        if ok {
            info!(model = %model.hash, %holder, files = model.artifacts.len(), "artifacts fetched and verified");
            return Ok(local);
        }
    }
    Err(last)
}
