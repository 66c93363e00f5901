//! Held-out evaluation of a classifier run every `args.eval_every` steps while it trains
//! ([`Periodic`], on [`crate::models::evaluation::evaluate`]; the final one is the job's).
//!
//! A periodic evaluation reads the shards' parameters as they stand (a read that joins no
//! barrier) at the first progress tick after each multiple of `eval_every`, and evaluates them
//! on a blocking thread while training goes on; the step it evaluated is the one reported. One
//! evaluation runs at a time: a multiple passed while one runs is taken by the next.

use std::sync::Arc;

use flotilla_actors::data::record::Record;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::job::{Progress, TrainContext};
use crate::models::evaluation::evaluate;
use crate::models::gradient::ClassifierSource;
use flotilla_actors::training::coordinator::params::RemoteParams;

/// Evaluations every `every` steps during a run.
pub(super) struct Periodic {
    pub every: u64,
    pub src: Arc<ClassifierSource>,
    pub classes: usize,
    pub held_out: Arc<Vec<Record>>,
    /// Sync runs: the shards' versions must agree for a read to be one step's parameters.
    pub sync: bool,
    /// The first step not evaluated yet that is a multiple of `every`.
    next: u64,
    running: Option<JoinHandle<Option<Value>>>,
    /// `{step, accuracy, macro_f1}` of each evaluation finished.
    pub done: Vec<Value>,
}

impl Periodic {
    /// `None` when `every` is 0 or nothing is held out.
    pub fn new(
        every: u64,
        src: Arc<ClassifierSource>,
        classes: usize,
        held_out: Arc<Vec<Record>>,
        sync: bool,
    ) -> Option<Self> {
        (every > 0 && !held_out.is_empty()).then(|| Self {
            every,
            src,
            classes,
            held_out,
            sync,
            next: every,
            running: None,
            done: Vec::new(),
        })
    }

    /// Called at each progress tick with the latest step published: collects a finished
    /// evaluation and starts the next one when a multiple of `every` has been passed.
    pub async fn tick(
        &mut self,
        ctx: &TrainContext,
        progress: &Progress,
        params: &Arc<RemoteParams>,
        step: Option<u64>,
    ) {
        if self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.collect().await;
        let Some(step) = step.filter(|s| *s >= self.next) else {
            return;
        };
        self.next = (step / self.every + 1) * self.every;
        let (ctx, progress, params) = (ctx.clone(), progress.clone(), params.clone());
        let (src, classes, held_out, sync) = (
            self.src.clone(),
            self.classes,
            self.held_out.clone(),
            self.sync,
        );
        self.running = Some(flotilla_actors::task::spawn(async move {
            let (versions, values) = match params.peek_all(sync).await {
                Ok(read) => read,
                Err(e) => {
                    progress.log(&ctx, format!("evaluation skipped: {e}"));
                    return None;
                }
            };
            let at = versions.iter().copied().min().unwrap_or(0);
            let records = held_out.clone();
            let result =
                tokio::task::spawn_blocking(move || evaluate(&src, classes, &values, &records))
                    .await;
            match result {
                Ok(Ok(Some((accuracy, f1)))) => {
                    ctx.metrics
                        .observe_eval(progress.job.as_str(), accuracy, f1);
                    progress.log(
                        &ctx,
                        format!(
                            "eval at step {at}: accuracy {accuracy:.4} macro-F1 {f1:.4} on {} \
                             held-out records",
                            held_out.len()
                        ),
                    );
                    Some(json!({ "step": at, "accuracy": accuracy, "macro_f1": f1 }))
                }
                Ok(Ok(None)) => None,
                Ok(Err(e)) => {
                    progress.log(&ctx, format!("evaluation at step {at} failed: {e}"));
                    None
                }
                Err(e) => {
                    progress.log(&ctx, format!("evaluation at step {at} failed: {e}"));
                    None
                }
            }
        }));
    }

    /// Waits for the evaluation in flight, if any, and keeps its result.
    pub async fn collect(&mut self) {
        if let Some(t) = self.running.take() {
            if let Ok(Some(v)) = t.await {
                self.done.push(v);
            }
        }
    }
}
