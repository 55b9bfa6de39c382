//! aarch64 micro-kernels. Weight panels hold, for each group of 4 depth steps, 16 channels x 4
//! bytes: four q registers of 4 channels each. Activations (`0..=127`) are read as s8.

use super::{Acc, MicroKernel, Rows, MAX_NR, PANEL};
use std::arch::aarch64::*;
use std::arch::asm;

pub(super) const NEON_DOTPROD: MicroKernel = MicroKernel {
    rows: 4,
    max_panels: 1,
    run: kernel_neon_dotprod,
    store: super::store_baseline,
};

pub(super) const NEON: MicroKernel = MicroKernel {
    rows: 2,
    max_panels: 1,
    run: kernel_neon,
    store: super::store_baseline,
};

/// `acc += dot(w[4 lanes of 4 bytes], a.4b[LANE])`. Inline assembly because the `vdotq_laneq`
/// intrinsics are not stable yet.
macro_rules! sdot_lane {
    ($acc:expr, $w:expr, $a:expr, $lane:literal) => {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{lane}]",
            acc = inout(vreg) $acc,
            w = in(vreg) $w,
            a = in(vreg) $a,
            lane = const $lane,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
}

/// The 16 channels x 4 bytes of one depth step of a weight panel.
///
/// # Safety
/// `w` must have 64 readable bytes; needs NEON.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_step(w: *const i8) -> [int8x16_t; 4] {
    [
        vld1q_s8(w),
        vld1q_s8(w.add(16)),
        vld1q_s8(w.add(32)),
        vld1q_s8(w.add(48)),
    ]
}

/// 4 rows x 16 channels with `sdot` by element: one 16-byte load covers 4 depth steps of a row,
/// and lane `j` of it meets the weights of step `j`.
///
/// # Safety
/// See [`MicroKernel`]; needs NEON and the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
unsafe fn kernel_neon_dotprod(a: Rows, w: *const i8, _panels: usize, acc: &mut Acc) {
    const ROWS: usize = NEON_DOTPROD.rows;
    let mut sums = [[vdupq_n_s32(0); 4]; ROWS];
    for segment in 0..a.segments {
        let rows: [*const u8; ROWS] = std::array::from_fn(|r| a.start(r, segment));
        let w = w.add(segment * a.segment_len * PANEL);
        for block in 0..a.segment_len / 16 {
            let mut av = [vdupq_n_s8(0); ROWS];
            for (v, &at) in av.iter_mut().zip(&rows) {
                *v = vld1q_s8(at.add(block * 16).cast());
            }
            macro_rules! step {
                ($j:literal) => {{
                    let wp = w.add((block * 4 + $j) * 4 * PANEL);
                    let wv = load_step(wp);
                    for (row, &a) in sums.iter_mut().zip(&av) {
                        for (s, &v) in row.iter_mut().zip(&wv) {
                            sdot_lane!(*s, v, a, $j);
                        }
                    }
                }};
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (q, &s) in row.iter().enumerate() {
            vst1q_s32(acc.as_mut_ptr().add(r * MAX_NR + q * 4), s);
        }
    }
}

/// 2 rows x 16 channels with `smull`/`smlal` over two depth steps (each i16 lane sums two
/// products: at most 2 * 127 * 127, no overflow) and `sadalp` into i32. Each i32 accumulator
/// holds two partial sums for each of two channels; a final pairwise add merges them.
///
/// # Safety
/// See [`MicroKernel`]; needs NEON.
#[target_feature(enable = "neon")]
unsafe fn kernel_neon(a: Rows, w: *const i8, _panels: usize, acc: &mut Acc) {
    const ROWS: usize = NEON.rows;
    let mut sums = [[vdupq_n_s32(0); 8]; ROWS];
    for segment in 0..a.segments {
        let rows: [*const u8; ROWS] = std::array::from_fn(|r| a.start(r, segment));
        let w = w.add(segment * a.segment_len * PANEL);
        for step in (0..a.segment_len / 4).step_by(2) {
            let wp = w.add(step * 4 * PANEL);
            let w0 = load_step(wp);
            let w1 = load_step(wp.add(4 * PANEL));
            for (row, &at) in sums.iter_mut().zip(&rows) {
                let ap = at.add(step * 4).cast::<u32>();
                let a0 = vreinterpretq_s8_u32(vdupq_n_u32(ap.read_unaligned()));
                let a1 = vreinterpretq_s8_u32(vdupq_n_u32(ap.add(1).read_unaligned()));
                for ((&w0, &w1), pair) in w0.iter().zip(&w1).zip(row.chunks_exact_mut(2)) {
                    let lo = vmlal_s8(
                        vmull_s8(vget_low_s8(w0), vget_low_s8(a0)),
                        vget_low_s8(w1),
                        vget_low_s8(a1),
                    );
                    let hi = vmlal_high_s8(vmull_high_s8(w0, a0), w1, a1);
                    pair[0] = vpadalq_s16(pair[0], lo);
                    pair[1] = vpadalq_s16(pair[1], hi);
                }
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (q, pair) in row.chunks_exact(2).enumerate() {
            let channels = vpaddq_s32(pair[0], pair[1]);
            vst1q_s32(acc.as_mut_ptr().add(r * MAX_NR + q * 4), channels);
        }
    }
}
