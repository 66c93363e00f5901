//! The exact-match response cache: canonical request key → response body, least recently used
//! first out, bounded in entries and in bytes.
//!
//! Only deterministic requests are given a key (the caller decides, see
//! `flotilla_protocol::openai::cache_key`), and the key includes the model version's hash, so
//! nothing here needs to know about versions: entries of a retired version simply age out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use flotilla_protocol::openai::CacheKey;

/// A response body, shared between the cache and every caller it answers.
pub type Body = Arc<[u8]>;

/// A bounded LRU map from request keys to response bodies.
#[derive(Debug)]
pub struct ResponseCache {
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    tick: u64,
    /// Key → (body, tick of last use).
    map: HashMap<CacheKey, (Body, u64)>,
    /// Tick of last use → key: the first entry is the least recently used.
    order: BTreeMap<u64, CacheKey>,
    evictions: u64,
}

impl ResponseCache {
    /// An empty cache; 0 in either bound disables caching.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            bytes: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
            evictions: 0,
        }
    }

    fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The body cached for `key`, which becomes the most recently used.
    pub fn get(&mut self, key: &CacheKey) -> Option<Body> {
        let now = self.touch();
        let (body, used) = self.map.get_mut(key)?;
        self.order.remove(used);
        *used = now;
        self.order.insert(now, *key);
        Some(body.clone())
    }

    /// Caches `body` under `key`, evicting the least recently used entries to stay within
    /// bounds. A body larger than the whole byte bound is not cached; returns whether it was.
    pub fn insert(&mut self, key: CacheKey, body: Body) -> bool {
        if self.max_entries == 0 || body.len() > self.max_bytes {
            return false;
        }
        self.remove(&key);
        let now = self.touch();
        self.bytes += body.len();
        self.map.insert(key, (body, now));
        self.order.insert(now, key);
        while self.map.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.map.remove(&oldest) {
                self.bytes -= b.len();
                self.evictions += 1;
            }
        }
        true
    }

    /// Drops `key`'s entry, if any.
    pub fn remove(&mut self, key: &CacheKey) {
        if let Some((b, used)) = self.map.remove(key) {
            self.bytes -= b.len();
            self.order.remove(&used);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of bodies held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries evicted to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> CacheKey {
        CacheKey([i; 32])
    }

    fn body(len: usize) -> Body {
        vec![7u8; len].into()
    }

    #[test]
    fn least_recently_used_leaves_first() {
        let mut c = ResponseCache::new(2, 1000);
        c.insert(key(1), body(1));
        c.insert(key(2), body(2));
        assert!(c.get(&key(1)).is_some()); // 1 is now newer than 2
        c.insert(key(3), body(3));
        assert!(c.get(&key(2)).is_none());
        assert!(c.get(&key(1)).is_some() && c.get(&key(3)).is_some());
        assert_eq!((c.len(), c.bytes(), c.evictions()), (2, 4, 1));
    }

    #[test]
    fn the_byte_bound_holds() {
        let mut c = ResponseCache::new(100, 10);
        c.insert(key(1), body(4));
        c.insert(key(2), body(4));
        c.insert(key(3), body(4));
        assert_eq!(c.bytes(), 8);
        assert!(c.get(&key(1)).is_none());
        assert!(!c.insert(key(4), body(11)), "larger than the whole cache");
        assert_eq!(c.len(), 2);
        // Replacing an entry counts its bytes once.
        c.insert(key(2), body(6));
        assert_eq!((c.len(), c.bytes()), (2, 10));
        assert_eq!(c.get(&key(2)).unwrap().len(), 6);
    }

    #[test]
    fn a_zero_bound_disables_caching() {
        let mut c = ResponseCache::new(0, 100);
        assert!(!c.insert(key(1), body(1)));
        assert!(c.is_empty());
    }
}
