//! Placement: which nodes run a job's tasks.
//!
//! - [`core`]: the pure, deterministic placement function ([`place`]) over a membership view,
//!   the resources already in use and the job's spec, with preemption candidates when a higher
//!   priority class is short of capacity.
//! - [`replicas`]: where serving replicas go, by advertised capacity and the replicas already
//!   placed, in the inference class.

pub mod core;
pub mod replicas;

pub use self::core::{
    place, Assignment, Placement, PlacementError, Preemption, RunningTask, Usage,
};
pub use self::replicas::{place_replicas, ReplicaDemand, ReplicaPlan};
