//! x86-64 SIMD paths of the int8 GEMM. Each works on blocks of four weight rows so that one load
//! of an activation chunk feeds four dot products, and handles any `k` (tails included).

use std::arch::x86_64::*;

use super::gemm::Rows;

pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

pub(crate) fn has_avx512_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Scalar dot product for tails and leftover rows.
fn dot_tail(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// AVX2 GEMM: `c` (`m × b.rows()`) = `a` (`m × k`) · `b`ᵀ.
///
/// # Safety
/// The CPU must support AVX2, `a.len() == m · b.cols()` and `c.len() == m · b.rows()`.
pub(crate) unsafe fn gemm_avx2(a: &[i8], m: usize, b: Rows<'_>, c: &mut [i32]) {
    debug_assert!(has_avx2());
    // SAFETY: guaranteed by this function's contract.
    unsafe { gemm_avx2_impl(a, m, b, c) }
}

#[target_feature(enable = "avx2")]
unsafe fn gemm_avx2_impl(a: &[i8], m: usize, b: Rows<'_>, c: &mut [i32]) {
    let (n, k) = (b.rows(), b.cols());
    let w = b.data();
    // `vpmaddubsw` multiplies unsigned by signed bytes and saturates pair sums at i16. With
    // |a|·sign(b, a) both factors stay within ±127, so a pair sums to at most 2·127² = 32258 and
    // never saturates: exact, 32 bytes an instruction. A -128 anywhere breaks that (its negation
    // wraps), so such inputs take the sign-extending path, exact for any bytes, 16 at a time.
    let fast = b.no_min() && !a.contains(&i8::MIN);
    let ones = _mm256_set1_epi16(1);
    let mut j = 0;
    while j < n {
        let rows = (n - j).min(4);
        let br: [&[i8]; 4] = std::array::from_fn(|r| {
            let jj = j + r.min(rows - 1);
            &w[jj * k..(jj + 1) * k]
        });
        for i in 0..m {
            let ar = &a[i * k..(i + 1) * k];
            let mut acc = [_mm256_setzero_si256(); 4];
            let mut p = 0;
            if fast {
                while p + 32 <= k {
                    // SAFETY: p + 32 <= k: the 32-byte loads stay inside `ar` and each `br[r]`
                    // (all of length k).
                    unsafe {
                        let av = _mm256_loadu_si256(ar.as_ptr().add(p).cast());
                        let ua = _mm256_abs_epi8(av);
                        for r in 0..4 {
                            let bv = _mm256_loadu_si256(br[r].as_ptr().add(p).cast());
                            let pairs = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(bv, av));
                            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(pairs, ones));
                        }
                    }
                    p += 32;
                }
            }
            while p + 16 <= k {
                // SAFETY: p + 16 <= k: the 16-byte loads stay inside `ar` and each `br[r]`.
                unsafe {
                    let av = _mm256_cvtepi8_epi16(_mm_loadu_si128(ar.as_ptr().add(p).cast()));
                    for r in 0..4 {
                        let bv =
                            _mm256_cvtepi8_epi16(_mm_loadu_si128(br[r].as_ptr().add(p).cast()));
                        // i16 × i16 pairs summed into i32: exact for any i8 inputs.
                        acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(av, bv));
                    }
                }
                p += 16;
            }
            for r in 0..rows {
                c[i * n + j + r] = hsum256(acc[r]) + dot_tail(&ar[p..], &br[r][p..]);
            }
        }
        j += rows;
    }
}

#[target_feature(enable = "avx2")]
fn hsum256(v: __m256i) -> i32 {
    let lo = _mm256_castsi256_si128(v);
    let hi = _mm256_extracti128_si256::<1>(v);
    let s = _mm_add_epi32(lo, hi);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// AVX-512 VNNI GEMM: `c` (`m × b.rows()`) = `a` (`m × k`) · `b`ᵀ.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and AVX-512 VNNI, `a.len() == m · b.cols()` and
/// `c.len() == m · b.rows()`.
pub(crate) unsafe fn gemm_vnni(a: &[i8], m: usize, b: Rows<'_>, c: &mut [i32]) {
    debug_assert!(has_avx512_vnni());
    // SAFETY: guaranteed by this function's contract.
    unsafe { gemm_vnni_impl(a, m, b, c) }
}

/// Sums each of four accumulators across its 16 lanes: `[Σ a0, Σ a1, Σ a2, Σ a3]`. One shared
/// tree of adds is about a third of the work of four separate reductions.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn reduce4(acc: &[__m512i; 4]) -> [i32; 4] {
    let half =
        |v: __m512i| _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
    // hadd works within 128-bit lanes: after two rounds each lane holds [s0, s1, s2, s3] for its
    // half of the elements; adding the two lanes finishes the sums.
    let t01 = _mm256_hadd_epi32(half(acc[0]), half(acc[1]));
    let t23 = _mm256_hadd_epi32(half(acc[2]), half(acc[3]));
    let t = _mm256_hadd_epi32(t01, t23);
    let r = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
    let mut out = [0i32; 4];
    // SAFETY: `out` is 16 bytes, the size of the unaligned store.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), r) };
    out
}

