//! The eval transform straight from a YUYV or NV12 frame's planes, with no full-size RGB image
//! (fast mode).
//!
//! The RGB path converts every pixel to RGB, then resamples with Pillow's filter. Resampling is
//! linear, so this path applies the same filter weights to the Y, Cb and Cr planes and converts
//! to RGB only the `crop x crop` output pixels. Only the source rows and columns the crop window
//! reads are touched, each row once per output row it contributes to: vertical pass first (over
//! contiguous bytes, which vectorizes), then the horizontal pass and the colour conversion per
//! output pixel, then the normalization table.
//!
//! Chroma siting: the RGB path gives each pixel the chroma sample of its pair (YUYV: columns
//! `2j` and `2j + 1` share sample `j`; NV12: rows `2i` and `2i + 1` share chroma row `i` too),
//! i.e. nearest-neighbour upsampling with the chroma sample centred between the luma samples it
//! covers. Filtering that replicated chroma with the luma weights equals filtering the chroma
//! plane with the luma weights summed pair by pair, which is what [`PlaneTaps`] holds. Pairs are
//! taken in frame coordinates, so a region starting at an odd column or row reads the chroma of
//! the pair its first pixel belongs to, as the RGB path does.
//!
//! How far it is from the RGB path (convert to full RGB, then resize), per output value:
//! - rounding: this path keeps `f32` between the passes and rounds once; the RGB path rounds
//!   after the conversion and after the horizontal pass (each within half a level, and
//!   averaging keeps them within half a level), so its value before the last rounding is within
//!   one level of the unrounded one, and the two results differ by at most one level;
//! - clamping: where a pixel's luma and the chroma it shares with its neighbour make a colour
//!   outside the RGB cube (a sharp edge between saturated colours), the RGB path clamps that
//!   pixel before averaging and this path clamps the average, so such edges can differ by more.
//!
//! Hence `exact = true` keeps the RGB path.
//!
//! The module also encodes RGB as a camera does ([`rgb_to_yuyv`], [`rgb_to_nv12`]: BT.601 limited
//! range, chroma averaged over each pair or 2x2 block), for the frames bench and the tests.

use std::ops::Range;

use image::RgbImage;

use super::crop::PixelRect;
use super::decode::{CB_TO_BLUE, CB_TO_GREEN, CR_TO_GREEN, CR_TO_RED, LUMA_GAIN};
use super::resample::{resized_size, AxisFilter, CropAxis, NormalizeTable, PRECISION_BITS};

/// The raw layouts this path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum YuvLayout {
    /// Packed Y0 Cb Y1 Cr: chroma halved horizontally.
    Yuyv,
    /// Y plane, then interleaved Cb Cr at half width and half height.
    Nv12,
}

/// A raw frame's bytes with its layout and size.
#[derive(Clone, Copy)]
pub(super) struct YuvFrame<'a> {
    pub layout: YuvLayout,
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
}

/// The weights of the kept outputs of one axis on one plane, in `f32`.
#[derive(Default)]
struct PlaneTaps {
    /// Per kept output: first sample (plane index, frame coordinates), start in `weights`,
    /// number of taps.
    spans: Vec<(usize, usize, usize)>,
    weights: Vec<f32>,
}

impl PlaneTaps {
    /// The taps of `filter`'s outputs `kept` on a plane subsampled by `factor` (1 or 2) whose
    /// region starts `offset` full-resolution pixels into the frame.
    fn fill(&mut self, filter: &AxisFilter, kept: Range<usize>, offset: usize, factor: usize) {
        self.spans.clear();
        self.weights.clear();
        let unit = 1.0 / (1u32 << PRECISION_BITS) as f32;
        for out in kept {
            let (start, weights) = filter.taps(out);
            let first = (offset + start) / factor;
            let at = self.weights.len();
            for (tap, &weight) in weights.iter().enumerate() {
                let index = at + (offset + start + tap) / factor - first;
                if index == self.weights.len() {
                    self.weights.push(0.0);
                }
                self.weights[index] += weight as f32 * unit;
            }
            self.spans.push((first, at, self.weights.len() - at));
        }
    }

