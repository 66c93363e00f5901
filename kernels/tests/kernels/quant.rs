//! Int8 GEMM paths against an exact integer reference; the quantised layer against a float64
//! reference with a rigorous error bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use flotilla_kernels::quant::{
    gemm_i8_parallel, gemm_i8_with, quantize_rows, Int8Kernel, Int8Matrix, QuantizedLinear,
};
use flotilla_kernels::Error;
use rand::rngs::StdRng;
use rand::Rng;

fn seeded(name: &str) -> StdRng {
    crate::common::seeded(name)
}

/// (m, n, k): odd sizes, sizes below and just above the vector widths (16, 64), realistic ones.
const SHAPES: [(usize, usize, usize); 10] = [
    (1, 1, 1),
    (1, 5, 15),
    (3, 7, 17),
    (2, 9, 63),
    (5, 3, 64),
    (4, 6, 65),
    (1, 33, 129),
    (7, 13, 200),
    (16, 64, 384),
    (1, 1536, 384),
];

fn reference(a: &[i8], m: usize, b: &[i8], n: usize, k: usize) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: i64 = (0..k)
                .map(|p| i64::from(a[i * k + p]) * i64::from(b[j * k + p]))
                .sum();
            c[i * n + j] = i32::try_from(s).unwrap();
        }
    }
    c
}

#[test]
fn every_available_gemm_path_is_exact() {
    let mut rng = seeded("gemm");
    let kernels = Int8Kernel::available();
    println!("int8 paths on this CPU: {:?}", kernels);
    for &(m, n, k) in &SHAPES {
        // Full range including -128 (every path must be exact for any int8 input), then the
        // quantiser's symmetric range, which the AVX2 path runs with a faster sequence.
        for lo in [i8::MIN, -127] {
            let a: Vec<i8> = (0..m * k).map(|_| rng.gen_range(lo..=127)).collect();
            let b: Vec<i8> = (0..n * k).map(|_| rng.gen_range(lo..=127)).collect();
            let want = reference(&a, m, &b, n, k);
            let bm = Int8Matrix::new(b, n, k).unwrap();
            for &kern in &kernels {
                let got = gemm_i8_with(kern, &a, m, &bm).unwrap();
                assert_eq!(got, want, "{} at m={m} n={n} k={k} lo={lo}", kern.name());
            }
        }
    }
    // Saturation edge of the AVX2 fast path: ±127 everywhere, pairs at 2·127².
    let k = 77;
    let a: Vec<i8> = (0..2 * k)
        .map(|i| if i % 3 == 0 { -127 } else { 127 })
        .collect();
    let bv: Vec<i8> = (0..3 * k)
        .map(|i| if i % 2 == 0 { -127 } else { 127 })
        .collect();
    let want = reference(&a, 2, &bv, 3, k);
    let bm = Int8Matrix::new(bv, 3, k).unwrap();
    for &kern in &kernels {
        assert_eq!(
            gemm_i8_with(kern, &a, 2, &bm).unwrap(),
            want,
            "{}",
            kern.name()
        );
    }
    // Extremes: all -128 × -128 and 127 × -128 over a long k.
    let k = 1000;
    let a = vec![-128i8; 2 * k];
    let b = Int8Matrix::new([vec![-128i8; k], vec![127i8; k]].concat(), 2, k).unwrap();
    for &kern in &kernels {
        assert_eq!(
            gemm_i8_with(kern, &a, 2, &b).unwrap(),
            vec![16384 * 1000, -16256 * 1000, 16384 * 1000, -16256 * 1000],
            "{}",
            kern.name()
        );
    }
}

#[test]
fn x86_paths_exist_where_the_cpu_has_them() {
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(
            Int8Kernel::Avx2.is_supported(),
            is_x86_feature_detected!("avx2")
        );
        let vnni = is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw");
        assert_eq!(Int8Kernel::Avx512Vnni.is_supported(), vnni);
        if !vnni {
            println!("skipping the AVX-512 VNNI path: this CPU lacks it");
        }
    }
    let b = Int8Matrix::new(vec![1; 4], 2, 2).unwrap();
    for k in [Int8Kernel::Avx2, Int8Kernel::Avx512Vnni] {
        if !k.is_supported() {
            assert!(matches!(
                gemm_i8_with(k, &[1, 1], 1, &b),
                Err(Error::UnsupportedKernel(_))
            ));
        }
    }
}

