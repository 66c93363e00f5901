//! Delivers the executor's finished-task reports to the tasks' owners.
//!
//! A report to a remote owner is retried with a growing pause (a busy owner, a connection being
//! re-established) up to `attempts` times. A report that never arrives is not lost work: the
//! outcome stays in this node's ledger, where a new owner's survey finds it.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::services::jobs::RequestBody;
use tokio::sync::mpsc;
use tracing::warn;

use super::Handle;
use crate::jobs::executor::Finished;
use crate::mesh::Mesh;

/// Runs until the executor's report channel closes.
pub async fn run(
    mut reports: mpsc::Receiver<Finished>,
    mesh: Arc<dyn Mesh>,
    manager: Handle,
    attempts: u32,
    deadline: Duration,
) {
    let me = mesh.local_id();
    while let Some(report) = reports.recv().await {
        if report.owner == me {
            if let Err(e) = manager.task_finished(
                report.job,
                report.task,
                me.clone(),
                report.attempt,
                report.outcome,
            ) {
                warn!(error = %e, "cannot report a finished task to this node's job manager");
            }
            continue;
        }
        let mesh = mesh.clone();
        crate::task::spawn(async move {
            let body = RequestBody::TaskFinished {
                job: report.job.clone(),
                task: report.task,
                attempt: report.attempt,
                outcome: report.outcome.clone(),
            };
            let mut pause = Duration::from_millis(200);
            for attempt in 1..=attempts.max(1) {
                match mesh.jobs(&report.owner, body.clone(), deadline).await {
                    Ok(_) => return,
                    Err(e) if attempt == attempts.max(1) => warn!(
                        job = %report.job, task = report.task, owner = %report.owner, error = %e,
                        "report of a finished task not delivered; it stays in the ledger"
                    ),
                    Err(_) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }
}
