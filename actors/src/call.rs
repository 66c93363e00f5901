//! Calling a local actor and waiting for its answer with a deadline: the one place that turns
//! ractor's call outcome into this crate's errors, so every handle reports a late or stopped
//! actor the same way.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

use crate::Error;

/// Sends the message `msg` builds to `actor` (named `name` in errors) and waits at most
/// `deadline` for the reply: [`Error::Timeout`] if none came in time, [`Error::ActorGone`] if
/// the actor has stopped or dropped the reply port.
pub async fn call<M: Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    name: &'static str,
    deadline: Duration,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, Error> {
    match actor.call(msg, Some(deadline)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(Error::Timeout {
            actor: name,
            deadline,
        }),
        Ok(CallResult::SenderError) | Err(_) => Err(Error::ActorGone { actor: name }),
    }
}
