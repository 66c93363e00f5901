//! The typed API of the `Membership` actor; every call has a deadline.

use std::time::Duration;

use flotilla_protocol::{MemberView, NodeId, NodeInfo};
use ractor::{Actor, ActorRef};
use tokio::sync::broadcast;

use super::actor::{Args, Membership};
use super::core::{Config, Transition};
use super::msg::Msg;
use crate::{Error, Result};

const ACTOR: &str = "membership";

/// A cloneable handle to a running `Membership` actor.
#[derive(Debug, Clone)]
pub struct Handle {
    actor: ActorRef<Msg>,
    transitions: broadcast::Sender<Transition>,
    call_deadline: Duration,
}

impl Handle {
    /// Spawns the actor (unnamed, so several nodes can live in one process).
    pub async fn spawn(
        config: Config,
        own: NodeInfo,
    ) -> Result<(Handle, tokio::task::JoinHandle<()>)> {
        let (transitions, _) = broadcast::channel(1024);
        let args = Args {
            config,
            own,
            transitions: transitions.clone(),
        };
        let (actor, join) = Actor::spawn(
            None,
            Membership {
                span: crate::task::actor_span("membership", None),
            },
            args,
        )
        .await
        .map_err(|e| Error::InvalidConfig(format!("membership failed to start: {e}")))?;
        Ok((
            Handle {
                actor,
                transitions,
                call_deadline: Duration::from_secs(5),
            },
            join,
        ))
    }

    /// Feeds a validated heartbeat from a peer.
    pub fn heartbeat(&self, info: NodeInfo) -> Result<()> {
        self.actor
            .cast(Msg::Heartbeat(info))
            .map_err(|_| Error::ActorGone { actor: ACTOR })
    }

    /// Records a peer's graceful leave.
    pub fn leave(&self, id: NodeId, incarnation: u64) -> Result<()> {
        self.actor
            .cast(Msg::Leave { id, incarnation })
            .map_err(|_| Error::ActorGone { actor: ACTOR })
    }

    /// Refreshes this node's own entry.
    pub fn update_self(&self, info: NodeInfo) -> Result<()> {
        self.actor
            .cast(Msg::UpdateSelf(info))
            .map_err(|_| Error::ActorGone { actor: ACTOR })
    }

    /// The current view, in id order.
    pub async fn view(&self) -> Result<Vec<MemberView>> {
        crate::call::call(&self.actor, ACTOR, self.call_deadline, Msg::View).await
    }

    /// A stream of state transitions from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.transitions.subscribe()
    }

    /// Stops the actor.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