/// Dot products of `MR` activation rows with four weight rows, all of length `k`:
/// `out[i][r] = Σ (a_i + 128) · b_r` (the caller removes the offset).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn vnni_block<const MR: usize>(ar: [&[i8]; MR], br: [&[i8]; 4], k: usize) -> [[i32; 4]; MR] {
    let tail = k % 64;
    let k64 = k - tail;
    // Lanes past the end of a tail are zero in both operands; a zero weight lane makes the
    // product zero whatever the offset activation lane holds.
    let tail_mask: __mmask64 = if tail == 0 { 0 } else { (1u64 << tail) - 1 };
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut acc = [[_mm512_setzero_si512(); 4]; MR];
    let mut p = 0;
    while p < k64 {
        // SAFETY: p + 64 <= k64 <= k and every slice has length k: the loads stay in bounds.
        unsafe {
            let bv: [__m512i; 4] =
                std::array::from_fn(|r| _mm512_loadu_si512(br[r].as_ptr().add(p).cast()));
            for i in 0..MR {
                // a XOR 0x80 = a + 128 as an unsigned byte.
                let av = _mm512_xor_si512(_mm512_loadu_si512(ar[i].as_ptr().add(p).cast()), flip);
                for r in 0..4 {
                    acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], av, bv[r]);
                }
            }
        }
        p += 64;
    }
    if tail != 0 {
        // SAFETY: masked loads read only the `tail` bytes from k64, which lie inside each slice;
        // masked-off lanes are not accessed.
        unsafe {
            let bv: [__m512i; 4] = std::array::from_fn(|r| {
                _mm512_maskz_loadu_epi8(tail_mask, br[r].as_ptr().add(k64).cast())
            });
            for i in 0..MR {
                let av = _mm512_xor_si512(
                    _mm512_maskz_loadu_epi8(tail_mask, ar[i].as_ptr().add(k64).cast()),
                    flip,
                );
                for r in 0..4 {
                    acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], av, bv[r]);
                }
            }
        }
    }
    std::array::from_fn(|i| reduce4(&acc[i]))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn gemm_vnni_impl(a: &[i8], m: usize, b: Rows<'_>, c: &mut [i32]) {
    let (n, k) = (b.rows(), b.cols());
    let w = b.data();
    let sums = b.row_sums();
    // Σ (a + 128)·b − 128·Σ b = Σ a·b; wrapping arithmetic matches the hardware's.
    let mut store = |i: usize, j: usize, rows: usize, d: [i32; 4]| {
        for r in 0..rows {
            c[i * n + j + r] = d[r].wrapping_sub(sums[j + r].wrapping_mul(128));
        }
    };
    let mut j = 0;
    while j < n {
        let rows = (n - j).min(4);
        // A partial block repeats its last row; the extra results are not stored.
        let br: [&[i8]; 4] = std::array::from_fn(|r| {
            let jj = j + r.min(rows - 1);
            &w[jj * k..(jj + 1) * k]
        });
        let row = |i: usize| &a[i * k..(i + 1) * k];
        let mut i = 0;
        // Four (then two) activation rows at a time: each weight load then feeds several dot
        // products. 4 × 4 accumulators + 4 weight vectors + 1 activation fit the 32 registers.
        while i + 4 <= m {
            let d = vnni_block::<4>([row(i), row(i + 1), row(i + 2), row(i + 3)], br, k);
            for (r, dr) in d.into_iter().enumerate() {
                store(i + r, j, rows, dr);
            }
            i += 4;
        }
        while i + 2 <= m {
            let d = vnni_block::<2>([row(i), row(i + 1)], br, k);
            store(i, j, rows, d[0]);
            store(i + 1, j, rows, d[1]);
            i += 2;
        }
        if i < m {
            let d = vnni_block::<1>([row(i)], br, k);
            store(i, j, rows, d[0]);
        }
        j += rows;
    }
}
