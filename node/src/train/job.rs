//! The `train` job: one task, on any node, that coordinates a distributed training run on the
//! mesh — reads the dataset version, builds the model, spawns parameter-server shards and
//! trainers on the alive nodes as remote actors, takes in nodes that come up (elastic joins),
//! drops trainers whose node dies (their samples go to the others), checkpoints sync runs on two
//! nodes and restores every shard from the newest checkpoint when a shard's node is lost
//! (`recovery`), and reports the run.
//!
//! Models (`model`): `[model.new]` classifiers (a transformer encoder with a character tokenizer
//! built from the data) and Hugging Face BERT folders (`model.hf_folder`) with a new
//! classification head, in sync, async or SSP mode. A share of the records
//! (`dataset.eval_fraction`) is held out; the trained model is evaluated on it (accuracy,
//! macro-F1), saved as a checkpoint on the coordinator's node and registered in the catalog as
//! the next version of `output.model`, with its metrics and its lineage to the dataset version,
//! ready to deploy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::data::record::Record;
use flotilla_actors::mesh::Mesh;
use flotilla_actors::remote::{self, spawn_remote, RemoteActor};
use flotilla_actors::training::client::ParamClient;
use flotilla_actors::training::dispatch::{self, LocalDispatch};
use flotilla_actors::training::elastic::{self, Role, Why};
use flotilla_actors::training::partition;
use flotilla_actors::training::trainer::GradientSource;
use flotilla_kernels::optim::{AdamWConfig, OptimizerConfig, SgdConfig};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::control::RemoteError;
use flotilla_protocol::services::training::{RequestBody, ResponseBody};
use flotilla_protocol::training::{Consistency, OptimizerKind, TrainSpec, Versioned, WorkerId};
use flotilla_protocol::NodeId;
use tokio::sync::mpsc;

use super::checkpoints;
use super::recovery::{lost_shard_host, History, Saver};
use crate::data::reader::VersionReader;
use crate::data::DataNode;
use crate::models::build::ModelArgs;
use flotilla_actors::training::coordinator::dispatch::{dispatch_actor, DispatchEndpoint};
use flotilla_actors::training::coordinator::params::{
    optimizer_json, shard_actor, RemoteParams, PARAM_SERVER_ROLE,
};
use flotilla_actors::training::coordinator::trainers::{trainer_actor, TRAINER_ROLE};
use flotilla_protocol::training::{LrArgs, ShardArgs, TrainerArgs};

/// What a node needs to coordinate a training run.
#[derive(Clone)]
pub struct TrainContext {
    pub mesh: Arc<dyn Mesh>,
    pub host: remote::Host,
    pub data: DataNode,
    /// Where trained models are written (one folder per version).
    pub models_dir: std::path::PathBuf,
    /// The node's store: progress goes into the job's events there.
    pub store: Arc<dyn flotilla_actors::store::Store>,
    /// The live gauges in `/metrics`.
    pub metrics: Arc<super::metrics::TrainMetrics>,
    /// Model files: where registered versions are fetched from and kept.
    pub files: crate::models::files::ModelFiles,
    /// Whether the node is shutting down: a run then writes a last checkpoint and stops.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
}

/// How often the coordinator publishes progress (one event per period at most, so a long run
/// stays well under the event log's bound).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

type Reply = std::result::Result<ResponseBody, RemoteError>;

