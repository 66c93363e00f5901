//! Training-step benchmark: our hand-written step against dfdx's step and PyTorch's, on the same
//! encoder classifier and batch (width 128, 4 heads, FFN 512, 2 layers, 16 × 64 tokens), with 2
//! threads each. A step is forward, cross-entropy, backward and an AdamW update.
//!
//! Rounds interleave our step, dfdx's and PyTorch's so that all three see the same machine load;
//! PyTorch runs in a child process (`benches/train_step_torch.py`, interpreter from
//! `FLOTILLA_PYTHON` or `python3`) once per round. Prints each round, a table of medians and the
//! ratios; if torch cannot be imported it says so and reports the other two.
//!
//!     cargo bench -p flotilla-kernels --bench train_step
//!
//! `-- quick` times one round of 3 steps each after one warm-up step, without PyTorch (a check
//! that both steps run; its numbers are noisy). `ROUNDS` sets the rounds (default 5, quick 1).
//!
//! The dfdx model is dfdx's own `TransformerEncoder` (post-LN like ours, but ReLU in the FFN,
//! which it hard-codes, and no learned positions); both differences cost well under 1 % of a step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::Command;
use std::time::Instant;

use dfdx::optim::{Adam, AdamConfig, Optimizer as _, WeightDecay};
use dfdx::prelude::*;
use flotilla_kernels::models::config::{NormPlacement, Pooling};
use flotilla_kernels::models::encoder::EncoderConfig;
use flotilla_kernels::models::Batch;
use flotilla_kernels::optim::{AdamW, AdamWConfig, Optimizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const B: usize = 16;
const T: usize = 64;
const D: usize = 128;
const H: usize = 4;
const F: usize = 512;
const L: usize = 2;
const V: usize = 1024;
const C: usize = 8;
const THREADS: usize = 2;

/// One PyTorch measurement: (median, fastest) of 10 timed steps in a child process, or why not.
fn torch_round(python: &str) -> Result<(f64, f64), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/train_step_torch.py");
    let out = Command::new(python)
        .arg(script)
        .args([
            "--threads",
            "2",
            "--steps",
            "10",
            "--warmup",
            "3",
            "--batch",
            "16",
            "--seq",
            "64",
        ])
        .args([
            "--width",
            "128",
            "--heads",
            "4",
            "--ffn",
            "512",
            "--layers",
            "2",
            "--vocab",
            "1024",
            "--classes",
            "8",
        ])
        .output()
        .map_err(|e| format!("cannot start {python}: {e} (set FLOTILLA_PYTHON)"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: serde_json::Value = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            format!(
                "{python} printed no result: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    match (v["median_ms"].as_f64(), v["min_ms"].as_f64()) {
        (Some(med), Some(min)) => Ok((med, min)),
        _ => Err(format!("{}", v["error"])),
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

type DfdxModel = (
    Embedding<V, D>,
    TransformerEncoder<D, H, F, L>,
    Linear<D, C>,
);

fn main() {
    // The global pool, because dfdx's optimizer is not `Send` (so cannot move into `install`).
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let tokens: Vec<u32> = (0..B * T).map(|_| rng.gen_range(0..V as u32)).collect();
    let labels: Vec<u32> = (0..B).map(|_| rng.gen_range(0..C as u32)).collect();

    // Ours.
    let cfg = EncoderConfig {
        vocab: V,
        context: T,
        width: D,
        heads: H,
        layers: L,
        ffn: F,
        classes: C,
        pooling: Pooling::Mean,
        norm: NormPlacement::Post,
    };
    let mut model = cfg.build(0).unwrap();
    let batch = Batch::lm(tokens.clone(), labels.clone(), B, T);
    let mut opt = AdamW::new(
        AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
        model.num_params(),
    )
    .unwrap();
    let mut ours_step = || {
        let t0 = Instant::now();
        let (loss, grads) = model.loss_and_grads(&batch).unwrap();
        opt.step(model.params_mut(), &grads, 1e-3).unwrap();
        (t0.elapsed().as_secs_f64() * 1e3, loss)
    };

    // dfdx.
    let dev = Cpu::default();
    let mut dm = dev.build_module::<DfdxModel, f32>();
    let mut dopt = Adam::new(
        &dm,
        AdamConfig {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: Some(WeightDecay::Decoupled(0.01)),
        },
    );
    let mut dgrads = dm.alloc_grads();
    let ids: Tensor<Rank2<B, T>, usize, Cpu> = dev.tensor_from_vec(
        tokens.iter().map(|t| *t as usize).collect(),
        (Const::<B>, Const::<T>),
    );
    let mut onehot = vec![0.0f32; B * C];
    for (i, l) in labels.iter().enumerate() {
        onehot[i * C + *l as usize] = 1.0;
    }
    let onehot: Tensor<Rank2<B, C>, f32, Cpu> =
        dev.tensor_from_vec(onehot, (Const::<B>, Const::<C>));
    let mut dfdx_step = || {
        let t0 = Instant::now();
        // The head is applied per token and then averaged: the same as pooling first.
        let logits = dm
            .forward_mut(ids.trace(dgrads.clone()))
            .mean::<Rank2<B, C>, Axis<1>>();
        let loss = cross_entropy_with_logits_loss(logits, onehot.clone());
        let value = loss.array();
        dgrads = loss.backward();
        dopt.update(&mut dm, &dgrads).unwrap();
        dm.zero_grads(&mut dgrads);
        (t0.elapsed().as_secs_f64() * 1e3, value)
    };

    let quick = std::env::args().any(|a| a == "quick");
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 5usize });
    // Steps per round: ours, dfdx's; warm-up steps of each before the first round.
    let (ours_per_round, dfdx_per_round, warmup) = if quick { (3, 3, 1) } else { (10, 3, 3) };
    let python = std::env::var("FLOTILLA_PYTHON").unwrap_or_else(|_| "python3".into());
    let (mut ours, mut theirs, mut torch) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_loss, mut dfdx_loss) = (0.0, 0.0);
    let mut torch_note = String::new();
    for _ in 0..warmup {
        ours_step();
        dfdx_step();
    }
    // Rounds interleave the three implementations so that each sees the same machine load.
    for round in 0..rounds {
        let (mut o, mut t) = (Vec::new(), Vec::new());
        for _ in 0..ours_per_round {
            let (ms, l) = ours_step();
            o.push(ms);
            ours_loss = l;
        }
        for _ in 0..dfdx_per_round {
            let (ms, l) = dfdx_step();
            t.push(ms);
            dfdx_loss = l;
        }
        let p = if quick {
            Err("not run in quick mode".to_string())
        } else {
            torch_round(&python)
        };
        println!(
            "round {round}: flotilla {:.1} ms, dfdx {:.1} ms, torch {}",
            median(o.clone()),
            median(t.clone()),
            p.as_ref()
                .map_or_else(|e| e.clone(), |v| format!("{:.1} ms", v.0))
        );
        ours.extend(o);
        theirs.extend(t);
        match p {
            Ok(v) => torch.push(v),
            Err(e) => torch_note = e,
        }
    }
    let (ours_ms, dfdx_ms) = (median(ours.clone()), median(theirs.clone()));
    let torch_ms =
        (!torch.is_empty()).then(|| median(torch.iter().map(|t: &(f64, f64)| t.0).collect()));
    let torch_min = min(&torch.iter().map(|t| t.1).collect::<Vec<_>>());
    if torch_ms.is_none() {
        println!("PyTorch baseline not run: {torch_note}");
    }

    println!();
    println!("encoder classifier step: width {D}, {H} heads, FFN {F}, {L} layers, batch {B} x {T}, {THREADS} threads");
    println!("| implementation | median ms/step | fastest ms/step | steps timed | last loss |");
    println!("|---|---|---|---|---|");
    let (om, tm) = (min(&ours), min(&theirs));
    println!(
        "| flotilla (hand-written kernels) | {ours_ms:.1} | {om:.1} | {} | {ours_loss:.4} |",
        ours.len()
    );
    println!(
        "| dfdx 0.13 (autodiff) | {dfdx_ms:.1} | {tm:.1} | {} | {dfdx_loss:.4} |",
        theirs.len()
    );
    if let Some(t) = torch_ms {
        println!("| PyTorch, 2 threads (median of round medians) | {t:.1} | {torch_min:.1} | {} x 10 | |", torch.len());
    }
    println!();
    println!(
        "speed-up vs dfdx: {:.2}x on medians, {:.2}x on fastest steps",
        dfdx_ms / ours_ms,
        tm / om
    );
    if let Some(t) = torch_ms {
        println!(
            "speed-up vs PyTorch: {:.2}x on medians, {:.2}x on fastest steps (>1: flotilla is faster)",
            t / ours_ms,
            torch_min / om
        );
    }
}