    /// First sample and weights of kept output `index` (0 = the first kept).
    fn taps(&self, index: usize) -> (usize, &[f32]) {
        let (first, at, count) = self.spans[index];
        (first, &self.weights[at..at + count])
    }

    /// The samples any kept output reads.
    fn span(&self) -> Range<usize> {
        let start = self.spans.iter().map(|s| s.0).min().unwrap_or(0);
        let end = self.spans.iter().map(|s| s.0 + s.2).max().unwrap_or(0);
        start..end.max(start)
    }
}

/// Resampling state reused across frames: weights (recomputed when the layout, region or size
/// changes) and one row of vertically filtered samples.
#[derive(Default)]
pub(super) struct YuvResampler {
    horizontal: AxisFilter,
    vertical: AxisFilter,
    /// `(layout, region, resize, crop)` the taps were computed for.
    computed_for: Option<(YuvLayout, PixelRect, u32, u32)>,
    luma_columns: PlaneTaps,
    chroma_columns: PlaneTaps,
    luma_rows: PlaneTaps,
    chroma_rows: PlaneTaps,
    /// The source rows of one output row, filtered vertically: packed YUYV, or NV12's luma.
    luma: Vec<f32>,
    /// NV12's chroma rows of one output row, filtered vertically (Cb Cr interleaved).
    chroma: Vec<f32>,
}

impl YuvResampler {
    /// Writes the transform of `region` of `frame` as planar RGB `crop x crop` into `tensor`
    /// (`3 * crop * crop` values). `frame.data` must hold the layout's bytes for its size and
    /// `region` lie inside the frame (what `decode`'s checks and `CropRegion` guarantee).
    pub fn resize_crop_normalize(
        &mut self,
        frame: YuvFrame,
        region: PixelRect,
        (resize, crop): (u32, u32),
        table: &NormalizeTable,
        tensor: &mut [f32],
    ) {
        let (resized_width, resized_height) = resized_size(region.width, region.height, resize);
        let columns = CropAxis::new(resized_width, crop);
        let rows = CropAxis::new(resized_height, crop);
        let plane_len = crop as usize * crop as usize;
        if columns.is_padded() || rows.is_padded() {
            // torchvision pads with black (0) before normalizing.
            for (plane, values) in tensor.chunks_exact_mut(plane_len).zip(&table.0) {
                plane.fill(values[0]);
            }
        }
        if columns.inside.is_empty() || rows.inside.is_empty() {
            return;
        }
        self.update(frame.layout, region, (resize, crop), &columns, &rows);

        let luma_span = self.luma_columns.span();
        let chroma_span = self.chroma_columns.span();
        let (red, rest) = tensor.split_at_mut(plane_len);
        let (green, blue) = rest.split_at_mut(plane_len);
        let mut planes = [red, green, blue];
        let width = frame.width as usize;
        for (kept_row, out_row) in rows.inside.clone().enumerate() {
            let out = OutRow {
                start: out_row * crop as usize + columns.inside.start,
                len: columns.inside.len(),
            };
            let (first_row, row_weights) = self.luma_rows.taps(kept_row);
            match frame.layout {
                YuvLayout::Yuyv => {
                    // The packed bytes of the chroma pairs the window reads hold its luma too.
                    let bytes = 4 * chroma_span.start..4 * chroma_span.end;
                    filter_rows(
                        frame.data,
                        width * 2,
                        bytes,
                        first_row,
                        row_weights,
                        &mut self.luma,
                    );
                    let samples = Samples::<2, 4, 2> {
                        luma: &self.luma,
                        luma_origin: 2 * chroma_span.start,
                        chroma: &self.luma[1..],
                        chroma_origin: chroma_span.start,
                    };
                    samples.convert_row(self, table, &mut planes, out);
                }
                YuvLayout::Nv12 => {
                    let (luma_plane, chroma_plane) =
                        frame.data.split_at(width * frame.height as usize);
                    filter_rows(
                        luma_plane,
                        width,
                        luma_span.clone(),
                        first_row,
                        row_weights,
                        &mut self.luma,
                    );
                    let (first_row, row_weights) = self.chroma_rows.taps(kept_row);
                    filter_rows(
                        chroma_plane,
                        width,
                        2 * chroma_span.start..2 * chroma_span.end,
                        first_row,
                        row_weights,
                        &mut self.chroma,
                    );
                    let samples = Samples::<1, 2, 1> {
                        luma: &self.luma,
                        luma_origin: luma_span.start,
                        chroma: &self.chroma,
                        chroma_origin: chroma_span.start,
                    };
                    samples.convert_row(self, table, &mut planes, out);
                }
            }
        }
    }

