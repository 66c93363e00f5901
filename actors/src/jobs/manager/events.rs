//! A job's event log and final task results in the node's store (`Jobs` column).
//!
//! Each node logs the events of the jobs it drives; a job that changed owners has its history
//! spread over the nodes that drove it, and readers merge the logs of every node by time.
//! Events are written buffered (a lost tail on a crash costs log lines, not correctness); the
//! final results are written with the job's terminal status, synchronously.

use std::sync::atomic::{AtomicU32, Ordering};

use flotilla_protocol::codec;
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::jobs::{JobEvent, TaskView};

use crate::store::{Column, Durability, Store};
use crate::{Error, Result};

const EVENT_PREFIX: &[u8] = b"event/";
const RESULT_PREFIX: &[u8] = b"result/";
/// Largest stored event or result row.
const MAX_ROW_BYTES: usize = 512 * 1024;
/// Events of one job read back at most.
pub const MAX_EVENTS: usize = 10_000;
/// Longest event text kept.
const MAX_EVENT_CHARS: usize = 2_000;

/// Distinguishes events logged within the same millisecond.
static SEQ: AtomicU32 = AtomicU32::new(0);

fn job_prefix(base: &[u8], job: &JobId) -> Vec<u8> {
    let mut k = base.to_vec();
    k.extend_from_slice(job.as_str().as_bytes());
    k.push(b'/');
    k
}

/// Appends an event.
pub fn append(store: &dyn Store, job: &JobId, event: &JobEvent) -> Result<()> {
    let mut event = event.clone();
    if event.text.chars().count() > MAX_EVENT_CHARS {
        event.text = event.text.chars().take(MAX_EVENT_CHARS).collect::<String>() + "…";
    }
    let mut key = job_prefix(EVENT_PREFIX, job);
    key.extend_from_slice(&event.at_ms.to_be_bytes());
    key.extend_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let bytes = codec::encode::<_, MAX_ROW_BYTES>("job event", &event)
        .map_err(|e| Error::Store(e.to_string()))?;
    store.put(Column::Jobs, &key, &bytes, Durability::Buffered)
}

/// The events of `job` this node logged, oldest first.
pub fn read(store: &dyn Store, job: &JobId) -> Result<Vec<JobEvent>> {
    let rows = store.scan_prefix(Column::Jobs, &job_prefix(EVENT_PREFIX, job), MAX_EVENTS)?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| codec::decode::<JobEvent, MAX_ROW_BYTES>("job event", &v).ok())
        .collect())
}

/// Saves the tasks of a job that finished under this node.
pub fn save_result(store: &dyn Store, job: &JobId, tasks: &[TaskView]) -> Result<()> {
    let bytes = codec::encode::<_, MAX_ROW_BYTES>("job result", &tasks.to_vec())
        .map_err(|e| Error::Store(e.to_string()))?;
    let mut key = RESULT_PREFIX.to_vec();
    key.extend_from_slice(job.as_str().as_bytes());
    store.put(Column::Jobs, &key, &bytes, Durability::Sync)
}

/// The saved tasks of a job that finished under this node, if any.
pub fn load_result(store: &dyn Store, job: &JobId) -> Result<Option<Vec<TaskView>>> {
    let mut key = RESULT_PREFIX.to_vec();
    key.extend_from_slice(job.as_str().as_bytes());
    match store.get(Column::Jobs, &key)? {
        None => Ok(None),
        Some(v) => codec::decode::<Vec<TaskView>, MAX_ROW_BYTES>("job result", &v)
            .map(Some)
            .map_err(|e| Error::Store(format!("stored result of {job}: {e}"))),
    }
}
