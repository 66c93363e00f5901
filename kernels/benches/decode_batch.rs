//! Batched decoding against decoding each sequence on its own: what one step of the generation
//! engine costs when every running sequence goes through one forward.
//!
//! Run: `cargo bench -p flotilla-kernels --bench decode_batch` (`-- quick`: 30 ms of timing per
//! cell instead of 400 ms, so noisier)
//!
//! For a GPT of the demo's shape and one of the MiniLM-like width (384, 6 layers), with `n`
//! sequences each holding a 48-token prefix, it times one decoding step of one new token per
//! sequence two ways, in this process:
//! - baseline: `n` forwards of one row each (how the engine decoded before ragged batches);
//! - batched: one forward of `n` rows (`Decoder::feed` with the whole batch);
//!
//! and prints tokens per second of each and their ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use flotilla_kernels::infer::{Decoder, F32Linears, KvCache};
use flotilla_kernels::models::gpt::GptConfig;

/// Median time per call over 5 rounds of roughly `budget / 5` each.
fn time(budget: Duration, f: impl FnMut()) -> Duration {
    common::median_time(budget, 5, f)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let budget = Duration::from_millis(if quick { 30 } else { 400 });
    let prefix = 48usize;
    let shapes = [
        ("demo GPT (width 32, 2 layers)", 32, 2, 2),
        ("width 384, 6 layers, 12 heads", 384, 12, 6),
    ];
    println!(
        "one decoding step, one new token per sequence after a {prefix}-token prefix; tokens/s"
    );
    println!(
        "{:<32} {:>4} {:>16} {:>16} {:>7}",
        "model", "seqs", "one at a time", "one forward", "ratio"
    );
    for (name, width, heads, layers) in shapes {
        let model = GptConfig {
            vocab: 96,
            context: 128,
            width,
            heads,
            layers,
            tied: true,
        }
        .build(7)
        .unwrap();
        let dec = Decoder::new(Arc::new(model)).unwrap();
        let lin = F32Linears(dec.model());
        for n in [1usize, 4, 16] {
            let prompt: Vec<u32> = (0..prefix as u32).map(|i| i % 96).collect();
            let mut caches: Vec<KvCache> = (0..n).map(|_| dec.cache()).collect();
            for c in &mut caches {
                dec.feed(&lin, &mut [(c, &prompt[..])]).unwrap();
            }
            // Each timed step feeds position `prefix`, then the caches forget it again, so
            // every step decodes at the same length.
            let alone = time(budget, || {
                for c in caches.iter_mut() {
                    c.truncate(prefix);
                    dec.feed(&lin, &mut [(c, &[5u32][..])]).unwrap();
                }
            });
            let together = time(budget, || {
                for c in caches.iter_mut() {
                    c.truncate(prefix);
                }
                let mut batch: Vec<(&mut KvCache, &[u32])> =
                    caches.iter_mut().map(|c| (c, &[5u32][..])).collect();
                dec.feed(&lin, &mut batch).unwrap();
            });
            let rate = |d: Duration| n as f64 / d.as_secs_f64();
            println!(
                "{:<32} {:>4} {:>16.0} {:>16.0} {:>6.2}x",
                name,
                n,
                rate(alone),
                rate(together),
                alone.as_secs_f64() / together.as_secs_f64()
            );
        }
    }
}
