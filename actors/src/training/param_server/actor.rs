//! The `ParamServer` ractor shell: feeds the pure shard, holds pulls that are not ready and
//! answers them after every change.

use flotilla_protocol::training::WorkerId;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;
use tracing::{error, warn};

use super::core::{Readiness, Shard};
use super::msg::Msg;
use super::{Config, Pulled, StepNorm};
use crate::training::error::{Error, Result};

/// The actor type.
#[derive(Debug)]
pub struct ParamServer {
    /// The span its messages are handled in ([`crate::task::actor_span`]).
    pub(crate) span: tracing::Span,
}

/// A pull waiting for the shard.
struct HeldPull {
    worker: WorkerId,
    after: Option<u64>,
    range: Option<(u64, u64)>,
    reply: RpcReplyPort<Result<Pulled>>,
}

/// The actor's state.
pub struct State {
    shard: Shard,
    cfg: Config,
    held: Vec<HeldPull>,
    /// Whether the failure was logged already.
    failure_logged: bool,
}

fn answer(shard: &Shard, range: Option<(u64, u64)>, ready: Readiness) -> Result<Pulled> {
    let (offset, len) = range.unwrap_or((0, shard.params().len() as u64));
    if let Readiness::NeedsNorm { step, partial_sq } = ready {
        return Ok(Pulled {
            version: step,
            offset,
            values: Vec::new(),
            norm: StepNorm::Needed(partial_sq),
        });
    }
    Ok(Pulled {
        version: shard.version(),
        offset,
        values: shard.range(offset, len)?.to_vec(),
        norm: shard
            .last_norm()
            .map_or(StepNorm::NotClipped, StepNorm::Applied),
    })
}

impl State {
    /// Answers every held pull that is ready (or failed) now.
    fn release(&mut self) {
        if let (Some(reason), false) = (self.shard.failure(), self.failure_logged) {
            error!(reason, "parameter shard failed");
            self.failure_logged = true;
        }
        let held = std::mem::take(&mut self.held);
        for p in held {
            match self.shard.pull_ready(p.worker, p.after) {
                Ok(Readiness::Wait) => self.held.push(p),
                Ok(ready) => {
                    let _ = p.reply.send(answer(&self.shard, p.range, ready));
                }
                Err(e) => {
                    let _ = p.reply.send(Err(e));
                }
            }
        }
    }
}

impl Actor for ParamServer {
    type Msg = Msg;
    type State = State;
    type Arguments = (Shard, Config);

    async fn pre_start(
        &self,
        _myself: ActorRef<Msg>,
        (shard, cfg): (Shard, Config),
    ) -> std::result::Result<State, ActorProcessingErr> {
        Ok(State {
            shard,
            cfg,
            held: Vec::new(),
            failure_logged: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let span = self.span.clone();
        self.handle_message(myself, msg, state)
            .instrument(span)
            .await
    }
}

impl ParamServer {
    /// A server for `shard` whose span is a child of the current one (the job's).
    pub(crate) fn new(shard: &Shard) -> Self {
        Self {
            span: crate::task::actor_span("param_server", Some(u64::from(shard.index()))),
        }
    }

    /// What [`Actor::handle`] does, inside the actor's span.
    async fn handle_message(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            Msg::Join { worker, reply } => {
                let _ = reply.send(state.shard.join(worker));
            }
            Msg::Leave {
                worker,
                drop_pending,
                reply,
            } => {
                state.shard.leave(worker, drop_pending);
                // A departed worker's held pull has no one waiting for it.
                state.held.retain(|p| p.worker != worker);
                let _ = reply.send(());
            }
            Msg::Pull {
                worker,
                after,
                range,
                reply,
            } => match state.shard.pull_ready(worker, after) {
                Ok(Readiness::Wait) => {
                    // The worker gave up on any earlier pull when it sent this one.
                    state.held.retain(|p| p.worker != worker);
                    if state.held.len() >= state.cfg.max_held_pulls {
                        warn!(%worker, "held pulls full; refusing");
                        let _ = reply.send(Err(Error::Busy("held pulls")));
                    } else {
                        state.held.push(HeldPull {
                            worker,
                            after,
                            range,
                            reply,
                        });
                    }
                }
                Ok(ready) => {
                    let _ = reply.send(answer(&state.shard, range, ready));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Msg::Finish { step, norm, reply } => {
                let _ = reply.send(state.shard.finish(step, norm));
            }
            Msg::Push {
                worker,
                step,
                samples,
                grad,
                reply,
            } => {
                let _ = reply.send(state.shard.push(worker, step, samples, &grad));
            }
            Msg::Snapshot { reply } => {
                let _ = reply.send(state.shard.snapshot());
            }
            Msg::Peek { reply } => {
                let _ = reply.send((state.shard.version(), state.shard.params().to_vec()));
            }
            Msg::SnapshotAt { step, reply } => {
                let _ = reply.send(state.shard.snapshot_at(step));
                return Ok(());
            }
            Msg::Restore { snapshot, reply } => {
                let _ = reply.send(state.shard.restore(*snapshot));
            }
            Msg::Stats { reply } => {
                let _ = reply.send(state.shard.stats());
                return Ok(());
            }
        }
        state.release();
        Ok(())
    }
}
