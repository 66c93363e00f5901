//! The batching task: feeds arrivals to the [`Batcher`] core, runs due batches of a
//! [`BatchModel`] on a blocking thread, and answers every request through its own reply channel.
//!
//! A plain tokio task rather than a ractor actor: it has one input (the bounded arrival
//! channel) and must also wake on a timer and on the end of the running batch, which `select!`
//! expresses directly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

use super::core::{Batcher, Config};
use super::stats::{BatchStats, BatchStatsSnapshot};
use super::BatchModel;
use crate::clock::{Millis, MonotonicClock};
use crate::serving::error::ServeError;
use crate::Result;

const TASK: &str = "batcher";
/// The retry hint given with a refusal: long enough for a few batches to drain.
const RETRY_AFTER: Duration = Duration::from_secs(1);

type Reply<M> = oneshot::Sender<std::result::Result<<M as BatchModel>::Output, ServeError>>;

/// One request on its way through the batcher.
struct Job<M: BatchModel> {
    input: M::Input,
    reply: Reply<M>,
}

/// A cloneable handle to a running batcher.
pub struct Handle<M: BatchModel> {
    tx: mpsc::Sender<Job<M>>,
    deadline: Duration,
    stats: Arc<BatchStats>,
}

impl<M: BatchModel> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            deadline: self.deadline,
            stats: self.stats.clone(),
        }
    }
}

impl<M: BatchModel> std::fmt::Debug for Handle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("batcher::Handle")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<M: BatchModel> Handle<M> {
    /// Starts the batching task for `model`. Every [`Handle::infer`] waits at most `deadline`.
    /// The task ends when every handle is dropped and the queue has drained.
    pub fn spawn(
        model: Arc<M>,
        config: Config,
        deadline: Duration,
    ) -> Result<(Self, JoinHandle<()>)> {
        config.validate()?;
        let (tx, rx) = mpsc::channel(config.max_queue);
        let stats = Arc::new(BatchStats::new(config.max_batch));
        let join = crate::task::spawn(tracing::Instrument::instrument(
            run(model, config, rx, stats.clone()),
            crate::task::actor_span("batcher", None),
        ));
        Ok((
            Self {
                tx,
                deadline,
                stats,
            },
            join,
        ))
    }

    /// Answers `input` as part of a batch. A full queue is refused at once (`Overloaded`).
    pub async fn infer(&self, input: M::Input) -> std::result::Result<M::Output, ServeError> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Job { input, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.refused();
                return Err(ServeError::Overloaded {
                    retry_after: RETRY_AFTER,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ServeError::Stopped(TASK)),
        }
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ServeError::Stopped(TASK)),
            // Dropping `answer` closes the reply channel: if the request still waits, the task
            // sees that and leaves it out of its batch.
            Err(_) => Err(ServeError::DeadlineExceeded {
                deadline: self.deadline,
            }),
        }
    }

    /// The batcher's counters.
    pub fn stats(&self) -> BatchStatsSnapshot {
        self.stats.snapshot()
    }
}

type BatchResult<M> = (
    Vec<Reply<M>>,
    std::result::Result<Vec<<M as BatchModel>::Output>, String>,
);

async fn run<M: BatchModel>(
    model: Arc<M>,
    config: Config,
    mut rx: mpsc::Receiver<Job<M>>,
    stats: Arc<BatchStats>,
) {
    let clock = MonotonicClock::default();
    let mut core: Batcher<Job<M>> = Batcher::new(config);
    let mut running: Option<JoinHandle<BatchResult<M>>> = None;
    let mut open = true;
    loop {
        if running.is_none() {
            core.retain(|job| !job.reply.is_closed());
            if let Some(batch) = core.poll(clock.now()) {
                let (inputs, replies): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|j| (j.input, j.reply)).unzip();
                let model = model.clone();
                running = Some(tokio::task::spawn_blocking(move || {
                    // A panicking model fails its batch, not the batcher: the replies must
                    // survive it to be answered.
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        model.run(inputs)
                    }))
                    .unwrap_or_else(|_| Err("the model panicked".to_string()));
                    (replies, out)
                }));
            }
        }
        if !open && running.is_none() && core.queued() == 0 {
            return;
        }
        let deadline = core.next_deadline();
        tokio::select! {
            job = rx.recv(), if open => match job {
                Some(job) => {
                    if let Err(job) = core.push(clock.now(), job) {
                        stats.refused();
                        let refusal = ServeError::Overloaded { retry_after: RETRY_AFTER };
                        let _ = job.reply.send(Err(refusal));
                    }
                }
                None => open = false,
            },
            done = wait(&mut running) => {
                running = None;
                core.done();
                deliver::<M>(done, &stats);
            }
            _ = sleep_until(&clock, deadline), if deadline.is_some() => {}
        }
    }
}

async fn wait<T>(running: &mut Option<JoinHandle<T>>) -> std::result::Result<T, String> {
    match running.as_mut() {
        Some(h) => h
            .await
            .map_err(|e| format!("the batch task was aborted: {e}")),
        None => std::future::pending().await,
    }
}

async fn sleep_until(clock: &MonotonicClock, deadline: Option<Millis>) {
    let wait = deadline.map_or(Duration::ZERO, |d| d.since(clock.now()));
    tokio::time::sleep(wait).await;
}

fn deliver<M: BatchModel>(done: std::result::Result<BatchResult<M>, String>, stats: &BatchStats) {
    let (replies, out) = match done {
        Ok(r) => r,
        Err(panic) => {
            // Only an aborted runtime gets here; the replies went with the task and their
            // callers see the batcher stop.
            warn!(error = %panic, "batch task ended abnormally");
            return;
        }
    };
    let n = replies.len();
    match out {
        Ok(outputs) if outputs.len() == n => {
            stats.batch(n, true);
            for (reply, output) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(output));
            }
        }
        other => {
            let reason = match other {
                Ok(outputs) => format!(
                    "the model returned {} outputs for {n} inputs",
                    outputs.len()
                ),
                Err(e) => e,
            };
            warn!(batch = n, error = %reason, "batch failed");
            stats.batch(n, false);
            for reply in replies {
                let _ = reply.send(Err(ServeError::Model(reason.clone())));
            }
        }
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
