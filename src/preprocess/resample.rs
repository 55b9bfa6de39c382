//! torchvision's `Resize` (Pillow bilinear) + `CenterCrop` + `ToTensor` + `Normalize`, computed
//! only for the pixels that survive the crop.
//!
//! Pillow resizes in two separable passes with a triangle filter whose support is scaled by the
//! downscale factor (antialiasing), using 22-bit fixed-point weights and rounding to 8 bits after
//! each pass. Every output pixel depends only on its own row/column weights, so resampling just
//! the cropped window gives exactly the pixels Pillow computes for the whole image.

use std::ops::Range;

use image::RgbImage;

/// Pillow's fixed-point precision for 8-bit images (`PRECISION_BITS` in `Resample.c`).
pub(super) const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Accumulator start value: adds one half so the final shift rounds to nearest.
const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// `(value / 255 - mean) / std` per channel and byte value, in f32 like `ToTensor` + `Normalize`.
pub(super) struct NormalizeTable(pub(super) [[f32; 256]; 3]);

impl NormalizeTable {
    pub fn new(mean: &[f32; 3], std: &[f32; 3]) -> Self {
        let mut table = [[0.0; 256]; 3];
        for (channel, values) in table.iter_mut().enumerate() {
            for (byte, value) in values.iter_mut().enumerate() {
                *value = (byte as f32 / 255.0 - mean[channel]) / std[channel];
            }
        }
        Self(table)
    }
}

/// Resampling state reused across frames: filter weights (recomputed when the input size
/// changes) and intermediate buffers.
#[derive(Default)]
pub(super) struct CropResampler {
    horizontal: AxisFilter,
    vertical: AxisFilter,
    /// Horizontal pass output: the source rows the crop needs, narrowed to the crop columns.
    rows: Vec<u8>,
    /// One output row of vertical-pass accumulators (RGB interleaved).
    accumulators: Vec<i32>,
}

impl CropResampler {
    /// Writes the transform of `image` as planar RGB `crop x crop` into `tensor`
    /// (`3 * crop * crop` values).
    pub fn resize_crop_normalize(
        &mut self,
        image: &RgbImage,
        resize: u32,
        crop: u32,
        table: &NormalizeTable,
        tensor: &mut [f32],
    ) {
        let (width, height) = image.dimensions();
        let (resized_width, resized_height) = resized_size(width, height, resize);
        let columns = CropAxis::new(resized_width, crop);
        let rows = CropAxis::new(resized_height, crop);
        let crop = crop as usize;
        let plane_len = crop * crop;

        if columns.is_padded() || rows.is_padded() {
            // torchvision pads with black (0) before normalizing.
            for (plane, values) in tensor.chunks_exact_mut(plane_len).zip(&table.0) {
                plane.fill(values[0]);
            }
        }
        if columns.inside.is_empty() || rows.inside.is_empty() {
            return;
        }
        self.horizontal
            .update(width, resized_width, columns.resized_range());
        self.vertical
            .update(height, resized_height, rows.resized_range());

        // Horizontal pass over the source rows the cropped output rows read.
        let first_resized_row = rows.resized_index(rows.inside.start);
        let last_resized_row = rows.resized_index(rows.inside.end - 1);
        let first_source_row = self.vertical.taps(first_resized_row).0;
        let (last_start, last_weights) = self.vertical.taps(last_resized_row);
        let source_rows = first_source_row..last_start + last_weights.len();

        let first_resized_column = columns.resized_index(columns.inside.start);
        let row_len = columns.inside.len() * 3;
        self.rows.resize(source_rows.len() * row_len, 0);
        let source_stride = width as usize * 3;
        for (source_row, out_row) in source_rows.clone().zip(self.rows.chunks_exact_mut(row_len)) {
            let source = &image.as_raw()[source_row * source_stride..][..source_stride];
            for (column, out) in out_row.chunks_exact_mut(3).enumerate() {
                let (start, weights) = self.horizontal.taps(first_resized_column + column);
                let mut sums = [ROUNDING; 3];
                for (pixel, &weight) in source[start * 3..].chunks_exact(3).zip(weights) {
                    for (sum, &value) in sums.iter_mut().zip(pixel) {
                        *sum = multiply_add(*sum, value, weight);
                    }
                }
                for (value, sum) in out.iter_mut().zip(sums) {
                    *value = clip8(sum);
                }
            }
        }

        // Vertical pass, row by row, straight into the normalized planes.
        self.accumulators.resize(row_len, 0);
        for out_row in rows.inside.clone() {
            let (start, weights) = self.vertical.taps(rows.resized_index(out_row));
            self.accumulators.fill(ROUNDING);
            let taps = self.rows[(start - first_source_row) * row_len..].chunks_exact(row_len);
            for (row, &weight) in taps.zip(weights) {
                for (sum, &value) in self.accumulators.iter_mut().zip(row) {
                    *sum = multiply_add(*sum, value, weight);
                }
            }
            let out_start = out_row * crop + columns.inside.start;
            for (channel, (plane, values)) in
                tensor.chunks_exact_mut(plane_len).zip(&table.0).enumerate()
            {
                let out = &mut plane[out_start..][..columns.inside.len()];
                for (value, sums) in out.iter_mut().zip(self.accumulators.chunks_exact(3)) {
                    *value = values[usize::from(clip8(sums[channel]))];
                }
            }
        }
    }
}