#[test]
fn quantize_rows_is_symmetric_per_row() {
    let x = [0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0, 3.0, 1.5, -3.0];
    let (q, s) = quantize_rows(&x, 3, 3).unwrap();
    assert_eq!(s, vec![1.0 / 127.0, 0.0, 3.0 / 127.0]);
    assert_eq!(q, vec![64, -127, 32, 0, 0, 0, 127, 64, -127]);
    assert!(quantize_rows(&[1.0, f32::NAN], 1, 2).is_err());
    assert!(quantize_rows(&[1.0, f32::INFINITY], 1, 2).is_err());
    assert!(matches!(
        quantize_rows(&[1.0; 3], 2, 2),
        Err(Error::LengthMismatch { .. })
    ));
}

#[test]
fn quantized_linear_matches_f64_reference_within_the_quantisation_bound() {
    let mut rng = seeded("qlinear");
    for &(batch, out_f, in_f) in &[
        (1, 1, 1),
        (3, 5, 17),
        (16, 24, 384),
        (1, 64, 1536),
        (5, 31, 65),
    ] {
        let w: Vec<f32> = (0..out_f * in_f)
            .map(|_| rng.gen::<f32>() * 2.0 - 1.0)
            .collect();
        let bias: Vec<f32> = (0..out_f).map(|_| rng.gen::<f32>()).collect();
        let x: Vec<f32> = (0..batch * in_f)
            .map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * 4.0)
            .collect();
        let layer = QuantizedLinear::quantize(&w, out_f, in_f, Some(&bias)).unwrap();
        let (xq, xs) = quantize_rows(&x, batch, in_f).unwrap();
        let wd = layer.dequantized_weight();
        for kern in Int8Kernel::available() {
            let y = layer
                .clone()
                .with_kernel(kern)
                .unwrap()
                .forward(&x, batch)
                .unwrap();
            for b in 0..batch {
                for o in 0..out_f {
                    let xr = &x[b * in_f..(b + 1) * in_f];
                    let wr = &w[o * in_f..(o + 1) * in_f];
                    // Exact value of the quantised computation, in f64.
                    let exact_q: f64 = (0..in_f)
                        .map(|i| {
                            f64::from(xq[b * in_f + i])
                                * f64::from(xs[b])
                                * f64::from(wd[o * in_f + i])
                        })
                        .sum::<f64>()
                        + f64::from(bias[o]);
                    let got = f64::from(y[b * out_f + o]);
                    assert!(
                        (got - exact_q).abs() <= 1e-5 * (1.0 + exact_q.abs()),
                        "{got} vs {exact_q}"
                    );
                    // Against the float layer: each element is off by at most half a step in each
                    // operand, so |Δ| ≤ Σ |x|·s_w/2 + |ŵ|·s_x/2.
                    let float: f64 = xr
                        .iter()
                        .zip(wr)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
                        + f64::from(bias[o]);
                    let bound: f64 = (0..in_f)
                        .map(|i| {
                            f64::from(xr[i].abs()) * f64::from(layer.scales()[o]) / 2.0
                                + f64::from(wd[o * in_f + i].abs()) * f64::from(xs[b]) / 2.0
                        })
                        .sum::<f64>()
                        + 1e-4;
                    assert!(
                        (got - float).abs() <= bound,
                        "{}: {got} vs {float} (bound {bound})",
                        kern.name()
                    );
                }
            }
        }
    }
}

