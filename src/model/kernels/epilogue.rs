//! Epilogues: what the GEMM does with a micro-kernel call's accumulators. The dynamic path
//! dequantizes them to f32 ([`dequantize_row`]), the static path requantizes them to the
//! output's levels ([`requantize_fixed`]); every instruction path runs the same arithmetic in
//! the same order, so the results are bit-identical.

use std::ops::Range;

use super::conv::QConv2d;
use super::micro_kernel::{Acc, MAX_NR};
use super::quantization::{to_u7, ActQuant, Requant, Residual};

/// An output buffer shared by work items that write disjoint blocks of it.
#[derive(Clone, Copy)]
pub(super) struct Shared<T>(pub(super) *mut T);
// SAFETY: see the disjointness argument in `gemm`.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// `len` elements from `offset`.
    ///
    /// # Safety
    /// The range must be inside the buffer and not accessed by anyone else meanwhile.
    pub(super) unsafe fn slice<'b>(self, offset: usize, len: usize) -> &'b mut [T] {
        // SAFETY: the caller guarantees the range is inside the buffer and exclusively ours.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

/// What the GEMM does with its accumulators.
pub(super) enum Epilogue<'a> {
    /// Dynamic path: dequantize to f32 (see [`dequantize_row`]).
    Float {
        out: Shared<f32>,
        zero_point: u8,
        /// Per channel: input scale times weight scale.
        scales: &'a [f32],
        residual: Option<&'a [f32]>,
        relu: bool,
    },
    /// Static path: requantize to the output's levels (see [`requantize_fixed`]).
    Quantized {
        out: Shared<u8>,
        real_out: Option<Shared<f32>>,
        requant: &'a Requant,
        residual: Option<Residual<'a>>,
        floor: f32,
    },
}

// SAFETY: the raw output pointers are only written in disjoint blocks (see `gemm`).
unsafe impl Sync for Epilogue<'_> {}

impl Epilogue<'_> {
    /// Finishes `rows` output pixels from `first_row` on for `channels`, from the
    /// accumulators of one micro-kernel call.
    ///
    /// # Safety
    /// Those outputs must be inside the output and written by no one else meanwhile.
    #[inline(always)]
    pub(super) unsafe fn store<B: Block16>(
        &self,
        conv: &QConv2d,
        first_row: usize,
        rows: usize,
        channels: Range<usize>,
        acc: &Acc,
    ) {
        let (n, len, c) = (conv.geometry.out_channels, channels.len(), channels.clone());
        let pixels = (first_row..first_row + rows).zip(acc.chunks_exact(MAX_NR));
        match self {
            Epilogue::Float {
                out,
                zero_point,
                scales,
                residual,
                relu,
            } => {
                let (sums, scales, bias) = (
                    &conv.weight_sums[c.clone()],
                    &scales[c.clone()],
                    &conv.bias[c],
                );
                for (row, acc) in pixels {
                    let at = row * n + channels.start;
                    let residual = residual.map(|res| &res[at..at + len]);
                    // SAFETY: one of the outputs the caller guarantees are ours.
                    let out = unsafe { out.slice(at, len) };
                    dequantize_row(
                        &acc[..len],
                        *zero_point,
                        sums,
                        scales,
                        bias,
                        residual,
                        *relu,
                        out,
                    );
                }
            }
            Epilogue::Quantized {
                out,
                real_out,
                requant,
                residual,
                floor,
            } => {
                let (scales, offsets) = (&requant.scales[c.clone()], &requant.offsets[c]);
                let at = first_row * n + channels.start;
                let finish = Finish {
                    residual: *residual,
                    output: requant.output,
                    floor: *floor,
                    out: *out,
                    real_out: *real_out,
                };
                // Whole columns of 16 channels as vectors; the rest (fc's last 8 of 1000)
                // one by one.
                let whole = len - len % COLUMN;
                for c in (0..whole).step_by(COLUMN) {
                    let column = Column {
                        acc: &acc[c..],
                        rows,
                        scales: &scales[c..c + COLUMN],
                        offsets: &offsets[c..c + COLUMN],
                        at: at + c,
                        stride: n,
                    };
                    // SAFETY: the column's outputs are among those the caller guarantees are
                    // ours, and the caller's instruction set is `B`'s.
                    unsafe { B::requantize(column, &finish) };
                }
                for (r, acc) in acc.chunks_exact(MAX_NR).take(rows).enumerate() {
                    for c in whole..len {
                        let at = at + r * n + c;
                        // SAFETY: one of the outputs the caller guarantees are ours.
                        unsafe {
                            requantize_fixed::<1>(
                                &acc[c..],
                                &scales[c..],
                                &offsets[c..],
                                &finish,
                                at,
                            )
                        };
                    }
                }
            }
        }
    }
}

/// [`Epilogue::store`] for the baseline instruction set.
///
/// # Safety
/// See [`Epilogue::store`].
pub(super) unsafe fn store_baseline(
    epilogue: &Epilogue,
    conv: &QConv2d,
    first_row: usize,
    rows: usize,
    channels: Range<usize>,
    acc: &Acc,
) {
    // SAFETY: the caller upholds `store`'s contract; `Portable` needs no instruction set.
    unsafe { epilogue.store::<Portable>(conv, first_row, rows, channels, acc) }
}

