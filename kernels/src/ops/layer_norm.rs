//! Layer normalisation over the last axis: `y = (x - mean) / sqrt(var + eps) * g + b`.
//!
//! The forward keeps each row's mean and reciprocal standard deviation so the backward needs only
//! the input, not the normalised output.

use rayon::prelude::*;

use super::chunk_rows;

/// Per-row statistics saved by the forward for the backward.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Row means.
    pub mean: Vec<f32>,
    /// Row reciprocal standard deviations.
    pub rstd: Vec<f32>,
}

/// Normalises each `d`-wide row of `x` into `y`; returns the statistics for [`backward`].
pub fn forward(x: &[f32], g: &[f32], b: &[f32], eps: f32, d: usize, y: &mut [f32]) -> Stats {
    let rows = x.len() / d;
    let mut mean = vec![0.0f32; rows];
    let mut rstd = vec![0.0f32; rows];
    let chunk = chunk_rows(rows, 8);
    y[..rows * d]
        .par_chunks_mut(chunk * d)
        .zip(x.par_chunks(chunk * d))
        .zip(mean.par_chunks_mut(chunk).zip(rstd.par_chunks_mut(chunk)))
        .for_each(|((yc, xc), (mc, rc))| simd::forward_rows(xc, g, b, eps, d, yc, mc, rc));
    Stats { mean, rstd }
}

/// Backward: writes `dx` (or adds to it when `accumulate`), adds to `dg` and `db`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    g: &[f32],
    stats: &Stats,
    dy: &[f32],
    d: usize,
    dx: &mut [f32],
    accumulate: bool,
    dg: &mut [f32],
    db: &mut [f32],
) {
    let rows = x.len() / d;
    let chunk = chunk_rows(rows, 8);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx[..rows * d]
        .par_chunks_mut(chunk * d)
        .zip(x.par_chunks(chunk * d))
        .zip(dy.par_chunks(chunk * d))
        .zip(
            stats
                .mean
                .par_chunks(chunk)
                .zip(stats.rstd.par_chunks(chunk)),
        )
        .map(|(((dxc, xc), dyc), (mc, rc))| {
            let mut pg = vec![0.0f32; d];
            let mut pb = vec![0.0f32; d];
            simd::backward_rows(xc, g, dyc, mc, rc, d, dxc, accumulate, &mut pg, &mut pb);
            (pg, pb)
        })
        .collect();
    for (pg, pb) in partials {
        for j in 0..d {
            dg[j] += pg[j];
            db[j] += pb[j];
        }
    }
}

