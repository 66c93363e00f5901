//! The generation engine: the async shell around the [`Scheduler`] core.
//!
//! One task owns the core and the [`Generator`]. Between steps it takes new and cancelled
//! sequences from a bounded command channel, drops sequences whose consumer went away (a
//! closed stream is a client disconnect: the slot is freed before the next admission), admits
//! what fits, and runs one step — releases, prefills of the admitted, one decoding step for the
//! rest, and sampling — on a blocking thread. Each sequence's events go to its own bounded
//! channel; a sequence whose consumer has fallen behind sits out steps until there is room
//! again, so one slow client never stalls the others and nothing buffers without bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

use super::core::{Cancelled, Config, Finish, Refusal, Scheduler, SeqRequest};
use super::sampler::{Sampler, SamplingParams};
use super::{Generator, SeqId};
use crate::serving::error::ServeError;
use crate::Result;

const TASK: &str = "generation engine";
/// Hint given with a refusal.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the engine looks again when every running sequence waits for its consumer.
const PAUSED_POLL: Duration = Duration::from_millis(2);

/// What a sequence's consumer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The next generated token.
    Token(u32),
    /// The sequence ended; nothing follows.
    Done(Finish),
    /// The model failed on this sequence; nothing follows.
    Failed(String),
}

/// The receiving end of one sequence. Dropping it cancels the sequence.
#[derive(Debug)]
pub struct SeqStream {
    /// The sequence's id, for [`Handle::cancel`].
    pub id: SeqId,
    rx: mpsc::Receiver<StreamEvent>,
}

impl SeqStream {
    /// The next event; `None` once the engine dropped the sequence (after `Done` or `Failed`,
    /// or if the engine stopped).
    pub async fn next(&mut self) -> Option<StreamEvent> {
        self.rx.recv().await
    }

    /// Every token until the end, within `deadline` for the whole sequence.
    pub async fn collect(
        mut self,
        deadline: Duration,
    ) -> std::result::Result<(Vec<u32>, Finish), ServeError> {
        let work = async {
            let mut tokens = Vec::new();
            loop {
                match self.rx.recv().await {
                    Some(StreamEvent::Token(t)) => tokens.push(t),
                    Some(StreamEvent::Done(f)) => return Ok((tokens, f)),
                    Some(StreamEvent::Failed(e)) => return Err(ServeError::Model(e)),
                    None => return Err(ServeError::Stopped(TASK)),
                }
            }
        };
        tokio::time::timeout(deadline, work)
            .await
            .unwrap_or(Err(ServeError::DeadlineExceeded { deadline }))
    }
}

enum Cmd {
    Submit {
        id: SeqId,
        req: SeqRequest,
        sampling: SamplingParams,
        events: mpsc::Sender<StreamEvent>,
        reply: oneshot::Sender<std::result::Result<(), Refusal>>,
    },
    Cancel {
        id: SeqId,
    },
}

/// Live counters and gauges of an engine.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Decoding steps run.
    pub steps: AtomicU64,
    /// Tokens generated (prefill and decode).
    pub tokens: AtomicU64,
    /// Sequences refused (queue full or too large).
    pub refused: AtomicU64,
    /// Sequences cancelled or abandoned by their consumer.
    pub cancelled: AtomicU64,
    /// Largest decoding step so far.
    pub widest_step: AtomicU64,
    /// Sequences running now.
    pub running: AtomicU64,
    /// Sequences waiting now.
    pub waiting: AtomicU64,
    /// KV slots reserved now.
    pub reserved_tokens: AtomicU64,
}

/// A cloneable handle to a running engine.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Cmd>,
    next_id: Arc<AtomicU64>,
    stream_capacity: usize,
    deadline: Duration,
    stats: Arc<EngineStats>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Submit { id, .. } => write!(f, "Submit({id})"),
            Cmd::Cancel { id } => write!(f, "Cancel({id})"),
        }
    }
}

impl Handle {
    /// Starts an engine around `generator`. Submissions and cancels wait at most `deadline`
    /// for the engine to take them. The engine ends when every handle is dropped and no
    /// sequence remains.
    pub fn spawn<G: Generator>(
        generator: G,
        config: Config,
        deadline: Duration,
    ) -> Result<(Self, JoinHandle<()>)> {
        config.validate()?;
        let (tx, rx) = mpsc::channel(config.max_waiting);
        let stats = Arc::new(EngineStats::default());
        let handle = Self {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            stream_capacity: config.stream_capacity,
            deadline,
            stats: stats.clone(),
        };
        let join = crate::task::spawn(tracing::Instrument::instrument(
            run(generator, config, rx, stats),
            crate::task::actor_span("generator", None),
        ));
        Ok((handle, join))
    }

