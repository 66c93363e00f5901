//! Fine-tunes all-MiniLM-L6-v2 (BERT + mean pooling + a linear head) on Banking77 in one process.
//!
//!     cargo run --release -p flotilla-kernels --example banking77_finetune -- \
//!         tests/fixtures/models/all-MiniLM-L6-v2 node/data [epochs] [out.f32]
//!
//! A seeded 10 % of `banking77-train.csv` is held out for evaluation. Batches of 32 are grouped
//! by length (less padding); AdamW with peak lr 1e-4, 6 % warmup then linear decay, weight decay
//! 0.01 on matrices, gradient clipping at 1.0. Prints held-out accuracy as training goes and
//! writes the fine-tuned flat parameters (little-endian f32) for the int8 evaluation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;

#[path = "support/banking77.rs"]
mod banking77;
use std::time::Instant;

use flotilla_kernels::infer::F32Linears;
use flotilla_kernels::models::config::{Head, Pooling};
use flotilla_kernels::models::{bert, Batch};
use flotilla_kernels::optim::{AdamW, AdamWConfig, ClipConfig, GradClipper, Optimizer, Schedule};
use flotilla_kernels::train::{apply_weight_decay, decay_ranges};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

const BATCH: usize = 32;

/// Batches of similar length: shuffle, sort within windows of 50 batches, shuffle batch order.
fn batches(n: usize, lens: &[usize], rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let mut out = Vec::new();
    for window in idx.chunks_mut(BATCH * 50) {
        window.sort_by_key(|i| lens[*i]);
        out.extend(window.chunks(BATCH).map(<[usize]>::to_vec));
    }
    out.shuffle(rng);
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model_dir = Path::new(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("tests/fixtures/models/all-MiniLM-L6-v2"),
    )
    .to_path_buf();
    let data_dir = Path::new(args.get(2).map(String::as_str).unwrap_or("node/data")).to_path_buf();
    let epochs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let out_path = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "banking77_minilm.f32".into());
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .unwrap();
    let start = Instant::now();

    let banking77::Data {
        train,
        held_out,
        categories,
        mut rng,
    } = banking77::load(&model_dir, &data_dir);
    let (train, eval) = (&train[..], &held_out[..]);
    let lens: Vec<usize> = train.iter().map(|(s, _)| s.len()).collect();
    println!(
        "{} examples ({} train, {} held out), {} labels, longest {} tokens",
        train.len() + eval.len(),
        train.len(),
        eval.len(),
        categories.len(),
        train
            .iter()
            .chain(eval)
            .map(|(s, _)| s.len())
            .max()
            .unwrap()
    );

    let mut model = bert::load(
        &model_dir,
        Head::Classifier {
            classes: categories.len(),
            pooling: Pooling::Mean,
        },
        7,
    )
    .unwrap();
    let steps_per_epoch = train.len().div_ceil(BATCH);
    let total = (steps_per_epoch * epochs) as u64;
    let sched = Schedule::warmup_linear(1e-4, total * 6 / 100, total, 0.0).unwrap();
    let mut opt = AdamW::new(
        AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
        model.num_params(),
    )
    .unwrap();
    let decay = decay_ranges(model.layout());
    let mut clip = GradClipper::new(ClipConfig::fixed(1.0)).unwrap();
    println!(
        "model: {} parameters; {total} steps ({epochs} epochs of {steps_per_epoch})",
        model.num_params()
    );
    println!("| step | epoch | train loss (mean of last 50) | held-out accuracy | elapsed s |");
    println!("|---|---|---|---|---|");
    let acc0 = banking77::accuracy(&model, &F32Linears(&model), eval);
    println!(
        "| 0 | 0.00 | - | {:.2} % | {:.0} |",
        acc0 * 100.0,
        start.elapsed().as_secs_f64()
    );
    let mut step = 0u64;
    let mut recent: Vec<f32> = Vec::new();
    let mut step_ms = Vec::new();
    for epoch in 0..epochs {
        for b in batches(train.len(), &lens, &mut rng) {
            let t0 = Instant::now();
            let seqs: Vec<Vec<u32>> = b.iter().map(|i| train[*i].0.clone()).collect();
            let labels: Vec<u32> = b.iter().map(|i| train[*i].1).collect();
            let (loss, mut grads) = model.loss_and_grads(&Batch::padded(&seqs, labels)).unwrap();
            clip.clip(&mut grads).unwrap();
            let lr = sched.lr_at(step);
            apply_weight_decay(model.params_mut(), &decay, lr, 0.01);
            opt.step(model.params_mut(), &grads, lr).unwrap();
            step += 1;
            step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            recent.push(loss);
            if recent.len() > 50 {
                recent.remove(0);
            }
            if step.is_multiple_of(100) || step == total {
                let acc = banking77::accuracy(&model, &F32Linears(&model), eval);
                let mean = recent.iter().sum::<f32>() / recent.len() as f32;
                println!(
                    "| {step} | {:.2} | {mean:.4} | {:.2} % | {:.0} |",
                    step as f64 / steps_per_epoch as f64,
                    acc * 100.0,
                    start.elapsed().as_secs_f64()
                );
            }
        }
        println!(
            "epoch {} done at {:.0} s",
            epoch + 1,
            start.elapsed().as_secs_f64()
        );
    }
    step_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let acc = banking77::accuracy(&model, &F32Linears(&model), eval);
    println!();
    println!(
        "final held-out accuracy: {:.2} % ({} examples)",
        acc * 100.0,
        eval.len()
    );
    println!(
        "wall time: {:.0} s in one process; median step {:.0} ms",
        start.elapsed().as_secs_f64(),
        step_ms[step_ms.len() / 2]
    );
    let bytes: Vec<u8> = model
        .params()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&out_path, bytes).unwrap();
    println!("wrote fine-tuned parameters to {out_path}");
}
