//! Jobs: who drives each job, and who takes over when its owner is gone.
//!
//! - [`ownership`]: the pure failover rule (rendezvous order of alive nodes for the job id,
//!   ownership epochs that fence a replaced owner).

pub mod ownership;

pub use ownership::{decide, failover_order, Decision};
