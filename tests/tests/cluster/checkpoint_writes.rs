//! Only a run's coordinator writes its checkpoints: another member's writes into any node's
//! checkpoint store (its own included) are refused, blobs and manifests alike, for the live
//! run and for a job nobody runs; reads stay open to members; and the run itself checkpoints
//! and finishes, its coordinator's writes accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::remote::RemoteActor;
use flotilla_node::train::checkpoints::{lineage_of, StoreAsk, StoreReply, CHECKPOINT_STORE};
use flotilla_protocol::jobs::JobId;
use flotilla_tests::training::{
    banking_subset, coordinator_index, events, job_result, submit_job, upload_csv,
};
use flotilla_tests::{wait_until, TestCluster};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(300);
const CALL: Duration = Duration::from_secs(30);

/// Asks node `to`'s checkpoint store from node `from`: the reply, or the refusal's text.
async fn ask(
    cluster: &TestCluster,
    from: usize,
    to: usize,
    msg: &StoreAsk,
) -> Result<StoreReply, String> {
    let actor: RemoteActor<StoreAsk, Result<StoreReply, String>> = RemoteActor::new(
        Arc::new(cluster.node(from).mesh.clone()),
        cluster.node(to).node_id(),
        CHECKPOINT_STORE,
        CALL,
    );
    match actor.call(msg).await {
        Ok(answer) => answer,
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_runs_coordinator_writes_its_checkpoints() {
    let cluster = TestCluster::start(3).await.unwrap();
    wait_until(Duration::from_secs(60), "convergence", || {
        cluster.converged()
    })
    .await
    .unwrap();
    upload_csv(
        &cluster,
        0,
        "bank5",
        banking_subset(5, 100),
        "&records_per_shard=100",
    )
    .await;
    let spec = json!({
        "kind": "train",
        "train": {
            "model": { "new": {
                "architecture": "classifier", "vocab_size": 128, "hidden_size": 64,
                "layers": 2, "heads": 4, "max_seq_len": 64, "num_labels": 5
            }},
            "dataset": { "name": "bank5@1", "text_field": "text", "label_field": "label" },
            "args": {
                "per_device_batch": 4, "epochs": 3, "learning_rate": 0.002,
                "warmup_steps": 5, "schedule": "cosine", "seed": 11, "save_every": 15
            },
            "cluster": { "workers_min": 1, "workers_max": 3, "ps_shards": 1, "mode": "sync" }
        }
    });
    let id = submit_job(&cluster, 0, &spec).await;
    wait_until(DEADLINE, "a checkpoint", || async {
        events(&cluster, 0, &id)
            .await
            .iter()
            .any(|(_, t)| t.starts_with("checkpoint ") && t.contains(" saved on "))
    })
    .await
    .unwrap();
    let coordinator = coordinator_index(&cluster, &id).await;
    let stranger = (0..3).find(|i| *i != coordinator).unwrap();
    let job = JobId(id.clone());

    // Reads are open: the stranger finds the run's newest checkpoint on some holder.
    let mut found = None;
    for holder in 0..3 {
        if let Ok(StoreReply::Latest(Some(m))) = ask(
            &cluster,
            stranger,
            holder,
            &StoreAsk::Latest {
                job: lineage_of(&job),
            },
        )
        .await
        {
            found = Some(m);
        }
    }
    let manifest = found.expect("some holder answers the stranger's read");

    // Writes are not, on any node: not a blob, not a manifest, not for a job nobody runs.
    let far = manifest.step + 1_000_000;
    for target in 0..3 {
        let mut forged = manifest.clone();
        forged.step = far;
        let made_up = JobId("job-made-up".into());
        let writes = [
            StoreAsk::PutBlob {
                run: job.clone(),
                job: lineage_of(&job),
                step: far,
                shard: 0,
                blob: vec![7; 64],
            },
            StoreAsk::PutManifest {
                run: job.clone(),
                manifest: forged,
            },
            StoreAsk::PutBlob {
                run: made_up.clone(),
                job: lineage_of(&made_up),
                step: 1,
                shard: 0,
                blob: vec![7; 64],
            },
        ];
        for write in &writes {
            let refused = ask(&cluster, stranger, target, write).await.unwrap_err();
            assert!(refused.contains("checkpoint write refused"), "{refused}");
        }
    }

    // The coordinator's own writes went on: the run finishes with its checkpoints.
    let r = job_result(&cluster, 0, &id, DEADLINE).await;
    let checkpoints = r["checkpoints"]
        .as_array()
        .expect("checkpoints in the result");
    assert!(!checkpoints.is_empty(), "{r}");
    assert!(
        checkpoints.iter().all(|c| c["step"].as_u64() != Some(far)),
        "{checkpoints:?}"
    );
    cluster.shutdown().await.unwrap();
}