#[test]
fn quantized_linear_rejects_bad_input_and_is_smaller() {
    let w = vec![0.1f32; 384 * 1536];
    let layer = QuantizedLinear::quantize(&w, 1536, 384, Some(&vec![0.0; 1536])).unwrap();
    assert_eq!(layer.size_bytes(), 384 * 1536 + 2 * 4 * 1536);
    assert!((layer.size_bytes() as f64) < 0.26 * (4.0 * (384.0 * 1536.0 + 1536.0)));
    assert!(matches!(layer.forward(&[], 0), Err(Error::Empty(_))));
    assert!(matches!(
        layer.forward(&[0.0; 383], 1),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(QuantizedLinear::quantize(&w, 1536, 384, Some(&[0.0; 3])).is_err());
    assert!(QuantizedLinear::from_parts(vec![-128, 0], vec![1.0], None, 1, 2).is_err());
    assert!(QuantizedLinear::from_parts(vec![1, 0], vec![1.0, 2.0], None, 1, 2).is_err());
    // A zero activation row gives exactly the bias.
    let l = QuantizedLinear::quantize(&[1.0, 2.0], 1, 2, Some(&[0.5])).unwrap();
    assert_eq!(l.forward(&[0.0, 0.0], 1).unwrap(), vec![0.5]);
}

#[test]
fn quantized_layers_round_trip_through_a_checkpoint() {
    use flotilla_kernels::checkpoint::{self, Checkpoint};
    let mut rng = seeded("qlinear checkpoint");
    let (n, k) = (24, 40);
    let w: Vec<f32> = (0..n * k).map(|_| rng.gen::<f32>() - 0.5).collect();
    let bias: Vec<f32> = (0..n).map(|_| rng.gen::<f32>()).collect();
    let with_bias = QuantizedLinear::quantize(&w, n, k, Some(&bias)).unwrap();
    let without = QuantizedLinear::quantize(&w, n, k, None).unwrap();
    let mut ck = Checkpoint::new(0, serde_json::json!({"quantised": true}));
    for (name, t) in with_bias
        .to_tensors("ffn.up")
        .unwrap()
        .into_iter()
        .chain(without.to_tensors("ffn.down").unwrap())
    {
        ck.weights.insert(name, t);
    }
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(dir.path(), &ck).unwrap();
    let back = checkpoint::load(dir.path()).unwrap();
    let a = QuantizedLinear::from_tensors(&back.weights, "ffn.up").unwrap();
    let b = QuantizedLinear::from_tensors(&back.weights, "ffn.down").unwrap();
    assert_eq!(a.weight_i8(), with_bias.weight_i8());
    assert_eq!(a.bias(), Some(&bias[..]));
    assert_eq!(b.bias(), None);
    let x: Vec<f32> = (0..3 * k).map(|_| rng.gen::<f32>()).collect();
    assert_eq!(a.forward(&x, 3).unwrap(), with_bias.forward(&x, 3).unwrap());
    match QuantizedLinear::from_tensors(&back.weights, "attn.q") {
        Err(Error::TensorMismatch { name, .. }) => assert_eq!(name, "attn.q.weight_i8"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn parallel_gemm_equals_the_single_threaded_one() {
    let mut rng = seeded("parallel gemm");
    // Large enough to split; n not a multiple of the block size.
    for &(m, n, k) in &[(16, 1001, 300), (1, 4099, 384), (3, 9, 100)] {
        let a: Vec<i8> = (0..m * k).map(|_| rng.gen()).collect();
        let b = Int8Matrix::new((0..n * k).map(|_| rng.gen()).collect(), n, k).unwrap();
        for kern in Int8Kernel::available() {
            let single = gemm_i8_with(kern, &a, m, &b).unwrap();
            assert_eq!(
                gemm_i8_parallel(kern, &a, m, &b).unwrap(),
                single,
                "{} m={m} n={n} k={k}",
                kern.name()
            );
        }
    }
    let w: Vec<f32> = (0..512 * 384).map(|_| rng.gen::<f32>() - 0.5).collect();
    let layer = QuantizedLinear::quantize(&w, 512, 384, None).unwrap();
    let x: Vec<f32> = (0..16 * 384).map(|_| rng.gen::<f32>()).collect();
    assert_eq!(
        layer.forward(&x, 16).unwrap(),
        layer.clone().single_threaded().forward(&x, 16).unwrap()
    );
}
