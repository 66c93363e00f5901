//! Flotilla's numerics on flat `f32` buffers, shared by the distributed path and the
//! single-process one.
//!
//! - [`optim`]: AdamW and SGD, learning-rate schedules, clipping by global norm (fixed or
//!   adaptive), dynamic loss scaling, f16/bf16 conversion.
//! - [`sample`]: greedy, temperature, top-k and top-p token sampling from a seeded RNG.
//!
//! Parameter servers and trainers (`flotilla-actors`) and the models, examples and benchmarks
//! (`flotilla-kernels`) both call these, so a run on the mesh and a run in one process update
//! parameters, schedule rates, clip and sample with the same code. The crate depends on no other
//! Flotilla crate and on nothing heavy (no tensor library, no GPU bindings): that keeps `actors`
//! and the simulator free of the kernels.

pub mod error;
pub mod optim;
pub mod sample;

pub use error::{Error, Result};
pub use sample::{Sampler, Sampling};
