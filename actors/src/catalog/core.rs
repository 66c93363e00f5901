//! The catalog CRDT: a pure, state-based replica of the cluster's catalog.
//!
//! State is a map `CatalogKey → Entry` (see [`flotilla_protocol::catalog::entry`] for how one
//! entry merges). The whole map merges key by key, so it inherits the entry join's laws: any
//! replicas that have seen the same entries, in any order, any number of times, are equal.
//!
//! - Local writes ([`Catalog::apply_local_write`]) take a timestamp from this node's hybrid
//!   clock and return the [`Delta`] to gossip.
//! - Local writes are sealed with this node's key ([`super::keys`]); remote entries
//!   ([`Catalog::merge_remote`]) are validated, their seals verified against their writers'
//!   ids, checked for clock skew and the capacity bound, then joined; refused entries are
//!   reported with their reason so the shell can count them.
//! - Anti-entropy: [`Catalog::digest`] summarises the map in [`DIGEST_BUCKETS`] buckets (XOR of
//!   per-entry hashes, maintained incrementally); [`Catalog::answer_sync`] and
//!   [`Catalog::complete_sync`] make two replicas equal in one exchange each way.
//! - [`Catalog::delta_since`] walks a change log (a local sequence number per change), so the
//!   shell can gossip whatever changed since it last did.
//!
//! Time is injected as wall-clock milliseconds since the Unix epoch (`wall_ms`): hybrid clocks
//! are compared across nodes, so they follow wall time, not the monotonic [`crate::clock`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_protocol::catalog::{CatalogKey, Entry, JobRecord, Record, RecordKind};
use flotilla_protocol::hlc::{HlcClock, HlcError};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::catalog::{
    bucket_of, encoded_len, entry_hash, BucketSummary, Delta, Digest, SyncReply, DIGEST_BUCKETS,
    MAX_ENTRY_BYTES, MAX_MESSAGE_BYTES,
};
use flotilla_protocol::validation::FieldErrors;
use serde::{Deserialize, Serialize};

use super::keys::{self, Keys};

/// Limits of one catalog replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Most entries (tombstones included) the replica holds; entries for new keys beyond it are
    /// refused, so a flood of writes cannot exhaust memory.
    pub max_entries: usize,
    /// How far ahead of local wall time a remote timestamp may be.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Largest delta or sync reply this replica builds, in encoded bytes.
    pub max_message_bytes: usize,
    /// How long a deletion (tombstone) and a finished job stay after their last change; then
    /// [`Catalog::compact`] removes them, and a peer's copy arriving later is refused as
    /// expired, so anti-entropy cannot bring them back. A node away for longer than this may
    /// bring back a record deleted meanwhile: keep it well above how long nodes stay down.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// The default [`Config::retention`]: a week.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest [`Config::retention`] allowed.
pub const MIN_RETENTION: Duration = Duration::from_secs(60);

impl Default for Config {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_clock_skew: Duration::from_millis(flotilla_protocol::hlc::DEFAULT_MAX_SKEW_MS),
            // Leave room for the message envelope under the service cap.
            max_message_bytes: MAX_MESSAGE_BYTES - 64 * 1024,
            retention: DEFAULT_RETENTION,
        }
    }
}

impl Config {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidConfig(m));
        if self.max_entries == 0 {
            return bad("catalog.max_entries must be at least 1".into());
        }
        if self.max_clock_skew.is_zero() {
            return bad("catalog.max_clock_skew must be positive".into());
        }
        if self.retention < MIN_RETENTION || self.retention < 2 * self.max_clock_skew {
            return bad(format!(
                "catalog.retention must be at least {}s and twice max_clock_skew",
                MIN_RETENTION.as_secs()
            ));
        }
        if self.max_message_bytes < 2 * MAX_ENTRY_BYTES
            || self.max_message_bytes > MAX_MESSAGE_BYTES
        {
            return bad(format!(
                "catalog.max_message_bytes must be between {} and {MAX_MESSAGE_BYTES}",
                2 * MAX_ENTRY_BYTES
            ));
        }
        Ok(())
    }
}