/// `(acc - zero_point * weight_sum) * scale + bias (+ residual)`, then ReLU, for the channels
/// of one output pixel. Every path runs this same code in the same order, so equal integers
/// give bit-identical floats.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn dequantize_row(
    acc: &[i32],
    zero_point: u8,
    weight_sums: &[i32],
    scales: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    let zp = zero_point as i32;
    // Zipped iterators rather than indexing: no bounds checks, so the loop vectorizes.
    let scaled = acc
        .iter()
        .zip(weight_sums)
        .zip(scales.iter().zip(bias))
        .map(|((&a, &ws), (&s, &b))| (a - zp * ws) as f32 * s + b);
    let relu = |v: f32| if relu { v.max(0.0) } else { v };
    match residual {
        Some(res) => {
            for ((o, v), &r) in out.iter_mut().zip(scaled).zip(res) {
                *o = relu(v + r);
            }
        }
        None => {
            for (o, v) in out.iter_mut().zip(scaled) {
                *o = relu(v);
            }
        }
    }
}

/// Channels per [`Column`].
pub(super) const COLUMN: usize = 16;

/// The static path's per-layer constants of [`requantize_fixed`], and the tensors it writes.
pub(super) struct Finish<'a> {
    pub(super) residual: Option<Residual<'a>>,
    pub(super) output: ActQuant,
    /// Nothing below this (the ReLU, in levels).
    pub(super) floor: f32,
    pub(super) out: Shared<u8>,
    pub(super) real_out: Option<Shared<f32>>,
}

/// 16 output channels of the pixels of one micro-kernel call.
pub(super) struct Column<'a> {
    /// Row `r`'s accumulators start at `acc[r * MAX_NR]`.
    pub(super) acc: &'a [i32],
    pub(super) rows: usize,
    pub(super) scales: &'a [f32],
    pub(super) offsets: &'a [f32],
    /// Where row 0's first channel is in the output and shortcut tensors; rows are `stride`
    /// apart.
    pub(super) at: usize,
    pub(super) stride: usize,
}

/// Finishes a [`Column`]: [`requantize_fixed`] on each row, or the same IEEE operations in
/// the same order written with one instruction set's intrinsics (tested bit-identical).
pub(super) trait Block16 {
    /// # Safety
    /// The CPU must support the implementation's instructions; the column's outputs must be
    /// inside the tensors and written by no one else meanwhile.
    unsafe fn requantize(column: Column, finish: &Finish);
}

/// [`Block16`] in portable Rust.
pub(super) struct Portable;

impl Block16 for Portable {
    #[inline(always)]
    unsafe fn requantize(c: Column, finish: &Finish) {
        for (r, acc) in c.acc.chunks(MAX_NR).take(c.rows).enumerate() {
            // SAFETY: row `r`'s outputs are the column's, which the caller guarantees are ours.
            unsafe {
                requantize_fixed::<COLUMN>(acc, c.scales, c.offsets, finish, c.at + r * c.stride)
            };
        }
    }
}

/// `acc * scale + offset (+ residual)` in units of `output` levels, nothing below `floor`
/// (the ReLU), rounded to levels in `out` and, if given, converted to real values in
/// `real_out`, for the `N` channels from `at` of the tensors. Shared by every path like
/// [`dequantize_row`].
///
/// # Safety
/// Those outputs must be inside the tensors and written by no one else meanwhile.
#[inline(always)]
pub(super) unsafe fn requantize_fixed<const N: usize>(
    acc: &[i32],
    scales: &[f32],
    offsets: &[f32],
    finish: &Finish,
    at: usize,
) {
    let Finish {
        residual,
        output,
        floor,
        out,
        real_out,
    } = *finish;
    let args = (&acc[..N], &scales[..N], &offsets[..N], output, floor);
    // SAFETY: the caller guarantees these outputs are inside the tensors and ours.
    let out = unsafe { out.slice(at, N) };
    // SAFETY: as for `out`.
    let real_out = real_out.map(|r| unsafe { r.slice(at, N) });
    // One loop per kind of shortcut, over zipped fixed-length slices: that vectorizes.
    let (factor, offset) = residual.map_or((0.0, 0.0), |r| r.output_units(output));
    match residual {
        None => finish_values(args, std::iter::repeat(0.0), out, real_out),
        Some(Residual::Levels(levels, _)) => {
            let shortcut = levels[at..at + N]
                .iter()
                .map(|&r| r as f32 * factor + offset);
            finish_values(args, shortcut, out, real_out)
        }
        Some(Residual::Float(values)) => {
            let shortcut = values[at..at + N].iter().map(|&r| r * factor);
            finish_values(args, shortcut, out, real_out)
        }
    }
}

/// The arithmetic of [`requantize_fixed`], with the shortcut in output-level units.
#[inline(always)]
fn finish_values(
    (acc, scales, offsets, output, floor): (&[i32], &[f32], &[f32], ActQuant, f32),
    shortcut: impl Iterator<Item = f32>,
    out: &mut [u8],
    real_out: Option<&mut [f32]>,
) {
    let values = acc
        .iter()
        .zip(scales.iter().zip(offsets))
        .zip(shortcut)
        .map(|((&a, (&s, &o)), r)| a as f32 * s + o + r);
    match real_out {
        None => {
            for (q, v) in out.iter_mut().zip(values) {
                *q = to_u7(v, floor);
            }
        }
        Some(real) => {
            let zp = output.zero_point as f32;
            for ((q, r), v) in out.iter_mut().zip(real.iter_mut()).zip(values) {
                *q = to_u7(v, floor);
                *r = ((if v > floor { v } else { floor }) - zp) * output.scale;
            }
        }
    }
}
