//! x86-64 micro-kernels. Weight panels hold, for each group of 4 depth steps, 16 channels x 4
//! bytes: exactly one `zmm` (or two `ymm`), so one broadcast of 4 activation bytes meets 16
//! channels' weights in one instruction.

use std::arch::x86_64::*;
use std::ops::Range;

use super::conv::QConv2d;
use super::epilogue::{Block16, Column, Epilogue, Finish, Portable, COLUMN};
use super::micro_kernel::{Acc, MicroKernel, Rows, MAX_NR, PANEL};
use super::quantization::{ActQuant, Residual};

pub(super) const AVX512_VNNI: MicroKernel = MicroKernel {
    rows: 8,
    max_panels: 2,
    run: kernel_avx512vnni,
    store: store_avx512,
};

pub(super) const AVX2: MicroKernel = MicroKernel {
    rows: 4,
    max_panels: 1,
    run: kernel_avx2,
    store: store_avx2,
};

/// [`Epilogue::store`] with AVX-512 vectors.
///
/// # Safety
/// See [`Epilogue::store`]; needs AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn store_avx512(
    e: &Epilogue,
    conv: &QConv2d,
    first_row: usize,
    rows: usize,
    channels: Range<usize>,
    acc: &Acc,
) {
    // SAFETY: the caller upholds `store`'s contract and this function's target features,
    // which are `Avx512`'s.
    unsafe { e.store::<Avx512>(conv, first_row, rows, channels, acc) }
}

/// [`Block16`] with AVX-512 intrinsics: one vector per operation, where the compiler's
/// vectorization of the portable code left scalar conversions.
struct Avx512;

impl Block16 for Avx512 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn requantize(c: Column, finish: &Finish) {
        // SAFETY: `v[..COLUMN]` (bounds-checked) is the 16 floats read.
        let load = |v: &[f32]| unsafe { _mm512_loadu_ps(v[..COLUMN].as_ptr()) };
        // Per column rather than per row: the channel constants, and which shortcut.
        let (scales, offsets) = (load(c.scales), load(c.offsets));
        let output = finish.output;
        let floor = _mm512_set1_ps(finish.floor);
        let max = _mm512_set1_ps(ActQuant::MAX as f32);
        let half = _mm512_set1_ps(0.5);
        let bytes_in_order = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        let zero_point = _mm512_set1_ps(output.zero_point as f32);
        let scale = _mm512_set1_ps(output.scale);
        let (factor, offset) = finish
            .residual
            .map_or((0.0, 0.0), |r| r.output_units(output));
        let (factor, offset) = (_mm512_set1_ps(factor), _mm512_set1_ps(offset));
        for r in 0..c.rows {
            let at = c.at + r * c.stride;
            let acc = &c.acc[r * MAX_NR..][..COLUMN];
            // SAFETY: `acc` (bounds-checked) is the 16 i32 read.
            let acc = unsafe { _mm512_loadu_si512(acc.as_ptr().cast()) };
            // `a * s + o + r`, rounded after each operation like the portable code (no FMA).
            let v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), scales), offsets);
            let shortcut = match finish.residual {
                None => _mm512_setzero_ps(),
                Some(Residual::Levels(levels, _)) => {
                    let levels = &levels[at..at + COLUMN];
                    // SAFETY: `levels` (bounds-checked) is the 16 bytes read.
                    let bytes = unsafe { _mm_loadu_si128(levels.as_ptr().cast()) };
                    let r = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
                    _mm512_add_ps(_mm512_mul_ps(r, factor), offset)
                }
                Some(Residual::Float(values)) => _mm512_mul_ps(load(&values[at..]), factor),
            };
            let v = _mm512_add_ps(v, shortcut);
            // `to_u7`: MAXPS/MINPS pick the first operand exactly when the portable selects do.
            let low = _mm512_max_ps(v, floor);
            let clamped = _mm512_min_ps(low, max);
            let levels = _mm512_cvttps_epi32(_mm512_add_ps(clamped, half));
            // Levels (0..=127) to bytes with packs and one permute: the compiler would fold
            // `_mm512_cvtepi32_epi8` into VPMOVDB to memory, which is microcoded on AMD Zen 4.
            let words = _mm512_packus_epi32(levels, levels);
            let bytes = _mm512_packus_epi16(words, words);
            let in_order = _mm512_permutexvar_epi32(bytes_in_order, bytes);
            // SAFETY: row `r` of the column, whose outputs the caller guarantees are ours.
            let out = unsafe { finish.out.slice(at, COLUMN) };
            // SAFETY: `out` is the 16 bytes written.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm512_castsi512_si128(in_order)) };
            if let Some(real) = finish.real_out {
                let r = _mm512_mul_ps(_mm512_sub_ps(low, zero_point), scale);
                // SAFETY: as for `out`.
                let real = unsafe { real.slice(at, COLUMN) };
                // SAFETY: `real` is the 16 floats written.
                unsafe { _mm512_storeu_ps(real.as_mut_ptr(), r) };
            }
        }
    }
}

/// [`Epilogue::store`] with AVX2 vectors.
///
/// # Safety
/// See [`Epilogue::store`]; needs AVX2.
#[target_feature(enable = "avx2")]
unsafe fn store_avx2(
    e: &Epilogue,
    conv: &QConv2d,
    first_row: usize,
    rows: usize,
    channels: Range<usize>,
    acc: &Acc,
) {
    // SAFETY: the caller upholds `store`'s contract; `Portable` needs no instruction set.
    unsafe { e.store::<Portable>(conv, first_row, rows, channels, acc) }
}

