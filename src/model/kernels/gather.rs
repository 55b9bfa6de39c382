//! Locating and gathering the activation rows (im2col patches) of one tile: pointers into the
//! input where a receptive field lies inside the image, patches gathered into a per-thread
//! buffer elsewhere.

use std::cell::RefCell;
use std::ops::Range;

use super::conv::{Nhwc, QConv2d};
use super::gemm::TILE_ROWS;
use super::geometry::ConvGeometry;
use super::micro_kernel::{MAX_MR, MAX_SEGMENTS};

/// Patches inside the image copy kernel rows of up to this many bytes as one fixed-size block.
const SHORT_COPY: usize = 32;

/// Where the micro-kernels read the patches of one tile, located (and where needed gathered)
/// by the thread that multiplies them.
struct GatheredTile {
    /// `(GEMM call, tile)` the rows belong to.
    key: (u64, usize),
    /// The gathered patches, at their row's place in the tile.
    patches: Vec<u8>,
    /// [`Rows::starts`](super::micro_kernel::Rows::starts) of the tile's rows, padded to a
    /// multiple of MAX_MR rows.
    starts: Vec<*const u8>,
}

thread_local! {
    // Sized by `reserve_gather_buffers` (or grown on first use), then reused.
    static TILE: RefCell<GatheredTile> = const {
        RefCell::new(GatheredTile {
            key: (u64::MAX, 0),
            patches: Vec::new(),
            starts: Vec::new(),
        })
    };
}

/// Runs `multiply` on the starts table ([`Rows::starts`](super::micro_kernel::Rows::starts))
/// of output pixels `rows` of a convolution of `input` (levels whose real value 0 is
/// `zero_point`), located on this thread. `key` (GEMM call, tile) names the rows: when this
/// thread located the same ones last, the table is reused as is.
pub(super) fn with_tile<R>(
    key: (u64, usize),
    input: Nhwc<u8>,
    g: ConvGeometry,
    zero_point: u8,
    rows: Range<usize>,
    multiply: impl FnOnce(&[*const u8]) -> R,
) -> R {
    TILE.with_borrow_mut(|gathered| {
        if gathered.key != key {
            gathered.key = key;
            gathered.locate(input, g, zero_point, rows);
        }
        multiply(&gathered.starts)
    })
}

/// Sizes every `pool` thread's gather buffer for the largest tile of `convs`, so that no
/// frame allocates one later, whichever thread ends up gathering which tile.
pub fn reserve_gather_buffers<'a>(
    pool: &rayon::ThreadPool,
    convs: impl IntoIterator<Item = &'a QConv2d>,
) {
    // A tile has at most TILE_ROWS rows (see `gemm`), a multiple of MAX_MR.
    let bytes = convs
        .into_iter()
        .map(|conv| TILE_ROWS.next_multiple_of(MAX_MR) * conv.geometry.padded_patch_len())
        .max()
        .unwrap_or(0);
    pool.broadcast(|_| {
        TILE.with_borrow_mut(|gathered| {
            if gathered.patches.len() < bytes {
                gathered.patches.resize(bytes, 0);
            }
            let starts = TILE_ROWS.next_multiple_of(MAX_MR) * MAX_SEGMENTS;
            if gathered.starts.capacity() < starts {
                gathered.starts.reserve(starts - gathered.starts.len());
            }
        })
    });
}

