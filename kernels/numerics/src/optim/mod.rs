//! Optimizers and training numerics on flat `f32` buffers.
//!
//! Parameter servers hold a model as one flat `f32` vector (or a range of it) and receive
//! gradients as one flat `f32` vector of the same length; everything here works on that contract:
//! `&mut [f32]` parameters and `&[f32]` gradients.
//!
//! - [`AdamW`] (decoupled weight decay, bias correction; PyTorch's `torch.optim.AdamW`) and
//!   [`Sgd`] (momentum, dampening, Nesterov, coupled weight decay; PyTorch's `torch.optim.SGD`).
//!   Both implement [`Optimizer`] and are built from an [`OptimizerConfig`]; their state ([`OptimizerState`]) is serialisable and can be
//!   exported as named tensors for a checkpoint.
//! - [`Schedule`]: linear warmup, then cosine or linear decay to a floor.
//! - [`GradClipper`]: clipping by global norm with an adaptive threshold (a percentile of recent
//!   norms times a factor, optionally capped by a fixed maximum).
//! - [`LossScaler`]: dynamic loss scaling for mixed precision (growth interval, back-off, skipped
//!   steps on inf/NaN), with the semantics of PyTorch's `GradScaler`.
//! - [`precision`]: f16/bf16 conversion of flat buffers.
//!
//! A typical server step with mixed precision: unscale (and skip the step on overflow), clip the
//! true gradients, then update at the scheduled rate:
//! ```
//! use flotilla_numerics::optim::{
//!     AdamWConfig, ClipConfig, GradClipper, LossScaler, OptimizerConfig, ScalerConfig,
//!     ScalerStep, Schedule,
//! };
//! let mut params = vec![0.5f32; 8];
//! let mut opt = OptimizerConfig::AdamW(AdamWConfig::default()).build(params.len())?;
//! let mut scaler = LossScaler::new(ScalerConfig::default())?;
//! let mut clip = GradClipper::new(ClipConfig::default())?;
//! let sched = Schedule::warmup_cosine(1e-3, 10, 100, 1e-5)?;
//! // Gradients of the loss multiplied by `scaler.scale()`, summed over workers.
//! let mut grads = vec![0.1 * scaler.scale(); 8];
//! if scaler.unscale_and_update(&mut grads) == ScalerStep::Apply {
//!     clip.clip(&mut grads)?;
//!     opt.step(&mut params, &grads, sched.lr_at(opt.steps_taken()))?;
//! }
//! assert_eq!(opt.steps_taken(), 1);
//! # Ok::<(), flotilla_numerics::Error>(())
//! ```

mod adamw;
mod clip;
mod scaler;
mod schedule;
mod sgd;
mod state;

pub mod precision;

pub use adamw::AdamWScalars;
pub use adamw::{AdamW, AdamWConfig};
pub use clip::{global_norm, ClipConfig, ClipReport, GradClipper};
pub use scaler::{LossScaler, ScalerConfig, ScalerStep};
pub use schedule::{Decay, Schedule};
pub use sgd::{Sgd, SgdConfig};
pub use state::{Optimizer, OptimizerConfig, OptimizerState};
