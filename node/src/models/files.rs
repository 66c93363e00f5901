//! This node's model files and its way to the other nodes' ones: the content-addressed
//! [`BlobStore`], the transport that fetches blobs by hash from peers, and how many nodes keep
//! every model version's files. Serving, training and the job kinds that register models share
//! one [`ModelFiles`].

use std::sync::Arc;

use flotilla_actors::serving::remote::ServingTransport;
use flotilla_actors::serving::router::ReplicaId;

use super::blobs::BlobStore;

/// The pseudo-deployment a node's blob requests (`HeldBlobs`, `FetchBlob`) are addressed to.
const ARTIFACTS: &str = "artifacts";

/// Where a node answers blob requests.
pub fn artifacts_endpoint(node: &str) -> ReplicaId {
    ReplicaId::on(node, ARTIFACTS)
}

/// This node's model files, and the peers' within reach.
#[derive(Clone)]
pub struct ModelFiles {
    /// This node's id.
    pub me: String,
    /// Every model file this node holds, by content hash.
    pub blobs: Arc<BlobStore>,
    /// How this node reaches peers for their blobs.
    pub transport: Arc<dyn ServingTransport>,
    /// How many nodes hold every model version's files.
    pub replication: usize,
}

impl std::fmt::Debug for ModelFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFiles")
            .field("me", &self.me)
            .field("replication", &self.replication)
            .finish()
    }
}
