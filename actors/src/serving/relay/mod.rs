//! Streams across the mesh. `/flotilla/serving/1` is request-response, so a replica does not
//! push pieces: the router pulls them with long polls (see
//! `flotilla_protocol::services::serving`).
//!
//! - [`table`]: the pure table of open streams, unacknowledged pieces and leases.
//! - [`replica`]: the replica's [`Relay`]: turns a local
//!   [`PieceStream`](super::router::PieceStream) into a pulled stream and answers
//!   `StartStream`, `NextPieces` and `CancelStream`.
//! - [`mod@pull`]: the router's side: polls a remote stream and hands the pieces on as a local
//!   `PieceStream`, so the router treats local and remote replicas alike.

pub mod pull;
pub mod replica;
pub mod table;

pub use pull::{pull, PullConfig, StreamRpc};
pub use replica::Relay;
pub use table::{Limits, Polled, StreamTable};

#[cfg(test)]
mod tests;
