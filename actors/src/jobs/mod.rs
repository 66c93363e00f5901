//! Jobs: who drives each job, how its owner drives it, and how executing nodes keep every task
//! to one execution per attempt.
//!
//! - [`ownership`]: the pure failover rule (rendezvous order of alive nodes for the job id,
//!   ownership epochs that fence a replaced owner).
//! - [`coordinator`]: the owner-side state machine of one job (placement, starts, retries,
//!   node loss, cancellation, takeover by survey).
//! - [`ledger`]: the executing node's task ledger (re-attach, fencing, outcomes for new owners).
//! - [`executor`]: the actor that runs tasks on a node, with the ledger kept durable.
//! - [`manager`]: the node's `JobManager` actor that drives coordinators and takes jobs over.
//! - [`compaction`]: forgets the ledger rows of jobs that are over, past the retention.

pub mod compaction;
pub mod coordinator;
pub mod executor;
pub mod ledger;
pub mod manager;
pub mod ownership;

pub use ownership::{decide, failover_order, Decision};