    /// Recomputes the weights if the layout, region or sizes changed.
    fn update(
        &mut self,
        layout: YuvLayout,
        region: PixelRect,
        (resize, crop): (u32, u32),
        columns: &CropAxis,
        rows: &CropAxis,
    ) {
        let key = Some((layout, region, resize, crop));
        if self.computed_for == key {
            return;
        }
        self.computed_for = key;
        let (resized_width, resized_height) = resized_size(region.width, region.height, resize);
        let (kept_columns, kept_rows) = (columns.resized_range(), rows.resized_range());
        self.horizontal
            .update(region.width, resized_width, kept_columns.clone());
        self.vertical
            .update(region.height, resized_height, kept_rows.clone());
        let (x, y) = (region.x as usize, region.y as usize);
        self.luma_columns
            .fill(&self.horizontal, kept_columns.clone(), x, 1);
        self.chroma_columns
            .fill(&self.horizontal, kept_columns, x, 2);
        self.luma_rows.fill(&self.vertical, kept_rows.clone(), y, 1);
        let chroma_rows_factor = match layout {
            YuvLayout::Yuyv => 1,
            YuvLayout::Nv12 => 2,
        };
        self.chroma_rows
            .fill(&self.vertical, kept_rows, y, chroma_rows_factor);
    }
}

/// Where one output row goes in each tensor plane.
#[derive(Clone, Copy)]
struct OutRow {
    start: usize,
    len: usize,
}

/// `out[i] = sum of weight * plane[row][bytes.start + i]` over the rows `first_row..` of a plane
/// with `stride` bytes per row.
fn filter_rows(
    plane: &[u8],
    stride: usize,
    bytes: Range<usize>,
    first_row: usize,
    weights: &[f32],
    out: &mut Vec<f32>,
) {
    out.clear();
    out.resize(bytes.len(), 0.0);
    for (tap, &weight) in weights.iter().enumerate() {
        let row = &plane[(first_row + tap) * stride..][bytes.clone()];
        for (sum, &value) in out.iter_mut().zip(row) {
            *sum += weight * f32::from(value);
        }
    }
}

/// One output row's vertically filtered samples: luma column `x` at
/// `luma[LUMA_STEP * (x - luma_origin)]`, chroma pair `j`'s Cb at
/// `chroma[CHROMA_STEP * (j - chroma_origin)]` and its Cr `CR_OFFSET` further.
struct Samples<'a, const LUMA_STEP: usize, const CHROMA_STEP: usize, const CR_OFFSET: usize> {
    luma: &'a [f32],
    luma_origin: usize,
    chroma: &'a [f32],
    chroma_origin: usize,
}

