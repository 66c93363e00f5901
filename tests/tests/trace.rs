//! Tracing on a real 3-node cluster: one training run and one chat completion, recorded by a
//! subscriber that keeps every span. Each actor they involve handles its work in an `actor`
//! span naming its role, under its job's (or deployment's) span, under its node's; the node's
//! own actors (membership, catalog, executor, job manager, data shards) under their node's.
//! The spans are printed, as `RUST_LOG=info` would show them. A binary of its own, because it
//! installs the process's global subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_tests::serving::{cluster3, deploy, post, register, tiny_gpt, wait_ready};
use flotilla_tests::training::{banking_subset, train, upload_csv};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A span's fields, by name, as text.
#[derive(Clone, Debug, Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
}

/// One `actor` span as it was opened: its fields, then its ancestors' names and fields,
/// innermost first.
#[derive(Clone, Debug)]
struct Opened {
    id: Id,
    fields: BTreeMap<String, String>,
    ancestors: Vec<(String, BTreeMap<String, String>)>,
}

impl Opened {
    fn ancestor(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.ancestors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f)
    }

    fn line(&self) -> String {
        let mut parts: Vec<String> = self
            .ancestors
            .iter()
            .rev()
            .map(|(n, f)| format!("{n}{f:?}"))
            .collect();
        parts.push(format!("actor{:?}", self.fields));
        parts.join(":")
    }
}

/// Keeps every span's fields (in its extensions, updated on `record`) and, for each `actor`
/// span, what it and its ancestors said when it opened.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Opened>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let span = ctx.span(id).expect("a new span is in the registry");
        span.extensions_mut().insert(fields.clone());
        if attrs.metadata().name() != "actor" {
            return;
        }
        let ancestors = span
            .scope()
            .skip(1)
            .map(|s| {
                let f = s.extensions().get::<Fields>().cloned().unwrap_or_default();
                (s.name().to_string(), f.0)
            })
            .collect();
        self.0.lock().unwrap().push(Opened {
            id: id.clone(),
            fields: fields.0,
            ancestors,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(f) = span.extensions_mut().get_mut::<Fields>() {
                values.record(f);
                // An actor span's later fields (the coordinator's run) join what it opened
                // with; span ids are reused, so the latest span with this id is this one.
                if span.name() == "actor" {
                    let mut opened = self.0.lock().unwrap();
                    if let Some(o) = opened.iter_mut().rev().find(|o| &o.id == id) {
                        o.fields.extend(f.0.clone());
                    }
                }
            }
        }
    }
}

fn train_spec() -> serde_json::Value {
    json!({
        "kind": "train",
        "train": {
            "model": { "new": {
                "architecture": "classifier", "vocab_size": 128, "hidden_size": 32,
                "layers": 1, "heads": 2, "max_seq_len": 48, "num_labels": 4
            }},
            "dataset": { "name": "bank4@1", "text_field": "text", "label_field": "label",
                         "eval_fraction": 0.0 },
            "args": {
                "per_device_batch": 4, "global_batch": 8, "epochs": 1,
                "learning_rate": 0.003, "seed": 5
            },
            "cluster": { "workers_min": 1, "workers_max": 2, "ps_shards": 2, "mode": "sync" }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_actor_of_a_training_step_and_a_chat_completion_runs_in_its_span() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(
            capture
                .clone()
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        ),
    )
    .expect("the first subscriber of this process");

    let cluster = cluster3().await;
    let nodes: Vec<String> = (0..cluster.len())
        .map(|i| cluster.node(i).peer_id.to_string())
        .collect();

    // One training run.
    upload_csv(&cluster, 0, "bank4", banking_subset(4, 16), "").await;
    let result = train(&cluster, 0, &train_spec(), Duration::from_secs(300)).await;
    println!("training result: {result}");

    // One chat completion.
    let dir = tempfile::tempdir().unwrap();
    let hash = register(&cluster, "tiny-gpt", &tiny_gpt(&dir.path().join("m"), 1)).await;
    deploy(
        &cluster,
        json!({"name": "chat", "model": "tiny-gpt", "replicas": 1}),
    )
    .await;
    wait_ready(&cluster, "chat", &hash, 1).await;
    let (code, answer) = post(
        &cluster,
        1,
        "/v1/chat/completions",
        &json!({"model": "chat", "messages": [{"role": "user", "content": "the"}],
                "max_tokens": 4}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let n = cluster.len();
    cluster.shutdown().await.unwrap();

    let opened = capture.0.lock().unwrap().clone();
    for o in &opened {
        println!("{}", o.line());
    }
    let on_a_node = |o: &Opened| {
        o.ancestor("node")
            .and_then(|f| f.get("node"))
            .is_some_and(|n| nodes.contains(n))
    };
    let with_role = |role: &str| -> Vec<&Opened> {
        opened
            .iter()
            .filter(|o| o.fields.get("role").map(String::as_str) == Some(role))
            .collect()
    };
    // The node's own actors: under their node.
    for role in [
        "membership",
        "catalog",
        "executor",
        "job_manager",
        "data_shard",
    ] {
        let spans = with_role(role);
        assert_eq!(
            spans.iter().filter(|o| on_a_node(o)).count(),
            n,
            "one {role} per node, each under its node's span: {spans:?}"
        );
    }
    // The training run's actors: the coordinator under the catalog job, naming the run and its
    // lineage; each trainer under that run, each parameter server under that lineage; every
    // one under a node.
    let coordinators = with_role("coordinator");
    assert_eq!(coordinators.len(), 1, "{coordinators:?}");
    let coordinator = coordinators[0];
    assert!(on_a_node(coordinator), "{coordinator:?}");
    let job = &coordinator
        .ancestor("job")
        .expect("the coordinator's job span")["job"];
    assert!(
        job.starts_with("job-"),
        "the catalog job's id: {coordinator:?}"
    );
    let (run, lineage) = (&coordinator.fields["run"], &coordinator.fields["lineage"]);
    for (role, field, want) in [
        ("trainer", "run", run),
        ("param_server", "lineage", lineage),
    ] {
        let spans = with_role(role);
        assert!(
            !spans.is_empty()
                && spans
                    .iter()
                    .all(|o| on_a_node(o)
                        && o.ancestor("job").and_then(|j| j.get(field)) == Some(want)),
            "every {role} under the span of the coordinator's {field} {want}: {spans:?}"
        );
    }
    let shards: std::collections::BTreeSet<&str> = with_role("param_server")
        .iter()
        .filter_map(|o| o.fields.get("shard").map(String::as_str))
        .collect();
    assert_eq!(
        shards.len(),
        2,
        "each parameter server names its shard: {shards:?}"
    );
    // The chat completion's engine: under its deployment, under a node.
    let generators = with_role("generator");
    assert!(
        !generators.is_empty()
            && generators.iter().all(|o| on_a_node(o)
                && o.ancestor("deployment").and_then(|d| d.get("deployment"))
                    == Some(&"chat".to_string())),
        "the generation engine under its deployment's and its node's span: {generators:?}"
    );
}
