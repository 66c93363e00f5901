//! Model code on this node, shared by serving, training and the jobs that register models.
//! Nothing here imports from `serving` or `train`: both build on it.
//!
//! Files of model versions:
//! - [`files`]: [`files::ModelFiles`], this node's blob store, its transport to the peers'
//!   stores and the replication factor, in one value.
//! - [`artifacts`]: model versions registered from folders (blake3 per file), verified again
//!   before loading.
//! - [`blobs`]: the content-addressed store every model file lives in.
//! - [`blob_server`]: what peers may read from it (listed blobs, by hash only).
//! - [`fetch`]: blobs fetched from every node that holds them at once, verified by hash.
//! - [`replicate`]: every model version's files kept on more than one node.
//!
//! Models:
//! - [`classifier`]: a transformer classifier (what `train` jobs produce) saved as a kernels
//!   checkpoint, loaded for the dynamic batcher.
//! - [`embedder`]: BERT embeddings (mean pooling) for the dynamic batcher.
//! - [`gpt`]: a character-level GPT for the generation engine: a KV cache per sequence, every
//!   running sequence decoded in one forward.
//! - [`toy`]: the demo's tiny GPT, built and trained for a few steps on a corpus.
//! - [`build`]: the model a training run trains (a new character-level classifier, a Hugging
//!   Face BERT folder with a head, or a registered parent), as its trainers rebuild it.
//! - [`parent`]: the registered version a run fine-tunes, fetched and verified.
//! - [`gradient`]: [`gradient::ClassifierSource`], the trainers' gradient source on the kernels.
//! - [`evaluation`]: accuracy and macro-F1 of a classifier's parameters on labelled records.

pub mod artifacts;
pub mod blob_server;
pub mod blobs;
pub mod build;
pub mod classifier;
pub mod embedder;
pub mod evaluation;
pub mod fetch;
pub mod files;
pub mod gpt;
pub mod gradient;
pub mod parent;
pub mod replicate;
pub mod toy;