impl<const LUMA_STEP: usize, const CHROMA_STEP: usize, const CR_OFFSET: usize>
    Samples<'_, LUMA_STEP, CHROMA_STEP, CR_OFFSET>
{
    /// The horizontal pass, colour conversion and normalization of one output row.
    fn convert_row(
        &self,
        resampler: &YuvResampler,
        table: &NormalizeTable,
        planes: &mut [&mut [f32]; 3],
        out: OutRow,
    ) {
        let scale = |fixed: i32| fixed as f32 / 65_536.0;
        let (gain, cr_red, cb_green, cr_green, cb_blue) = (
            scale(LUMA_GAIN),
            scale(CR_TO_RED),
            scale(CB_TO_GREEN),
            scale(CR_TO_GREEN),
            scale(CB_TO_BLUE),
        );
        let [red, green, blue] = planes;
        let outputs = red[out.start..][..out.len]
            .iter_mut()
            .zip(&mut green[out.start..][..out.len])
            .zip(&mut blue[out.start..][..out.len]);
        for (column, ((red, green), blue)) in outputs.enumerate() {
            let (first, weights) = resampler.luma_columns.taps(column);
            let luma = &self.luma[LUMA_STEP * (first - self.luma_origin)..];
            let mut y = 0.0;
            for (tap, &weight) in weights.iter().enumerate() {
                y += weight * luma[LUMA_STEP * tap];
            }
            let (first, weights) = resampler.chroma_columns.taps(column);
            let chroma = &self.chroma[CHROMA_STEP * (first - self.chroma_origin)..];
            let (mut cb, mut cr) = (0.0, 0.0);
            for (tap, &weight) in weights.iter().enumerate() {
                cb += weight * chroma[CHROMA_STEP * tap];
                cr += weight * chroma[CHROMA_STEP * tap + CR_OFFSET];
            }
            let (cb, cr) = (cb - 128.0, cr - 128.0);
            let y = gain * (y - 16.0);
            *red = table.0[0][level(y + cr_red * cr)];
            *green = table.0[1][level(y + cb_green * cb + cr_green * cr)];
            *blue = table.0[2][level(y + cb_blue * cb)];
        }
    }
}

/// A channel value rounded to the nearest level, clamped to 0..=255 (`as` saturates).
fn level(value: f32) -> usize {
    usize::from((value + 0.5) as u8)
}

/// BT.601 limited-range Y, Cb, Cr of one RGB pixel (what UVC cameras send).
fn ycbcr(pixel: &[u8]) -> [f32; 3] {
    let [r, g, b] = [pixel[0], pixel[1], pixel[2]].map(f32::from);
    let luma = 0.299 * r + 0.587 * g + 0.114 * b;
    [
        16.0 + luma * 219.0 / 255.0,
        128.0 + (b - luma) / 1.772 * 224.0 / 255.0,
        128.0 + (r - luma) / 1.402 * 224.0 / 255.0,
    ]
}

/// Rounded to the nearest level.
fn to_byte(value: f32) -> u8 {
    value.round().clamp(0.0, 255.0) as u8
}

/// `rgb` (even width) as a YUYV frame's bytes, chroma averaged over each pair, as a camera
/// sends it.
pub(crate) fn rgb_to_yuyv(rgb: &RgbImage) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() / 3 * 2);
    for pair in rgb.as_raw().chunks_exact(6) {
        let (left, right) = (ycbcr(&pair[..3]), ycbcr(&pair[3..]));
        out.extend_from_slice(&[
            to_byte(left[0]),
            to_byte((left[1] + right[1]) / 2.0),
            to_byte(right[0]),
            to_byte((left[2] + right[2]) / 2.0),
        ]);
    }
    out
}

