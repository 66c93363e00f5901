//! A process-wide pool of `f32` buffers, so that a training step reuses the previous step's
//! activation and gradient buffers instead of asking the allocator for fresh ones.
//!
//! Fresh multi-megabyte buffers come from `mmap` and are returned with `munmap`: each step then
//! pays a page fault (and a kernel page clear) per 4 KiB on first touch, and TLB shoot-downs on
//! release — about a tenth of the benchmark step. Buffers handed back with [`recycle`] are kept
//! (at most [`MAX_BUFFERS`] of them, [`MAX_FLOATS`] floats in all) and handed out again by size.
//! One pool for all threads (a step may run on any rayon worker), behind a mutex taken a few
//! dozen times per step, so the memory it holds is bounded whatever the thread count.

use std::sync::{Mutex, MutexGuard};

/// Most buffers kept.
const MAX_BUFFERS: usize = 64;
/// Most floats kept (128 MiB).
const MAX_FLOATS: usize = 1 << 25;
/// Buffers shorter than this are not worth keeping: the allocator serves them from its bins.
const MIN_FLOATS: usize = 1 << 12;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// The pool; a panic while it was held cannot leave it inconsistent, so poisoning is ignored.
fn pool() -> MutexGuard<'static, Vec<Vec<f32>>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The smallest pooled buffer with room for `len`, or a new empty one.
fn take(len: usize) -> Vec<f32> {
    if len < MIN_FLOATS {
        return Vec::with_capacity(len);
    }
    let mut p = pool();
    let best = p
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= len)
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i);
    match best {
        // Only reuse buffers not grossly larger than asked, so a big one stays for big uses.
        Some(i) if p[i].capacity() <= 2 * len => p.swap_remove(i),
        _ => Vec::with_capacity(len),
    }
}

/// A buffer of `len` zeros.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.clear();
    v.resize(len, 0.0);
    v
}

/// A buffer of `len` values the caller must overwrite entirely: its contents are whatever the
/// buffer held before (always initialised `f32`s, but meaningless).
pub(crate) fn scratch(len: usize) -> Vec<f32> {
    let mut v = take(len);
    if v.len() >= len {
        v.truncate(len);
    } else {
        v.resize(len, 0.0);
    }
    v
}

/// A copy of `src` in a pooled buffer.
pub(crate) fn copy_of(src: &[f32]) -> Vec<f32> {
    let mut v = take(src.len());
    v.clear();
    v.extend_from_slice(src);
    v
}

/// Hands a buffer back for reuse.
pub(crate) fn recycle(v: Vec<f32>) {
    if v.capacity() < MIN_FLOATS {
        return;
    }
    let mut p = pool();
    p.push(v);
    // Over the limits: drop the smallest buffers first.
    while p.len() > MAX_BUFFERS || p.iter().map(Vec::capacity).sum::<usize>() > MAX_FLOATS {
        let Some(i) = p
            .iter()
            .enumerate()
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)
        else {
            break;
        };
        p.swap_remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_zero_after_reuse() {
        let mut v = scratch(10_000);
        v.iter_mut().for_each(|x| *x = 7.0);
        recycle(v);
        let z = zeros(9_000);
        assert_eq!(z.len(), 9_000);
        assert!(z.iter().all(|x| *x == 0.0));
        recycle(z);
        let s = scratch(12_000);
        assert_eq!(s.len(), 12_000);
        let c = copy_of(&[1.0; 5000]);
        assert_eq!(c, vec![1.0; 5000]);
    }
}
