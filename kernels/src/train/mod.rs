//! Training helpers on top of the models' flat-vector contract.
//!
//! - [`decay_ranges`] / [`apply_weight_decay`]: decoupled weight decay on matrices and
//!   embeddings only (not biases or layer-norm gains), as GPT-2/nanoGPT and BERT fine-tuning do;
//!   run the optimizer with `weight_decay: 0` and call this beside it.
//! - [`precision`]: mixed-precision steps (f16/bf16 compute, f32 master weights, loss scaling).

pub mod precision;

use crate::models::Layout;

/// Flat ranges of the tensors with two or more dimensions.
pub fn decay_ranges(layout: &Layout) -> Vec<std::ops::Range<usize>> {
    layout
        .entries()
        .iter()
        .filter(|e| e.shape.len() >= 2)
        .map(|e| e.offset..e.offset + e.len())
        .collect()
}

/// `p -= lr · wd · p` on the given ranges (AdamW's decoupled decay).
pub fn apply_weight_decay(params: &mut [f32], ranges: &[std::ops::Range<usize>], lr: f32, wd: f32) {
    let f = 1.0 - lr * wd;
    for r in ranges {
        for p in &mut params[r.clone()] {
            *p *= f;
        }
    }
}
