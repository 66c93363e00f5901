//! The node's side of jobs.
//!
//! - [`references`]: checks that the datasets, fields and models a spec names exist.
//! - [`runner`]: the work each job kind does on this machine ([`KernelRunner`]).
//! - [`spec`]: the job spec file users write (TOML for the CLI, the same shape as JSON over
//!   HTTP) and its translation into a [`flotilla_protocol::jobs::JobSpec`] with field errors.

pub mod references;
pub mod runner;
pub mod spec;

pub use runner::KernelRunner;
pub use spec::SpecDoc;
