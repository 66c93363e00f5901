//! GPU kernels against their CPU references. Without the `cuda` feature, or without a GPU and
//! driver, the parity tests print why and skip; the entry points must still answer with an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use flotilla_kernels::gpu::{self, GpuKernels};
use flotilla_kernels::optim::{AdamW, AdamWConfig, Optimizer, OptimizerState};
use flotilla_kernels::quant::{gemm_i8_with, Int8Kernel, Int8Matrix};
use flotilla_kernels::Error;
use rand::rngs::StdRng;
use rand::Rng;

fn gpu_or_skip() -> Option<GpuKernels> {
    match GpuKernels::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            println!("skipping GPU parity test: {e}");
            None
        }
    }
}

fn seeded(name: &str) -> StdRng {
    crate::common::seeded(name)
}

#[test]
fn without_the_feature_entry_points_say_so() {
    if gpu::COMPILED {
        // With the feature, `new` either works or explains what is missing; it never panics.
        if let Err(e) = GpuKernels::new(0) {
            assert!(matches!(e, Error::Cuda(_)), "{e}");
        }
    } else {
        let e = GpuKernels::new(0).unwrap_err();
        assert!(matches!(e, Error::CudaNotCompiled));
        assert_eq!(
            e.to_string(),
            "flotilla-kernels was built without the `cuda` feature"
        );
    }
}

#[test]
fn int8_gemm_matches_the_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = seeded("gpu gemm");
    for &(m, n, k) in &[
        (1, 1, 1),
        (3, 7, 17),
        (16, 1536, 384),
        (5, 33, 1000),
        (64, 384, 1536),
    ] {
        let a: Vec<i8> = (0..m * k).map(|_| rng.gen()).collect();
        let b = Int8Matrix::new((0..n * k).map(|_| rng.gen()).collect(), n, k).unwrap();
        let want = gemm_i8_with(Int8Kernel::Scalar, &a, m, &b).unwrap();
        assert_eq!(gpu.int8_gemm(&a, m, &b).unwrap(), want, "m={m} n={n} k={k}");
    }
    assert!(gpu
        .int8_gemm(&[1, 2], 3, &Int8Matrix::new(vec![1; 2], 1, 2).unwrap())
        .is_err());
}

#[test]
fn adamw_matches_the_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = seeded("gpu adamw");
    let cfg = AdamWConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-6,
        weight_decay: 0.05,
    };
    for &n in &[1usize, 255, 256, 257, 100_003] {
        let p0: Vec<f32> = (0..n).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
        let mut cpu = AdamW::new(cfg, n).unwrap();
        let mut p_cpu = p0.clone();
        let mut p_gpu = p0;
        let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
        for t in 1..=5u64 {
            let g: Vec<f32> = (0..n).map(|_| rng.gen::<f32>() - 0.5).collect();
            let lr = 1e-3 * t as f32;
            cpu.step(&mut p_cpu, &g, lr).unwrap();
            gpu.adamw_step(&cfg, t, lr, &mut p_gpu, &g, &mut m, &mut v)
                .unwrap();
        }
        let OptimizerState::AdamW { m: cm, v: cv, .. } = cpu.state() else {
            unreachable!()
        };
        for i in 0..n {
            let tol = |x: f32| 1e-6 * (1.0 + x.abs());
            assert!(
                (p_gpu[i] - p_cpu[i]).abs() <= tol(p_cpu[i]),
                "p[{i}] {} vs {}",
                p_gpu[i],
                p_cpu[i]
            );
            assert!((m[i] - cm[i]).abs() <= tol(cm[i]), "m[{i}]");
            assert!((v[i] - cv[i]).abs() <= tol(cv[i]), "v[{i}]");
        }
    }
    let mut p = vec![0.0f32; 2];
    assert!(gpu
        .adamw_step(
            &cfg,
            0,
            1e-3,
            &mut p,
            &[0.0; 2],
            &mut [0.0; 2],
            &mut [0.0; 2]
        )
        .is_err());
}