const CALL: Duration = Duration::from_secs(10);
const PULL: Duration = Duration::from_secs(300);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Runs the training described by `spec_toml`; the result is a JSON summary.
pub async fn run(
    ctx: &TrainContext,
    catalog_job: &JobId,
    spec_toml: &str,
    cancelled: &AtomicBool,
) -> Result<String, String> {
    // Shutdown waits (within its grace period) for this to be dropped.
    let _running = ctx.lifecycle.run_started();
    if let Some(reason) = ctx.lifecycle.refusal() {
        return Err(format!("not started: {reason}"));
    }
    let spec: TrainSpec = toml::from_str(spec_toml).map_err(|e| format!("train spec: {e}"))?;
    spec.validate().map_err(|e| format!("train spec: {e}"))?;
    let label_field = spec
        .dataset
        .label_field
        .clone()
        .ok_or("dataset.label_field is required to train a classifier")?;
    let dataset = Versioned::parse(&spec.dataset.name).map_err(|e| format!("dataset.name: {e}"))?;
    let seed = spec.args.seed;

    // The records, in upload order (the coordinator hands them out by position).
    let mut reader =
        VersionReader::open(&ctx.data, &dataset.name, dataset.version, seed, 1, 0, None)
            .await
            .map_err(err)?;
    let mut records: Vec<Record> = Vec::new();
    while let Some(r) = reader.next().await.map_err(err)? {
        records.push(r);
    }
    records.sort_by_key(|r| r.id);
    if records.is_empty() {
        return Err(format!("dataset {} has no records", spec.dataset.name));
    }
    let (records, held_out): (Vec<Record>, Vec<Record>) = records
        .into_iter()
        .partition(|r| !held_out(r.id, seed, spec.dataset.eval_fraction));
    if records.is_empty() {
        return Err("every record was held out for evaluation; lower dataset.eval_fraction".into());
    }
    let mut corpus = String::new();
    let mut labels = BTreeSet::new();
    for r in records.iter().chain(&held_out) {
        corpus.push_str(r.field(&spec.dataset.text_field).map_err(err)?);
        labels.insert(r.field(&label_field).map_err(err)?.to_string());
    }
    // The model and its tokenizer; a mismatch with the data fails here, before any worker.
    let parent = match &spec.model {
        flotilla_protocol::training::ModelSource::Registered(m) => {
            let files = &ctx.files;
            let peers: Vec<String> = ctx
                .data
                .alive()
                .await
                .into_iter()
                .map(|n| n.0)
                .filter(|n| *n != files.me)
                .collect();
            Some(crate::models::parent::resolve(&ctx.data.catalog, files, &peers, m).await?)
        }
        _ => None,
    };
    let (model, init) = {
        let (spec, corpus) = (spec.clone(), corpus);
        let labels: Vec<String> = labels.iter().cloned().collect();
        tokio::task::spawn_blocking(move || {
            crate::models::build::prepare(&spec, parent.as_ref(), &corpus, &labels)
        })
        .await
        .map_err(err)??
    };
    let classes: BTreeMap<String, u32> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i as u32))
        .collect();

    // The lineage is the same for every attempt of the catalog job (its checkpoints are kept
    // under it); the attempt names this coordinator's actors, so an earlier attempt's leftovers
    // never collide with them.
    let lineage = super::checkpoints::lineage_of(catalog_job);
    let job = JobId(format!(
        "{lineage}-{}",
        &blake3::hash(
            format!(
                "{}{}",
                flotilla_actors::clock::wall_ms(),
                rand::random::<u64>()
            )
            .as_bytes()
        )
        .to_hex()[..6]
    ));
    // The coordinator's span names the run and its lineage, which its trainers' and shards'
    // spans carry too.
    tracing::Span::current()
        .record("run", tracing::field::display(&job))
        .record("lineage", tracing::field::display(&lineage));
    // Nodes: every reachable one, in a fixed order; shards round-robin, one trainer per node.
    let alive = super::recovery::reachable(ctx).await;
    let nodes = flotilla_actors::rendezvous::rank(job.as_str().as_bytes(), &alive);
    let workers = (spec.cluster.workers_max as usize).min(nodes.len());
    if workers < spec.cluster.workers_min as usize {
        return Err(format!(
            "{} alive nodes; the job needs at least {} workers",
            nodes.len(),
            spec.cluster.workers_min
        ));
    }
    let shards = (spec.cluster.ps_shards as usize).max(1);
    let consistency = spec.cluster.consistency();
    // Sync runs checkpoint at step boundaries, async and ssp ones with their workers
    // quiesced (see `recovery::Saver`).
    let save_every = spec.args.save_every;
    // An earlier attempt of this job (its coordinator's node died, or it failed) left
    // checkpoints: go on from the newest one instead of starting over.
    let earlier = if save_every > 0 {
        checkpoints::latest(&ctx.mesh, &lineage, &alive).await
    } else {
        None
    };
    // Optimizer updates per epoch: one per global batch in sync mode; in async and ssp every
    // worker's push is an update of its own, and the workers share the global batch, so there
    // is one per worker's share of it (the per-device batch unless `global_batch` is set). The
    // learning-rate schedule spans the updates, not the steps, or it would reach its end early.
    let global = earlier
        .as_ref()
        .map(|(_, m)| m.run.global_batch)
        .filter(|g| *g > 0)
        .unwrap_or_else(|| spec.global_batch(workers as u32));
    let batch = match spec.cluster.consistency() {
        Consistency::Sync => global,
        _ => (global / workers.max(1) as u32).max(1),
    };
    let per_epoch = (records.len() as u64).div_ceil(u64::from(batch.max(1)));
    let total = spec
        .args
        .max_steps
        .unwrap_or(u64::from(spec.args.epochs.unwrap_or(1)) * per_epoch);
    // A run shorter than `save_every` never checkpoints; its shards need only fit a spawn.
    let checkpoints_due = if total >= save_every { save_every } else { 0 };
    super::preflight::check_shard_sizes(init.len(), shards, spec.args.optimizer, checkpoints_due)?;
    let lr = LrArgs {
        peak: spec.args.learning_rate,
        warmup: spec.args.warmup_steps,
        total,
        decay: spec.args.schedule,
    };
    let optimizer = match spec.args.optimizer {
        OptimizerKind::Adamw => OptimizerConfig::AdamW(AdamWConfig {
            weight_decay: spec.args.weight_decay,
            ..AdamWConfig::default()
        }),
        OptimizerKind::Sgd => OptimizerConfig::Sgd(SgdConfig::default()),
    };
    let template = ShardArgs {
        job: lineage.clone(),
        shard: 0,
        consistency,
        max_consecutive_nonfinite: spec.nan.max_consecutive_nonfinite.max(1),
        lr,
        save_every,
        // The shards clip in sync mode, the trainers otherwise (`optim::shards_clip`).
        clip_norm: spec.args.clip_norm,
        adaptive_clip: spec.args.adaptive_clip,
        optimizer_json: optimizer_json(&optimizer),
        init: Vec::new(),
    };
    let n = records.len();
    let records = Arc::new(records);
    let dispatch_cfg = dispatch::Config {
        records: n as u64,
        seed,
        epochs: spec.args.epochs,
        global_batch: Some(global),
        per_device_batch: spec.args.per_device_batch,
        consistency,
        elastic: elastic::Config {
            workers_min: spec.cluster.workers_min,
            workers_max: spec.cluster.workers_max,
            below_min_timeout: spec.cluster.below_min_timeout,
        },
        speed_alpha: if spec.cluster.adaptive_shares {
            0.5
        } else {
            0.0
        },
        series_capacity: 10_000,
        keep_ledger: true,
        save_every,
    };
    let progress = Progress {
        job: catalog_job.clone(),
        total,
        records: n as u64,
    };
    let mut history = History::default();
    let mut saver = Saver {
        every: save_every,
        seed,
        lineage: lineage.clone(),
        catalog_job: catalog_job.clone(),
        attempt: job.clone(),
        global_batch: global,
        sync: consistency == Consistency::Sync,
        base: 0,
        saved: Vec::new(),
        last: 0,
    };
    let mut hosts: Vec<NodeId> = (0..shards)
        .map(|i| nodes[i % nodes.len()].clone())
        .collect();
    let (mut params, d) = match earlier {
        None => {
            let first: Vec<ShardArgs> = partition::ranges(init.len(), shards)
                .into_iter()
                .enumerate()
                .map(|(i, r)| template.for_shard(i as u32, init[r].to_vec()))
                .collect();
            let params = spawn_shards(ctx, &job, &hosts, first, init.len()).await?;
            let d = LocalDispatch::new(dispatch_cfg.clone(), records.clone()).map_err(err)?;
            for (i, host) in hosts.iter().enumerate() {
                progress.log(ctx, format!("parameter-server shard {i} started on {host}"));
            }
            (params, d)
        }
        Some((holder, manifest)) => {
            let t0 = std::time::Instant::now();
            if manifest.shards.len() != shards || manifest.total_params != init.len() as u64 {
                return Err(format!(
                    "checkpoint {} of this job has {} shards over {} parameters; the spec makes \
                     {shards} over {}",
                    manifest.step,
                    manifest.shards.len(),
                    manifest.total_params,
                    init.len()
                ));
            }
            super::recovery::stop_leftovers(ctx, &manifest.run.attempt, shards, &alive).await;
            let params = super::recovery::restore_shards(
                ctx,
                catalog_job,
                &job,
                &template,
                &holder,
                &manifest,
                &hosts,
            )
            .await
            .map_err(|e| format!("resuming from checkpoint {}: {e}", manifest.step))?;
            let d = LocalDispatch::resume(
                dispatch_cfg.clone(),
                records.clone(),
                manifest.assignment.clone(),
            )
            .map_err(|e| format!("resuming the sample assignment: {e}"))?;
            history = History::resumed(&manifest.run);
            saver.rewind(manifest.step);
            let seconds = t0.elapsed().as_secs_f64();
            progress.log(
                ctx,
                format!(
                    "resumed from checkpoint {} (from {holder}) of an earlier attempt; every \
                     shard restored on {} in {seconds:.2} s",
                    manifest.step,
                    hosts
                        .iter()
                        .map(|h| h.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            history.restores.push(serde_json::json!({
                "lost": "coordinator", "checkpoint": manifest.step, "from": holder.0,
                "seconds": seconds,
            }));
            (params, d)
        }
    };
    let mut d = Arc::new(d);
    let endpoint = dispatch_actor(&job);
    ctx.host
        .register(&endpoint, Arc::new(DispatchEndpoint(d.clone())))
        .map_err(err)?;
    let src = Arc::new(model.source(&classes, &spec.dataset.text_field, &label_field)?);
    let held_out = Arc::new(held_out);
    let mut evals = super::evaluation::Periodic::new(
        spec.args.eval_every,
        src.clone(),
        model.classes(),
        held_out.clone(),
        consistency == Consistency::Sync,
    );
    let started = std::time::Instant::now();
    let mut start_on = nodes[..workers].to_vec();
    let result =
        loop {
            let crew = Crew {
                ctx,
                spec: &spec,
                job: &job,
                progress: &progress,
                hosts: &hosts,
                model: &model,
                classes: &classes,
                label_field: &label_field,
                lr,
                params: &params,
                d: &d,
            };
            let driven = drive(
                &crew,
                &start_on,
                cancelled,
                &mut history,
                &mut saver,
                &mut evals,
            )
            .await;
            let lost = match driven {
                Ok(Driven::Finished(outcome)) => break Ok(outcome),
                Ok(Driven::ShardLost(host)) => host,
                Err(e) => break Err(e),
            };
            // Every shard goes back to the newest checkpoint, on the nodes alive now.
            let t0 = std::time::Instant::now();
            params.stop_all().await;
            let alive: Vec<NodeId> = super::recovery::reachable(ctx)
                .await
                .into_iter()
                .filter(|n| *n != lost)
                .collect();
            let Some((holder, manifest)) = checkpoints::latest(&ctx.mesh, &lineage, &alive).await
            else {
                break Err(format!(
                    "the node {lost} holding a parameter-server shard was lost and no checkpoint \
                 of the job exists to restore it from (args.save_every = {})",
                    spec.args.save_every
                ));
            };
            if history.restores.len() >= MAX_RESTORES {
                break Err(format!(
                    "the node {lost} holding a parameter-server shard was lost; {MAX_RESTORES} \
                 restores already, giving up"
                ));
            }
            let ranked = flotilla_actors::rendezvous::rank(job.as_str().as_bytes(), &alive);
            let new_hosts: Vec<NodeId> = (0..shards)
                .map(|i| ranked[i % ranked.len()].clone())
                .collect();
            let restored = super::recovery::restore_shards(
                ctx,
                catalog_job,
                &job,
                &template,
                &holder,
                &manifest,
                &new_hosts,
            )
            .await;
            params = match restored {
                Ok(p) => p,
                Err(e) => break Err(format!("restoring checkpoint {}: {e}", manifest.step)),
            };
            if consistency == Consistency::Sync {
                history.absorb(&d, manifest.step);
            } else {
                // What async and ssp runs did before the checkpoint is what it recorded.
                history.rewind_to(&manifest.run);
            }
            saver.rewind(manifest.step);
            d = match LocalDispatch::resume(
                dispatch_cfg.clone(),
                records.clone(),
                manifest.assignment.clone(),
            ) {
                Ok(nd) => Arc::new(nd),
                Err(e) => break Err(format!("resuming the sample assignment: {e}")),
            };
            ctx.host.unregister(&endpoint);
            if let Err(e) = ctx
                .host
                .register(&endpoint, Arc::new(DispatchEndpoint(d.clone())))
            {
                break Err(err(e));
            }
            let seconds = t0.elapsed().as_secs_f64();
            progress.log(
                ctx,
                format!(
                "the node {lost} holding a parameter-server shard was lost; every shard restored \
                 from checkpoint {} (from {holder}) on {} in {seconds:.2} s",
                manifest.step,
                new_hosts.iter().map(|h| h.0.as_str()).collect::<Vec<_>>().join(", ")
            ),
            );
            history.restores.push(serde_json::json!({
                "lost": lost.0, "checkpoint": manifest.step, "from": holder.0, "seconds": seconds,
            }));
            hosts = new_hosts;
            start_on = ranked[..workers.min(ranked.len())].to_vec();
        };
    let train_seconds = started.elapsed().as_secs_f64();

    // Whatever happened, the shards and the endpoint go.
    params.stop_all().await;
    ctx.host.unregister(&endpoint);
    ctx.metrics.finished(catalog_job.as_str(), workers as u32);
    let outcome = result?;
    let (trained, steps) = (outcome.params.clone(), outcome.samples);
    if let Some(e) = evals.as_mut() {
        e.collect().await;
    }
    // Losses on a fixed sample before and after, and the held-out metrics: compute-bound, off
    // the async workers.
    let (before, after, eval) = {
        let (src, init, trained, eval_records) =
            (src.clone(), init, trained.clone(), held_out.clone());
        let sample: Vec<Record> = records.iter().take(256).cloned().collect();
        let classes_n = model.classes();
        tokio::task::spawn_blocking(move || -> Result<_, String> {
            let before = src.compute(&init, &sample)?.1;
            let after = src.compute(&trained, &sample)?.1;
            let eval =
                crate::models::evaluation::evaluate(&src, classes_n, &trained, &eval_records)?;
            Ok((before, after, eval))
        })
        .await
        .map_err(err)??
    };
    let mut summary = serde_json::json!({
        "job": job.as_str(),
        "records": n,
        "eval_records": held_out.len(),
        "workers": workers,
        "shards": shards,
        "samples": steps,
        "loss_before": before,
        "loss_after": after,
        "accuracy": eval.map(|e| e.0),
        "macro_f1": eval.map(|e| e.1),
        "ledger": match &outcome.ledger {
            Ok(()) => "every training record exactly once per epoch".to_string(),
            Err(e) => e.clone(),
        },
        "ledger_exact": outcome.ledger.is_ok(),
        "departed": history.departed.iter().map(|(w, n, r)| serde_json::json!({"worker": w, "node": n, "reason": r})).collect::<Vec<_>>(),
        "joined": history.joined.iter().map(|(w, n)| serde_json::json!({"worker": w, "node": n})).collect::<Vec<_>>(),
        "curve": outcome.curve,
        "checkpoints": saver.saved.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "checkpoint_seconds": saver.saved.iter().map(|s| s.seconds).sum::<f64>(),
        "restores": history.restores,
        "evals": evals.map(|e| e.done).unwrap_or_default(),
        "train_seconds": train_seconds,
        "samples_per_s": steps as f64 / train_seconds.max(1e-9),
        "compute_samples_per_s": outcome.compute_samples_per_s,
    });
    let labels: Vec<String> = classes.keys().cloned().collect();
    let registered = register(ctx, &spec, &job, &model, labels, &trained, steps, &summary).await?;
    summary["model"] = serde_json::Value::String(registered);
    Ok(summary.to_string())
}

/// Restores from a checkpoint one run may go through before it gives up.
const MAX_RESTORES: usize = 3;

/// Spawns one parameter-server shard per `args` on `hosts` (same order); the client to them.
pub(super) async fn spawn_shards(
    ctx: &TrainContext,
    job: &JobId,
    hosts: &[NodeId],
    args: Vec<ShardArgs>,
    total: usize,
) -> Result<Arc<RemoteParams>, String> {
    for (i, a) in args.iter().enumerate() {
        let mut tries = 0;
        loop {
            let spawned = spawn_remote::<_, RequestBody, Reply>(
                ctx.mesh.clone(),
                hosts[i].clone(),
                PARAM_SERVER_ROLE,
                &shard_actor(job, i as u32),
                a,
                CALL,
            )
            .await;
            match spawned {
                Ok(_) => break,
                // After a restore the stopped shard of the same name may still be ending.
                Err(e) if e.to_string().contains("already runs") && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(format!("spawning shard {i} on {}: {e}", hosts[i])),
            }
        }
    }
    Ok(Arc::new(RemoteParams::new(
        ctx.mesh.clone(),
        job,
        hosts,
        total,
        CALL,
        PULL,
    )))
}

/// Where a run's progress goes: the events of the job that asked for it, and the gauges.
#[derive(Debug, Clone)]
pub(super) struct Progress {
    /// The catalog job the run belongs to (its events and gauges are under it).
    pub job: JobId,
    total: u64,
    /// Training records (what the ledger is checked against).
    records: u64,
}

impl Progress {
    /// Appends `text` to the job's events on this node.
    pub(super) fn log(&self, ctx: &TrainContext, text: String) {
        let event = flotilla_protocol::services::jobs::JobEvent {
            at_ms: flotilla_actors::clock::wall_ms(),
            node: ctx.data.me.clone(),
            text,
        };
        if let Err(e) =
            flotilla_actors::jobs::manager::events::append(ctx.store.as_ref(), &self.job, &event)
        {
            tracing::warn!(job = %self.job.as_str(), error = %e, "cannot log a training event");
        }
    }

    /// Publishes the latest step recorded after `after` (one event, however many steps passed)
    /// and returns the step published.
    fn publish(&self, ctx: &TrainContext, d: &LocalDispatch, after: Option<u64>) -> Option<u64> {
        let Ok(records) = dispatch::latest(d, after) else {
            return after;
        };
        let Some(last) = records.last() else {
            return after;
        };
        ctx.metrics.observe(self.job.as_str(), last, self.total);
        let event = flotilla_protocol::services::jobs::JobEvent {
            at_ms: flotilla_actors::clock::wall_ms(),
            node: ctx.data.me.clone(),
            text: super::metrics::event_text(last, self.total),
        };
        if let Err(e) =
            flotilla_actors::jobs::manager::events::append(ctx.store.as_ref(), &self.job, &event)
        {
            tracing::warn!(job = %self.job.as_str(), error = %e, "cannot log training progress");
        }
        Some(last.step)
    }
}

/// The dispatch's failure (below the minimum of workers too long), as this run's error.
fn failed(d: &LocalDispatch) -> Result<(), String> {
    match d
        .inspect(|c| c.failure().map(str::to_string))
        .map_err(err)?
    {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Whether record `id` is held out of training (a share `fraction` of ids, by hash).
fn held_out(id: u64, seed: u64, fraction: f32) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&id.to_le_bytes());
    let hash = h.finalize();
    let [a, b, c, d, ..] = *hash.as_bytes();
    let draw = u32::from_le_bytes([a, b, c, d]);
    f64::from(draw) < f64::from(fraction) * f64::from(u32::MAX)
}

/// Saves the trained classifier on this node and registers it as the next version of the
/// spec's output model; returns `name@version`.
#[allow(clippy::too_many_arguments)]
async fn register(
    ctx: &TrainContext,
    spec: &TrainSpec,
    job: &JobId,
    model: &ModelArgs,
    labels: Vec<String>,
    params: &[f32],
    steps: u64,
    summary: &serde_json::Value,
) -> Result<String, String> {
    use flotilla_protocol::catalog::Record as CatalogRecord;
    let name = spec.output_model();
    let version = crate::models::artifacts::next_version(&ctx.data.catalog, &name)
        .await
        .map_err(err)?;
    // Written to a scratch folder, copied into the artifact store by registration, then
    // removed: the store holds the only copy.
    let dir = ctx
        .models_dir
        .join(&name)
        .join(format!("{version}-{}", job.as_str()));
    let me = ctx.data.me.0.clone();
    let blobs = ctx.files.blobs.clone();
    let (model, params, extra) = (model.clone(), params.to_vec(), summary.clone());
    let record = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        std::fs::create_dir_all(&dir)?;
        crate::models::classifier::save_classifier(&dir, &model, labels, &params, steps, extra)?;
        let record = crate::models::artifacts::register_folder(&name, version, &dir, &me, &blobs);
        let _ = std::fs::remove_dir_all(&dir);
        record
    })
    .await
    .map_err(err)?
    // The scratch folder is under the node's data dir: results name no local paths.
    .map_err(|e| {
        let mut message = format!("saving the trained model: {e}");
        let canonical = std::fs::canonicalize(&ctx.models_dir).ok();
        for dir in canonical.iter().chain([&ctx.models_dir]) {
            message = message.replace(&dir.display().to_string(), "<models dir>");
        }
        message
    })?;
    let mut record = record;
    record.lineage.operation = "train".into();
    let params = &mut record.lineage.parameters;
    params.insert("dataset".into(), spec.dataset.name.clone());
    params.insert("job".into(), job.as_str().to_string());
    // The model it started from: a fresh configuration or the folder it fine-tuned.
    params.insert(
        "parent_model".into(),
        match &spec.model {
            flotilla_protocol::training::ModelSource::New(_) => "new".to_string(),
            flotilla_protocol::training::ModelSource::HfFolder(dir) => format!("hf_folder:{dir}"),
            flotilla_protocol::training::ModelSource::Registered(m) => m.clone(),
        },
    );
    params.insert("text_field".into(), spec.dataset.text_field.clone());
    if let Some(l) = &spec.dataset.label_field {
        params.insert("label_field".into(), l.clone());
    }
    for key in [
        "accuracy",
        "macro_f1",
        "loss_before",
        "loss_after",
        "samples",
        "eval_records",
    ] {
        if let Some(v) = summary.get(key).filter(|v| !v.is_null()) {
            record
                .metadata
                .insert(format!("metrics.{key}"), v.to_string());
        }
    }
    let at = format!("{}@{}", record.name, record.version);
    let view = crate::models::artifacts::ServedModel::from_record(&record);
    ctx.data
        .catalog
        .put(CatalogRecord::Model(record))
        .await
        .map_err(|e| format!("registering {at}: {e}"))?;
    // The run ends once the trained model is on more than this node.
    if let Some(view) = view {
        let files = &ctx.files;
        let held = crate::models::replicate::wait_replicated(
            files,
            &ctx.data.membership,
            &view,
            files.replication,
            crate::models::fetch::download_deadline(view.sizes.values().sum()),
        )
        .await;
        tracing::info!(model = %at, holders = held.len(), "trained model registered");
    }
    Ok(at)
}

