//! The GEMM driver: splits one convolution into work items over the rayon pool and runs the
//! micro-kernel and epilogue on each.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::conv::{Nhwc, QConv2d};
use super::epilogue::Epilogue;
use super::gather::with_tile;
use super::micro_kernel::{Acc, MicroKernel, Rows, MAX_MR, MAX_NR, PANEL};

/// Most output pixels per work item.
pub(super) const TILE_ROWS: usize = 64;
/// Work items per thread to aim for, so a thread slowed by other load does not stall the layer.
const ITEMS_PER_THREAD: usize = 4;

/// Numbers each GEMM call, so a thread can tell whether its gathered tile is current.
static GEMM_CALLS: AtomicU64 = AtomicU64::new(0);

/// `out[m][n] = epilogue(patches[m] . weights[n])` for `conv` on `input` (levels whose real
/// value 0 is `zero_point`), split over output-pixel tiles and, when there are too few tiles
/// to keep every thread busy, over output channels. The micro-kernels read the patches of
/// pixels away from the border straight from the input (implicit GEMM); each work item
/// gathers the others (im2col) of its own tile into a per-thread buffer, so the gather runs in
/// parallel, lands in cache right before the micro-kernel reads it, and needs no tensor-sized
/// buffer or extra pass.
pub(super) fn gemm(
    conv: &QConv2d,
    kernel: MicroKernel,
    input: Nhwc<u8>,
    zero_point: u8,
    epilogue: Epilogue,
) {
    let g = conv.geometry;
    let n = g.out_channels;
    let kp = g.padded_patch_len();
    let (oh, ow) = g.output_dims(input.height, input.width);
    let m = oh * ow;
    let panels = n.div_ceil(PANEL);
    let threads = rayon::current_num_threads();
    // Where the weights outweigh the patches (layer3 and layer4: few pixels, many
    // channels), threads split the output channels, so each core's cache holds only its
    // share of the weights (2 threads: layer4 0.34 -> 0.27 ms); elsewhere they split the
    // pixels.
    let split_channels = threads > 1 && n > m;
    let mut tiles = m.div_ceil(TILE_ROWS);
    if !split_channels {
        tiles = tiles.next_multiple_of(threads);
    }
    // Equal tiles, where the rounding to whole micro-kernel calls (MAX_MR, a multiple of
    // every kernel's rows) allows.
    let tile_rows = m.div_ceil(tiles.max(1)).next_multiple_of(MAX_MR);
    let m_tiles = m.div_ceil(tile_rows);
    let wanted = ITEMS_PER_THREAD * threads;
    let panel_groups = panels.div_ceil(kernel.max_panels);
    let mut n_blocks = wanted.div_ceil(m_tiles);
    if split_channels {
        n_blocks = n_blocks.max(threads);
    }
    let n_blocks = n_blocks.clamp(1, panel_groups);
    let panels_per_block = panel_groups.div_ceil(n_blocks) * kernel.max_panels;
    let n_blocks = panels.div_ceil(panels_per_block);
    let segments = g.segments();
    let segment_len = kp / segments;
    let call = GEMM_CALLS.fetch_add(1, Ordering::Relaxed);
    // Items that share weights (splitting channels) or patches (splitting pixels) are
    // adjacent, so a thread tends to take them in a row: its weights stay in cache, or
    // it finds its tile already located.
    (0..m_tiles * n_blocks).into_par_iter().for_each(|item| {
        let (tile, block) = match split_channels {
            true => (item % m_tiles, item / m_tiles),
            false => (item / n_blocks, item % n_blocks),
        };
        let rows = tile * tile_rows..((tile + 1) * tile_rows).min(m);
        let first_panel = block * panels_per_block;
        let last_panel = (first_panel + panels_per_block).min(panels);
        with_tile((call, tile), input, g, zero_point, rows.clone(), |starts| {
            let mut acc: Acc = [0; MAX_MR * MAX_NR];
            for p in (first_panel..last_panel).step_by(kernel.max_panels) {
                let np = kernel.max_panels.min(last_panel - p);
                let channels = p * PANEL..((p + np) * PANEL).min(n);
                let weights = &conv.packed[p * PANEL * kp..][..np * PANEL * kp];
                for r0 in rows.clone().step_by(kernel.rows) {
                    let count = (r0 + kernel.rows).min(rows.end) - r0;
                    let a = Rows {
                        starts: starts[(r0 - rows.start) * segments..].as_ptr(),
                        segments,
                        segment_len,
                        needed: count,
                    };
                    // SAFETY: the tile's table locates `kernel.rows` readable rows from
                    // `r0` (it is padded to MAX_MR rows, a multiple of every kernel's
                    // rows), `weights` holds `np` panels, and `isa.is_available()` was
                    // checked.
                    unsafe { (kernel.run)(a, weights.as_ptr(), np, &mut acc) };
                    // SAFETY: work items own disjoint (row x channel) blocks of the
                    // output, which outlives the parallel loop.
                    unsafe { (kernel.store)(&epilogue, conv, r0, count, channels.clone(), &acc) };
                }
            }
        });
    });
}
