//! The micro-kernel contract: the packed layout of weights and activation rows, where a call
//! reads its rows ([`Rows`]) and writes its accumulators ([`Acc`]), and the portable reference
//! kernel ([`SCALAR`]) the SIMD paths of `x86.rs`, `aarch64.rs` and `arm.rs` are tested against.

use std::ops::Range;

use super::conv::QConv2d;
use super::epilogue::{store_baseline, Epilogue};

/// Output channels per packed weight panel.
pub(super) const PANEL: usize = 16;
/// The depth (`K`) is padded to this, so every micro-kernel walks whole steps (NEON `sdot`
/// consumes 16 activation bytes per load).
pub(super) const K_ALIGN: usize = 16;
/// Most segments one activation row is split into (see [`Rows`]): the kernel rows of a 3x3
/// convolution.
pub(super) const MAX_SEGMENTS: usize = 3;
/// Channels one micro-kernel call can produce (two panels).
pub(super) const MAX_NR: usize = 2 * PANEL;
/// Most rows one micro-kernel call produces; packed activations are padded to a multiple of it.
pub(super) const MAX_MR: usize = 8;

/// Accumulators of one micro-kernel call: `[row][channel]`, `MAX_NR` channels per row.
pub(super) type Acc = [i32; MAX_MR * MAX_NR];

/// Where a micro-kernel call reads its activation rows. The packed depth `kp` of row `r` is
/// `segments` segments of `segment_len` bytes; segment `s` starts at
/// `starts[r * segments + s]`. A segment is one kernel row of taps read straight from the input
/// tensor, or a whole patch gathered into a buffer (pixels at the border, and conv1).
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub(super) starts: *const *const u8,
    pub(super) segments: usize,
    /// A multiple of `K_ALIGN`.
    pub(super) segment_len: usize,
    /// Rows the caller keeps (at most the kernel's `rows`, fewer at the end of a tile): a
    /// kernel may skip the others.
    pub(super) needed: usize,
}

impl Rows {
    /// Where segment `segment` of row `row` starts.
    ///
    /// # Safety
    /// `row` must be one of the rows the table was made for.
    #[inline(always)]
    pub(super) unsafe fn start(&self, row: usize, segment: usize) -> *const u8 {
        // SAFETY: the table holds `segments` entries for each of its rows, and the caller
        // guarantees `row` is one of them.
        unsafe { *self.starts.add(row * self.segments + segment) }
    }

    /// The packed depth: the length of a weight panel's column.
    #[inline(always)]
    pub(super) fn depth(&self) -> usize {
        self.segments * self.segment_len
    }
}

/// A micro-kernel computes `rows x (panels * 16)` accumulators of `A * W` over the whole
/// packed depth `kp`.
///
/// `run(a, w, panels, acc)`: `a` locates `rows` activation rows of `kp` bytes each; `w` points
/// at `panels` (at most `max_panels`) consecutive weight panels of `kp * 16` bytes; results go
/// to `acc[row * MAX_NR + channel]`. Safety: the caller guarantees those ranges are readable
/// and that the CPU supports the kernel's instructions.
#[derive(Clone, Copy)]
pub(super) struct MicroKernel {
    pub(super) rows: usize,
    pub(super) max_panels: usize,
    pub(super) run: unsafe fn(Rows, *const i8, usize, &mut Acc),
    /// [`Epilogue::store`] compiled for the path's instruction set (wider vectors for the
    /// float arithmetic; the same IEEE operations, so the same results).
    pub(super) store: StoreFn,
}

/// See [`Epilogue::store`].
pub(super) type StoreFn = unsafe fn(&Epilogue, &QConv2d, usize, usize, Range<usize>, &Acc);

/// The portable path ([`Isa::Scalar`](super::Isa::Scalar)).
pub(super) const SCALAR: MicroKernel = MicroKernel {
    rows: 4,
    max_panels: 1,
    run: kernel_scalar,
    store: store_baseline,
};

/// Portable micro-kernel, written as plainly as possible: it is the reference the SIMD paths
/// are tested against.
///
/// # Safety
/// See [`MicroKernel`].
unsafe fn kernel_scalar(a: Rows, w: *const i8, _panels: usize, acc: &mut Acc) {
    const ROWS: usize = SCALAR.rows;
    // SAFETY: the caller guarantees one readable panel of `kp * 16` weights at `w`.
    let w = unsafe { std::slice::from_raw_parts(w, a.depth() * PANEL) };
    let mut sums = [[0i32; PANEL]; ROWS];
    for (segment, w) in w.chunks_exact(a.segment_len * PANEL).enumerate() {
        for (r, row) in sums.iter_mut().enumerate().take(a.needed) {
            // SAFETY: `r` is below `a.needed`, at most `ROWS`: a row the table was made for.
            let start = unsafe { a.start(r, segment) };
            // SAFETY: the caller guarantees the located rows are readable; each of their
            // segments is `segment_len` bytes.
            let a = unsafe { std::slice::from_raw_parts(start, a.segment_len) };
            for (a4, w_step) in a.chunks_exact(4).zip(w.chunks_exact(4 * PANEL)) {
                for (sum, w4) in row.iter_mut().zip(w_step.chunks_exact(4)) {
                    *sum += (0..4).map(|j| a4[j] as i32 * w4[j] as i32).sum::<i32>();
                }
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        acc[r * MAX_NR..][..PANEL].copy_from_slice(row);
    }
}
