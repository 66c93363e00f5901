//! Fused multi-head scaled-dot-product attention over a packed QKV matrix.
//!
//! Layout: `qkv` is `[B*T, 3*d]` row-major with the queries in columns `0..d`, keys in `d..2d`,
//! values in `2d..3d`; head `h` owns columns `h*dh..(h+1)*dh` of each. The output is `[B*T, d]`
//! with heads side by side, ready for the output projection. Each `(sequence, head)` pair is one
//! rayon task writing its own column block, so no transposes or copies are needed.
//!
//! Masking: key `j` is visible to query `i` when `j < len[b]` (right padding) and, if causal,
//! `j <= i`. The softmax probabilities are kept for the backward (`[B, H, T, T]`).

use rayon::prelude::*;

use super::fastmath::{self, exp};
use super::matmul::{gemm_raw, View};
use super::SendPtr;

/// Shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Sequences.
    pub batch: usize,
    /// Positions per sequence (padded length).
    pub seq: usize,
    /// Model width `d`.
    pub width: usize,
    /// Heads; `width` must be a multiple.
    pub heads: usize,
    /// Whether query `i` may only see keys `j <= i`.
    pub causal: bool,
}

impl Shape {
    fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

/// Forward: writes `out` (`[B*T, d]`) and `probs` (`[B*H*T*T]`).
pub fn forward(s: Shape, qkv: &[f32], lens: &[usize], out: &mut [f32], probs: &mut [f32]) {
    let (t, d, dh) = (s.seq, s.width, s.head_dim());
    assert!(qkv.len() >= s.batch * t * 3 * d && out.len() >= s.batch * t * d);
    assert!(probs.len() >= s.batch * s.heads * t * t && lens.len() >= s.batch);
    let scale = 1.0 / (dh as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    probs[..s.batch * s.heads * t * t]
        .par_chunks_mut(t * t)
        .enumerate()
        .for_each(|(bh, p)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let row0 = b * t * 3 * d;
            let q = View {
                off: row0 + h * dh,
                rs: 3 * d,
                cs: 1,
            };
            let k_t = View {
                off: row0 + d + h * dh,
                rs: 1,
                cs: 3 * d,
            };
            let v = View {
                off: row0 + 2 * d + h * dh,
                rs: 3 * d,
                cs: 1,
            };
            // SAFETY: the views stay inside `qkv` (asserted sizes above) and `p` is this task's own
            // `t x t` chunk.
            unsafe {
                gemm_raw(
                    t,
                    t,
                    dh,
                    qkv.as_ptr(),
                    q,
                    qkv.as_ptr(),
                    k_t,
                    p.as_mut_ptr(),
                    View::rows(0, t),
                    false,
                )
            };
            softmax_rows(p, t, lens[b], s.causal, scale);
            let o = View {
                off: b * t * d + h * dh,
                rs: d,
                cs: 1,
            };
            // SAFETY: task (b, h) alone writes rows b*T..(b+1)*T, columns h*dh..(h+1)*dh of `out`,
            // which stays borrowed mutably until the parallel loop ends.
            unsafe {
                gemm_raw(
                    t,
                    dh,
                    t,
                    p.as_ptr(),
                    View::rows(0, t),
                    qkv.as_ptr(),
                    v,
                    out_ptr.get(),
                    o,
                    false,
                )
            };
        });
}

/// Scales, masks and softmaxes each row of a `t x t` score block in place. Each step is its own
/// loop (scale, max, exp, sum, normalise) so that every one vectorises.
#[inline(always)]
fn softmax_rows_impl(p: &mut [f32], t: usize, len: usize, causal: bool, scale: f32) {
    for (i, row) in p.chunks_mut(t).enumerate() {
        let visible = if causal { len.min(i + 1) } else { len };
        let visible = visible.max(1).min(t);
        let (live, masked) = row.split_at_mut(visible);
        for v in live.iter_mut() {
            *v *= scale;
        }
        let mx = fastmath::max(live);
        for v in live.iter_mut() {
            *v = exp(*v - mx);
        }
        let inv = 1.0 / fastmath::sum(live);
        for v in live.iter_mut() {
            *v *= inv;
        }
        masked.fill(0.0);
    }
}

/// Backward: from `d_out` (`[B*T, d]`) writes `d_qkv` (`[B*T, 3d]`, overwritten).
pub fn backward(s: Shape, qkv: &[f32], probs: &[f32], d_out: &[f32], d_qkv: &mut [f32]) {
    let (t, d, dh) = (s.seq, s.width, s.head_dim());
    assert!(qkv.len() >= s.batch * t * 3 * d && d_qkv.len() >= s.batch * t * 3 * d);
    assert!(probs.len() >= s.batch * s.heads * t * t && d_out.len() >= s.batch * t * d);
    let scale = 1.0 / (dh as f32).sqrt();
    let dst = SendPtr(d_qkv.as_mut_ptr());
    probs[..s.batch * s.heads * t * t]
        .par_chunks(t * t)
        .enumerate()
        .for_each(|(bh, p)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let row0 = b * t * 3 * d;
            let dq = View {
                off: row0 + h * dh,
                rs: 3 * d,
                cs: 1,
            };
            let dk = View {
                off: row0 + d + h * dh,
                rs: 3 * d,
                cs: 1,
            };
            let dv = View {
                off: row0 + 2 * d + h * dh,
                rs: 3 * d,
                cs: 1,
            };
            let dout = View {
                off: b * t * d + h * dh,
                rs: d,
                cs: 1,
            };
            let mut ds = vec![0.0f32; t * t];
            // SAFETY (all four products): the views stay inside `qkv`, `d_out`, `p` and `ds` by the
            // asserts above, and task (b, h) alone writes its rows and head columns of `d_qkv`.
            unsafe {
                // dV = Pᵀ · dO
                gemm_raw(
                    t,
                    dh,
                    t,
                    p.as_ptr(),
                    View::transposed(0, t),
                    d_out.as_ptr(),
                    dout,
                    dst.get(),
                    dv,
                    false,
                );
                // dP = dO · Vᵀ
                let v_t = View {
                    off: row0 + 2 * d + h * dh,
                    rs: 1,
                    cs: 3 * d,
                };
                gemm_raw(
                    t,
                    t,
                    dh,
                    d_out.as_ptr(),
                    dout,
                    qkv.as_ptr(),
                    v_t,
                    ds.as_mut_ptr(),
                    View::rows(0, t),
                    false,
                );
            }
            // dS = P ⊙ (dP − rowsum(dP ⊙ P)), with the score scale folded in.
            softmax_grad_rows(p, &mut ds, t, scale);
            let k = View {
                off: row0 + d + h * dh,
                rs: 3 * d,
                cs: 1,
            };
            let q = View {
                off: row0 + h * dh,
                rs: 3 * d,
                cs: 1,
            };
            // SAFETY: as above.
            unsafe {
                // dQ = dS · K
                gemm_raw(
                    t,
                    dh,
                    t,
                    ds.as_ptr(),
                    View::rows(0, t),
                    qkv.as_ptr(),
                    k,
                    dst.get(),
                    dq,
                    false,
                );
                // dK = dSᵀ · Q
                gemm_raw(
                    t,
                    dh,
                    t,
                    ds.as_ptr(),
                    View::transposed(0, t),
                    qkv.as_ptr(),
                    q,
                    dst.get(),
                    dk,
                    false,
                );
            }
        });
}

