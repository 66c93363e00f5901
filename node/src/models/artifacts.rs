//! Model versions from folders: registering a folder copies every file into the node's
//! content-addressed [`BlobStore`] and records its blake3 hash, its size and what the replica
//! needs to know about the model (its kind and limits). A record names no path: each node
//! loads a version from its own store (see [`super::fetch`]), and loading checks every hash
//! again before a byte of the model is used, so a replica never serves a file that differs
//! from the one registered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flotilla_protocol::catalog::{Lineage, ModelVersion};
use flotilla_protocol::openai::ModelLimits;

use super::blobs::{BlobStore, MAX_BLOB_BYTES};

/// Metadata keys of a served model version.
pub const META_KIND: &str = "serving.kind";
pub const META_CONTEXT: &str = "serving.context_length";
pub const META_DIM: &str = "serving.embedding_dim";
/// Artifact name → size in bytes (JSON): a fetch refuses a blob of any other length.
pub const META_SIZES: &str = "serving.sizes";
/// The node that registered the version (the first to hold its files).
pub const META_ORIGIN: &str = "serving.origin";

/// What a model version is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A Hugging Face BERT folder answering `/v1/embeddings` (mean pooling).
    Embedding,
    /// A kernels checkpoint of a character-level GPT answering completions and chat.
    Generation,
    /// A kernels checkpoint of a character-level encoder classifier (what `train` jobs
    /// produce) answering `/api/v1/classify`.
    Classifier,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Embedding => "embedding",
            ModelKind::Generation => "generation",
            ModelKind::Classifier => "classifier",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "embedding" => Some(ModelKind::Embedding),
            "generation" => Some(ModelKind::Generation),
            "classifier" => Some(ModelKind::Classifier),
            _ => None,
        }
    }
}

/// What serving needs from a model version record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    pub kind: ModelKind,
    /// This node's folder of the version's files once they are local (a view of its artifact
    /// store); empty for a version only read from the catalog.
    pub path: PathBuf,
    pub limits: ModelLimits,
    /// Identifies the version's bytes: blake3 over its sorted artifact hashes.
    pub hash: String,
    pub artifacts: BTreeMap<String, String>,
    /// Artifact name → size in bytes, as registered (absent for records without sizes).
    pub sizes: BTreeMap<String, u64>,
    pub created_at_ms: u64,
    /// The node that registered it.
    pub origin: String,
}

impl ServedModel {
    /// Reads the serving fields of a model version; `None` for versions not registered for
    /// serving.
    pub fn from_record(m: &ModelVersion) -> Option<Self> {
        let kind = ModelKind::parse(m.metadata.get(META_KIND)?)?;
        let context_length = m.metadata.get(META_CONTEXT)?.parse().ok()?;
        let embedding_dim = m.metadata.get(META_DIM).and_then(|d| d.parse().ok());
        Some(Self {
            name: m.name.clone(),
            version: m.version,
            kind,
            path: PathBuf::new(),
            limits: ModelLimits {
                context_length,
                max_inputs: 256,
                embedding_dim,
            },
            hash: version_hash(&m.artifact_hashes),
            artifacts: m.artifact_hashes.clone(),
            sizes: m
                .metadata
                .get(META_SIZES)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            created_at_ms: m.created_at_ms,
            origin: m.metadata.get(META_ORIGIN).cloned().unwrap_or_default(),
        })
    }
}

/// The version a new registration of model `name` gets: one past the highest in `catalog`.
/// Chosen at request time, so two concurrent registrations of one name can collide.
pub async fn next_version(
    catalog: &flotilla_actors::catalog::Handle,
    name: &str,
) -> anyhow::Result<u64> {
    use flotilla_protocol::catalog::{Entry, Record, RecordKind};
    let latest = catalog
        .list(Some(RecordKind::Model))
        .await?
        .into_iter()
        .filter_map(|(_, e)| match e {
            Entry::Register(r) => match r.value {
                Some(Record::Model(m)) if m.name == name => Some(m.version),
                _ => None,
            },
            Entry::Job(_) => None,
        })
        .max()
        .unwrap_or(0);
    Ok(latest + 1)
}

