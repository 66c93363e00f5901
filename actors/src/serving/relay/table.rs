//! The replica's side of pulled streams (`/flotilla/serving/1`, `NextPieces { stream, from }`):
//! a pure table of open streams, their unacknowledged pieces and their leases.
//!
//! A poll with `from` acknowledges every piece before `from` (they are dropped) and is answered
//! with the pieces from `from` on, so answering the same poll twice gives the same pieces: a
//! lost answer costs nothing. Each stream buffers at most `max_buffered` unacknowledged pieces;
//! its producer waits for room (the generator pauses that sequence). A stream not polled for
//! `lease` is expired: its generation is cancelled and its entry dropped, so a vanished router
//! cannot leave work running.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use flotilla_protocol::services::serving::{StreamEnd, StreamId};

use crate::clock::Millis;

/// Limits of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open streams at most; beyond, a new stream is refused.
    pub max_streams: usize,
    /// Unacknowledged pieces per stream at most.
    pub max_buffered: usize,
    /// A stream not polled for this long is expired.
    pub lease: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_streams: 1024,
            max_buffered: 256,
            lease: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Index of `pieces[0]` in the stream.
    base: u32,
    pieces: VecDeque<String>,
    end: Option<StreamEnd>,
    /// Set when the stream broke off; polls answer with it.
    failed: Option<String>,
    last_poll: Millis,
}

impl Entry {
    fn is_open(&self) -> bool {
        self.end.is_none() && self.failed.is_none()
    }
}

/// The answer to a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// Pieces from `from` on (possibly none, if the stream just ended), and the end once every
    /// piece is included.
    Ready {
        from: u32,
        pieces: Vec<String>,
        end: Option<StreamEnd>,
    },
    /// Nothing new yet: wait for a push, then poll again.
    Pending,
    /// No such stream (never opened, cancelled or expired).
    Unknown,
    /// The stream broke off (the model failed).
    Failed(String),
    /// `from` is outside what the stream holds: before its acknowledged pieces or past its end.
    OutOfRange { base: u32, next: u32 },
}

/// The open streams of one replica.
#[derive(Debug)]
pub struct StreamTable {
    limits: Limits,
    next_id: u64,
    streams: BTreeMap<StreamId, Entry>,
}