/// [`softmax_rows_impl`] compiled for AVX-512F or AVX2 + FMA when the CPU has them (the crate targets baseline
/// x86-64), since its `exp` loop vectorises.
fn softmax_rows(p: &mut [f32], t: usize, len: usize, causal: bool, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::ops::fastmath::has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
        return unsafe { softmax_rows_avx512(p, t, len, causal, scale) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { softmax_rows_avx2(p, t, len, causal, scale) };
    }
    softmax_rows_impl(p, t, len, causal, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(p: &mut [f32], t: usize, len: usize, causal: bool, scale: f32) {
    softmax_rows_impl(p, t, len, causal, scale)
}

/// `dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale`, over `dP` in place, row by row.
#[inline(always)]
fn softmax_grad_rows_impl(p: &[f32], ds: &mut [f32], t: usize, scale: f32) {
    for (prow, dsrow) in p.chunks(t).zip(ds.chunks_mut(t)) {
        let dot = fastmath::dot(prow, dsrow);
        for (g, pv) in dsrow.iter_mut().zip(prow) {
            *g = pv * (*g - dot) * scale;
        }
    }
}

/// [`softmax_grad_rows_impl`], compiled for AVX-512F or AVX2 + FMA when the CPU has them.
fn softmax_grad_rows(p: &[f32], ds: &mut [f32], t: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::ops::fastmath::has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
        return unsafe { softmax_grad_rows_avx512(p, ds, t, scale) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { softmax_grad_rows_avx2(p, ds, t, scale) };
    }
    softmax_grad_rows_impl(p, ds, t, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_grad_rows_avx2(p: &[f32], ds: &mut [f32], t: usize, scale: f32) {
    softmax_grad_rows_impl(p, ds, t, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn softmax_rows_avx512(p: &mut [f32], t: usize, len: usize, causal: bool, scale: f32) {
    softmax_rows_impl(p, t, len, causal, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn softmax_grad_rows_avx512(p: &[f32], ds: &mut [f32], t: usize, scale: f32) {
    softmax_grad_rows_impl(p, ds, t, scale)
}

/// Every build of the softmax loops this CPU can run gives the portable build's results (to
/// rounding), so the AVX2 build is checked even where AVX-512 would be picked.
#[cfg(all(test, target_arch = "x86_64"))]
mod build_tests {
    use super::*;

    #[test]
    fn every_build_matches_the_portable_one() {
        let t = 37;
        let scores: Vec<f32> = (0..t * t)
            .map(|i| ((i * 29 % 97) as f32 - 48.0) / 9.0)
            .collect();
        let upstream: Vec<f32> = (0..t * t)
            .map(|i| ((i * 13 % 31) as f32 - 15.0) / 7.0)
            .collect();
        for (len, causal) in [(t, false), (21, false), (t, true)] {
            let run = |f: &dyn Fn(&mut [f32], &mut [f32])| {
                let (mut p, mut ds) = (scores.clone(), upstream.clone());
                f(&mut p, &mut ds);
                (p, ds)
            };
            let portable = run(&|p, ds| {
                softmax_rows_impl(p, t, len, causal, 0.25);
                softmax_grad_rows_impl(p, ds, t, 0.25);
            });
            let mut builds = Vec::new();
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                builds.push((
                    "avx2",
                    run(&|p, ds| unsafe {
                        softmax_rows_avx2(p, t, len, causal, 0.25);
                        softmax_grad_rows_avx2(p, ds, t, 0.25);
                    }),
                ));
            }
            if fastmath::has_avx512() {
                // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
                builds.push((
                    "avx512",
                    run(&|p, ds| unsafe {
                        softmax_rows_avx512(p, t, len, causal, 0.25);
                        softmax_grad_rows_avx512(p, ds, t, 0.25);
                    }),
                ));
            }
            for (name, (p, ds)) in builds {
                for i in 0..t * t {
                    assert!((p[i] - portable.0[i]).abs() <= 1e-5, "{name} p[{i}]");
                    assert!(
                        (ds[i] - portable.1[i]).abs() <= 1e-5 * (1.0 + portable.1[i].abs()),
                        "{name} ds[{i}]"
                    );
                }
            }
        }
    }
}
