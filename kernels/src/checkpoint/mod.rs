//! Checkpoints: weights and optimizer state as safetensors, plus a JSON manifest.
//!
//! A checkpoint is a directory:
//!
//! ```text
//! model.safetensors       weights
//! optimizer.safetensors   optimizer state tensors (absent when there are none)
//! tokenizer.json          (any name) a copy of the tokenizer file, optional
//! manifest.json           step, model config, file names, size + blake3 of every other file
//! ```
//!
//! Every file is written atomically (temporary file, `fsync`, rename, `fsync` of the directory),
//! and the manifest last: it is the commit record. Rewriting a checkpoint first removes the old
//! manifest, so a crash mid-write leaves a directory that fails to load rather than a mix of old
//! and new files that loads. Loading checks each file's size and blake3 hash against the manifest
//! (a truncated or corrupt file is an error naming it), and [`load_checked`] also checks tensor
//! names, shapes and dtypes against an expected list (a mismatch is an error naming the tensor).
//! Optimizer state goes in with [`Checkpoint::set_optimizer_state`] and comes back with
//! [`Checkpoint::optimizer_state`].
//!
//! ```
//! use flotilla_kernels::checkpoint::{self, Checkpoint, Tensor};
//! let dir = tempfile::tempdir()?;
//! let mut ck = Checkpoint::new(7, serde_json::json!({"hidden": 4}));
//! ck.weights.insert("w".into(), Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0])?);
//! checkpoint::save(dir.path(), &ck)?;
//! let back = checkpoint::load(dir.path())?;
//! assert_eq!(back.step, 7);
//! assert_eq!(back.weights["w"].to_f32()?, vec![1.0, 2.0, 3.0, 4.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod io;
mod manifest;
mod tensor;

use std::collections::BTreeMap;
use std::path::Path;

pub use manifest::{FileEntry, Manifest, MANIFEST_FILE, OPTIMIZER_FILE, WEIGHTS_FILE};
pub use tensor::{DType, Tensor, TensorSpec};

use crate::error::{Error, Result};
use crate::optim::OptimizerState;

/// Everything a checkpoint holds, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Training step at which it was taken.
    pub step: u64,
    /// The model's configuration (whatever the model serialises).
    pub model_config: serde_json::Value,
    /// Weights by name.
    pub weights: BTreeMap<String, Tensor>,
    /// Optimizer state tensors by name (e.g. `adamw.m`, `adamw.v`); see
    /// [`Checkpoint::set_optimizer_state`].
    pub optimizer: BTreeMap<String, Tensor>,
    /// The optimizer's step count, when its state is stored.
    pub optimizer_step: Option<u64>,
    /// A tokenizer file: its name in the checkpoint and its bytes.
    pub tokenizer: Option<(String, Vec<u8>)>,
    /// Anything else to keep with the step: optimizer scalars, data cursors, RNG seeds.
    pub extra: serde_json::Value,
}

impl Checkpoint {
    /// An empty checkpoint at `step`.
    pub fn new(step: u64, model_config: serde_json::Value) -> Self {
        Checkpoint {
            step,
            model_config,
            weights: BTreeMap::new(),
            optimizer: BTreeMap::new(),
            optimizer_step: None,
            tokenizer: None,
            extra: serde_json::Value::Null,
        }
    }

    /// Stores an optimizer's state: its buffers become the optimizer tensors (replacing any),
    /// its step count goes into the manifest.
    pub fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.optimizer.clear();
        for (name, data) in state.tensors() {
            self.optimizer
                .insert(name.to_string(), Tensor::from_f32(vec![data.len()], data)?);
        }
        self.optimizer_step = Some(state.step());
        Ok(())
    }

    /// The optimizer state stored by [`Checkpoint::set_optimizer_state`], if any. The kind is
    /// recognised from the tensor names.
    pub fn optimizer_state(&self) -> Result<Option<OptimizerState>> {
        let Some(step) = self.optimizer_step else {
            return Ok(None);
        };
        let get = |name: &str| -> Result<Vec<f32>> {
            self.optimizer
                .get(name)
                .ok_or_else(|| Error::TensorMismatch {
                    name: name.into(),
                    reason: "missing from the optimizer state".into(),
                })?
                .to_f32()
        };
        if self.optimizer.contains_key("sgd.momentum") {
            return Ok(Some(OptimizerState::Sgd {
                step,
                momentum: get("sgd.momentum")?,
            }));
        }
        OptimizerState::adamw_from_tensors(step, get("adamw.m")?, get("adamw.v")?)
            .map(Some)
            .map_err(Error::from)
    }
}

