//! The node's side of jobs.
//!
//! - [`hf_folder`]: registers a spec's `model.hf_folder` at submission and names the version.
//! - [`limits`]: what this node accepts to run for a peer (its capacity, the kinds' bounds).
//! - [`references`]: checks that the datasets, fields and models a spec names exist.
//! - [`runner`]: the work each job kind does on this machine ([`KernelRunner`]).
//! - [`spec`]: the job spec file users write (TOML for the CLI, the same shape as JSON over
//!   HTTP) and its translation into a [`flotilla_protocol::jobs::JobSpec`] with field errors.

pub mod hf_folder;
pub mod limits;
pub mod references;
pub mod runner;
pub mod spec;

pub use runner::KernelRunner;
pub use spec::SpecDoc;