/// How often the coordinator looks for alive nodes without a trainer (elastic joins).
const JOIN_EVERY: Duration = Duration::from_secs(1);
/// Points of the loss curve kept in the result at most (evenly thinned).
const CURVE_POINTS: usize = 200;

/// What every trainer of a run is spawned with.
struct Crew<'a> {
    ctx: &'a TrainContext,
    spec: &'a TrainSpec,
    job: &'a JobId,
    progress: &'a Progress,
    hosts: &'a [NodeId],
    model: &'a ModelArgs,
    classes: &'a BTreeMap<String, u32>,
    label_field: &'a str,
    lr: LrArgs,
    params: &'a Arc<RemoteParams>,
    d: &'a Arc<LocalDispatch>,
}

/// How the trainers fared.
struct Outcome {
    params: Vec<f32>,
    /// Samples the ledger holds.
    samples: u64,
    /// Whether every training record was consumed exactly once per epoch.
    ledger: Result<(), String>,
    /// `(step, loss)` of the steps that had samples, thinned to at most [`CURVE_POINTS`].
    curve: Vec<(u64, f32)>,
    /// Samples over the time of the slowest worker's compute, summed over steps: the rate
    /// without synchronisation (what the wall-clock rate is compared with).
    compute_samples_per_s: Option<f64>,
}