/// blake3 over `name\0hash\n` of every artifact in name order.
pub fn version_hash(artifacts: &BTreeMap<String, String>) -> String {
    let mut h = blake3::Hasher::new();
    for (name, hash) in artifacts {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(hash.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

fn hash_file(path: &Path) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)?.len();
    anyhow::ensure!(
        len <= MAX_BLOB_BYTES,
        "{} is {len} bytes; at most {MAX_BLOB_BYTES} are served",
        path.display()
    );
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Every regular file of `dir` (one level of subfolders, as Hugging Face folders have), by its
/// path relative to `dir` with `/` turned into `.` (catalog names cannot hold `/`).
pub fn files(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        // Dot files are partial downloads; the README is documentation, not the model.
        if name.starts_with('.') || name == "README.md" {
            continue;
        }
        if p.is_file() {
            out.insert(name, p);
        } else if p.is_dir() {
            for f in std::fs::read_dir(&p)? {
                let f = f?;
                if f.path().is_file() {
                    let sub = f.file_name().to_string_lossy().to_string();
                    out.insert(format!("{name}.{sub}"), f.path());
                }
            }
        }
    }
    anyhow::ensure!(!out.is_empty(), "{} holds no files", dir.display());
    Ok(out)
}

/// Copies `dir`'s files into `store`, checks the model loads, and builds the version record.
/// Errors name the folder only by what the caller gave, never by another path of the node.
pub fn register_folder(
    name: &str,
    version: u64,
    dir: &Path,
    origin: &str,
    store: &BlobStore,
) -> anyhow::Result<ModelVersion> {
    let dir = dir.canonicalize()?;
    let files = files(&dir)?;
    let mut hashes = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    for (n, p) in &files {
        let hash = store.import(p)?;
        sizes.insert(n.clone(), std::fs::metadata(p)?.len());
        hashes.insert(n.clone(), hash);
    }
    let (kind, context, dim) = if dir.join("config.json").is_file() {
        let cfg = flotilla_kernels::models::bert::read_config(
            &dir,
            flotilla_kernels::models::Head::Embedding {
                pooling: flotilla_kernels::models::Pooling::Mean,
            },
        )?;
        (ModelKind::Embedding, cfg.context, Some(cfg.width))
    } else {
        let ck = flotilla_kernels::checkpoint::load(&dir)?;
        match super::classifier::classifier_config(&ck.model_config) {
            Some(c) => (ModelKind::Classifier, c.transformer.context, None),
            None => {
                let cfg = super::gpt::read_config(&dir)?;
                (ModelKind::Generation, cfg.context, None)
            }
        }
    };
    let mut metadata = BTreeMap::new();
    metadata.insert(META_KIND.to_string(), kind.as_str().to_string());
    metadata.insert(META_SIZES.to_string(), serde_json::to_string(&sizes)?);
    metadata.insert(META_CONTEXT.to_string(), context.to_string());
    metadata.insert(META_ORIGIN.to_string(), origin.to_string());
    if let Some(d) = dim {
        metadata.insert(META_DIM.to_string(), d.to_string());
    }
    let record = ModelVersion {
        name: name.to_string(),
        version,
        metadata,
        artifact_hashes: hashes,
        lineage: Lineage {
            parent_version: None,
            operation: "upload".to_string(),
            parameters: BTreeMap::new(),
        },
        created_at_ms: flotilla_actors::clock::wall_ms(),
    };
    record
        .validate()
        .map_err(|e| anyhow::anyhow!("model version record: {e:?}"))?;
    Ok(record)
}

/// Checks every artifact of `model` in its folder against the registered hash.
pub fn verify(model: &ServedModel) -> anyhow::Result<()> {
    let files = files(&model.path)?;
    for (name, want) in &model.artifacts {
        let path = files.get(name).ok_or_else(|| {
            anyhow::anyhow!(
                "artifact {name} of {}@{} is missing from {}",
                model.name,
                model.version,
                model.path.display()
            )
        })?;
        let got = hash_file(path)?;
        anyhow::ensure!(
            &got == want,
            "artifact {name} of {}@{} has blake3 {got}, the catalog says {want}",
            model.name,
            model.version
        );
    }
    Ok(())
}
