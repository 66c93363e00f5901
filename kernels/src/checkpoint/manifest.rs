//! The checkpoint manifest: what the checkpoint holds and the size and blake3 hash of every file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Name of the manifest file.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Name of the weights file.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the optimizer state file.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub(crate) const FORMAT: &str = "flotilla-checkpoint";
pub(crate) const VERSION: u32 = 1;
/// A manifest is small (configs and hashes); anything bigger is not one.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Size and hash of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Length in bytes.
    pub bytes: u64,
    /// blake3 of the content, lowercase hex.
    pub blake3: String,
}

/// The manifest, `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `flotilla-checkpoint`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Training step.
    pub step: u64,
    /// Model configuration.
    pub model_config: serde_json::Value,
    /// The weights file's name.
    pub weights_file: String,
    /// The optimizer state file's name, if any.
    pub optimizer_file: Option<String>,
    /// The optimizer's step count, if its state is stored.
    #[serde(default)]
    pub optimizer_step: Option<u64>,
    /// The tokenizer file's name, if any.
    pub tokenizer: Option<String>,
    /// Free-form extra state.
    pub extra: serde_json::Value,
    /// Every other file of the checkpoint with its size and hash.
    pub files: BTreeMap<String, FileEntry>,
}

/// Rejects names that would leave the checkpoint directory or clash with the manifest.
pub(crate) fn check_file_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.contains('/')
        || name.contains('\\')
        || name.starts_with('.')
        || name == MANIFEST_FILE;
    if bad {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is not a valid checkpoint file name"
        )));
    }
    Ok(())
}

/// Reads and validates `manifest.json` in `dir`.
pub(crate) fn read(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(&path, e))?;
    parse(&bytes)
}

/// Parses and validates the bytes of a `manifest.json`: at most 64 MiB, this format and
/// version, and only valid file names.
pub(crate) fn parse(bytes: &[u8]) -> Result<Manifest> {
    let corrupt = |reason: String| Error::CorruptFile {
        file: MANIFEST_FILE.into(),
        reason,
    };
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(corrupt(format!("larger than {MAX_MANIFEST_BYTES} bytes")));
    }
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if m.format != FORMAT || m.version != VERSION {
        return Err(corrupt(format!(
            "format {} version {} is not {FORMAT} {VERSION}",
            m.format, m.version
        )));
    }
    for name in m.files.keys() {
        check_file_name(name)
            .map_err(|_| corrupt(format!("lists an invalid file name {name:?}")))?;
    }
    Ok(m)
}
