//! `flotilla-sim`: deterministic discrete-event simulation of Flotilla clusters in virtual time,
//! driven by the same pure cores the actors use.
//!
//! Modules:
//! - [`membership`]: many nodes running the real failure detector over a lossy, delayed network
//!   with crashes, measuring detection latency and false suspicions — what one machine cannot
//!   show with real sockets at thousands of nodes.

pub mod membership;