/// What a local write does to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Sets a dataset, model version, alias or deployment.
    Put(Record),
    /// Deletes one (a tombstone).
    Delete,
    /// Records a job, or its new owner, epoch or status.
    Job(JobRecord),
}

/// Why a local write was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record or key has invalid fields.
    #[error("invalid write to {key}: {errors}")]
    Invalid {
        key: CatalogKey,
        errors: FieldErrors,
    },
    /// The record does not belong under the key it was written to.
    #[error("record for {record} written under {key}")]
    KeyMismatch { key: CatalogKey, record: CatalogKey },
    /// Job records end in a terminal status instead of being deleted.
    #[error("job record {0} cannot be deleted")]
    JobDelete(CatalogKey),
    /// A job write from an epoch older than the one recorded: the writer has been fenced off.
    #[error("job {job}: write of epoch {wrote} refused, epoch {current} is recorded")]
    StaleEpoch {
        job: JobId,
        wrote: u64,
        current: u64,
    },
    /// The replica holds `max` entries already.
    #[error("catalog full ({max} entries): {key} refused")]
    Full { key: CatalogKey, max: usize },
    /// The entry encodes to more than the entry cap.
    #[error("entry {key} is {bytes} bytes, over the {cap}-byte cap")]
    TooLarge {
        key: CatalogKey,
        bytes: usize,
        cap: usize,
    },
    /// The hybrid clock failed.
    #[error(transparent)]
    Clock(#[from] HlcError),
}

/// Why a remote entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// It failed validation.
    Invalid(FieldErrors),
    /// Its timestamp is too far in the future.
    Skew(HlcError),
    /// The replica is full and the key is new.
    Full,
    /// It encodes to more than the entry cap.
    TooLarge(usize),
    /// A tombstone or finished job older than the retention, for a key this replica does not
    /// hold (it was compacted here).
    Expired,
    /// A seal is missing or does not verify against the writer its part names.
    BadSeal(String),
}

impl Rejection {
    /// A short label for metrics (`flotilla_catalog_rejected_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Invalid(_) => "invalid",
            Rejection::Skew(_) => "clock_skew",
            Rejection::Full => "full",
            Rejection::TooLarge(_) => "too_large",
            Rejection::Expired => "expired",
            Rejection::BadSeal(_) => "bad_seal",
        }
    }
}

/// What merging a remote delta did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Keys whose entry changed, in the order they arrived.
    pub applied: Vec<CatalogKey>,
    /// Entries that were already known (or older).
    pub unchanged: usize,
    /// Entries refused, with the reason.
    pub rejected: Vec<(CatalogKey, Rejection)>,
}

#[derive(Debug, Clone)]
struct Slot {
    entry: Entry,
    hash: [u8; 32],
    bucket: u16,
    /// Local change sequence number of the entry's last change.
    seq: u64,
}

/// One replica of the catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    config: Config,
    keys: Keys,
    clock: HlcClock,
    entries: BTreeMap<CatalogKey, Slot>,
    buckets: Vec<BucketSummary>,
    /// Change log: sequence number → key, one row per key (its latest change).
    changes: BTreeMap<u64, CatalogKey>,
    seq: u64,
}