impl Crew<'_> {
    fn log(&self, text: String) {
        self.progress.log(self.ctx, text);
    }

    /// Admits `worker` and, when it gets the worker role, spawns its trainer on `node` and
    /// watches it: its end goes to `downs`. Whether a trainer was started.
    async fn spawn(
        &self,
        worker: WorkerId,
        node: &NodeId,
        downs: &mpsc::Sender<(WorkerId, String)>,
    ) -> Result<bool, String> {
        if !self.admit(worker).await? {
            return Ok(false);
        }
        self.start(worker, node, downs).await?;
        Ok(true)
    }

    /// Admits `worker` (joining it to every shard when it gets the worker role). Whether it
    /// is a worker.
    async fn admit(&self, worker: WorkerId) -> Result<bool, String> {
        let role = self
            .d
            .admit(self.params.as_ref(), worker)
            .await
            .map_err(err)?;
        Ok(role == Role::Worker)
    }

    /// Spawns the trainer of the admitted `worker` on `node` and watches it: its end goes to
    /// `downs`.
    async fn start(
        &self,
        worker: WorkerId,
        node: &NodeId,
        downs: &mpsc::Sender<(WorkerId, String)>,
    ) -> Result<(), String> {
        let args = TrainerArgs {
            job: self.job.clone(),
            worker,
            sync: self.spec.cluster.consistency() == Consistency::Sync,
            precision: self.spec.args.precision,
            clip_norm: self.spec.args.clip_norm,
            adaptive_clip: self.spec.args.adaptive_clip,
            lr: self.lr,
            model: self.model.to_bytes()?,
            classes: self.classes.clone(),
            text_field: self.spec.dataset.text_field.clone(),
            label_field: self.label_field.to_string(),
            total_params: self.params.total_params() as u64,
            shard_hosts: self.hosts.to_vec(),
            coordinator: self.ctx.data.me.clone(),
            call_deadline_ms: CALL.as_millis() as u64,
            pull_deadline_ms: PULL.as_millis() as u64,
        };
        let name = trainer_actor(self.job, worker);
        spawn_remote::<_, (), ()>(
            self.ctx.mesh.clone(),
            node.clone(),
            TRAINER_ROLE,
            &name,
            &args,
            CALL,
        )
        .await
        .map_err(|e| format!("spawning trainer {} on {node}: {e}", worker.0))?;
        let mut rx = self
            .ctx
            .host
            .monitor(&self.ctx.data.membership, node, &name)
            .await
            .map_err(err)?;
        let tx = downs.clone();
        flotilla_actors::task::spawn(async move {
            if let Some(down) = rx.recv().await {
                let _ = tx.send((worker, down.reason)).await;
            }
        });
        self.log(format!("trainer {} started on {node}", worker.0));
        Ok(())
    }
}

