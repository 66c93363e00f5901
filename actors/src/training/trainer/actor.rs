//! The `Trainer` ractor shell: one step per message, sent to itself, so a drain request queued
//! behind the current step is handled between steps.

use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use flotilla_protocol::services::training::PushOutcome;
use flotilla_protocol::training::{GradPayload, WorkerReport};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::msg::Msg;
use super::{Config, GradientSource, Outcome};
use crate::training::client::{self, ParamClient};
use crate::training::dispatch::{Dispatch, Work};
use crate::training::error::{Error, Result};
use crate::training::optim::{global_norm, GradClipper};

/// The actor type.
#[derive(Debug)]
pub struct Trainer {
    /// The span its messages are handled in ([`crate::task::actor_span`]).
    pub(crate) span: tracing::Span,
}

/// What a trainer starts from.
pub struct Args {
    pub cfg: Config,
    pub source: Arc<dyn GradientSource>,
    pub params: Arc<dyn ParamClient>,
    pub dispatch: Arc<dyn Dispatch>,
    pub done: oneshot::Sender<Outcome>,
}

/// The trainer's state.
pub struct State {
    cfg: Config,
    source: Arc<dyn GradientSource>,
    params: Arc<dyn ParamClient>,
    dispatch: Arc<dyn Dispatch>,
    ranges: Vec<std::ops::Range<usize>>,
    /// Per shard, the version of the last gradient pushed there.
    after: Vec<Option<u64>>,
    steps: u64,
    samples: u64,
    done: Option<oneshot::Sender<Outcome>>,
    /// Async and ssp with clipping: this worker's clipper (its own history of norms).
    clipper: Option<GradClipper>,
}

enum Next {
    Continue,
    Finished,
}

impl State {
    async fn step(&mut self) -> Result<Next> {
        let w = self.cfg.worker;
        let mut flat = Vec::with_capacity(self.params.total_params());
        let mut versions = Vec::with_capacity(self.ranges.len());
        for p in client::pull_all(self.params.as_ref(), w, &self.after).await? {
            versions.push(p.version);
            flat.extend(p.values);
        }
        if flat.len() != self.params.total_params() {
            return Err(Error::Length {
                what: "pulled parameters",
                expected: self.params.total_params(),
                got: flat.len(),
            });
        }
        let version = versions.iter().copied().min().unwrap_or(0);
        if self.cfg.max_steps.is_some_and(|m| version >= m) {
            return Ok(Next::Finished);
        }
        let work = self
            .dispatch
            .next_batch(w, self.cfg.sync.then_some(version))
            .await?;
        let (lease, records) = match work {
            Work::Done => return Ok(Next::Finished),
            Work::Idle => {
                if !self.cfg.sync {
                    tokio::time::sleep(self.cfg.idle_wait).await;
                }
                self.push_all(&versions, 0, &[]).await?;
                // Reported so the step's record closes without waiting for this worker.
                self.dispatch
                    .report(WorkerReport {
                        worker: w,
                        step: version,
                        loss: f32::NAN,
                        grad_norm: 0.0,
                        lr: self.cfg.lr.lr_at(version),
                        samples: 0,
                        compute_ms: 0.0,
                    })
                    .await?;
                return Ok(Next::Continue);
            }
            Work::Batch { lease, records } => (lease, records),
        };
        let started = Instant::now();
        let src = self.source.clone();
        let (mut grad, loss, n) = tokio::task::spawn_blocking(move || src.compute(&flat, &records))
            .await
            .map_err(|e| Error::Failed(format!("gradient computation panicked: {e}")))?
            .map_err(|e| Error::Failed(format!("gradient computation failed: {e}")))?;
        let compute_ms = started.elapsed().as_secs_f64() * 1000.0;
        if grad.len() != self.params.total_params() {
            return Err(Error::Length {
                what: "gradient",
                expected: self.params.total_params(),
                got: grad.len(),
            });
        }
        if !loss.is_finite() {
            // Every shard must skip this step, not only the one whose range went bad.
            grad.fill(f32::NAN);
        }
        let norm = global_norm(&grad);
        if let Some(clipper) = self.clipper.as_mut() {
            clipper.clip_with_norm(&mut grad, norm);
        }
        let grad_norm = norm as f32;
        let samples = u32::try_from(n).unwrap_or(u32::MAX);
        let outcomes = self.push_all(&versions, samples, &grad).await?;
        if outcomes
            .iter()
            .any(|o| matches!(o, PushOutcome::Stale { .. }))
        {
            debug!(worker = %w, step = version, "gradient was stale; giving its samples back");
            self.dispatch.give_back(w).await?;
        } else if !self
            .dispatch
            .ack(w, lease.id, self.cfg.sync.then_some(version))
            .await?
        {
            warn!(worker = %w, lease = lease.id, "lease was taken back before its acknowledgement");
        }
        self.steps += 1;
        self.samples += u64::from(samples);
        self.dispatch
            .report(WorkerReport {
                worker: w,
                step: version,
                loss,
                grad_norm,
                lr: self.cfg.lr.lr_at(version),
                samples,
                compute_ms,
            })
            .await?;
        Ok(Next::Continue)
    }