impl Catalog {
    /// An empty replica of the node that holds `keys`.
    pub fn new(config: Config, keys: Keys) -> Self {
        let skew = config.max_clock_skew.as_millis() as u64;
        Self {
            config,
            clock: HlcClock::new(keys.me().clone(), skew),
            keys,
            entries: BTreeMap::new(),
            buckets: vec![BucketSummary::default(); DIGEST_BUCKETS],
            changes: BTreeMap::new(),
            seq: 0,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The keys this replica seals its writes with.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the replica holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry under `key`, tombstones included.
    pub fn get(&self, key: &CatalogKey) -> Option<&Entry> {
        self.entries.get(key).map(|s| &s.entry)
    }

    /// The live record under `key` (`None` when absent or deleted).
    pub fn record(&self, key: &CatalogKey) -> Option<&Record> {
        match self.get(key)? {
            Entry::Register(r) => r.value.as_ref(),
            Entry::Job(_) => None,
        }
    }

    /// The job record of `id`.
    pub fn job(&self, id: &JobId) -> Option<&JobRecord> {
        self.job_by_key(&CatalogKey::job(id))
    }

    /// The job record under `key`.
    pub(crate) fn job_by_key(&self, key: &CatalogKey) -> Option<&JobRecord> {
        match self.get(key)? {
            Entry::Job(j) => Some(&j.record),
            Entry::Register(_) => None,
        }
    }

    /// Entries whose keys fall in `range`, in key order.
    pub(crate) fn range<R: std::ops::RangeBounds<CatalogKey>>(
        &self,
        range: R,
    ) -> impl Iterator<Item = (&CatalogKey, &Entry)> {
        self.entries.range(range).map(|(k, s)| (k, &s.entry))
    }

    /// Every entry in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&CatalogKey, &Entry)> {
        self.entries.iter().map(|(k, s)| (k, &s.entry))
    }

    /// Entries of one kind in key order. Keys sort by kind first, so this is a range of the
    /// map, not a scan of it: nodes list a kind often (evictions every half second).
    pub fn entries_of(&self, kind: RecordKind) -> impl Iterator<Item = (&CatalogKey, &Entry)> {
        let first = CatalogKey {
            kind,
            name: String::new(),
            version: 0,
        };
        self.range(first..).take_while(move |(k, _)| k.kind == kind)
    }

    /// The latest local change sequence number (the cursor for [`Catalog::delta_since`]).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Writes locally at wall time `now_wall_ms`; returns the delta to gossip (the key's merged
    /// entry). The timestamp is later than anything this replica has seen, so the write wins
    /// over every entry already here. [`Catalog::prepare_local_write`] then
    /// [`Catalog::commit_local_write`], for callers that save in between.
    pub fn apply_local_write(
        &mut self,
        now_wall_ms: u64,
        key: CatalogKey,
        write: Write,
    ) -> Result<Delta, Error> {
        let (key, entry) = self.prepare_local_write(now_wall_ms, key, write)?;
        Ok(self.commit_local_write(key, entry))
    }

    /// Joins an entry from [`Catalog::prepare_local_write`] into the replica; the delta to
    /// gossip.
    pub fn commit_local_write(&mut self, key: CatalogKey, entry: Entry) -> Delta {
        self.merge(key.clone(), entry);
        let merged = self.get(&key).cloned();
        Delta {
            entries: merged.map(|e| (key, e)).into_iter().collect(),
        }
    }

    /// Checks a local write at wall time `now_wall_ms` and returns the entry the key will hold
    /// once it is applied (the write merged into the entry held now), changing nothing but the
    /// clock: the caller saves that entry, then commits it, so a write that could not be saved
    /// is never served or gossiped.
    pub fn prepare_local_write(
        &mut self,
        now_wall_ms: u64,
        key: CatalogKey,
        write: Write,
    ) -> Result<(CatalogKey, Entry), Error> {
        key.validate().map_err(|errors| Error::Invalid {
            key: key.clone(),
            errors,
        })?;
        if let Write::Job(record) = &write {
            if let Some(current) = self.job(&record.id) {
                if record.epoch < current.epoch {
                    return Err(Error::StaleEpoch {
                        job: record.id.clone(),
                        wrote: record.epoch,
                        current: current.epoch,
                    });
                }
            }
        }
        let hlc = self.clock.now(now_wall_ms)?;
        let mut entry = match write {
            Write::Put(record) => Entry::write(hlc, record),
            Write::Delete if key.kind == RecordKind::Job => return Err(Error::JobDelete(key)),
            Write::Delete => Entry::tombstone(hlc),
            Write::Job(record) => Entry::job(hlc, record),
        };
        if let Entry::Register(r) = &entry {
            if let Some(record) = &r.value {
                if record.key() != key {
                    return Err(Error::KeyMismatch {
                        key,
                        record: record.key(),
                    });
                }
            }
        }
        entry.validate(&key).map_err(|errors| Error::Invalid {
            key: key.clone(),
            errors,
        })?;
        let bytes = entry_len(&entry);
        if bytes > MAX_ENTRY_BYTES {
            return Err(Error::TooLarge {
                key,
                bytes,
                cap: MAX_ENTRY_BYTES,
            });
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.config.max_entries {
            return Err(Error::Full {
                key,
                max: self.config.max_entries,
            });
        }
        self.keys.seal(&key, &mut entry);
        let merged = match self.get(&key) {
            Some(current) => {
                let mut merged = current.clone();
                merged.merge(entry);
                merged
            }
            None => entry,
        };
        Ok((key, merged))
    }

    /// Joins one entry into the replica with no checks: the CRDT merge itself. Returns whether
    /// the replica changed. It does not advance the clock, so entries from peers go through
    /// [`Catalog::merge_remote`], which also keeps later local writes ahead of them.
    pub fn merge(&mut self, key: CatalogKey, entry: Entry) -> bool {
        let bucket = bucket_of(&key);
        match self.entries.get_mut(&key) {
            Some(slot) => {
                if !slot.entry.merge(entry) {
                    return false;
                }
                let hash = entry_hash(&key, &slot.entry);
                let old = std::mem::replace(&mut slot.hash, hash);
                xor_into(&mut self.buckets[usize::from(bucket)].hash, &old);
                xor_into(&mut self.buckets[usize::from(bucket)].hash, &hash);
                self.changes.remove(&slot.seq);
                self.seq += 1;
                slot.seq = self.seq;
            }
            None => {
                let hash = entry_hash(&key, &entry);
                let b = &mut self.buckets[usize::from(bucket)];
                xor_into(&mut b.hash, &hash);
                b.count += 1;
                self.seq += 1;
                self.entries.insert(
                    key.clone(),
                    Slot {
                        entry,
                        hash,
                        bucket,
                        seq: self.seq,
                    },
                );
            }
        }
        self.changes.insert(self.seq, key);
        true
    }

    /// Joins every entry of `other` (a whole-replica merge).
    pub fn merge_catalog(&mut self, other: &Catalog) {
        for (k, e) in other.entries() {
            self.merge(k.clone(), e.clone());
        }
    }

    /// Whether `entry` is past the retention at wall time `now_wall_ms`: a tombstone, or a
    /// finished job, whose last change is older than [`Config::retention`].
    pub fn is_expired(&self, entry: &Entry, now_wall_ms: u64) -> bool {
        let last_change_ms = match entry {
            Entry::Register(r) if r.value.is_none() => r.hlc.physical_ms,
            Entry::Job(j) if j.record.status.is_terminal() => {
                j.hlc.physical_ms.max(j.record.updated_at_ms)
            }
            _ => return false,
        };
        let retention = self.config.retention.as_millis() as u64;
        last_change_ms.saturating_add(retention) < now_wall_ms
    }

    /// Removes every entry past the retention at wall time `now_wall_ms` (see
    /// [`Catalog::is_expired`]) and returns their keys, for the caller to delete from the
    /// store. Replicas remove the same entries give or take their clocks' skew, so their digests
    /// agree again once all have compacted; meanwhile [`Catalog::merge_remote`] refuses the
    /// removed entries from peers that still hold them.
    pub fn compact(&mut self, now_wall_ms: u64) -> Vec<CatalogKey> {
        let expired: Vec<CatalogKey> = self
            .entries
            .iter()
            .filter(|(_, slot)| self.is_expired(&slot.entry, now_wall_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            if let Some(slot) = self.entries.remove(key) {
                let b = &mut self.buckets[usize::from(slot.bucket)];
                xor_into(&mut b.hash, &slot.hash);
                b.count = b.count.saturating_sub(1);
                self.changes.remove(&slot.seq);
            }
        }
        expired
    }

    /// Validates and joins entries received from a peer at local wall time `wall_ms`.
    pub fn merge_remote(&mut self, wall_ms: u64, delta: Delta) -> MergeReport {
        self.merge_published(
            wall_ms,
            delta.entries.into_iter().map(|(k, e)| (k, e, None)),
        )
    }

    /// [`Catalog::merge_remote`] of entries each with the node that published the message
    /// carrying it, when the transport authenticated that node (gossipsub's strict signing):
    /// the parts that node wrote need no seal check (see [`keys::verify_published`]).
    pub fn merge_published(
        &mut self,
        wall_ms: u64,
        entries: impl IntoIterator<Item = (CatalogKey, Entry, Option<flotilla_protocol::NodeId>)>,
    ) -> MergeReport {
        let mut report = MergeReport::default();
        for (key, entry, publisher) in entries {
            if let Err(errors) = entry.validate(&key) {
                report.rejected.push((key, Rejection::Invalid(errors)));
                continue;
            }
            if !self.entries.contains_key(&key) && self.is_expired(&entry, wall_ms) {
                report.rejected.push((key, Rejection::Expired));
                continue;
            }
            let bytes = entry_len(&entry);
            if bytes > MAX_ENTRY_BYTES {
                report.rejected.push((key, Rejection::TooLarge(bytes)));
                continue;
            }
            if !self.entries.contains_key(&key) && self.entries.len() >= self.config.max_entries {
                report.rejected.push((key, Rejection::Full));
                continue;
            }
            // What would not change this replica needs no signature check (anti-entropy sends
            // many entries both sides already hold); everything else must carry its writers'
            // seals, checked before the entry can move the clock.
            if let Some(slot) = self.entries.get(&key) {
                let mut merged = slot.entry.clone();
                if !merged.merge(entry.clone()) {
                    report.unchanged += 1;
                    continue;
                }
            }
            if let Err(why) = keys::verify_published(&key, &entry, publisher.as_ref()) {
                report.rejected.push((key, Rejection::BadSeal(why)));
                continue;
            }
            // Observing the timestamp both checks skew and keeps later local writes ahead of it.
            if let Err(e) = self.clock.observe(entry.hlc(), wall_ms) {
                report.rejected.push((key, Rejection::Skew(e)));
                continue;
            }
            if self.merge(key.clone(), entry) {
                report.applied.push(key);
            } else {
                report.unchanged += 1;
            }
        }
        report
    }

    /// Makes the clock later than an entry read back from this node's store.
    pub(crate) fn witness(&mut self, entry: &Entry, wall_ms: u64) -> Result<(), HlcError> {
        self.clock.witness(entry.hlc(), wall_ms).map(|_| ())
    }

    /// Entries changed after sequence number `since`, oldest change first, up to the message
    /// budget; returns them with the cursor to pass next time (the last change included).
    pub fn delta_since(&self, since: u64) -> (Delta, u64) {
        let mut delta = Delta::default();
        let mut cursor = since;
        let mut size: usize = 0;
        for (&seq, key) in self.changes.range(since.saturating_add(1)..) {
            let Some(slot) = self.entries.get(key) else {
                continue;
            };
            let len = pair_len(key, &slot.entry);
            if size.saturating_add(len) > self.config.max_message_bytes && !delta.entries.is_empty()
            {
                break;
            }
            size = size.saturating_add(len);
            delta.entries.push((key.clone(), slot.entry.clone()));
            cursor = seq;
        }
        (delta, cursor)
    }

    /// The replica's digest.
    pub fn digest(&self) -> Digest {
        Digest {
            buckets: self.buckets.clone(),
        }
    }

    /// Buckets whose summaries differ between two digests, ascending. A digest of the wrong
    /// length (a peer's bug) differs in every bucket either side lacks.
    pub fn diff(mine: &Digest, theirs: &Digest) -> Vec<u16> {
        (0..DIGEST_BUCKETS)
            .filter(|&i| mine.buckets.get(i) != theirs.buckets.get(i))
            .map(|i| i as u16)
            .collect()
    }

    /// Answers a peer's digest with the buckets that differ and this replica's entries in them.
    /// Whole buckets are sent while they fit the message budget; the first that does not fit is
    /// sent in part and not listed, and the rest wait for the next round.
    pub fn answer_sync(&self, theirs: &Digest) -> SyncReply {
        let differing: BTreeSet<u16> = Self::diff(&self.digest(), theirs).into_iter().collect();
        let mut by_bucket: BTreeMap<u16, Vec<(&CatalogKey, &Entry)>> = BTreeMap::new();
        for (k, s) in &self.entries {
            if differing.contains(&s.bucket) {
                by_bucket.entry(s.bucket).or_default().push((k, &s.entry));
            }
        }
        let mut reply = SyncReply::default();
        let mut size: usize = 0;
        // Buckets that differ but hold nothing here cost nothing: the peer pushes its entries.
        for &b in &differing {
            let items = by_bucket.remove(&b).unwrap_or_default();
            let lens: Vec<usize> = items.iter().map(|(k, e)| pair_len(k, e)).collect();
            let total = lens.iter().fold(0usize, |a, b| a.saturating_add(*b));
            if size.saturating_add(total) <= self.config.max_message_bytes {
                size = size.saturating_add(total);
                reply.buckets.push(b);
                reply
                    .delta
                    .entries
                    .extend(items.into_iter().map(|(k, e)| (k.clone(), e.clone())));
                continue;
            }
            for ((k, e), len) in items.into_iter().zip(lens) {
                if size.saturating_add(len) > self.config.max_message_bytes {
                    break;
                }
                size = size.saturating_add(len);
                reply.delta.entries.push((k.clone(), e.clone()));
            }
            break;
        }
        reply
    }

    /// Takes a peer's [`SyncReply`] to this replica's digest: merges its entries, then returns
    /// what the peer lacks or holds older in the buckets it covered, in deltas that each fit
    /// the message budget, to push back.
    pub fn complete_sync(&mut self, wall_ms: u64, reply: SyncReply) -> (MergeReport, Vec<Delta>) {
        let theirs: BTreeMap<CatalogKey, Entry> = reply.delta.entries.iter().cloned().collect();
        let report = self.merge_remote(wall_ms, reply.delta);
        let covered: BTreeSet<u16> = reply.buckets.into_iter().collect();
        let mut out = Vec::new();
        let mut current = Delta::default();
        let mut size: usize = 0;
        for (k, s) in &self.entries {
            if !covered.contains(&s.bucket) || theirs.get(k) == Some(&s.entry) {
                continue;
            }
            let len = pair_len(k, &s.entry);
            if size.saturating_add(len) > self.config.max_message_bytes
                && !current.entries.is_empty()
            {
                out.push(std::mem::take(&mut current));
                size = 0;
            }
            size = size.saturating_add(len);
            current.entries.push((k.clone(), s.entry.clone()));
        }
        if !current.entries.is_empty() {
            out.push(current);
        }
        (report, out)
    }
}

fn xor_into(acc: &mut [u8; 32], h: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(h) {
        *a ^= b;
    }
}

/// Encoded size of an entry; an entry that cannot be encoded counts as too large.
fn entry_len(entry: &Entry) -> usize {
    encoded_len(entry).unwrap_or(usize::MAX)
}

fn pair_len(key: &CatalogKey, entry: &Entry) -> usize {
    encoded_len(&(key, entry)).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