/// How one part of a run ended.
enum Driven {
    Finished(Outcome),
    /// A node holding a parameter-server shard is gone; the trainers were stopped.
    ShardLost(NodeId),
}

/// The coordinating node is shutting down: a last checkpoint (see [`Saver::maybe_save`]), then
/// the trainers stop. Returns the run's failure reason, naming the checkpoint a new attempt
/// resumes from. The shutdown's grace period bounds all of it; a checkpoint cut short by the
/// end of the process is never used, since its manifest is written last.
async fn stop_for_shutdown(
    crew: &Crew<'_>,
    running: &BTreeMap<NodeId, WorkerId>,
    history: &History,
    saver: &mut Saver,
) -> String {
    crew.log("the coordinating node is shutting down: writing a last checkpoint".into());
    saver
        .maybe_save(
            crew.ctx,
            crew.params,
            crew.d,
            history,
            |t| crew.log(t),
            true,
        )
        .await;
    stop_trainers(crew, running).await;
    match saver.saved.last() {
        Some(s) => format!(
            "the coordinating node shut down; the run stopped at checkpoint {} and a new \
             attempt resumes from it",
            s.step
        ),
        None if crew.spec.args.save_every == 0 => {
            "the coordinating node shut down; the run keeps no checkpoints \
             (args.save_every = 0)"
                .into()
        }
        None => "the coordinating node shut down before the run's first checkpoint".into(),
    }
}