/// The row loops, compiled for the baseline target, AVX2 + FMA and AVX-512F, chosen at run time.
/// Reductions use [`fastmath::sum`] and [`fastmath::dot`] so that they vectorise.
mod simd {
    use crate::ops::fastmath;

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn fwd(
        x: &[f32],
        g: &[f32],
        b: &[f32],
        eps: f32,
        d: usize,
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        let (g, b) = (&g[..d], &b[..d]);
        for (((yr, xr), mu_out), rs_out) in y
            .chunks_mut(d)
            .zip(x.chunks(d))
            .zip(mean.iter_mut())
            .zip(rstd.iter_mut())
        {
            let mu = fastmath::sum(xr) / d as f32;
            // The centred row goes into `y` first; the variance is its dot product with itself.
            for (o, v) in yr.iter_mut().zip(xr) {
                *o = v - mu;
            }
            let var = fastmath::dot(yr, yr) / d as f32;
            let rs = 1.0 / (var + eps).sqrt();
            for ((o, gv), bv) in yr.iter_mut().zip(g).zip(b) {
                *o = *o * rs * gv + bv;
            }
            *mu_out = mu;
            *rs_out = rs;
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn bwd(
        x: &[f32],
        g: &[f32],
        dy: &[f32],
        mean: &[f32],
        rstd: &[f32],
        d: usize,
        dx: &mut [f32],
        accumulate: bool,
        pg: &mut [f32],
        pb: &mut [f32],
    ) {
        let (g, pg, pb) = (&g[..d], &mut pg[..d], &mut pb[..d]);
        let mut xhat = vec![0.0f32; d];
        let mut dxh = vec![0.0f32; d];
        for ((((dxr, xr), dyr), mu), rs) in dx
            .chunks_mut(d)
            .zip(x.chunks(d))
            .zip(dy.chunks(d))
            .zip(mean)
            .zip(rstd)
        {
            let (mu, rs) = (*mu, *rs);
            for (((((xh, dh), xv), dv), gv), (pgv, pbv)) in xhat
                .iter_mut()
                .zip(dxh.iter_mut())
                .zip(xr)
                .zip(dyr)
                .zip(g)
                .zip(pg.iter_mut().zip(pb.iter_mut()))
            {
                *xh = (xv - mu) * rs;
                *dh = dv * gv;
                *pgv += dv * *xh;
                *pbv += dv;
            }
            let m1 = fastmath::sum(&dxh) / d as f32;
            let m2 = fastmath::dot(&dxh, &xhat) / d as f32;
            if accumulate {
                for ((o, dh), xh) in dxr.iter_mut().zip(&dxh).zip(&xhat) {
                    *o += rs * (dh - m1 - xh * m2);
                }
            } else {
                for ((o, dh), xh) in dxr.iter_mut().zip(&dxh).zip(&xhat) {
                    *o = rs * (dh - m1 - xh * m2);
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn fwd_avx2(
        x: &[f32],
        g: &[f32],
        b: &[f32],
        eps: f32,
        d: usize,
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        fwd(x, g, b, eps, d, y, mean, rstd)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn bwd_avx2(
        x: &[f32],
        g: &[f32],
        dy: &[f32],
        mean: &[f32],
        rstd: &[f32],
        d: usize,
        dx: &mut [f32],
        accumulate: bool,
        pg: &mut [f32],
        pb: &mut [f32],
    ) {
        bwd(x, g, dy, mean, rstd, d, dx, accumulate, pg, pb)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn fwd_avx512(
        x: &[f32],
        g: &[f32],
        b: &[f32],
        eps: f32,
        d: usize,
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        fwd(x, g, b, eps, d, y, mean, rstd)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn bwd_avx512(
        x: &[f32],
        g: &[f32],
        dy: &[f32],
        mean: &[f32],
        rstd: &[f32],
        d: usize,
        dx: &mut [f32],
        accumulate: bool,
        pg: &mut [f32],
        pb: &mut [f32],
    ) {
        bwd(x, g, dy, mean, rstd, d, dx, accumulate, pg, pb)
    }

    /// Every build of the row loops this CPU can run gives the portable build's results (to
    /// rounding: FMA contracts differently), so the AVX2 build is checked even on a machine
    /// that would pick AVX-512.
    #[cfg(all(test, target_arch = "x86_64"))]
    #[test]
    #[allow(clippy::type_complexity)]
    fn every_build_matches_the_portable_one() {
        let (rows, d) = (7, 133);
        let mut state = 12345u64;
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                })
                .collect()
        };
        let (x, g, b, dy) = (draw(rows * d), draw(d), draw(d), draw(rows * d));
        let run =
            |f: &dyn Fn(&mut [f32], &mut [f32], &mut [f32], &mut [f32], &mut [f32], &mut [f32])| {
                let (mut y, mut mu, mut rs) =
                    (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
                let (mut dx, mut pg) = (vec![0.0; rows * d], vec![0.0; d]);
                f(
                    &mut y,
                    &mut mu,
                    &mut rs,
                    &mut dx,
                    &mut pg,
                    &mut vec![0.0; d],
                );
                (y, dx, pg)
            };
        let portable = run(&|y, mu, rs, dx, pg, pb| {
            fwd(&x, &g, &b, 1e-5, d, y, mu, rs);
            bwd(&x, &g, &dy, mu, rs, d, dx, false, pg, pb);
        });
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                    "{what}[{i}]: {p} vs {q}"
                );
            }
        };
        let mut checked = 0;
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            let avx2 = run(&|y, mu, rs, dx, pg, pb| unsafe {
                fwd_avx2(&x, &g, &b, 1e-5, d, y, mu, rs);
                bwd_avx2(&x, &g, &dy, mu, rs, d, dx, false, pg, pb);
            });
            close(&avx2.0, &portable.0, "avx2 y");
            close(&avx2.1, &portable.1, "avx2 dx");
            close(&avx2.2, &portable.2, "avx2 dg");
            checked += 1;
        }
        if fastmath::has_avx512() {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
            let avx512 = run(&|y, mu, rs, dx, pg, pb| unsafe {
                fwd_avx512(&x, &g, &b, 1e-5, d, y, mu, rs);
                bwd_avx512(&x, &g, &dy, mu, rs, d, dx, false, pg, pb);
            });
            close(&avx512.0, &portable.0, "avx512 y");
            close(&avx512.1, &portable.1, "avx512 dx");
            close(&avx512.2, &portable.2, "avx512 dg");
            checked += 1;
        }
        eprintln!("layer norm: {checked} vector builds checked against the portable one");
    }

    /// Normalises the rows of `x` into `y`, writing each row's mean and 1/σ.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_rows(
        x: &[f32],
        g: &[f32],
        b: &[f32],
        eps: f32,
        d: usize,
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if crate::ops::fastmath::has_avx512() {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
            return unsafe { fwd_avx512(x, g, b, eps, d, y, mean, rstd) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { fwd_avx2(x, g, b, eps, d, y, mean, rstd) };
        }
        fwd(x, g, b, eps, d, y, mean, rstd)
    }

    /// The backward of [`forward_rows`]: writes (or adds to) `dx`, adds to `pg` and `pb`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward_rows(
        x: &[f32],
        g: &[f32],
        dy: &[f32],
        mean: &[f32],
        rstd: &[f32],
        d: usize,
        dx: &mut [f32],
        accumulate: bool,
        pg: &mut [f32],
        pb: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if crate::ops::fastmath::has_avx512() {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
            return unsafe { bwd_avx512(x, g, dy, mean, rstd, d, dx, accumulate, pg, pb) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { bwd_avx2(x, g, dy, mean, rstd, d, dx, accumulate, pg, pb) };
        }
        bwd(x, g, dy, mean, rstd, d, dx, accumulate, pg, pb)
    }
}
