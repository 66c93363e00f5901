//! `flotilla-kernels`: everything Flotilla computes, with no networking.
//!
//! Modules:
//! - [`devices`]: GPU discovery through cudarc's dynamic loading (no CUDA toolkit needed to build).
//! - [`probe`]: the short matmul probe that gives each node its compute score.

pub mod devices;
pub mod probe;