/// Writes `ck` into `dir` (created if needed) and returns the manifest written.
pub fn save(dir: &Path, ck: &Checkpoint) -> Result<Manifest> {
    if ck.weights.is_empty() {
        return Err(Error::Empty("checkpoint weights"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    io::remove_manifest(dir)?;

    let mut files = BTreeMap::new();
    let weights = tensor::serialize(&ck.weights)?;
    files.insert(
        WEIGHTS_FILE.to_string(),
        io::write_atomic(dir, WEIGHTS_FILE, &weights)?,
    );
    drop(weights);
    let optimizer_file = if ck.optimizer.is_empty() {
        None
    } else {
        let bytes = tensor::serialize(&ck.optimizer)?;
        files.insert(
            OPTIMIZER_FILE.to_string(),
            io::write_atomic(dir, OPTIMIZER_FILE, &bytes)?,
        );
        Some(OPTIMIZER_FILE.to_string())
    };
    let tokenizer = match &ck.tokenizer {
        Some((name, bytes)) => {
            manifest::check_file_name(name)?;
            files.insert(name.clone(), io::write_atomic(dir, name, bytes)?);
            Some(name.clone())
        }
        None => None,
    };
    let manifest = Manifest {
        format: manifest::FORMAT.to_string(),
        version: manifest::VERSION,
        step: ck.step,
        model_config: ck.model_config.clone(),
        weights_file: WEIGHTS_FILE.to_string(),
        optimizer_file,
        optimizer_step: ck.optimizer_step,
        tokenizer,
        extra: ck.extra.clone(),
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Serde(e.to_string()))?;
    io::write_atomic(dir, MANIFEST_FILE, &json)?;
    Ok(manifest)
}

/// Reads the manifest and checks every file it lists (size, then blake3), without parsing tensors.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let manifest = manifest::read(dir)?;
    for (name, entry) in &manifest.files {
        io::read_verified(dir, name, entry)?;
    }
    Ok(manifest)
}

/// Loads and verifies a checkpoint.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let manifest = manifest::read(dir)?;
    let entry = |name: &str| {
        manifest.files.get(name).ok_or_else(|| Error::CorruptFile {
            file: MANIFEST_FILE.into(),
            reason: format!("lists {name} but has no size/hash entry for it"),
        })
    };
    // Verify every listed file, including ones this version does not read.
    for (name, e) in &manifest.files {
        if name != &manifest.weights_file
            && Some(name) != manifest.optimizer_file.as_ref()
            && Some(name) != manifest.tokenizer.as_ref()
        {
            io::read_verified(dir, name, e)?;
        }
    }
    let bytes = io::read_verified(dir, &manifest.weights_file, entry(&manifest.weights_file)?)?;
    let weights = tensor::deserialize(&manifest.weights_file, &bytes)?;
    drop(bytes);
    let optimizer = match &manifest.optimizer_file {
        Some(f) => tensor::deserialize(f, &io::read_verified(dir, f, entry(f)?)?)?,
        None => BTreeMap::new(),
    };
    let tokenizer = match &manifest.tokenizer {
        Some(f) => Some((f.clone(), io::read_verified(dir, f, entry(f)?)?)),
        None => None,
    };
    Ok(Checkpoint {
        step: manifest.step,
        model_config: manifest.model_config,
        weights,
        optimizer,
        optimizer_step: manifest.optimizer_step,
        tokenizer,
        extra: manifest.extra,
    })
}

/// Loads a checkpoint and checks that its weights are exactly `expected`: every expected tensor
/// present with its shape and dtype, and no others. The error names the first offending tensor.
pub fn load_checked(dir: &Path, expected: &[TensorSpec]) -> Result<Checkpoint> {
    let ck = load(dir)?;
    check_tensors(&ck.weights, expected)?;
    Ok(ck)
}

/// Checks a set of named tensors against an expected list (see [`load_checked`]).
pub fn check_tensors(tensors: &BTreeMap<String, Tensor>, expected: &[TensorSpec]) -> Result<()> {
    let mismatch = |name: &str, reason: String| Error::TensorMismatch {
        name: name.into(),
        reason,
    };
    for spec in expected {
        let t = tensors
            .get(&spec.name)
            .ok_or_else(|| mismatch(&spec.name, "missing from the checkpoint".into()))?;
        if t.dtype() != spec.dtype {
            return Err(mismatch(
                &spec.name,
                format!("dtype {:?}, expected {:?}", t.dtype(), spec.dtype),
            ));
        }
        if t.shape() != spec.shape.as_slice() {
            return Err(mismatch(
                &spec.name,
                format!("shape {:?}, expected {:?}", t.shape(), spec.shape),
            ));
        }
    }
    if let Some(extra) = tensors
        .keys()
        .find(|k| !expected.iter().any(|s| &s.name == *k))
    {
        return Err(mismatch(extra, "not expected by the model".into()));
    }
    Ok(())
}
