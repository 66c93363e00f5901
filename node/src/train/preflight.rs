//! Checks, before anything is spawned, that a run's parameter-server shards fit the mesh's
//! frames: a shard starts from its range of the initial parameters sent in one spawn request,
//! and each checkpoint moves a shard's state (parameters and optimizer moments) as one blob in
//! one request. A run whose shards are too large is refused with the number of shards it needs,
//! rather than failing at its first spawn or losing every checkpoint.

use flotilla_protocol::services::training::MAX_RANGE_VALUES;
use flotilla_protocol::training::OptimizerKind;

/// The most bytes of parameters or state one request may carry (a frame less its envelope).
pub const MAX_SHARD_BLOB_BYTES: u64 = MAX_RANGE_VALUES as u64 * 4;

/// Bytes of optimizer state per parameter in a checkpoint: AdamW keeps two moments, SGD one
/// velocity (all f32).
fn state_bytes_per_param(optimizer: OptimizerKind) -> u64 {
    match optimizer {
        OptimizerKind::Adamw => 8,
        OptimizerKind::Sgd => 4,
    }
}

/// Refuses `total` parameters over `shards` shards when a shard's initial range, or (with
/// checkpoints, `save_every > 0`) its checkpoint blob, would not fit one request.
pub fn check_shard_sizes(
    total: usize,
    shards: usize,
    optimizer: OptimizerKind,
    save_every: u64,
) -> Result<(), String> {
    let shards = shards.max(1) as u64;
    let largest = (total as u64).div_ceil(shards);
    let mut per_param = 4;
    let mut what = "its initial parameters";
    if save_every > 0 {
        per_param += state_bytes_per_param(optimizer);
        what = "its checkpoint (parameters and optimizer state)";
    }
    let bytes = largest * per_param;
    if bytes <= MAX_SHARD_BLOB_BYTES {
        return Ok(());
    }
    let needed = (total as u64 * per_param).div_ceil(MAX_SHARD_BLOB_BYTES);
    Err(format!(
        "a parameter-server shard of this run holds {largest} parameters and {what} is {} MiB, \
         over the {} MiB one request between nodes carries: set cluster.ps_shards to at least \
         {needed}{}",
        bytes >> 20,
        MAX_SHARD_BLOB_BYTES >> 20,
        if save_every > 0 {
            " (or args.save_every = 0 to train without checkpoints)"
        } else {
            ""
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// all-MiniLM-L6-v2 with a 77-class head.
    const MINILM: usize = 22_713_216 + 384 * 77 + 77;

    #[test]
    fn minilm_with_adamw_checkpoints_needs_more_than_one_shard() {
        let e = check_shard_sizes(MINILM, 1, OptimizerKind::Adamw, 10).unwrap_err();
        assert!(e.contains("cluster.ps_shards to at least 5"), "{e}");
        assert!(e.contains("save_every = 0"), "{e}");
        // Without checkpoints one shard's 91 MB of parameters still do not fit a spawn.
        let e = check_shard_sizes(MINILM, 1, OptimizerKind::Adamw, 0).unwrap_err();
        assert!(e.contains("at least 2"), "{e}");
        assert!(check_shard_sizes(MINILM, 5, OptimizerKind::Adamw, 10).is_ok());
        assert!(check_shard_sizes(MINILM, 2, OptimizerKind::Adamw, 0).is_ok());
    }

    #[test]
    fn sgd_state_is_half_of_adamw() {
        assert!(check_shard_sizes(MINILM, 4, OptimizerKind::Sgd, 10).is_ok());
        assert!(check_shard_sizes(MINILM, 4, OptimizerKind::Adamw, 10).is_err());
    }
}