    /// Schedules a generation; its tokens arrive on the returned stream.
    pub async fn generate(
        &self,
        req: SeqRequest,
        sampling: SamplingParams,
    ) -> std::result::Result<SeqStream, ServeError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = mpsc::channel(self.stream_capacity);
        let (reply, answer) = oneshot::channel();
        let cmd = Cmd::Submit {
            id,
            req,
            sampling,
            events,
            reply,
        };
        match self.tx.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(ServeError::Overloaded {
                    retry_after: RETRY_AFTER,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ServeError::Stopped(TASK)),
        }
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(Ok(Ok(()))) => Ok(SeqStream { id, rx }),
            Ok(Ok(Err(Refusal::TooLarge { need, budget }))) => {
                Err(ServeError::TooLarge { need, budget })
            }
            Ok(Ok(Err(Refusal::QueueFull))) => Err(ServeError::Overloaded {
                retry_after: RETRY_AFTER,
            }),
            Ok(Ok(Err(other))) => Err(ServeError::Model(other.to_string())),
            Ok(Err(_)) => Err(ServeError::Stopped(TASK)),
            Err(_) => Err(ServeError::DeadlineExceeded {
                deadline: self.deadline,
            }),
        }
    }

    /// Cancels a sequence (e.g. on a remote client's cancel); dropping its stream does the same.
    pub async fn cancel(&self, id: SeqId) -> std::result::Result<(), ServeError> {
        match tokio::time::timeout(self.deadline, self.tx.send(Cmd::Cancel { id })).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ServeError::Stopped(TASK)),
            Err(_) => Err(ServeError::DeadlineExceeded {
                deadline: self.deadline,
            }),
        }
    }

    /// The engine's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
}

/// The generator and the samplers, moved to a blocking thread for each step and back.
struct Worker<G> {
    generator: G,
    samplers: BTreeMap<SeqId, Sampler>,
}

/// What one step does.
#[derive(Default)]
struct Plan {
    releases: Vec<SeqId>,
    prefills: Vec<(SeqId, Vec<u32>)>,
    decodes: Vec<(SeqId, u32)>,
}

impl<G: Generator> Worker<G> {
    fn step(&mut self, plan: Plan) -> Vec<(SeqId, std::result::Result<u32, String>)> {
        for id in plan.releases {
            self.generator.release(id);
            self.samplers.remove(&id);
        }
        let mut out = Vec::new();
        for (id, prompt) in plan.prefills {
            let token = self
                .generator
                .prefill(id, &prompt)
                .and_then(|logits| self.sample(id, &logits));
            out.push((id, token));
        }
        if !plan.decodes.is_empty() {
            match self.generator.decode(&plan.decodes) {
                Ok(all) if all.len() == plan.decodes.len() => {
                    for ((id, _), logits) in plan.decodes.iter().zip(all) {
                        out.push((*id, self.sample(*id, &logits)));
                    }
                }
                other => {
                    let reason = match other {
                        Ok(all) => format!(
                            "decode returned {} results for {} sequences",
                            all.len(),
                            plan.decodes.len()
                        ),
                        Err(e) => e,
                    };
                    out.extend(
                        plan.decodes
                            .iter()
                            .map(|(id, _)| (*id, Err(reason.clone()))),
                    );
                }
            }
        }
        out
    }

    fn sample(&mut self, id: SeqId, logits: &[f32]) -> std::result::Result<u32, String> {
        match self.samplers.get_mut(&id) {
            Some(s) => s.sample(logits).map_err(|e| e.to_string()),
            None => Err(format!("sequence {id} has no sampler")),
        }
    }
}

struct Engine<G> {
    core: Scheduler,
    worker: Option<Worker<G>>,
    streams: BTreeMap<SeqId, mpsc::Sender<StreamEvent>>,
    releases: Vec<SeqId>,
    stats: Arc<EngineStats>,
}