/// Stops the trainers still running (best effort: a dead node's trainer is gone already).
async fn stop_trainers(crew: &Crew<'_>, running: &BTreeMap<NodeId, WorkerId>) {
    for (node, worker) in running {
        let t: RemoteActor<(), ()> = RemoteActor::new(
            crew.ctx.mesh.clone(),
            node.clone(),
            &trainer_actor(crew.job, *worker),
            CALL,
        );
        let _ = t.stop().await;
    }
}

/// Spawns and watches the trainers until they are all gone — taking in nodes that come up
/// while the job is below its maximum of workers, and departing the ones that die (their
/// samples go to the others), checkpointing as it goes — then reads the final parameters. When
/// a node holding a shard is lost, it stops the trainers and says so instead.
async fn drive(
    crew: &Crew<'_>,
    nodes: &[NodeId],
    cancelled: &AtomicBool,
    history: &mut History,
    saver: &mut Saver,
    evals: &mut Option<super::evaluation::Periodic>,
) -> Result<Driven, String> {
    let (ctx, d, params) = (crew.ctx, crew.d, crew.params);
    let (downs_tx, mut downs) = mpsc::channel(64);
    // Trainers running, by node; a node runs at most one trainer of a job.
    let mut running: BTreeMap<NodeId, WorkerId> = BTreeMap::new();
    // The first crew is joined to every shard before any of its trainers starts. Joined one
    // by one as trainers start, a late joiner could find the shards mid-step — one waiting
    // for a sync step's gradient norm, another still waiting for the first trainer's push —
    // and its first pull would see the shards disagree about the step.
    let mut admitted = Vec::with_capacity(nodes.len());
    for node in nodes {
        let worker = WorkerId(history.next_worker);
        history.next_worker += 1;
        if crew.admit(worker).await? {
            admitted.push((node, worker));
        }
    }
    for (node, worker) in admitted {
        crew.start(worker, node, &downs_tx).await?;
        running.insert(node.clone(), worker);
    }
    let mut published: Option<u64> = None;
    let mut last_publish = tokio::time::Instant::now();
    let mut last_join = tokio::time::Instant::now();
    // Once a trainer ends on its own the data is running out: nobody new is taken in.
    let mut draining = false;
    while !running.is_empty() {
        if last_publish.elapsed() >= PROGRESS_EVERY {
            published = crew.progress.publish(ctx, d, published);
            last_publish = tokio::time::Instant::now();
            // The below-minimum timer runs on this tick (departures check it too).
            d.tick().map_err(err)?;
            failed(d)?;
            if let Some(host) = lost_shard_host(ctx, crew.hosts).await {
                stop_trainers(crew, &running).await;
                return Ok(Driven::ShardLost(host));
            }
            saver
                .maybe_save(ctx, params, d, history, |t| crew.log(t), false)
                .await;
            if let Some(e) = evals.as_mut() {
                e.tick(ctx, crew.progress, params, published).await;
            }
        }
        if !draining
            && last_join.elapsed() >= JOIN_EVERY
            && (running.len() as u32) < crew.spec.cluster.workers_max
        {
            last_join = tokio::time::Instant::now();
            for node in ctx.data.alive().await {
                if running.len() as u32 >= crew.spec.cluster.workers_max {
                    break;
                }
                if running.contains_key(&node) {
                    continue;
                }
                let worker = WorkerId(history.next_worker);
                history.next_worker += 1;
                match crew.spawn(worker, &node, &downs_tx).await {
                    Ok(true) => {
                        history.joined.push((worker.0, node.0.clone()));
                        running.insert(node, worker);
                    }
                    Ok(false) => {}
                    // A node that just came up may not host the role yet; try next time.
                    Err(e) => tracing::debug!(node = %node, error = %e, "no trainer yet"),
                }
            }
        }
        tokio::select! {
            next = downs.recv() => {
                let Some((worker, reason)) = next else { break };
                let node = running
                    .iter()
                    .find(|(_, w)| **w == worker)
                    .map(|(n, _)| n.clone());
                if let Some(node) = &node {
                    running.remove(node);
                }
                let died = reason.contains("is dead") || reason.contains("is left") || reason.contains("failed");
                // A trainer that failed may have lost a shard rather than died itself.
                if died {
                    if let Some(host) = lost_shard_host(ctx, crew.hosts).await {
                        stop_trainers(crew, &running).await;
                        return Ok(Driven::ShardLost(host));
                    }
                }
                if died {
                    d.depart(params.as_ref(), worker, Why::Died).await.map_err(err)?;
                    let on = node.map(|n| n.0).unwrap_or_default();
                    crew.log(format!("trainer {} on {on} left: {reason}; its samples go to the others", worker.0));
                    history.departed.push((worker.0, on, reason));
                } else {
                    draining = true;
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if cancelled.load(Ordering::Acquire) {
                    return Err("cancelled".into());
                }
                if ctx.lifecycle.is_draining() {
                    return Err(stop_for_shutdown(crew, &running, history, saver).await);
                }
            }
        }
    }
    d.flush_reports().map_err(err)?;
    crew.progress.publish(ctx, d, published);
    failed(d)?;
    let epochs = crew.spec.args.epochs.unwrap_or(1);
    let (samples, ledger, curve, compute_samples_per_s) = d
        .inspect(|c| {
            // The parts before a restore, up to the checkpoint it went back to, and this one.
            let whole = c.ledger().map(|l| {
                let mut whole = history.ledger.clone();
                whole.merge(l);
                whole
            });
            let ledger = match &whole {
                Some(l) if crew.spec.args.max_steps.is_none() => {
                    l.verify_exactly_once(epochs, crew.progress.records)
                }
                Some(_) => Ok(()),
                None => Err("no sample ledger was kept".to_string()),
            };
            let mut series = history.series.clone();
            series.extend(c.series().since(None));
            // A step closed late (flushed at the end) comes after later ones in the series.
            series.sort_by_key(|r| r.step);
            let (samples, seconds) = series
                .iter()
                .filter(|r| r.samples > 0 && r.samples_per_s.is_finite() && r.samples_per_s > 0.0)
                .fold((0.0, 0.0), |(n, t), r| {
                    (
                        n + f64::from(r.samples),
                        t + f64::from(r.samples) / r.samples_per_s,
                    )
                });
            let compute_rate = (seconds > 0.0).then(|| samples / seconds);
            // A step closed only by workers that had no samples has no loss: not a point.
            let trained: Vec<_> = series.iter().filter(|r| r.samples > 0).collect();
            let stride = trained.len().div_ceil(CURVE_POINTS).max(1);
            let curve = trained
                .iter()
                .step_by(stride)
                .map(|r| (r.step, r.loss))
                .collect::<Vec<_>>();
            (whole.map_or(0, |l| l.total()), ledger, curve, compute_rate)
        })
        .map_err(err)?;
    let reader = WorkerId(u32::MAX);
    let mut trained = Vec::with_capacity(params.total_params());
    for s in 0..params.shards() as u32 {
        params.join(s, reader).await.map_err(err)?;
        trained.extend(params.pull(s, reader, None).await.map_err(err)?.values);
        params.leave(s, reader, true).await.map_err(err)?;
    }
    Ok(Driven::Finished(Outcome {
        params: trained,
        samples,
        ledger,
        curve,
        compute_samples_per_s,
    }))
}
