//! The storage boundary: what actors need from durable storage, without naming the engine.

/// A column family: one concern's keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// Node-local facts (identity metadata, incarnation history).
    Meta,
    /// The replicated catalog.
    Catalog,
    /// Job records and events.
    Jobs,
    /// Dataset shards.
    Shards,
    /// Training checkpoints.
    Checkpoints,
    /// Model artifacts.
    Models,
    /// Stored metrics series.
    Metrics,
}

impl Column {
    /// Every column, in a fixed order.
    pub const ALL: [Column; 7] = [
        Column::Meta,
        Column::Catalog,
        Column::Jobs,
        Column::Shards,
        Column::Checkpoints,
        Column::Models,
        Column::Metrics,
    ];

    /// The name the engine uses for the column.
    pub fn name(self) -> &'static str {
        match self {
            Column::Meta => "meta",
            Column::Catalog => "catalog",
            Column::Jobs => "jobs",
            Column::Shards => "shards",
            Column::Checkpoints => "checkpoints",
            Column::Models => "models",
            Column::Metrics => "metrics",
        }
    }
}

/// Whether a write must be on disk before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before returning: acknowledged control-plane writes.
    Sync,
    /// Leave it to the engine's write-ahead log: bulk data flushed in batches.
    Buffered,
}

/// Durable key-value storage with column families.
pub trait Store: Send + Sync + 'static {
    /// Reads one value.
    fn get(&self, col: Column, key: &[u8]) -> crate::Result<Option<Vec<u8>>>;
    /// Writes one value.
    fn put(
        &self,
        col: Column,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> crate::Result<()>;
    /// Deletes one key.
    fn delete(&self, col: Column, key: &[u8], durability: Durability) -> crate::Result<()>;
    /// All pairs whose key starts with `prefix`, in key order, at most `limit` of them.
    fn scan_prefix(
        &self,
        col: Column,
        prefix: &[u8],
        limit: usize,
    ) -> crate::Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Flushes memtables and the write-ahead log to disk (used at shutdown).
    fn flush(&self) -> crate::Result<()>;
}