/// 8 rows x 32 channels with `vpdpbusd` (u8 x s8, four products summed into each i32 lane).
///
/// # Safety
/// See [`MicroKernel`]; needs AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel_avx512vnni(a: Rows, w: *const i8, panels: usize, acc: &mut Acc) {
    // The last call of a tile computes only the rows it needs: layer4's 49 pixels are six
    // calls of 8 rows and one of 1, which costs a fraction of a full call.
    macro_rules! rows {
        ($np:literal) => {
            // SAFETY: one call of `vnni`, whose contract is this function's, with at most the
            // rows located and `$np` of the caller's `panels` panels.
            unsafe {
                match a.needed {
                    1 => vnni::<$np, 1>(a, w, acc),
                    2 => vnni::<$np, 2>(a, w, acc),
                    3 => vnni::<$np, 3>(a, w, acc),
                    4 => vnni::<$np, 4>(a, w, acc),
                    5 => vnni::<$np, 5>(a, w, acc),
                    6 => vnni::<$np, 6>(a, w, acc),
                    7 => vnni::<$np, 7>(a, w, acc),
                    _ => vnni::<$np, { AVX512_VNNI.rows }>(a, w, acc),
                }
            }
        };
    }
    if panels == 2 {
        rows!(2)
    } else {
        rows!(1)
    }
}

/// `ROWS` rows x `NP` panels of [`kernel_avx512vnni`].
///
/// # Safety
/// See [`MicroKernel`], with `ROWS` rows located and `NP` panels at `w`; needs AVX-512 F, BW
/// and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn vnni<const NP: usize, const ROWS: usize>(a: Rows, w: *const i8, acc: &mut Acc) {
    let kp = a.depth();
    let mut sums = [[_mm512_setzero_si512(); NP]; ROWS];
    for segment in 0..a.segments {
        // SAFETY: the caller located `ROWS` rows.
        let rows: [*const u8; ROWS] = std::array::from_fn(|r| unsafe { a.start(r, segment) });
        // SAFETY: the segment's weights are inside each of the caller's panels.
        let w = unsafe { w.add(segment * a.segment_len * PANEL) };
        for step in 0..a.segment_len / 4 {
            let mut wv = [_mm512_setzero_si512(); NP];
            for (p, v) in wv.iter_mut().enumerate() {
                // SAFETY: step `step` of the segment in panel `p`, one of the caller's `NP`.
                let at = unsafe { w.add(p * kp * PANEL + step * 4 * PANEL) };
                // SAFETY: a step of a panel is 16 channels x 4 bytes, one `zmm`.
                *v = unsafe { _mm512_loadu_si512(at.cast()) };
            }
            for (row, &at) in sums.iter_mut().zip(&rows) {
                // SAFETY: step `step` is inside the row's segment of `segment_len` bytes.
                let at = unsafe { at.add(step * 4) };
                // SAFETY: the step's 4 bytes are inside the segment.
                let av = _mm512_set1_epi32(unsafe { at.cast::<i32>().read_unaligned() });
                for (s, &v) in row.iter_mut().zip(&wv) {
                    *s = _mm512_dpbusd_epi32(*s, av, v);
                }
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (p, &s) in row.iter().enumerate() {
            let channels = &mut acc[r * MAX_NR + p * PANEL..][..PANEL];
            // SAFETY: `channels` (bounds-checked) is the 16 i32 written.
            unsafe { _mm512_storeu_si512(channels.as_mut_ptr().cast(), s) };
        }
    }
}

/// 4 rows x 16 channels with `vpmaddubsw` (u8 x s8 pairs into i16: at most 2 * 127 * 127, so
/// never saturating) and `vpmaddwd` by 1 (pairs into i32).
///
/// # Safety
/// See [`MicroKernel`]; needs AVX2.
#[target_feature(enable = "avx2")]
unsafe fn kernel_avx2(a: Rows, w: *const i8, _panels: usize, acc: &mut Acc) {
    const ROWS: usize = AVX2.rows;
    let ones = _mm256_set1_epi16(1);
    let mut sums = [[_mm256_setzero_si256(); 2]; ROWS];
    for segment in 0..a.segments {
        // SAFETY: the caller located `ROWS` rows.
        let rows: [*const u8; ROWS] = std::array::from_fn(|r| unsafe { a.start(r, segment) });
        // SAFETY: the segment's weights are inside the caller's panel.
        let w = unsafe { w.add(segment * a.segment_len * PANEL) };
        for step in 0..a.segment_len / 4 {
            // SAFETY: step `step` of the segment: 16 channels x 4 bytes, two `ymm`.
            let at = unsafe { w.add(step * 4 * PANEL) };
            // SAFETY: the step's first 32 bytes.
            let w0 = unsafe { _mm256_loadu_si256(at.cast()) };
            // SAFETY: the step's last 32 bytes.
            let w1 = unsafe { _mm256_loadu_si256(at.add(32).cast()) };
            for (row, &at) in sums.iter_mut().zip(&rows) {
                // SAFETY: step `step` is inside the row's segment of `segment_len` bytes.
                let at = unsafe { at.add(step * 4) };
                // SAFETY: the step's 4 bytes are inside the segment.
                let av = _mm256_set1_epi32(unsafe { at.cast::<i32>().read_unaligned() });
                row[0] = _mm256_add_epi32(
                    row[0],
                    _mm256_madd_epi16(_mm256_maddubs_epi16(av, w0), ones),
                );
                row[1] = _mm256_add_epi32(
                    row[1],
                    _mm256_madd_epi16(_mm256_maddubs_epi16(av, w1), ones),
                );
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (half, &s) in row.iter().enumerate() {
            let channels = &mut acc[r * MAX_NR + half * 8..][..8];
            // SAFETY: `channels` (bounds-checked) is the 8 i32 written.
            unsafe { _mm256_storeu_si256(channels.as_mut_ptr().cast(), s) };
        }
    }
}
