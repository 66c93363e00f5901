//! Compaction of the task ledger: an executing node forgets the tasks of jobs that are over.
//!
//! The ledger keeps an entry per task it ran so that a new owner learns outcomes and nothing
//! runs twice; without compaction it grows with every job ever run. A job is forgotten here
//! when every task of it ended longer ago than the retention *and* this node's catalog records
//! the job as finished or no longer holds it (the catalog compacts finished jobs with the same
//! retention). A start for a job the catalog records as finished is refused by the jobs
//! service, so forgetting its tasks cannot make them run again.

use std::time::Duration;

use flotilla_protocol::catalog::{CatalogKey, Entry};
use flotilla_protocol::jobs::JobStatus;

use super::executor;
use crate::catalog;
use crate::Result;

/// How often a node compacts its ledger.
pub const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// Forgets the ledger and run-log rows of every job whose tasks here all ended at least
/// `retention` before `now_ms` and whose catalog record is terminal or gone. Returns how many
/// jobs were forgotten.
pub async fn compact_ledger(
    executor: &executor::Handle,
    catalog: &catalog::Handle,
    retention: Duration,
    now_ms: u64,
) -> Result<usize> {
    let cutoff_ms = now_ms.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
    let mut over = Vec::new();
    for job in executor.ended_before(cutoff_ms).await? {
        let finished = match catalog.get(CatalogKey::job(&job)).await? {
            Some(Entry::Job(e)) => matches!(
                e.record.status,
                JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
            ),
            // Compacted from the catalog (or never written to it): nobody drives it any more.
            Some(Entry::Register(_)) | None => true,
        };
        if finished {
            over.push(job);
        }
    }
    if over.is_empty() {
        return Ok(0);
    }
    executor.forget(over, cutoff_ms).await
}

/// Compacts the ledger every [`COMPACT_EVERY`] until the executor stops.
pub async fn compact_forever(
    executor: executor::Handle,
    catalog: catalog::Handle,
    retention: Duration,
) {
    let mut tick = tokio::time::interval(COMPACT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match compact_ledger(&executor, &catalog, retention, crate::clock::wall_ms()).await {
            Ok(_) => {}
            Err(crate::Error::ActorGone { .. }) => return,
            Err(e) => tracing::warn!(error = %e, "task ledger not compacted"),
        }
    }
}
