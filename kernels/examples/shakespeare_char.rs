//! nanoGPT's CPU configuration on tiny Shakespeare, character level: 4 layers, 4 heads, width
//! 128, context 64, batch 12, 2,000 iterations, AdamW (β₂ 0.99, weight decay 0.1 on matrices),
//! lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, gradient clipping at 1.0, no dropout,
//! the first 90 % of the text for training and the last 10 % for validation.
//!
//!     cargo run --release -p flotilla-kernels --example shakespeare_char -- \
//!         tests/data/tinyshakespeare.txt [iterations] [threads]
//!
//! Prints the loss curve (train and validation estimated on 20 random batches every 250 steps)
//! and a final validation loss on 200 batches, with wall time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use flotilla_kernels::models::gpt::GptConfig;
use flotilla_kernels::models::{Batch, Transformer};
use flotilla_kernels::optim::{AdamW, AdamWConfig, ClipConfig, GradClipper, Optimizer, Schedule};
use flotilla_kernels::tokenize::CharTokenizer;
use flotilla_kernels::train::{apply_weight_decay, decay_ranges};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CONTEXT: usize = 64;
const BATCH: usize = 12;

fn get_batch(data: &[u32], rng: &mut StdRng) -> Batch {
    let mut x = Vec::with_capacity(BATCH * CONTEXT);
    let mut y = Vec::with_capacity(BATCH * CONTEXT);
    for _ in 0..BATCH {
        let i = rng.gen_range(0..data.len() - CONTEXT - 1);
        x.extend_from_slice(&data[i..i + CONTEXT]);
        y.extend_from_slice(&data[i + 1..i + CONTEXT + 1]);
    }
    Batch::lm(x, y, BATCH, CONTEXT)
}

fn estimate(model: &Transformer, data: &[u32], iters: usize, rng: &mut StdRng) -> f32 {
    // The training-step loss is the same cross-entropy; its gradient is simply not used.
    let total: f32 = (0..iters)
        .map(|_| model.loss_and_grads(&get_batch(data, rng)).unwrap().0)
        .sum();
    total / iters as f32
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("tests/data/tinyshakespeare.txt");
    let iters: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();

    let text = std::fs::read_to_string(path).expect("read the text");
    let tok = CharTokenizer::from_corpus(&text).unwrap();
    let ids = tok.encode(&text).unwrap();
    let n = ids.len() * 9 / 10;
    let (train, val) = (&ids[..n], &ids[n..]);
    println!(
        "{} characters, vocabulary {}, train {} / val {}",
        ids.len(),
        tok.vocab_size(),
        train.len(),
        val.len()
    );

    let cfg = GptConfig {
        vocab: tok.vocab_size(),
        context: CONTEXT,
        width: 128,
        heads: 4,
        layers: 4,
        tied: true,
    };
    let mut model = cfg.build(1337).unwrap();
    println!(
        "model: {} parameters, {threads} threads",
        model.num_params()
    );
    let mut opt = AdamW::new(
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        model.num_params(),
    )
    .unwrap();
    let decay = decay_ranges(model.layout());
    let sched = Schedule::warmup_cosine(1e-3, 100.min(iters / 10), iters, 1e-4).unwrap();
    let mut clip = GradClipper::new(ClipConfig::fixed(1.0)).unwrap();
    let mut rng = StdRng::seed_from_u64(1337);
    let mut eval_rng = StdRng::seed_from_u64(7);

    println!("| iter | train loss (20 batches) | val loss (20 batches) | lr | elapsed s |");
    println!("|---|---|---|---|---|");
    let start = Instant::now();
    let mut step_ms = Vec::new();
    for it in 0..=iters {
        if it % 250 == 0 || it == iters {
            let tl = estimate(&model, train, 20, &mut eval_rng);
            let vl = estimate(&model, val, 20, &mut eval_rng);
            println!(
                "| {it} | {tl:.4} | {vl:.4} | {:.2e} | {:.1} |",
                sched.lr_at(it),
                start.elapsed().as_secs_f64()
            );
        }
        if it == iters {
            break;
        }
        let t0 = Instant::now();
        let batch = get_batch(train, &mut rng);
        let (_, mut grads) = model.loss_and_grads(&batch).unwrap();
        clip.clip(&mut grads).unwrap();
        let lr = sched.lr_at(it);
        apply_weight_decay(model.params_mut(), &decay, lr, 0.1);
        opt.step(model.params_mut(), &grads, lr).unwrap();
        step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let train_s = start.elapsed().as_secs_f64();
    step_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let final_val = estimate(&model, val, 200, &mut eval_rng);
    println!();
    println!("final validation loss (200 batches of 12 x 64): {final_val:.4}");
    println!("wall time for {iters} iterations including evaluations: {train_s:.1} s; median step {:.1} ms", step_ms[step_ms.len() / 2]);

    // A short greedy sample, to see what the model learned.
    let prompt = tok.encode("ROMEO:").unwrap();
    let mut ctx = prompt.clone();
    for _ in 0..200 {
        let window = &ctx[ctx.len().saturating_sub(CONTEXT)..];
        let out = model
            .forward(&Batch::lm(window.to_vec(), vec![], 1, window.len()))
            .unwrap();
        let last = &out.logits[(window.len() - 1) * cfg.vocab..window.len() * cfg.vocab];
        let next = last
            .iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |a, (i, v)| if *v > a.1 { (i, *v) } else { a },
            )
            .0;
        ctx.push(next as u32);
    }
    println!("greedy sample:\n{}", tok.decode(&ctx).unwrap());
}
