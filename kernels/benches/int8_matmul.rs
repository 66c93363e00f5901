//! Int8 vs f32 matrix multiplication for the shapes of a small transformer's linear layers.
//!
//! Run: `cargo bench -p flotilla-kernels --bench int8_matmul` (`-- quick`: the same table with
//! 20 ms of timing per cell instead of 350 ms, so noisier)
//!
//! For each (batch, in → out) shape it times, single-threaded and in this process:
//! - f32: `gemm::gemm` (the GEMM dfdx uses), `y = x · Wᵀ`;
//! - int8 GEMM alone on every path this CPU has (scalar, AVX2, AVX-512 VNNI), on pre-quantised
//!   activations;
//! - `QuantizedLinear::forward` end to end (activation quantisation + GEMM + rescale + bias) on
//!   the detected path;
//!
//! and prints times and ratios against the f32 baseline, then the model size of a MiniLM-like
//! layer stack in f32 and int8.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use flotilla_kernels::quant::{
    gemm_i8_with, quantize_rows, Int8Kernel, Int8Matrix, QuantizedLinear,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Median time per call over 7 rounds of roughly `budget / 7` each.
fn time(budget: Duration, f: impl FnMut()) -> Duration {
    common::median_time(budget, 7, f)
}

/// `y = x · Wᵀ` with f32 `gemm`. `w_t` selects the weight layout: `false` for `W` as stored by
/// PyTorch and dfdx (`n × k`, read transposed), `true` for a pre-transposed copy (`k × n`), which
/// suits `gemm` better at batch 1.
#[allow(clippy::too_many_arguments)] // The operands and shape of one GEMM call.
fn f32_linear(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    w_t: bool,
    par: gemm::Parallelism,
) {
    // Strides of Wᵀ (k × n): (row, column) = (1, k) when reading W (n × k), (n, 1) when reading
    // the transposed copy.
    let (w_cs, w_rs) = if w_t {
        (1, n as isize)
    } else {
        (k as isize, 1)
    };
    // SAFETY: x is m×k (row stride k), the weight slice holds n·k values read as k×n with the
    // strides above, y is m×n (row stride n); all three slices have exactly those sizes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            w_cs,
            w_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let seed = 0x1e8;
    let mut rng = StdRng::seed_from_u64(seed);
    let quick = std::env::args().any(|a| a == "quick");
    let budget = Duration::from_millis(if quick { 20 } else { 350 });
    let kernels = Int8Kernel::available();
    println!(
        "int8 paths on this CPU: {}",
        kernels
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("single-threaded; times are medians per call (µs); ratio = f32 time / int8 time\n");
    println!("f32 W: weight as stored (out×in), read transposed; f32 Wᵀ: a pre-transposed copy");
    println!("ratios use the faster of the two f32 layouts\n");
    let mut header = format!(
        "{:>6} {:>12} {:>10} {:>10}",
        "batch", "in→out", "f32 W", "f32 Wᵀ"
    );
    for k in &kernels {
        header += &format!(" {:>16}", format!("i8 {}", k.name()));
    }
    header += &format!(" {:>18}", "QuantLinear fwd");
    println!("{header}");

    let shapes = [(384, 1536), (1536, 384), (384, 384), (768, 3072)];
    for &(k, n) in &shapes {
        let w: Vec<f32> = (0..n * k).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
        let layer = QuantizedLinear::quantize(&w, n, k, Some(&vec![0.0; n]))
            .unwrap()
            .single_threaded();
        let mut wt = vec![0.0f32; n * k];
        for j in 0..n {
            for p in 0..k {
                wt[p * n + j] = w[j * k + p];
            }
        }
        let wq = Int8Matrix::new(layer.weight_i8().to_vec(), n, k).unwrap();
        for &m in &[1usize, 16] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
            let (xq, _) = quantize_rows(&x, m, k).unwrap();
            let mut y = vec![0.0f32; m * n];
            let t_w = time(budget, || {
                f32_linear(
                    black_box(&x),
                    black_box(&w),
                    &mut y,
                    m,
                    n,
                    k,
                    false,
                    gemm::Parallelism::None,
                );
                black_box(&y);
            });
            let t_wt = time(budget, || {
                f32_linear(
                    black_box(&x),
                    black_box(&wt),
                    &mut y,
                    m,
                    n,
                    k,
                    true,
                    gemm::Parallelism::None,
                );
                black_box(&y);
            });
            let t_f32 = t_w.min(t_wt);
            let mut row = format!(
                "{:>6} {:>12} {:>10.1} {:>10.1}",
                m,
                format!("{k}→{n}"),
                us(t_w),
                us(t_wt)
            );
            for &kern in &kernels {
                let t = time(budget, || {
                    black_box(gemm_i8_with(kern, black_box(&xq), m, &wq).unwrap());
                });
                row += &format!(
                    " {:>16}",
                    format!(
                        "{:.1} ({:.2}x)",
                        us(t),
                        t_f32.as_secs_f64() / t.as_secs_f64()
                    )
                );
            }
            let t_fwd = time(budget, || {
                black_box(layer.forward(black_box(&x), m).unwrap());
            });
            row += &format!(
                " {:>18}",
                format!(
                    "{:.1} ({:.2}x)",
                    us(t_fwd),
                    t_f32.as_secs_f64() / t_fwd.as_secs_f64()
                )
            );
            println!("{row}");
        }
    }

    // The same layers using every core: gemm with rayon (pre-transposed weight, its faster
    // layout) against QuantizedLinear::forward with its default parallel GEMM.
    let threads = rayon::current_num_threads();
    println!("\nthreaded: rayon pool of {threads}; µs per call");
    println!(
        "{:>6} {:>12} {:>12} {:>22}",
        "batch", "in→out", "f32 Wᵀ", "QuantLinear fwd"
    );
    for &(k, n) in &shapes {
        let w: Vec<f32> = (0..n * k).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
        let wt: Vec<f32> = (0..n * k).map(|i| w[(i % n) * k + i / n]).collect();
        let layer = QuantizedLinear::quantize(&w, n, k, Some(&vec![0.0; n])).unwrap();
        for &m in &[1usize, 16] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
            let mut y = vec![0.0f32; m * n];
            let par = gemm::Parallelism::Rayon(threads);
            let t_f32 = time(budget, || {
                f32_linear(black_box(&x), black_box(&wt), &mut y, m, n, k, true, par);
                black_box(&y);
            });
            let t_q = time(budget, || {
                black_box(layer.forward(black_box(&x), m).unwrap());
            });
            println!(
                "{:>6} {:>12} {:>12.1} {:>22}",
                m,
                format!("{k}→{n}"),
                us(t_f32),
                format!(
                    "{:.1} ({:.2}x)",
                    us(t_q),
                    t_f32.as_secs_f64() / t_q.as_secs_f64()
                )
            );
        }
    }

    // Model size: a MiniLM-L6-like stack (hidden 384, FFN 1536, 6 layers): per layer Q, K, V, O
    // (384×384) and the two FFN matrices, each with a bias.
    let (h, f, layers) = (384usize, 1536usize, 6usize);
    let mats = [(h, h), (h, h), (h, h), (h, h), (f, h), (h, f)];
    let mut f32_bytes = 0usize;
    let mut i8_bytes = 0usize;
    for _ in 0..layers {
        for &(out_f, in_f) in &mats {
            let w: Vec<f32> = (0..out_f * in_f).map(|_| rng.gen::<f32>() - 0.5).collect();
            let q = QuantizedLinear::quantize(&w, out_f, in_f, Some(&vec![0.0; out_f])).unwrap();
            f32_bytes += 4 * (out_f * in_f + out_f);
            i8_bytes += q.size_bytes();
        }
    }
    println!(
        "\nlinear-layer stack ({layers} layers, hidden {h}, FFN {f}): f32 {:.2} MiB, int8 {:.2} MiB, ratio {:.2}x",
        f32_bytes as f64 / (1 << 20) as f64,
        i8_bytes as f64 / (1 << 20) as f64,
        f32_bytes as f64 / i8_bytes as f64
    );
}
