//! Messages of the `Trainer` actor.

use ractor::RpcReplyPort;

/// What a `Trainer` accepts. Callers use [`super::Handle`].
#[derive(Debug)]
pub enum Msg {
    /// Run one step (the trainer sends this to itself after each step).
    Step,
    /// Leave after the current step; replies once the trainer has left the shards.
    Drain { reply: RpcReplyPort<()> },
}