impl GatheredTile {
    /// Fills `starts` for output pixels `rows` of a convolution of `input`: pointers into
    /// `input` where the patch lies inside the image and the geometry allows it, otherwise
    /// into the patch gathered here.
    fn locate(&mut self, input: Nhwc<u8>, g: ConvGeometry, zero_point: u8, rows: Range<usize>) {
        let (direct, kp, segments) = (g.reads_input_directly(), g.padded_patch_len(), g.segments());
        let segment_len = kp / segments;
        let padded_rows = rows.len().next_multiple_of(MAX_MR);
        if self.patches.len() < padded_rows * kp {
            self.patches.resize(padded_rows * kp, 0);
        }
        // Within the capacity reserved by `reserve_gather_buffers`: no allocation.
        self.starts.resize(padded_rows * segments, std::ptr::null());
        let (starts, padding) = self.starts.split_at_mut(rows.len() * segments);
        // Every pointer into the buffer comes from this one, so they stay valid together.
        let patches = self.patches.as_mut_ptr();
        let Nhwc {
            values,
            height,
            width,
        } = input;
        let ow = g.output_size(width);
        let row_bytes = width * g.in_channels;
        let (mut y, mut x) = (rows.start / ow, rows.start % ow);
        for (i, starts) in starts.chunks_exact_mut(segments).enumerate() {
            let (y0, x0) = (y * g.stride, x * g.stride);
            let inside = y0 >= g.padding
                && x0 >= g.padding
                && y0 + g.kernel <= height + g.padding
                && x0 + g.kernel <= width + g.padding;
            let first = inside.then(|| ((y0 - g.padding) * width + x0 - g.padding) * g.in_channels);
            if let (true, Some(first)) = (direct, first) {
                for (s, start) in starts.iter_mut().enumerate() {
                    *start = values[first + s * row_bytes..].as_ptr();
                }
            } else {
                // SAFETY: row `i` of the buffer (resized above) is borrowed by no one else.
                let row = unsafe { std::slice::from_raw_parts_mut(patches.add(i * kp), kp) };
                match first {
                    Some(first) => gather_inside(values, first, row_bytes, g, row),
                    None => im2col_row(input, g, (y, x), zero_point, row),
                }
                for (s, start) in starts.iter_mut().enumerate() {
                    // SAFETY: inside row `i`.
                    *start = unsafe { patches.add(i * kp + s * segment_len) };
                }
            }
            x += 1;
            if x == ow {
                (y, x) = (y + 1, 0);
            }
        }
        // Rows past the end of the output are computed and dropped: any readable row will do.
        for (s, start) in padding.iter_mut().enumerate() {
            *start = starts[s % segments];
        }
    }
}

/// Gathers a receptive field that lies inside the image, starting at byte `first` of `input`
/// (rows of `row_bytes`), as one `[kh][kw][in]` row of the packed depth: one copy per kernel
/// row, without [`im2col_row`]'s border cases.
fn gather_inside(input: &[u8], first: usize, row_bytes: usize, g: ConvGeometry, row: &mut [u8]) {
    let (k, span) = (g.kernel, g.kernel * g.in_channels);
    let last = first + (k - 1) * row_bytes;
    if span <= SHORT_COPY
        && (k - 1) * span + SHORT_COPY <= row.len()
        && last + SHORT_COPY <= input.len()
    {
        // Few input channels (conv1: 21 bytes per kernel row): one fixed-size copy instead of
        // a memcpy call. It runs over into the next kernel row (written next) or the depth
        // padding (which meets zero weights).
        for ky in 0..k {
            let src = &input[first + ky * row_bytes..][..SHORT_COPY];
            row[ky * span..][..SHORT_COPY].copy_from_slice(src);
        }
    } else {
        for ky in 0..k {
            row[ky * span..][..span].copy_from_slice(&input[first + ky * row_bytes..][..span]);
        }
    }
    // The depth padding `row[k * span..]` meets zero weights: whatever it holds adds nothing.
}

/// Gathers the receptive field of output pixel `(y, x)` as one `[kh][kw][in]` row (of the
/// packed depth; the rest is left as is); taps that fall in the image padding read
/// `zero_point` (the value 0). For one kernel row the taps are adjacent pixels, so each is one
/// copy. Used at the border; [`gather_inside`] is the fast path elsewhere.
fn im2col_row(
    input: Nhwc<u8>,
    g: ConvGeometry,
    (y, x): (usize, usize),
    zero_point: u8,
    row: &mut [u8],
) {
    let Nhwc {
        values: input,
        height,
        width,
    } = input;
    let (cin, k) = (g.in_channels, g.kernel);
    let span = k * cin;
    let x0 = (x * g.stride) as isize - g.padding as isize;
    // Taps `first..last` of each kernel row are inside the image horizontally.
    let first = (-x0).clamp(0, k as isize) as usize;
    let last = (width as isize - x0).clamp(0, k as isize) as usize;
    for ky in 0..k {
        let iy = (y * g.stride + ky) as isize - g.padding as isize;
        if iy < 0 || iy >= height as isize || first >= last {
            row[ky * span..][..span].fill(zero_point);
            continue;
        }
        let src = (iy as usize * width + (x0 + first as isize) as usize) * cin;
        let dst = &mut row[ky * span..][..span];
        dst[..first * cin].fill(zero_point);
        dst[first * cin..last * cin].copy_from_slice(&input[src..][..(last - first) * cin]);
        dst[last * cin..].fill(zero_point);
    }
    // The depth padding `row[k * span..]` meets zero weights: whatever it holds adds nothing.
}
