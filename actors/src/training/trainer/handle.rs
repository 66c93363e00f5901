//! The typed API of a `Trainer`.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

use super::actor::{Args, Trainer};
use super::msg::Msg;
use super::{Config, GradientSource, Outcome};
use crate::training::client::ParamClient;
use crate::training::dispatch::Dispatch;
use crate::training::error::{Error, Result};

/// A handle to a running `Trainer`.
#[derive(Debug, Clone)]
pub struct Handle {
    actor: ActorRef<Msg>,
}

impl Handle {
    /// Starts a trainer; it runs steps until the data is done, it is drained or killed, or an
    /// error stops it. The receiver gets its [`Outcome`] (it is closed without one when the
    /// trainer is killed).
    pub async fn spawn(
        cfg: Config,
        source: Arc<dyn GradientSource>,
        params: Arc<dyn ParamClient>,
        dispatch: Arc<dyn Dispatch>,
    ) -> Result<(
        Handle,
        oneshot::Receiver<Outcome>,
        tokio::task::JoinHandle<()>,
    )> {
        let (done, outcome) = oneshot::channel();
        let (actor, join) = Actor::spawn(
            None,
            Trainer::new(),
            Args {
                cfg,
                source,
                params,
                dispatch,
                done,
            },
        )
        .await
        .map_err(|e| Error::Failed(format!("trainer failed to start: {e}")))?;
        Ok((Handle { actor }, outcome, join))
    }

    /// Spawns a trainer linked to `supervisor` (a node's remote-actor host), which hears when
    /// it ends.
    pub async fn spawn_linked(
        cfg: Config,
        source: Arc<dyn GradientSource>,
        params: Arc<dyn ParamClient>,
        dispatch: Arc<dyn Dispatch>,
        supervisor: ractor::ActorCell,
    ) -> Result<(Handle, oneshot::Receiver<Outcome>)> {
        let (done, outcome) = oneshot::channel();
        let args = Args {
            cfg,
            source,
            params,
            dispatch,
            done,
        };
        let (actor, _) = Actor::spawn_linked(None, Trainer::new(), args, supervisor)
            .await
            .map_err(|e| Error::Failed(format!("trainer failed to start: {e}")))?;
        Ok((Handle { actor }, outcome))
    }

    /// The actor's cell.
    pub fn cell(&self) -> ractor::ActorCell {
        self.actor.get_cell()
    }

    /// Asks the trainer to leave after its current step, waiting at most `deadline`.
    pub async fn drain(&self, deadline: Duration) -> Result<()> {
        match crate::call::call(&self.actor, "trainer", deadline, |reply| Msg::Drain {
            reply,
        })
        .await
        {
            // Already stopped: nothing left to drain.
            Err(crate::Error::ActorGone { .. }) => Ok(()),
            r => Ok(r?),
        }
    }

    /// Stops the trainer at once, wherever it is in its step (a crash, for tests and
    /// preemption without grace). The coordinator must then remove the worker.
    pub fn kill(&self) {
        self.actor.kill();
    }
}
