//! The replica's side of pulled streams: a [`StreamTable`] behind a lock, one pump task per
//! stream that moves pieces from the local stream into the table while it has room, and
//! long polls that wait for the pump.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use flotilla_protocol::services::serving::{
    ErrorKind, ResponseBody, ServingError, StreamId, MAX_POLL_WAIT_MS,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::table::{Limits, Polled, StreamTable};
use crate::clock::MonotonicClock;
use crate::serving::router::{PieceStream, StreamItem};

/// A poisoned lock only means a panic elsewhere mid-update of a table that is consistent after
/// every call, so it is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shell {
    /// Woken when the stream has news for pollers (pieces, end, failure).
    data: Arc<Notify>,
    /// Woken when a poll acknowledged pieces, so the pump may have room.
    room: Arc<Notify>,
    pump: JoinHandle<()>,
}

struct State {
    table: StreamTable,
    shells: HashMap<StreamId, Shell>,
}

struct Inner {
    state: Mutex<State>,
    clock: MonotonicClock,
}

/// The replica's pulled streams. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish()
    }
}

impl Relay {
    /// A relay holding streams within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    table: StreamTable::new(limits),
                    shells: HashMap::new(),
                }),
                clock: MonotonicClock::default(),
            }),
        }
    }

    /// Opens a pulled stream fed by `source` (answers `StartStream`). Refused when the table
    /// is full.
    pub fn start(&self, source: PieceStream) -> Result<StreamId, ServingError> {
        let mut state = lock(&self.inner.state);
        let Some(id) = state.table.open(self.inner.clock.now()) else {
            return Err(ServingError::new(
                ErrorKind::Overloaded {
                    retry_after_ms: 1000,
                },
                "too many open streams",
            ));
        };
        let data = Arc::new(Notify::new());
        let room = Arc::new(Notify::new());
        let pump = crate::task::spawn(pump(
            Arc::downgrade(&self.inner),
            id,
            source,
            data.clone(),
            room.clone(),
        ));
        state.shells.insert(id, Shell { data, room, pump });
        Ok(id)
    }

    /// Answers `NextPieces { stream, from, wait_ms }`: pieces from `from` on as soon as there
    /// are any (or the end), or none after `wait_ms` (at most `MAX_POLL_WAIT_MS`).
    pub async fn next_pieces(
        &self,
        stream: StreamId,
        from: u32,
        wait_ms: u32,
    ) -> Result<ResponseBody, ServingError> {
        let wait = Duration::from_millis(u64::from(wait_ms.min(MAX_POLL_WAIT_MS)));
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let (data, room) = {
                let state = lock(&self.inner.state);
                match state.shells.get(&stream) {
                    Some(s) => (s.data.clone(), s.room.clone()),
                    None => return Err(unknown(stream)),
                }
            };
            // Registered before looking, so a piece pushed in between still wakes this poll.
            let news = data.notified();
            let polled = lock(&self.inner.state)
                .table
                .poll(self.inner.clock.now(), stream, from);
            // The poll may have acknowledged pieces: the pump may go on.
            room.notify_waiters();
            match polled {
                Polled::Ready { from, pieces, end } => {
                    return Ok(ResponseBody::Pieces { from, pieces, end })
                }
                Polled::Pending => {
                    if tokio::time::timeout_at(give_up, news).await.is_err() {
                        return Ok(ResponseBody::Pieces {
                            from,
                            pieces: Vec::new(),
                            end: None,
                        });
                    }
                }
                Polled::Unknown => return Err(unknown(stream)),
                Polled::Failed(reason) => {
                    return Err(ServingError::new(ErrorKind::Internal, reason))
                }
                Polled::OutOfRange { base, next } => {
                    return Err(ServingError::new(
                        ErrorKind::BadRequest,
                        format!(
                            "stream {} holds pieces {base}..{next}, not {from}",
                            stream.0
                        ),
                    ))
                }
            }
        }
    }

    /// Answers `CancelStream`: drops the stream and its source (which cancels the generation).
    pub fn cancel(&self, stream: StreamId) -> ResponseBody {
        let was_running = self.remove(stream).unwrap_or(false);
        ResponseBody::Cancelled { was_running }
    }

    fn remove(&self, stream: StreamId) -> Option<bool> {
        let mut state = lock(&self.inner.state);
        let running = state.table.cancel(stream);
        if let Some(shell) = state.shells.remove(&stream) {
            shell.pump.abort();
            shell.data.notify_waiters();
        }
        running
    }

    /// Expires streams whose lease ran out; returns how many.
    pub fn sweep(&self) -> usize {
        let expired = {
            let mut state = lock(&self.inner.state);
            let now = self.inner.clock.now();
            state.table.expire(now)
        };
        for (id, _) in &expired {
            let mut state = lock(&self.inner.state);
            if let Some(shell) = state.shells.remove(id) {
                shell.pump.abort();
                shell.data.notify_waiters();
            }
        }
        expired.len()
    }

    /// Sweeps every `interval` until the relay is dropped.
    pub fn spawn_sweeper(&self, interval: Duration) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        crate::task::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                Relay { inner }.sweep();
            }
        })
    }

    /// Open streams.
    pub fn open_streams(&self) -> usize {
        lock(&self.inner.state).table.len()
    }
}

fn unknown(stream: StreamId) -> ServingError {
    ServingError::new(
        ErrorKind::UnknownStream,
        format!("no stream {} here", stream.0),
    )
}

/// Moves pieces from `source` into the table while the stream has room.
async fn pump(
    inner: Weak<Inner>,
    id: StreamId,
    mut source: PieceStream,
    data: Arc<Notify>,
    room: Arc<Notify>,
) {
    loop {
        loop {
            let freed = room.notified();
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let (present, has_room) = {
                let state = lock(&inner.state);
                (state.table.contains(id), state.table.has_room(id))
            };
            if !present {
                return;
            }
            if has_room {
                break;
            }
            drop(inner);
            freed.await;
        }
        let item = source.recv().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut state = lock(&inner.state);
        let done = match item {
            Some(Ok(StreamItem::Piece(p))) => {
                state.table.push(id, p);
                false
            }
            Some(Ok(StreamItem::End(end))) => {
                state.table.finish(id, end);
                true
            }
            Some(Err(e)) => {
                state.table.fail(id, e.message);
                true
            }
            None => {
                state
                    .table
                    .fail(id, "the stream ended without finishing".into());
                true
            }
        };
        drop(state);
        data.notify_waiters();
        if done {
            return;
        }
    }
}