    async fn push_all(
        &mut self,
        versions: &[u64],
        samples: u32,
        grad: &[f32],
    ) -> Result<Vec<PushOutcome>> {
        let mut out = Vec::with_capacity(self.ranges.len());
        for (i, r) in self.ranges.iter().enumerate() {
            let payload = if samples == 0 {
                GradPayload::F32(Vec::new())
            } else {
                GradPayload::encode(&grad[r.clone()], self.cfg.precision)
            };
            let o = self
                .params
                .push(i as u32, self.cfg.worker, versions[i], samples, payload)
                .await?;
            self.after[i] = Some(versions[i]);
            out.push(o);
        }
        Ok(out)
    }

    /// Leaves the coordinator, then the shards (discarding a held gradient whose lease was
    /// given back, so its samples are trained on exactly once, by someone else).
    async fn leave(&mut self) -> Result<()> {
        let drop_pending = self.dispatch.leave(self.cfg.worker).await?;
        client::leave_all(self.params.as_ref(), self.cfg.worker, drop_pending).await
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(outcome);
        }
    }
}

impl Actor for Trainer {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Args,
    ) -> std::result::Result<State, ActorProcessingErr> {
        let ranges = client::ranges(args.params.as_ref());
        let clipper = args.cfg.clip.map(GradClipper::new).transpose()?;
        myself.cast(Msg::Step)?;
        Ok(State {
            cfg: args.cfg,
            after: vec![None; ranges.len()],
            ranges,
            source: args.source,
            params: args.params,
            dispatch: args.dispatch,
            steps: 0,
            samples: 0,
            done: Some(args.done),
            clipper,
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

impl Trainer {
    /// A trainer whose span is a child of the current one (the job's).
    pub(crate) fn new() -> Self {
        Self {
            span: crate::task::actor_span("trainer", None),
        }
    }

    /// What [`Actor::handle`] does, inside the actor's span.
    async fn handle_message(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            Msg::Step => match state.step().await {
                Ok(Next::Continue) => myself.cast(Msg::Step)?,
                Ok(Next::Finished) => {
                    let outcome = match state.leave().await {
                        Ok(()) => Outcome::Done {
                            steps: state.steps,
                            samples: state.samples,
                        },
                        Err(e) => Outcome::Failed(format!("leaving: {e}")),
                    };
                    state.finish(outcome);
                    myself.stop(None);
                }
                Err(e) => {
                    warn!(worker = %state.cfg.worker, error = %e, "trainer stopped");
                    // Best effort: without it the others wait until the coordinator removes
                    // this worker.
                    if let Err(le) = state.leave().await {
                        warn!(worker = %state.cfg.worker, error = %le, "leaving after a failure");
                    }
                    state.finish(Outcome::Failed(e.to_string()));
                    myself.stop(None);
                }
            },
            Msg::Drain { reply } => {
                let outcome = match state.leave().await {
                    Ok(()) => Outcome::Drained {
                        steps: state.steps,
                        samples: state.samples,
                    },
                    Err(e) => Outcome::Failed(format!("leaving: {e}")),
                };
                state.finish(outcome);
                let _ = reply.send(());
                myself.stop(None);
            }
        }
        Ok(())
    }
}
