//! aarch64 micro-kernels. Weight panels hold, for each group of 4 depth steps, 16 channels x 4
//! bytes: four q registers of 4 channels each. Activations (`0..=127`) are read as s8.

use super::epilogue::store_baseline;
use super::micro_kernel::{Acc, MicroKernel, Rows, MAX_NR, PANEL};
use std::arch::aarch64::*;
use std::arch::asm;

pub(super) const NEON_DOTPROD: MicroKernel = MicroKernel {
    rows: 4,
    max_panels: 1,
    run: kernel_neon_dotprod,
    store: store_baseline,
};

pub(super) const NEON: MicroKernel = MicroKernel {
    rows: 2,
    max_panels: 1,
    run: kernel_neon,
    store: store_baseline,
};

/// `acc += dot(w[4 lanes of 4 bytes], a.4b[LANE])`. Inline assembly because the `vdotq_laneq`
/// intrinsics are not stable yet. Use it only where the dot-product extension is enabled.
macro_rules! sdot_lane {
    ($acc:expr, $w:expr, $a:expr, $lane:literal) => {
        // SAFETY: one instruction on registers only (no memory, stack or flags), of the
        // dot-product extension the enclosing function's caller guarantees.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{lane}]",
                acc = inout(vreg) $acc,
                w = in(vreg) $w,
                a = in(vreg) $a,
                lane = const $lane,
                options(pure, nomem, nostack, preserves_flags)
            )
        }
    };
}

/// The 16 channels x 4 bytes of one depth step of a weight panel.
///
/// # Safety
/// `w` must have 64 readable bytes; needs NEON.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_step(w: *const i8) -> [int8x16_t; 4] {
    // SAFETY (each load): 16 of the 64 bytes the caller guarantees.
    [
        unsafe { vld1q_s8(w) },
        unsafe { vld1q_s8(w.add(16)) },
        unsafe { vld1q_s8(w.add(32)) },
        unsafe { vld1q_s8(w.add(48)) },
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
        // SAFETY: the caller located `ROWS` rows.
        let rows: [*const u8; ROWS] = std::array::from_fn(|r| unsafe { a.start(r, segment) });
        // SAFETY: the segment's weights are inside the caller's panel.
        let w = unsafe { w.add(segment * a.segment_len * PANEL) };
        for block in 0..a.segment_len / 16 {
            let mut av = [vdupq_n_s8(0); ROWS];
            for (v, &at) in av.iter_mut().zip(&rows) {
                // SAFETY: block `block` (16 bytes) is inside the row's segment.
                let at = unsafe { at.add(block * 16) };
                // SAFETY: the block's 16 bytes.
                *v = unsafe { vld1q_s8(at.cast()) };
            }
            macro_rules! step {
                ($j:literal) => {{
                    // SAFETY: step `4 * block + j` of the segment is inside the panel.
                    let wp = unsafe { w.add((block * 4 + $j) * 4 * PANEL) };
                    // SAFETY: a step is 16 channels x 4 bytes.
                    let wv = unsafe { load_step(wp) };
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
            let channels = &mut acc[r * MAX_NR + q * 4..][..4];
            // SAFETY: `channels` (bounds-checked) is the 4 i32 written.
            unsafe { vst1q_s32(channels.as_mut_ptr(), s) };
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
        // SAFETY: the caller located `ROWS` rows.
        let rows: [*const u8; ROWS] = std::array::from_fn(|r| unsafe { a.start(r, segment) });
        // SAFETY: the segment's weights are inside the caller's panel.
        let w = unsafe { w.add(segment * a.segment_len * PANEL) };
        for step in (0..a.segment_len / 4).step_by(2) {
            // SAFETY: steps `step` and `step + 1` of the segment (an even number of steps)
            // are inside the panel.
            let wp = unsafe { w.add(step * 4 * PANEL) };
            // SAFETY: a step is 16 channels x 4 bytes.
            let w0 = unsafe { load_step(wp) };
            // SAFETY: the next step.
            let w1 = unsafe { load_step(wp.add(4 * PANEL)) };
            for (row, &at) in sums.iter_mut().zip(&rows) {
                // SAFETY: steps `step` and `step + 1` are inside the row's segment.
                let ap = unsafe { at.add(step * 4) }.cast::<u32>();
                // SAFETY: step `step`'s 4 bytes.
                let a0 = vreinterpretq_s8_u32(vdupq_n_u32(unsafe { ap.read_unaligned() }));
                // SAFETY: step `step + 1`'s 4 bytes.
                let a1 = vreinterpretq_s8_u32(vdupq_n_u32(unsafe { ap.add(1).read_unaligned() }));
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
            let out = &mut acc[r * MAX_NR + q * 4..][..4];
            // SAFETY: `out` (bounds-checked) is the 4 i32 written.
            unsafe { vst1q_s32(out.as_mut_ptr(), channels) };
        }
    }
}
