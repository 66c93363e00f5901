//! The `Executor` actor: tasks run once per attempt, re-attach, fencing, cancel, and a restart
//! of the executing node that keeps the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actors::jobs::executor::handle::Start;
use flotilla_actors::jobs::executor::{Finished, Handle, TaskRunner};
use flotilla_actors::testing::CrashStore;
use flotilla_protocol::jobs::{JobId, JobKind, Priority, Resources};
use flotilla_protocol::services::jobs::{StartAnswer, TaskOutcome};
use flotilla_protocol::NodeId;
use tokio::sync::mpsc;

/// Counts executions per task (the test's ledger), sums `matrix_size` numbers as the "work",
/// and blocks tasks numbered >= 100 until cancelled.
#[derive(Default)]
struct CountingRunner {
    runs: Mutex<BTreeMap<u32, u32>>,
    started: AtomicU32,
}

impl TaskRunner for CountingRunner {
    fn run(
        &self,
        _job: &JobId,
        kind: &JobKind,
        task: u32,
        cancelled: &AtomicBool,
    ) -> Result<String, String> {
        *self.runs.lock().unwrap().entry(task).or_default() += 1;
        self.started.fetch_add(1, Ordering::SeqCst);
        let JobKind::Benchmark { matrix_size, .. } = kind else {
            return Err("this runner only runs benchmarks".into());
        };
        if task >= 100 {
            for _ in 0..200 {
                if cancelled.load(Ordering::Acquire) {
                    return Err("cancelled".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err("never cancelled".into());
        }
        if task == 13 {
            return Err("unlucky task".into());
        }
        if task == 14 {
            // A result too large to report.
            return Ok("x".repeat(300 * 1024));
        }
        let sum: u64 = (1..=u64::from(*matrix_size)).sum();
        Ok(format!("{{\"sum\":{sum}}}"))
    }
}

fn kind() -> JobKind {
    JobKind::Benchmark {
        peers: 1,
        matrix_size: 10,
        iterations: 1,
    }
}

fn start(task: u32, owner: NodeId, epoch: u64, attempt: u32) -> Start {
    Start {
        job: job(),
        task,
        owner,
        epoch,
        attempt,
        kind: kind(),
        priority: Priority::Batch,
        resources: Resources {
            cores: 1,
            ram_bytes: 1 << 20,
            gpus: 0,
        },
    }
}

fn job() -> JobId {
    JobId("job-x".into())
}

async fn next(reports: &mut mpsc::Receiver<Finished>) -> Finished {
    tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("a report within 10 s")
        .expect("channel open")
}

#[tokio::test]
async fn a_task_runs_once_and_reports_to_its_owner() {
    let runner = Arc::new(CountingRunner::default());
    let (h, mut reports, _) = Handle::spawn(Arc::new(CrashStore::new()), runner.clone(), 16)
        .await
        .unwrap();
    let owner = NodeId::from("owner-1");
    assert_eq!(
        h.start(start(0, owner.clone(), 1, 0)).await.unwrap(),
        StartAnswer::Started
    );
    let done = next(&mut reports).await;
    assert_eq!(
        done,
        Finished {
            owner,
            job: job(),
            task: 0,
            attempt: 0,
            outcome: TaskOutcome::Succeeded("{\"sum\":55}".into())
        }
    );
    // A new owner asking again learns the result; nothing runs twice.
    let again = h
        .start(start(0, NodeId::from("owner-2"), 2, 0))
        .await
        .unwrap();
    assert_eq!(
        again,
        StartAnswer::AlreadyFinished(TaskOutcome::Succeeded("{\"sum\":55}".into()))
    );
    assert_eq!(runner.runs.lock().unwrap()[&0], 1);
    // A failing task reports its reason.
    h.start(start(13, NodeId::from("owner-2"), 2, 0))
        .await
        .unwrap();
    assert_eq!(
        next(&mut reports).await.outcome,
        TaskOutcome::Failed("unlucky task".into())
    );
}

#[tokio::test]
async fn reattach_fencing_and_cancel() {
    let runner = Arc::new(CountingRunner::default());
    let (h, mut reports, _) = Handle::spawn(Arc::new(CrashStore::new()), runner.clone(), 16)
        .await
        .unwrap();
    assert_eq!(
        h.start(start(100, NodeId::from("o1"), 1, 0)).await.unwrap(),
        StartAnswer::Started
    );
    assert_eq!(
        h.start(start(100, NodeId::from("o2"), 2, 0)).await.unwrap(),
        StartAnswer::AlreadyRunning
    );
    assert_eq!(
        h.start(start(100, NodeId::from("o1"), 1, 0)).await.unwrap(),
        StartAnswer::Fenced { current: 2 }
    );
    assert!(
        h.cancel(job(), 100, 1).await.is_err(),
        "an old owner cannot cancel"
    );
    assert!(h.cancel(job(), 100, 2).await.unwrap());
    let done = next(&mut reports).await;
    assert_eq!(
        (done.owner.as_str(), done.outcome),
        ("o2", TaskOutcome::Cancelled)
    );
    assert!(
        !h.cancel(job(), 100, 2).await.unwrap(),
        "cancelling twice is a no-op"
    );
    let survey = h.survey(job()).await.unwrap();
    assert_eq!(survey.len(), 1);
    assert_eq!(survey[0].1.outcome, Some(TaskOutcome::Cancelled));
    // The work ran at most once (a cancel that lands before the worker thread starts skips it).
    assert!(runner.runs.lock().unwrap().get(&100).copied().unwrap_or(0) <= 1);
}

#[tokio::test]
async fn a_restarted_executor_keeps_its_ledger() {
    let store: Arc<CrashStore> = Arc::new(CrashStore::new());
    let runner = Arc::new(CountingRunner::default());
    {
        let (h, mut reports, join) = Handle::spawn(store.clone(), runner.clone(), 16)
            .await
            .unwrap();
        h.start(start(1, NodeId::from("o"), 3, 0)).await.unwrap();
        next(&mut reports).await;
        h.start(start(101, NodeId::from("o"), 3, 0)).await.unwrap();
        h.stop();
        join.await.unwrap();
    }
    // The node comes back: finished work is remembered, interrupted work is reported failed,
    // and the ledger still fences the older epoch.
    let (h, mut reports, _) = Handle::spawn(store, runner.clone(), 16).await.unwrap();
    let interrupted = next(&mut reports).await;
    assert_eq!(interrupted.task, 101);
    assert!(matches!(interrupted.outcome, TaskOutcome::Failed(ref r) if r.contains("restarted")));
    assert!(matches!(
        h.start(start(1, NodeId::from("o"), 3, 0)).await.unwrap(),
        StartAnswer::AlreadyFinished(_)
    ));
    assert_eq!(
        h.start(start(1, NodeId::from("old"), 2, 0)).await.unwrap(),
        StartAnswer::Fenced { current: 3 }
    );
    // A new attempt of the interrupted task runs.
    assert_eq!(
        h.start(start(101, NodeId::from("o"), 3, 1)).await.unwrap(),
        StartAnswer::Started
    );
    h.cancel(job(), 101, 3).await.unwrap();
    assert_eq!(
        runner.runs.lock().unwrap()[&1],
        1,
        "the finished task never ran again"
    );
}

#[tokio::test]
async fn the_run_log_usage_and_preemption() {
    let store: Arc<CrashStore> = Arc::new(CrashStore::new());
    let runner = Arc::new(CountingRunner::default());
    let (h, mut reports, _) = Handle::spawn(store.clone(), runner.clone(), 16)
        .await
        .unwrap();
    h.start(start(1, NodeId::from("o"), 1, 0)).await.unwrap();
    next(&mut reports).await;
    h.start(start(102, NodeId::from("o"), 1, 0)).await.unwrap();
    // A re-attach is not a new execution.
    h.start(start(102, NodeId::from("o2"), 2, 0)).await.unwrap();
    let usage = h.usage().await.unwrap();
    assert_eq!(
        usage.len(),
        1,
        "only the running task holds resources: {usage:?}"
    );
    assert_eq!((usage[0].task, usage[0].priority), (102, Priority::Batch));

    assert!(h
        .preempt(job(), 102, "preempted by job-y (inference)".into())
        .await
        .unwrap());
    let done = next(&mut reports).await;
    assert!(matches!(done.outcome, TaskOutcome::Failed(ref r) if r.contains("preempted")));
    assert!(h.usage().await.unwrap().is_empty());
    assert!(!h.preempt(job(), 102, "again".into()).await.unwrap());

    let runs = h.runs(Some(job())).await.unwrap();
    let tasks: Vec<(u32, u32, u64)> = runs.iter().map(|r| (r.task, r.attempt, r.epoch)).collect();
    assert_eq!(tasks, vec![(1, 0, 1), (102, 0, 1)]);
    assert!(h
        .runs(Some(JobId("other".into())))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(h.runs(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_oversized_result_is_reported_as_a_failure_that_says_why() {
    let runner = Arc::new(CountingRunner::default());
    let (h, mut reports, _) = Handle::spawn(Arc::new(CrashStore::new()), runner, 16)
        .await
        .unwrap();
    h.start(start(14, NodeId::from("o"), 1, 0)).await.unwrap();
    let done = next(&mut reports).await;
    assert!(
        matches!(done.outcome, TaskOutcome::Failed(ref r) if r.contains("result is 307200 bytes")),
        "{:?}",
        done.outcome
    );
}

#[tokio::test]
async fn a_replica_reservation_preempts_lower_classes_until_it_fits() {
    let store: Arc<CrashStore> = Arc::new(CrashStore::new());
    let runner = Arc::new(CountingRunner::default());
    let (h, mut reports, _) = Handle::spawn(store.clone(), runner.clone(), 16)
        .await
        .unwrap();
    // Two long batch tasks of one core each on a node of two cores.
    h.start(start(101, NodeId::from("o"), 1, 0)).await.unwrap();
    h.start(start(102, NodeId::from("o"), 1, 0)).await.unwrap();
    let capacity = Resources {
        cores: 2,
        ram_bytes: 1 << 30,
        gpus: 0,
    };
    let one_core = Resources {
        cores: 1,
        ram_bytes: 1 << 20,
        gpus: 0,
    };
    // A replica needing one core: exactly one batch task goes, the lowest (job, task) first.
    let preempted = h
        .reserve("chat".into(), Some(one_core), capacity)
        .await
        .unwrap();
    assert_eq!(
        preempted.iter().map(|t| t.task).collect::<Vec<_>>(),
        vec![101]
    );
    let done = next(&mut reports).await;
    assert_eq!(done.task, 101);
    assert!(
        matches!(done.outcome, TaskOutcome::Failed(ref r) if r.contains("replica of deployment chat")),
        "{:?}",
        done.outcome
    );
    let usage = h.usage().await.unwrap();
    let held: Vec<(u32, Priority)> = usage.iter().map(|t| (t.task, t.priority)).collect();
    assert_eq!(held, vec![(102, Priority::Batch), (0, Priority::Inference)]);

    // Reserving again with room to spare preempts nothing; releasing drops the reservation.
    assert!(h
        .reserve("chat".into(), Some(one_core), capacity)
        .await
        .unwrap()
        .is_empty());
    assert!(h
        .reserve("chat".into(), None, capacity)
        .await
        .unwrap()
        .is_empty());
    let usage = h.usage().await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].task, 102);
    assert!(h.preempt(job(), 102, "test over".into()).await.unwrap());
}

fn job_record(status: flotilla_protocol::JobStatus) -> flotilla_protocol::catalog::JobRecord {
    flotilla_protocol::catalog::JobRecord {
        id: job(),
        spec: flotilla_protocol::JobSpec {
            kind: kind(),
            priority: Priority::Batch,
            resources: Resources {
                cores: 1,
                ram_bytes: 1 << 20,
                gpus: 0,
            },
            tasks: 1,
            anti_affinity: flotilla_protocol::jobs::AntiAffinity::None,
            preferred_nodes: vec![],
            idempotency_key: None,
        },
        owner: NodeId::from("o"),
        epoch: 1,
        status,
        submitted_at_ms: 1,
        updated_at_ms: 1,
    }
}

#[tokio::test]
async fn the_ledger_forgets_a_job_only_once_it_is_over_everywhere_and_past_the_retention() {
    use flotilla_actors::catalog;
    use flotilla_actors::jobs::compaction::compact_ledger;
    use flotilla_actors::store::Column;
    use flotilla_protocol::JobStatus;

    let store: Arc<CrashStore> = Arc::new(CrashStore::new());
    let runner = Arc::new(CountingRunner::default());
    let (outbox, _gossip) = mpsc::channel(64);
    let (catalog, _) = catalog::Handle::spawn(
        catalog::Config::default(),
        catalog::Keys::from_seed("me"),
        Arc::new(CrashStore::new()),
        outbox,
    )
    .await
    .unwrap();
    catalog
        .put_job(job_record(JobStatus::Running))
        .await
        .unwrap();
    let retention = Duration::from_secs(3600);
    let (h, mut reports, join) = Handle::spawn(store.clone(), runner.clone(), 16)
        .await
        .unwrap();
    h.start(start(0, NodeId::from("o"), 1, 0)).await.unwrap();
    next(&mut reports).await;
    let ended = flotilla_actors::clock::wall_ms();
    let rows = || store.rows(Column::Jobs).len();
    assert_eq!(rows(), 2, "a ledger row and a run-log row");

    // Within the retention, or while the catalog says the job runs, nothing is forgotten.
    let later = ended + 2 * 3600 * 1000;
    assert_eq!(
        compact_ledger(&h, &catalog, retention, ended + 1000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        compact_ledger(&h, &catalog, retention, later)
            .await
            .unwrap(),
        0
    );
    // A task of the job still running keeps it too, however old its finished ones are.
    h.start(start(100, NodeId::from("o"), 1, 0)).await.unwrap();
    catalog
        .put_job(job_record(JobStatus::Cancelled))
        .await
        .unwrap();
    assert_eq!(
        compact_ledger(&h, &catalog, retention, later)
            .await
            .unwrap(),
        0
    );
    h.cancel(job(), 100, 1).await.unwrap();
    // Over in the catalog, every task ended, past the retention: forgotten, durably.
    let later = flotilla_actors::clock::wall_ms() + 2 * 3600 * 1000;
    assert_eq!(
        compact_ledger(&h, &catalog, retention, later)
            .await
            .unwrap(),
        1
    );
    assert!(h.survey(job()).await.unwrap().is_empty());
    assert!(h.runs(Some(job())).await.unwrap().is_empty());
    assert_eq!(rows(), 0);
    h.stop();
    join.await.unwrap();
    let restarted = store.crash();
    assert!(
        restarted.rows(Column::Jobs).is_empty(),
        "the deletes were synced"
    );
}

#[tokio::test]
async fn ledger_rows_written_before_end_times_were_recorded_still_load() {
    use flotilla_actors::store::{Column, Durability, Store};
    // A row as older versions wrote it: (task, holder, entry), no end time.
    #[derive(serde::Serialize)]
    struct Holder {
        owner: NodeId,
        priority: Priority,
        resources: Resources,
    }
    let key = flotilla_actors::jobs::ledger::TaskKey {
        job: job(),
        task: 5,
    };
    let row = (
        key.clone(),
        Holder {
            owner: NodeId::from("o"),
            priority: Priority::Batch,
            resources: Resources {
                cores: 1,
                ram_bytes: 1 << 20,
                gpus: 0,
            },
        },
        flotilla_protocol::services::jobs::LedgerEntry {
            epoch: 2,
            attempt: 0,
            outcome: Some(TaskOutcome::Succeeded("{}".into())),
        },
    );
    let store = Arc::new(CrashStore::new());
    let mut row_key = b"ledger/".to_vec();
    row_key.extend_from_slice(job().as_str().as_bytes());
    row_key.push(b'/');
    row_key.extend_from_slice(&5u32.to_be_bytes());
    let bytes = flotilla_protocol::codec::encode::<_, 65536>("ledger", &row).unwrap();
    store
        .put(Column::Jobs, &row_key, &bytes, Durability::Sync)
        .unwrap();
    let (h, _reports, _) = Handle::spawn(store, Arc::new(CountingRunner::default()), 16)
        .await
        .unwrap();
    assert!(matches!(
        h.start(start(5, NodeId::from("o"), 2, 0)).await.unwrap(),
        StartAnswer::AlreadyFinished(_)
    ));
}