/// Output size of torchvision `Resize(resize)`: the shorter side becomes `resize`, the longer
/// `int(resize * long / short)` (truncated, computed in f64 like Python's true division).
pub(super) fn resized_size(width: u32, height: u32, resize: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    if short == 0 {
        return (0, 0);
    }
    let new_long = (f64::from(resize) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (resize, new_long)
    } else {
        (new_long, resize)
    }
}

/// How one axis of the crop window maps onto the resized image.
pub(super) struct CropAxis {
    /// Resized index of crop index 0; negative when torchvision pads before cropping.
    offset: i64,
    /// Crop indices that fall inside the resized image; the rest is padding.
    pub(super) inside: Range<usize>,
    crop: usize,
}

impl CropAxis {
    /// torchvision `center_crop`: pads `(crop - size) // 2` in front when the crop is larger,
    /// otherwise starts at `int(round((size - crop) / 2))` with Python's round-half-to-even.
    pub(super) fn new(resized: u32, crop: u32) -> Self {
        let offset = if crop > resized {
            -i64::from((crop - resized) / 2)
        } else {
            let margin = resized - crop;
            let half = margin / 2;
            i64::from(if margin % 2 == 1 && half % 2 == 1 {
                half + 1
            } else {
                half
            })
        };
        let first = (-offset).max(0);
        let end = (i64::from(resized) - offset).min(i64::from(crop));
        Self {
            offset,
            inside: first as usize..end.max(first) as usize,
            crop: crop as usize,
        }
    }

    pub(super) fn is_padded(&self) -> bool {
        self.inside.len() < self.crop
    }

    /// Resized-image index of a crop index in `inside`.
    pub(super) fn resized_index(&self, crop_index: usize) -> usize {
        (crop_index as i64 + self.offset) as usize
    }

    /// Resized-image indices the crop keeps.
    pub(super) fn resized_range(&self) -> Range<usize> {
        self.resized_index(self.inside.start)..self.resized_index(self.inside.end)
    }
}