/// `rgb` (even width and height) as an NV12 frame's bytes, chroma averaged over each 2x2 block.
pub(crate) fn rgb_to_nv12(rgb: &RgbImage) -> Vec<u8> {
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    let pixels: Vec<[f32; 3]> = rgb.as_raw().chunks_exact(3).map(ycbcr).collect();
    let mut out: Vec<u8> = pixels.iter().map(|p| to_byte(p[0])).collect();
    for y in (0..height).step_by(2) {
        for x in (0..width).step_by(2) {
            let block = [
                y * width + x,
                y * width + x + 1,
                (y + 1) * width + x,
                (y + 1) * width + x + 1,
            ];
            let (cb, cr) = block.iter().fold((0.0, 0.0), |(cb, cr), &i| {
                (cb + pixels[i][1], cr + pixels[i][2])
            });
            out.extend_from_slice(&[to_byte(cb / 4.0), to_byte(cr / 4.0)]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Frame, PixelFormat};
    use crate::preprocess::decode::{CB_TO_BLUE, CB_TO_GREEN, CR_TO_GREEN, CR_TO_RED, LUMA_GAIN};
    use crate::preprocess::{CropRegion, PreprocessConfig, Preprocessor};

    /// A fixture photo resized to `width x height`.
    fn photo(name: &str, width: u32, height: u32) -> RgbImage {
        let path = format!(
            "{}/tests/fixtures/images/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let photo = image::open(&path)
            .unwrap_or_else(|err| panic!("cannot open {path}: {err}"))
            .into_rgb8();
        image::imageops::resize(&photo, width, height, image::imageops::FilterType::Triangle)
    }

    fn frame(format: PixelFormat, rgb: &RgbImage) -> Frame {
        let data = match format {
            PixelFormat::Yuyv => rgb_to_yuyv(rgb),
            _ => rgb_to_nv12(rgb),
        };
        Frame {
            format,
            width: rgb.width(),
            height: rgb.height(),
            data,
            captured_at: std::time::SystemTime::now(),
            seq: 0,
            origin: "test".into(),
        }
    }

    /// A fixture photo's colours brought halfway to grey: its YUYV and NV12 frames hold only
    /// colours inside the RGB cube, even where chroma is shared across an edge.
    fn muted(photo: &RgbImage) -> RgbImage {
        let mut muted = photo.clone();
        for value in muted.iter_mut() {
            *value = (u16::from(*value) * 2 / 5 + 77) as u8;
        }
        muted
    }

    /// Whether the RGB path clamps any pixel of `frame`: its luma with the chroma it shares
    /// makes a colour outside the RGB cube.
    fn clamps_any_pixel(frame: &Frame) -> bool {
        let width = frame.width as usize;
        let pixels = (width * frame.height as usize) as isize;
        let (luma, chroma): (Vec<u8>, Vec<(u8, u8)>) = match frame.format {
            PixelFormat::Yuyv => frame
                .data
                .chunks_exact(2)
                .enumerate()
                .map(|(i, yc)| {
                    let pair = &frame.data[i / 2 * 4..][..4];
                    (yc[0], (pair[1], pair[3]))
                })
                .unzip(),
            _ => (0..pixels as usize)
                .map(|i| {
                    let (x, y) = (i % width, i / width);
                    let at = pixels as usize + y / 2 * width + x / 2 * 2;
                    (frame.data[i], (frame.data[at], frame.data[at + 1]))
                })
                .unzip(),
        };
        luma.iter().zip(chroma).any(|(&y, (cb, cr))| {
            let (cb, cr) = (i32::from(cb) - 128, i32::from(cr) - 128);
            let y = LUMA_GAIN * (i32::from(y) - 16) + (1 << 15);
            [
                y + CR_TO_RED * cr,
                y + CB_TO_GREEN * cb + CR_TO_GREEN * cr,
                y + CB_TO_BLUE * cb,
            ]
            .iter()
            .any(|channel| !(0..=255).contains(&(channel >> 16)))
        })
    }

    /// How the tensor the direct path makes of `frame` differs from the RGB path's (the whole
    /// frame converted to RGB, then resized): the largest difference in levels (0..=255), and
    /// how many values differ by more than one level.
    fn levels_from_rgb_path(
        frame: &Frame,
        config: &PreprocessConfig,
        region: Option<CropRegion>,
    ) -> (f32, usize) {
        let mut direct = Preprocessor::new(config.clone()).with_region(region);
        direct.load(frame).expect("load");
        assert!(direct.raw_frame.is_some(), "the frame was converted to RGB");
        let direct = direct.normalize().to_vec();
        let mut rgb_path = Preprocessor::new(config.clone()).with_region(region);
        rgb_path.decode(frame).expect("decode");
        let reference = rgb_path.normalize();
        let plane_len = reference.len() / 3;
        let levels = direct
            .iter()
            .zip(reference)
            .enumerate()
            .map(|(i, (a, b))| (a - b).abs() * config.std[i / plane_len] * 255.0);
        levels.fold((0.0, 0), |(max, over), level| {
            (max.max(level), over + usize::from(level > ONE_LEVEL))
        })
    }

    /// One level, plus what f32 normalization can add to a difference of one level.
    const ONE_LEVEL: f32 = 1.0 + 1e-3;

    /// The whole frame, a region starting at an odd column and row (chroma pairs are taken in
    /// frame coordinates, so its first pixel shares chroma with the one left of it), and an
    /// odd-sized region reaching the right and bottom edges.
    fn regions(width: u32, height: u32) -> [Option<CropRegion>; 3] {
        let region = |x: u32, y: u32, w: u32, h: u32| {
            let (width, height) = (f64::from(width), f64::from(height));
            let fractions = [
                f64::from(x) / width,
                f64::from(y) / height,
                f64::from(w) / width,
                f64::from(h) / height,
            ];
            Some(CropRegion::try_from(fractions).expect("valid region"))
        };
        let (x, y) = ((width / 10) | 1, (height / 12) | 1);
        let (w, h) = ((width * 47 / 100) | 1, (height * 46 / 100) | 1);
        [
            None,
            region(x, y, width * 6 / 10, height * 7 / 10),
            region(width - w, height - h, w, h),
        ]
    }

    const PHOTOS: [&str; 3] = ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"];

    #[test]
    fn direct_resize_is_within_one_level_of_the_rgb_path() {
        let config = PreprocessConfig::default();
        for (format, width, height) in
            [(PixelFormat::Yuyv, 640, 480), (PixelFormat::Nv12, 800, 450)]
        {
            for name in PHOTOS {
                let frame = frame(format, &muted(&photo(name, width, height)));
                assert!(
                    !clamps_any_pixel(&frame),
                    "{name}: the test needs colours in the cube"
                );
                for region in regions(width, height) {
                    let (levels, _) = levels_from_rgb_path(&frame, &config, region);
                    assert!(
                        levels <= ONE_LEVEL,
                        "{format:?} {name} {region:?}: {levels} levels"
                    );
                }
            }
        }
    }

    /// Frames as a camera makes them, chroma averaged over a pair or block: at sharp edges
    /// between saturated colours a pixel's own luma and the shared chroma leave the RGB cube,
    /// and the RGB path clamps that pixel before averaging while the direct path clamps the
    /// average (see the module docs). Measured on these photos: at most 6 levels, in 741 of
    /// 2,709,504 values (0.03 %); the bounds below leave a little room for other targets' float
    /// rounding, not for a different behaviour.
    #[test]
    fn direct_resize_of_camera_frames_differs_by_more_only_where_the_rgb_path_clamps() {
        let config = PreprocessConfig::default();
        let (mut values, mut over_one, mut largest) = (0, 0, 0.0_f32);
        let cases = [(PixelFormat::Yuyv, 640, 480), (PixelFormat::Nv12, 800, 450)];
        for (format, width, height) in cases {
            for name in PHOTOS {
                let frame = frame(format, &photo(name, width, height));
                let clamps = clamps_any_pixel(&frame);
                for region in regions(width, height) {
                    let (levels, over) = levels_from_rgb_path(&frame, &config, region);
                    assert!(
                        over == 0 || clamps,
                        "{format:?} {name} {region:?}: {levels}"
                    );
                    values += 3 * 224 * 224;
                    over_one += over;
                    largest = largest.max(levels);
                }
            }
        }
        assert!(largest <= 8.0, "{largest} levels");
        assert!(over_one * 2000 < values, "{over_one} of {values} values");
    }

    #[test]
    fn upscaled_and_padded_frames_stay_within_one_level() {
        let small = muted(&photo("chelsea.jpg", 90, 64));
        let padded = PreprocessConfig {
            resize: 100,
            ..PreprocessConfig::default()
        };
        for format in [PixelFormat::Yuyv, PixelFormat::Nv12] {
            let frame = frame(format, &small);
            assert!(!clamps_any_pixel(&frame));
            for config in [&PreprocessConfig::default(), &padded] {
                for region in regions(90, 64) {
                    let (levels, _) = levels_from_rgb_path(&frame, config, region);
                    assert!(
                        levels <= ONE_LEVEL,
                        "{format:?} {config:?} {region:?}: {levels} levels"
                    );
                }
            }
        }
    }

    #[test]
    fn a_raw_frame_is_converted_to_rgb_only_when_asked_for_and_as_decode_does() {
        let rgb = photo("coffee.jpg", 320, 240);
        for format in [PixelFormat::Yuyv, PixelFormat::Nv12] {
            let frame = frame(format, &rgb);
            for region in regions(320, 240) {
                let mut loaded = Preprocessor::new(PreprocessConfig::default()).with_region(region);
                loaded.load(&frame).expect("load");
                assert!(!loaded.raw_converted);
                let mut decoded =
                    Preprocessor::new(PreprocessConfig::default()).with_region(region);
                assert_eq!(loaded.decoded(), decoded.decode(&frame).expect("decode"));
                assert!(loaded.raw_converted);
            }
        }
    }

    /// The gate judges a YUYV frame on its luma: an unchanged scene is never loaded (nor
    /// converted), and `decoded` keeps the last classified image.
    #[test]
    fn the_motion_gate_loads_only_changed_raw_frames() {
        let still = photo("chelsea.jpg", 160, 120);
        let mut changed = still.clone();
        for (x, y, pixel) in changed.enumerate_pixels_mut() {
            if (20..100).contains(&x) && (10..70).contains(&y) {
                *pixel = image::Rgb([250, 250, 250]);
            }
        }
        for (format, region) in [
            (PixelFormat::Yuyv, None),
            (PixelFormat::Nv12, regions(160, 120)[1]),
        ] {
            let mut preprocessor =
                Preprocessor::new(PreprocessConfig::default()).with_region(region);
            let mut gate =
                crate::capture::MotionGate::new(&crate::capture::MotionConfig::default());
            let first = frame(format, &still);
            assert!(preprocessor
                .decode_if_changed(&first, &mut gate, false)
                .expect("first"));
            let classified = preprocessor.decoded().clone();
            let loads = preprocessor.full_decodes();
            for _ in 0..3 {
                assert!(!preprocessor
                    .decode_if_changed(&first, &mut gate, false)
                    .expect("same"));
            }
            assert_eq!(preprocessor.full_decodes(), loads);
            let moved = frame(format, &changed);
            assert!(preprocessor
                .decode_if_changed(&moved, &mut gate, false)
                .expect("moved"));
            assert_eq!(
                preprocessor.full_decodes(),
                loads + 1,
                "{format:?}: not loaded"
            );
            assert_ne!(preprocessor.decoded(), &classified);
            assert!(preprocessor
                .decode_if_changed(&first, &mut gate, true)
                .expect("forced"));
            assert_eq!(preprocessor.decoded(), &classified);
        }
    }

    #[test]
    fn exact_mode_keeps_the_rgb_path() {
        let frame = frame(PixelFormat::Yuyv, &photo("chelsea.jpg", 64, 48));
        let mut exact = Preprocessor::new(PreprocessConfig {
            exact: true,
            ..PreprocessConfig::default()
        });
        exact.load(&frame).expect("load");
        assert!(exact.raw_frame.is_none());
        assert_eq!(exact.decoded().dimensions(), (64, 48));
    }

    #[test]
    fn paired_weights_sum_to_the_luma_weights() {
        let mut filter = AxisFilter::default();
        filter.update(640, 341, 58..282);
        let (mut luma, mut chroma) = (PlaneTaps::default(), PlaneTaps::default());
        for offset in [0, 1, 64, 65] {
            luma.fill(&filter, 58..282, offset, 1);
            chroma.fill(&filter, 58..282, offset, 2);
            for out in 0..224 {
                let (luma_first, luma_weights) = luma.taps(out);
                let (chroma_first, chroma_weights) = chroma.taps(out);
                // Luma tap `x` belongs to chroma sample `x / 2`.
                assert_eq!(chroma_first, luma_first / 2);
                let mut paired = vec![0.0; chroma_weights.len()];
                for (tap, weight) in luma_weights.iter().enumerate() {
                    paired[(luma_first + tap) / 2 - chroma_first] += weight;
                }
                assert_eq!(paired, chroma_weights, "offset {offset}, output {out}");
                let total: f32 = chroma_weights.iter().sum();
                assert!((total - 1.0).abs() < 1e-5, "{total}");
            }
        }
    }
}
