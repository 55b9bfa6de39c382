//! The ResNet's pooling layers on NHWC tensors: `f32` values (dynamic path) or quantized
//! levels (static path; max and mean commute with the monotonic level mapping).

use rayon::prelude::*;

/// An activation element the pooling layers handle.
pub trait PoolValue: Copy + PartialOrd + Into<f32> + Send + Sync {
    /// Smaller than every value (the padding of max pooling).
    const LOWEST: Self;
}

impl PoolValue for f32 {
    const LOWEST: f32 = f32::NEG_INFINITY;
}

impl PoolValue for u8 {
    const LOWEST: u8 = 0;
}

/// 3x3 max pooling, stride 2, padding 1 (padding never wins). Resizes `out` to the output
/// tensor and returns its height and width. Output rows are split over the current rayon pool
/// (call it inside `pool.install` to choose the pool).
pub fn max_pool_3x3_s2<T: PoolValue>(
    input: &[T],
    height: usize,
    width: usize,
    channels: usize,
    out: &mut Vec<T>,
) -> (usize, usize) {
    assert_eq!(input.len(), height * width * channels, "input size");
    let (oh, ow) = (height.div_ceil(2), width.div_ceil(2));
    out.resize(oh * ow * channels, T::LOWEST);
    if channels == 0 {
        return (oh, ow);
    }
    out.par_chunks_mut(ow * channels)
        .enumerate()
        .for_each(|(y, row)| {
            row.fill(T::LOWEST);
            for iy in (2 * y).saturating_sub(1)..(2 * y + 2).min(height) {
                for (x, dst) in row.chunks_exact_mut(channels).enumerate() {
                    for ix in (2 * x).saturating_sub(1)..(2 * x + 2).min(width) {
                        let src = &input[(iy * width + ix) * channels..][..channels];
                        // A select, not `f32::max`: it vectorizes (NaN inputs are skipped).
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d = if s > *d { s } else { *d };
                        }
                    }
                }
            }
        });
    (oh, ow)
}

/// Mean over all pixels: `out[c]` for each channel (resized to `channels`), in the input's
/// units (levels for quantized input).
pub fn global_avg_pool<T: PoolValue>(
    input: &[T],
    height: usize,
    width: usize,
    channels: usize,
    out: &mut Vec<f32>,
) {
    assert_eq!(input.len(), height * width * channels, "input size");
    out.clear();
    out.resize(channels, 0.0);
    if channels == 0 {
        return;
    }
    for pixel in input.chunks_exact(channels) {
        for (o, &v) in out.iter_mut().zip(pixel) {
            *o += v.into();
        }
    }
    let inv = 1.0 / (height * width) as f32;
    for o in out.iter_mut() {
        *o *= inv;
    }
}