impl<G: Generator> Engine<G> {
    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit {
                id,
                req,
                sampling,
                events,
                reply,
            } => {
                let r = sampling
                    .sampler()
                    .map_err(Refusal::Sampling)
                    .and_then(|sampler| self.core.submit(id, req).map(|()| sampler));
                let r = match r {
                    Ok(sampler) => {
                        self.streams.insert(id, events);
                        if let Some(w) = self.worker.as_mut() {
                            w.samplers.insert(id, sampler);
                        }
                        Ok(())
                    }
                    Err(refusal) => {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        Err(refusal)
                    }
                };
                // If the caller gave up meanwhile, the closed stream is swept up next.
                let _ = reply.send(r);
            }
            Cmd::Cancel { id } => self.cancel(id),
        }
    }

    fn cancel(&mut self, id: SeqId) {
        match self.core.cancel(id) {
            Cancelled::Running => self.releases.push(id),
            Cancelled::Waiting => {
                if let Some(w) = self.worker.as_mut() {
                    w.samplers.remove(&id);
                }
            }
            Cancelled::Unknown => return,
        }
        self.streams.remove(&id);
        self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    fn sweep_disconnected(&mut self) {
        let gone: Vec<SeqId> = self
            .streams
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.cancel(id);
        }
    }

    fn plan(&mut self) -> Plan {
        let admitted = self.core.admit();
        let streams = &self.streams;
        // Two free places: the token of this step and, possibly, the end that follows it.
        let decodes = self
            .core
            .decode_batch(|id| streams.get(&id).is_some_and(|tx| tx.capacity() >= 2));
        Plan {
            releases: std::mem::take(&mut self.releases),
            prefills: admitted
                .into_iter()
                .filter_map(|id| self.core.prompt(id).map(|p| (id, p.to_vec())))
                .collect(),
            decodes,
        }
    }

    fn deliver(&mut self, results: Vec<(SeqId, std::result::Result<u32, String>)>) {
        for (id, result) in results {
            match result {
                Ok(token) => {
                    let Some(emitted) = self.core.on_token(id, token) else {
                        continue; // cancelled while the step ran
                    };
                    self.stats.tokens.fetch_add(1, Ordering::Relaxed);
                    let Some(tx) = self.streams.get(&id) else {
                        continue;
                    };
                    // Room was checked before the step (a new stream starts empty), and only
                    // this task sends: these cannot find the channel full.
                    if let Some(t) = emitted.token {
                        let _ = tx.try_send(StreamEvent::Token(t));
                    }
                    if let Some(f) = emitted.finished {
                        let _ = tx.try_send(StreamEvent::Done(f));
                        self.streams.remove(&id);
                        self.releases.push(id);
                    }
                }
                Err(reason) => {
                    warn!(seq = id, error = %reason, "generation failed");
                    if let Some(tx) = self.streams.remove(&id) {
                        let _ = tx.try_send(StreamEvent::Failed(reason));
                    }
                    if self.core.cancel(id) == Cancelled::Running {
                        self.releases.push(id);
                    }
                }
            }
        }
    }

    fn publish(&self, widest: usize) {
        let o = self.core.occupancy();
        let s = &self.stats;
        s.running.store(o.running as u64, Ordering::Relaxed);
        s.waiting.store(o.waiting as u64, Ordering::Relaxed);
        s.reserved_tokens
            .store(u64::from(o.reserved), Ordering::Relaxed);
        s.widest_step.fetch_max(widest as u64, Ordering::Relaxed);
    }
}

async fn run<G: Generator>(
    generator: G,
    config: Config,
    mut rx: mpsc::Receiver<Cmd>,
    stats: Arc<EngineStats>,
) {
    let mut e = Engine {
        core: Scheduler::new(config),
        worker: Some(Worker {
            generator,
            samplers: BTreeMap::new(),
        }),
        streams: BTreeMap::new(),
        releases: Vec::new(),
        stats,
    };
    let mut open = true;
    loop {
        if e.core.is_idle() && e.releases.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(cmd) => e.command(cmd),
                None => open = false,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            e.command(cmd);
        }
        e.sweep_disconnected();
        let plan = e.plan();
        if plan.prefills.is_empty() && plan.decodes.is_empty() && plan.releases.is_empty() {
            e.publish(0);
            if e.core.is_idle() {
                continue;
            }
            // Every running sequence waits for its consumer: look again soon, or on a command.
            tokio::select! {
                cmd = rx.recv(), if open => match cmd {
                    Some(cmd) => e.command(cmd),
                    None => open = false,
                },
                _ = tokio::time::sleep(PAUSED_POLL) => {}
            }
            continue;
        }
        let widest = plan.decodes.len();
        if widest > 0 {
            e.stats.steps.fetch_add(1, Ordering::Relaxed);
        }
        let Some(mut worker) = e.worker.take() else {
            return;
        };
        let stepped = tokio::task::spawn_blocking(move || {
            let results =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.step(plan)));
            (worker, results)
        })
        .await;
        match stepped {
            Ok((worker, Ok(results))) => {
                e.worker = Some(worker);
                e.deliver(results);
            }
            Ok((_, Err(_))) | Err(_) => {
                // The generator's state is unknown after a panic: fail everything and stop.
                warn!("the generator panicked; failing every sequence");
                for (_, tx) in std::mem::take(&mut e.streams) {
                    let _ = tx.try_send(StreamEvent::Failed("the generator panicked".into()));
                }
                return;
            }
        }
        e.publish(widest);
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
