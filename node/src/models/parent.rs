//! The registered model version a training run fine-tunes (`model.registered = "name@version"`):
//! found in the catalog, its files fetched from a node that holds them (checked against the
//! catalog's blake3 hashes) into this node's model cache, and read as one of the two kinds a
//! classifier can start from.

use std::path::PathBuf;

use flotilla_protocol::catalog::{CatalogKey, Entry, ModelVersion, Record};
use flotilla_protocol::training::Versioned;

use super::artifacts::{self, ModelKind, ServedModel};
use super::files::ModelFiles;

/// A registered version, as a local folder of verified files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// A classifier a `train` job registered: its encoder, tokenizer and (when the labels are
    /// the same) its head carry on.
    Classifier(PathBuf),
    /// A registered Hugging Face BERT folder: fine-tuned like `model.hf_folder`.
    BertFolder(PathBuf),
}

/// Why a registered version cannot be fine-tuned, or `None` when it can: kept beside
/// [`resolve`] so the submission check and the coordinator agree.
pub fn unsupported(name: &str, record: &ModelVersion) -> Option<String> {
    match ServedModel::from_record(record).map(|m| m.kind) {
        Some(ModelKind::Classifier | ModelKind::Embedding) => None,
        Some(ModelKind::Generation) => Some(format!(
            "{name} is a generation model; a classifier or a BERT embedding model can be \
             fine-tuned into a classifier"
        )),
        None => Some(format!(
            "{name} has no registered model files to start from"
        )),
    }
}

/// The catalog record of `name@version`.
pub async fn record(
    catalog: &flotilla_actors::catalog::Handle,
    name_at_version: &str,
) -> Result<ModelVersion, String> {
    let v = Versioned::parse(name_at_version).map_err(|e| format!("model.registered: {e}"))?;
    match catalog
        .get(CatalogKey::model(&v.name, v.version))
        .await
        .map_err(|e| e.to_string())?
    {
        Some(Entry::Register(r)) => match r.value {
            Some(Record::Model(m)) => Ok(m),
            _ => Err(format!("model version {name_at_version} was deleted")),
        },
        _ => Err(format!("no model version {name_at_version} in the catalog")),
    }
}

/// Fetches `name@version` to this node (unless it holds a verified copy, or from the `peers`
/// that hold it) and says what it is.
pub async fn resolve(
    catalog: &flotilla_actors::catalog::Handle,
    files: &ModelFiles,
    peers: &[String],
    name_at_version: &str,
) -> Result<Parent, String> {
    let m = record(catalog, name_at_version).await?;
    if let Some(why) = unsupported(name_at_version, &m) {
        return Err(why);
    }
    let served = ServedModel::from_record(&m)
        .ok_or_else(|| format!("{name_at_version} has no registered model files"))?;
    let local = super::fetch::ensure_local(&served, &files.blobs, &*files.transport, peers)
        .await
        .map_err(|e| format!("fetching {name_at_version}: {e}"))?;
    // The files are checked here too (the view links the store's blobs), so a file changed
    // since registration is refused rather than trained from.
    let check = local.clone();
    tokio::task::spawn_blocking(move || artifacts::verify(&check))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{name_at_version}: {e}"))?;
    Ok(match local.kind {
        ModelKind::Classifier => Parent::Classifier(local.path),
        _ => Parent::BertFolder(local.path),
    })
}
