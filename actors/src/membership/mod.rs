//! Membership: this node's view of the cluster.
//!
//! - [`core`]: the failure detector, a pure state machine (alive → suspect → dead; a graceful
//!   leave is `left`) driven by heartbeats and an injected clock.
//! - [`msg`]: the actor's messages.
//! - [`actor`]: the thin ractor shell that feeds the core and ticks it.
//! - [`handle`]: the typed, deadline-bounded API callers use.

pub mod actor;
pub mod core;
pub mod handle;
pub mod msg;

pub use self::core::{Config, Detector, Transition};
pub use handle::Handle;
