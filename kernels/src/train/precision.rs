//! Mixed precision: compute in f16 or bf16, keep f32 master weights, scale the loss.
//!
//! On the CPU there are no half-precision GEMMs worth having, so "compute in half" means: the
//! weights the step sees are the master weights rounded to the half type, and the gradient of
//! the logits is scaled by the loss scale before the backward, then the gradients are unscaled
//! (and checked for inf/NaN) by the numerics module's [`LossScaler`]. This reproduces the
//! numerical effect of a half-precision step (rounded weights, scaled gradients, skipped steps
//! on overflow) on the same code path the GPU version will use; it is not faster on a CPU.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::models::{Batch, Loss, Transformer};
use crate::optim::precision::{round_through_bf16, round_through_f16};
use crate::optim::{LossScaler, ScalerStep};

/// Compute precision of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Plain f32.
    #[default]
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

/// The result of one mixed-precision step.
#[derive(Debug, Clone)]
pub struct MixedStep {
    /// Unscaled loss.
    pub loss: f32,
    /// Unscaled f32 gradients; `None` when they overflowed and the step must be skipped.
    pub grads: Option<Vec<f32>>,
    /// The loss scale used for this step.
    pub scale: f32,
}

/// Loss and gradients with `precision` compute: rounds a copy of the master weights to the half
/// type, scales the backward by the scaler's current scale, then unscales and updates the scaler.
pub fn loss_and_grads_mixed(
    model: &Transformer,
    batch: &Batch,
    loss: &Loss<'_>,
    precision: Precision,
    scaler: &mut LossScaler,
) -> Result<MixedStep> {
    if precision == Precision::F32 {
        let (l, g) = model.loss_and_grads_with(batch, loss)?;
        return Ok(MixedStep {
            loss: l,
            grads: Some(g),
            scale: 1.0,
        });
    }
    let mut half = model.clone();
    match precision {
        Precision::F16 => round_through_f16(half.params_mut()),
        Precision::Bf16 => round_through_bf16(half.params_mut()),
        Precision::F32 => {}
    }
    let scale = scaler.scale();
    let (l, mut grads) = half.loss_and_grads_scaled(batch, loss, scale)?;
    // Gradients of a half-precision step are themselves half values.
    match precision {
        Precision::F16 => round_through_f16(&mut grads),
        Precision::Bf16 => round_through_bf16(&mut grads),
        Precision::F32 => {}
    }
    let step = scaler.unscale_and_update(&mut grads);
    Ok(MixedStep {
        loss: l,
        grads: matches!(step, ScalerStep::Apply).then_some(grads),
        scale,
    })
}