impl StreamTable {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            next_id: 1,
            streams: BTreeMap::new(),
        }
    }

    /// Opens a stream at `now` (its lease starts); `None` when the table is full.
    pub fn open(&mut self, now: Millis) -> Option<StreamId> {
        if self.streams.len() >= self.limits.max_streams {
            return None;
        }
        let id = StreamId(self.next_id);
        self.next_id += 1;
        self.streams.insert(
            id,
            Entry {
                base: 0,
                pieces: VecDeque::new(),
                end: None,
                failed: None,
                last_poll: now,
            },
        );
        Some(id)
    }

    /// Whether `id` may take another piece now.
    pub fn has_room(&self, id: StreamId) -> bool {
        self.streams
            .get(&id)
            .is_some_and(|e| e.is_open() && e.pieces.len() < self.limits.max_buffered)
    }

    /// Appends a piece; false (and nothing stored) if the stream is unknown, ended or full.
    pub fn push(&mut self, id: StreamId, piece: String) -> bool {
        if !self.has_room(id) {
            return false;
        }
        if let Some(e) = self.streams.get_mut(&id) {
            e.pieces.push_back(piece);
        }
        true
    }

    /// Records the end of a stream.
    pub fn finish(&mut self, id: StreamId, end: StreamEnd) {
        if let Some(e) = self.streams.get_mut(&id) {
            if e.is_open() {
                e.end = Some(end);
            }
        }
    }

    /// Records that a stream broke off.
    pub fn fail(&mut self, id: StreamId, reason: String) {
        if let Some(e) = self.streams.get_mut(&id) {
            if e.is_open() {
                e.failed = Some(reason);
            }
        }
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: StreamId) -> bool {
        self.streams.contains_key(&id)
    }

    /// Answers `NextPieces { stream: id, from }` at `now`, renewing the lease.
    pub fn poll(&mut self, now: Millis, id: StreamId, from: u32) -> Polled {
        let Some(e) = self.streams.get_mut(&id) else {
            return Polled::Unknown;
        };
        e.last_poll = now;
        if let Some(reason) = &e.failed {
            return Polled::Failed(reason.clone());
        }
        let next = e.base + e.pieces.len() as u32;
        if from < e.base || from > next {
            return Polled::OutOfRange { base: e.base, next };
        }
        // Everything before `from` has reached the router: drop it.
        let acknowledged = (from - e.base) as usize;
        e.pieces.drain(..acknowledged);
        e.base = from;
        if e.pieces.is_empty() && e.end.is_none() {
            return Polled::Pending;
        }
        Polled::Ready {
            from,
            pieces: e.pieces.iter().cloned().collect(),
            end: e.end,
        }
    }

    /// Removes a stream; whether it existed and had not ended (its generation must be stopped).
    pub fn cancel(&mut self, id: StreamId) -> Option<bool> {
        self.streams.remove(&id).map(|e| e.is_open())
    }

    /// Removes the streams whose lease ran out by `now`; returns them with whether each was
    /// still generating.
    pub fn expire(&mut self, now: Millis) -> Vec<(StreamId, bool)> {
        let lease = self.limits.lease;
        let gone: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, e)| now.since(e.last_poll) >= lease)
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter()
            .filter_map(|id| self.cancel(id).map(|running| (id, running)))
            .collect()
    }

    /// Open streams.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::openai::FinishReason;

    const END: StreamEnd = StreamEnd {
        finish_reason: FinishReason::Stop,
        prompt_tokens: 2,
        completion_tokens: 3,
    };

    fn table() -> StreamTable {
        StreamTable::new(Limits {
            max_streams: 2,
            max_buffered: 3,
            lease: Duration::from_millis(100),
        })
    }

    fn ready(from: u32, pieces: &[&str], end: Option<StreamEnd>) -> Polled {
        Polled::Ready {
            from,
            pieces: pieces.iter().map(|p| p.to_string()).collect(),
            end,
        }
    }

    #[test]
    fn polls_are_idempotent_and_acknowledge_what_came_before() {
        let mut t = table();
        let id = t.open(Millis(0)).unwrap();
        assert_eq!(t.poll(Millis(1), id, 0), Polled::Pending);
        assert!(t.push(id, "a".into()) && t.push(id, "b".into()));
        assert_eq!(t.poll(Millis(2), id, 0), ready(0, &["a", "b"], None));
        // The answer was lost: the same poll gives the same pieces.
        assert_eq!(t.poll(Millis(3), id, 0), ready(0, &["a", "b"], None));
        t.push(id, "c".into());
        assert_eq!(t.poll(Millis(4), id, 2), ready(2, &["c"], None));
        assert_eq!(
            t.poll(Millis(5), id, 1),
            Polled::OutOfRange { base: 2, next: 3 }
        );
        assert_eq!(
            t.poll(Millis(5), id, 9),
            Polled::OutOfRange { base: 2, next: 3 }
        );
        t.finish(id, END);
        assert!(!t.push(id, "late".into()));
        assert_eq!(t.poll(Millis(6), id, 3), ready(3, &[], Some(END)));
        assert_eq!(t.poll(Millis(7), id, 3), ready(3, &[], Some(END)));
    }

    #[test]
    fn buffers_are_bounded_until_acknowledged() {
        let mut t = table();
        let id = t.open(Millis(0)).unwrap();
        for p in ["a", "b", "c"] {
            assert!(t.push(id, p.into()));
        }
        assert!(!t.has_room(id) && !t.push(id, "d".into()));
        t.poll(Millis(1), id, 2);
        assert!(t.push(id, "d".into()) && t.push(id, "e".into()));
        assert_eq!(t.poll(Millis(2), id, 2), ready(2, &["c", "d", "e"], None));
    }

    #[test]
    fn the_table_and_leases_are_bounded() {
        let mut t = table();
        let a = t.open(Millis(0)).unwrap();
        let b = t.open(Millis(0)).unwrap();
        assert_eq!(t.open(Millis(0)), None, "full");
        t.finish(b, END);
        assert_eq!(t.poll(Millis(60), a, 0), Polled::Pending);
        assert_eq!(
            t.expire(Millis(120)),
            vec![(b, false)],
            "b was not polled for 100ms"
        );
        assert_eq!(t.expire(Millis(159)), vec![]);
        assert_eq!(t.expire(Millis(160)), vec![(a, true)]);
        assert_eq!(t.poll(Millis(161), a, 0), Polled::Unknown);
        assert!(t.is_empty());
        let c = t.open(Millis(200)).unwrap();
        assert_eq!(t.cancel(c), Some(true));
        assert_eq!(t.cancel(c), None);
        let d = t.open(Millis(200)).unwrap();
        t.push(d, "x".into());
        t.fail(d, "boom".into());
        assert!(!t.has_room(d));
        assert_eq!(t.poll(Millis(201), d, 0), Polled::Failed("boom".into()));
        assert_eq!(t.cancel(d), Some(false), "a failed stream is not running");
    }
}
