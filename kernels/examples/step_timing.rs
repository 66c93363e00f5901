//! Times only our training step on the `benches/train_step.rs` model and batch (width 128, 4 heads,
//! FFN 512, 2 layers, 16 × 64 tokens, 2 threads), for quick A/B checks and `perf record`:
//!
//!     cargo run --release -p flotilla-kernels --example step_timing -- [steps]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use flotilla_kernels::models::config::{NormPlacement, Pooling};
use flotilla_kernels::models::encoder::EncoderConfig;
use flotilla_kernels::models::Batch;
use flotilla_kernels::optim::{AdamW, AdamWConfig, Optimizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .unwrap();
    let (b, t, v, c) = (16, 64, 1024, 8);
    let mut rng = StdRng::seed_from_u64(0);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..v as u32)).collect();
    let labels: Vec<u32> = (0..b).map(|_| rng.gen_range(0..c as u32)).collect();
    let cfg = EncoderConfig {
        vocab: v,
        context: t,
        width: 128,
        heads: 4,
        layers: 2,
        ffn: 512,
        classes: c,
        pooling: Pooling::Mean,
        norm: NormPlacement::Post,
    };
    let mut model = cfg.build(0).unwrap();
    let batch = Batch::lm(tokens, labels, b, t);
    let mut opt = AdamW::new(
        AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
        model.num_params(),
    )
    .unwrap();
    let mut times = Vec::with_capacity(steps);
    let mut loss = 0.0;
    for i in 0..steps + 5 {
        let t0 = Instant::now();
        let (l, grads) = model.loss_and_grads(&batch).unwrap();
        opt.step(model.params_mut(), &grads, 1e-3).unwrap();
        if i >= 5 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        loss = l;
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{steps} steps: fastest {:.2} ms, p10 {:.2} ms, median {:.2} ms, last loss {loss:.5}",
        times[0],
        times[steps / 10],
        times[steps / 2]
    );
}
