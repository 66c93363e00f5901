//! Quantises the fine-tuned MiniLM classifier's linear layers to int8 (the numerics module's
//! `QuantizedLinear`: per-output-channel weight scales, per-row activation scales, int8 GEMM)
//! and compares held-out accuracy and forward time with f32 on the same Banking77 split.
//!
//!     cargo run --release -p flotilla-kernels --example banking77_int8 -- \
//!         tests/fixtures/models/all-MiniLM-L6-v2 node/data banking77_minilm.f32

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::time::Instant;

#[path = "support/banking77.rs"]
mod banking77;

use flotilla_kernels::infer::{F32Linears, Int8Linears, Linears};
use flotilla_kernels::models::bert;
use flotilla_kernels::models::config::{Head, Pooling};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model_dir = Path::new(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("tests/fixtures/models/all-MiniLM-L6-v2"),
    )
    .to_path_buf();
    let data_dir = Path::new(args.get(2).map(String::as_str).unwrap_or("node/data")).to_path_buf();
    let params_path = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "banking77_minilm.f32".into());
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .unwrap();

    let data = banking77::load(&model_dir, &data_dir);
    let mut model = bert::load(
        &model_dir,
        Head::Classifier {
            classes: data.categories.len(),
            pooling: Pooling::Mean,
        },
        7,
    )
    .unwrap();
    let bytes = std::fs::read(&params_path).expect("fine-tuned parameters");
    let params: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    model.set_params_flat(&params).unwrap();

    let f32_lin = F32Linears(&model);
    let int8 = Int8Linears::quantize(&model).unwrap();
    let linear_f32_bytes: usize = model
        .layout()
        .entries()
        .iter()
        .filter(|e| e.name.contains(".w_") || e.name.contains(".b_") || e.name.starts_with("head."))
        .map(|e| e.len() * 4)
        .sum();
    let mut rows = Vec::new();
    for (name, lin) in [
        ("f32", &f32_lin as &dyn Linears),
        ("int8", &int8 as &dyn Linears),
    ] {
        let t0 = Instant::now();
        let acc = banking77::accuracy(&model, lin, &data.held_out);
        rows.push((name, acc, t0.elapsed().as_secs_f64()));
    }
    println!("held-out examples: {}", data.held_out.len());
    println!("| linear layers | held-out accuracy | forward time over the held-out set | linear-layer bytes |");
    println!("|---|---|---|---|");
    println!(
        "| f32 | {:.2} % | {:.1} s | {} |",
        rows[0].1 * 100.0,
        rows[0].2,
        linear_f32_bytes
    );
    println!(
        "| int8 | {:.2} % | {:.1} s | {} |",
        rows[1].1 * 100.0,
        rows[1].2,
        int8.size_bytes()
    );
    println!(
        "accuracy change: {:+.2} points",
        (rows[1].1 - rows[0].1) * 100.0
    );
}
