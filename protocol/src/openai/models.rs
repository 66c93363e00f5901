//! `GET /v1/models`.

use serde::{Deserialize, Serialize};

/// The list of served models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// One served model: a deployment name, or `<model>` aliases the node resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub owned_by: String,
}

impl ModelList {
    /// A list of the given models, owned by `flotilla`.
    pub fn new(models: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self {
            object: "list".to_string(),
            data: models
                .into_iter()
                .map(|(id, created)| ModelCard {
                    id,
                    object: "model".to_string(),
                    created,
                    owned_by: "flotilla".to_string(),
                })
                .collect(),
        }
    }
}