/// Pillow's bilinear weights for one axis (`precompute_coeffs` + `normalize_coeffs_8bpc`),
/// for the output samples the crop keeps (a bounded number, whatever the image's aspect ratio).
#[derive(Default)]
pub(super) struct AxisFilter {
    /// `(input size, output size, kept outputs)` the weights were computed for.
    computed_for: Option<(u32, u32, Range<usize>)>,
    /// Maximum taps per output sample (`ksize`), the stride of `weights`.
    taps_per_output: usize,
    /// Per kept output sample: first input index and number of taps.
    spans: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

impl AxisFilter {
    pub(super) fn update(&mut self, input: u32, output: u32, kept: Range<usize>) {
        let key = Some((input, output, kept.clone()));
        if self.computed_for == key {
            return;
        }
        self.computed_for = key;
        // Mirrors Resample.c operation for operation, in f64, so the rounded weights match.
        let scale = f64::from(input) / f64::from(output);
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // the triangle filter's support is 1
        let taps_per_output = support.ceil() as usize * 2 + 1;
        let inverse_filter_scale = 1.0 / filter_scale;
        self.taps_per_output = taps_per_output;
        self.spans.clear();
        self.weights.clear();
        self.weights.resize(kept.len() * taps_per_output, 0);
        let mut float_weights = vec![0.0; taps_per_output];
        let outputs = kept.zip(self.weights.chunks_exact_mut(taps_per_output));
        for (out, weights) in outputs {
            let center = (out as f64 + 0.5) * scale;
            // `as` truncates toward zero like C's (int) cast.
            let first = ((center - support + 0.5) as i64).max(0);
            let end = ((center + support + 0.5) as i64).min(i64::from(input));
            let count = (end - first).clamp(0, taps_per_output as i64) as usize;
            let mut total = 0.0;
            for (tap, weight) in float_weights[..count].iter_mut().enumerate() {
                *weight =
                    triangle(((tap as i64 + first) as f64 - center + 0.5) * inverse_filter_scale);
                total += *weight;
            }
            for (fixed, weight) in weights.iter_mut().zip(&float_weights[..count]) {
                let normalized = if total == 0.0 {
                    *weight
                } else {
                    weight / total
                };
                // Weights are never negative, so this is Pillow's round-half-up.
                *fixed = (0.5 + normalized * f64::from(1u32 << PRECISION_BITS)) as i32;
            }
            self.spans.push((first as usize, count));
        }
    }

    /// First input index and fixed-point weights of one kept output sample.
    pub(super) fn taps(&self, out: usize) -> (usize, &[i32]) {
        let kept_start = self
            .computed_for
            .as_ref()
            .map_or(0, |(_, _, kept)| kept.start);
        let index = out - kept_start;
        let (first, count) = self.spans[index];
        (
            first,
            &self.weights[index * self.taps_per_output..][..count],
        )
    }
}

/// Bilinear (triangle) filter kernel.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// `sum + value * weight` of a filter accumulation.
///
/// Cannot overflow: the weights of one output are non-negative and sum to about
/// `1 << PRECISION_BITS`, so a sum stays below `256 << PRECISION_BITS` = 2^30. Wrapping ops say
/// so to the compiler, which then vectorizes the loops even in builds with overflow checks.
fn multiply_add(sum: i32, value: u8, weight: i32) -> i32 {
    sum.wrapping_add(i32::from(value).wrapping_mul(weight))
}

/// Pillow's `clip8`: fixed-point accumulator to a byte.
fn clip8(sum: i32) -> u8 {
    if sum >= 1 << (PRECISION_BITS + 8) {
        255
    } else if sum <= 0 {
        0
    } else {
        (sum >> PRECISION_BITS) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_size_truncates_the_long_side_like_torchvision() {
        assert_eq!(resized_size(640, 480, 256), (341, 256));
        assert_eq!(resized_size(480, 640, 256), (256, 341));
        assert_eq!(resized_size(300, 300, 256), (256, 256));
        assert_eq!(resized_size(451, 300, 128), (192, 128));
        assert_eq!(resized_size(0, 10, 256), (0, 0));
    }

    #[test]
    fn crop_offsets_round_half_to_even_and_pad_symmetrically() {
        // Python: round(58.5) == 58, round(37.5) == 38, round(0.5) == 0.
        assert_eq!(CropAxis::new(341, 224).offset, 58);
        assert_eq!(CropAxis::new(299, 224).offset, 38);
        assert_eq!(CropAxis::new(9, 8).offset, 0);
        let padded = CropAxis::new(5, 8);
        assert_eq!((padded.offset, padded.inside.clone()), (-1, 1..6));
        assert!(padded.is_padded());
    }

    #[test]
    fn same_size_weights_are_the_identity() {
        let mut filter = AxisFilter::default();
        filter.update(7, 7, 0..7);
        for out in 0..7 {
            let (first, weights) = filter.taps(out);
            assert_eq!(first, out);
            assert_eq!(weights[0], 1 << PRECISION_BITS);
            assert!(weights[1..].iter().all(|&w| w == 0));
        }
    }
}
