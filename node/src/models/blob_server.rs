//! What peers may read from this node's artifact store: a blob only while a live model version
//! in this node's catalog lists it, and only once its bytes still hash to its name. A request
//! names a hash, never a path, so nothing outside the store (the identity key, the swarm key,
//! the API token, the database) can be asked for.

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla_actors::catalog;
use flotilla_protocol::catalog::{Entry, Record, RecordKind};
use flotilla_protocol::services::serving::{ErrorKind, ServingError, MAX_ARTIFACT_CHUNK};
use tracing::warn;

use super::blobs::{BlobError, BlobStore};

/// Serves blobs of the store that the catalog lists.
#[derive(Debug)]
pub struct BlobServer {
    pub store: Arc<BlobStore>,
    pub catalog: catalog::Handle,
}

impl BlobServer {
    /// Every blob hash a live model version lists.
    async fn listed(&self) -> Result<BTreeSet<String>, ServingError> {
        let entries = self
            .catalog
            .list(Some(RecordKind::Model))
            .await
            .map_err(|e| ServingError::new(ErrorKind::Unavailable, e.to_string()))?;
        Ok(entries
            .into_iter()
            .filter_map(|(_, e)| match e {
                Entry::Register(r) => match r.value {
                    Some(Record::Model(m)) => Some(m.artifact_hashes.into_values()),
                    _ => None,
                },
                Entry::Job(_) => None,
            })
            .flatten()
            .collect())
    }

    /// Bytes `offset .. offset + len` of `blob`: `(blob length, bytes)`.
    pub async fn read(
        &self,
        blob: &str,
        offset: u64,
        len: u32,
    ) -> Result<(u64, Vec<u8>), ServingError> {
        if !self.listed().await?.contains(blob) {
            return Err(ServingError::new(
                ErrorKind::NotFound,
                format!(
                    "{} is not an artifact of a live model version",
                    blob.chars().take(80).collect::<String>()
                ),
            ));
        }
        let (store, blob) = (self.store.clone(), blob.to_string());
        let len = len.min(MAX_ARTIFACT_CHUNK);
        tokio::task::spawn_blocking(move || store.read(&blob, offset, len))
            .await
            .map_err(|e| ServingError::new(ErrorKind::Internal, e.to_string()))?
            .map_err(|e| {
                if let BlobError::Damaged { .. } = e {
                    // Refuse it, and say so loudly: this node's copy is not what was registered.
                    warn!(error = %e, "a stored artifact is damaged; it is not served");
                }
                to_serving(e)
            })
    }

    /// Which of `blobs` this node holds and may serve (listed, present and not known damaged).
    pub async fn held(&self, blobs: &[String]) -> Vec<String> {
        let Ok(listed) = self.listed().await else {
            return Vec::new();
        };
        let (store, asked): (Arc<BlobStore>, Vec<String>) = (
            self.store.clone(),
            blobs
                .iter()
                .filter(|b| listed.contains(*b))
                .cloned()
                .collect(),
        );
        tokio::task::spawn_blocking(move || {
            asked
                .into_iter()
                .filter(|b| store.contains(b) && store.verify(b).is_ok())
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}

fn to_serving(e: BlobError) -> ServingError {
    let kind = match &e {
        BlobError::BadHash(_) => ErrorKind::BadRequest,
        BlobError::Missing(_) | BlobError::Damaged { .. } => ErrorKind::NotFound,
        BlobError::TooLarge { .. } | BlobError::Io { .. } => ErrorKind::Internal,
    };
    ServingError::new(kind, e.to_string())
}
