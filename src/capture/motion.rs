use std::time::{Duration, Instant};

use image::RgbImage;

use super::MotionConfig;

const THUMB_WIDTH: usize = 32;
const THUMB_HEIGHT: usize = 24;
const THUMB_LEN: usize = THUMB_WIDTH * THUMB_HEIGHT;

/// The luma values of a thumbnail, row by row.
pub(super) type Luma = [u8; THUMB_LEN];
/// Pixels sampled per thumbnail cell along each axis: 16 reads per cell, ~12k per frame whatever
/// the resolution, which keeps the gate far cheaper than decoding the frame.
const SAMPLES_PER_AXIS: usize = 4;

/// Decides whether a frame differs enough from the last classified one to be worth inference.
///
/// Compares 32x24 grayscale thumbnails by mean absolute difference (in [0, 1]). The reference is
/// updated only when the gate says "classify", so slow drift (dusk, clouds) accumulates until it
/// crosses the threshold instead of creeping past it frame by frame. Works on fixed buffers: no
/// allocation per frame.
#[derive(Debug, Clone)]
pub struct MotionGate {
    enabled: bool,
    threshold: f32,
    max_skip: Option<Duration>,
    reference: Option<Luma>,
    last_classified: Option<Instant>,
    thumbnail: Thumbnail,
    last_difference: f32,
}

impl MotionGate {
    /// A gate with no reference thumbnail yet: its first [`MotionGate::changed`] call returns
    /// `true`.
    pub fn new(config: &MotionConfig) -> Self {
        MotionGate {
            enabled: config.enabled,
            threshold: config.threshold,
            max_skip: (config.max_skip_s > 0).then(|| Duration::from_secs(config.max_skip_s)),
            reference: None,
            last_classified: None,
            thumbnail: Thumbnail::new(),
            last_difference: 0.0,
        }
    }

    /// `true` means classify this frame (and it becomes the new reference); `false` means the
    /// scene is unchanged: publish a heartbeat instead. Always `true` when the gate is disabled,
    /// for the first frame, for an empty image, and once `max_skip_s` has passed.
    pub fn changed(&mut self, rgb: &RgbImage) -> bool {
        self.changed_at(rgb, Instant::now())
    }

    /// Mean absolute thumbnail difference measured by the last [`changed`](Self::changed) call
    /// that had a reference to compare with, in [0, 1].
    pub fn last_difference(&self) -> f32 {
        self.last_difference
    }

    fn changed_at(&mut self, rgb: &RgbImage, now: Instant) -> bool {
        if !self.enabled || rgb.width() == 0 || rgb.height() == 0 {
            return true;
        }
        self.thumbnail.update(rgb);
        let changed = match &self.reference {
            None => true,
            Some(reference) => {
                self.last_difference = self.thumbnail.difference(reference);
                let overdue = match (self.max_skip, self.last_classified) {
                    (Some(max_skip), Some(last)) => now.saturating_duration_since(last) >= max_skip,
                    _ => false,
                };
                self.last_difference >= self.threshold || overdue
            }
        };
        if changed {
            self.reference = Some(*self.thumbnail.luma());
            self.last_classified = Some(now);
        }
        changed
    }
}

/// A 32x24 grayscale thumbnail of the last frame given to [`Thumbnail::update`]; compared by mean
/// absolute difference. Shared by the motion gate and the collector's near-duplicate check, so
/// their thresholds are on one scale. Fixed buffers: no allocation per frame.
#[derive(Debug, Clone)]
pub(super) struct Thumbnail {
    grid: SampleGrid,
    luma: Luma,
}

impl Thumbnail {
    pub(super) fn new() -> Self {
        Thumbnail {
            grid: SampleGrid::new(),
            luma: [0; THUMB_LEN],
        }
    }

    /// Recomputes the thumbnail from `rgb` (which must not be empty).
    pub(super) fn update(&mut self, rgb: &RgbImage) {
        grayscale_thumbnail(rgb, &mut self.grid, &mut self.luma);
    }

    pub(super) fn luma(&self) -> &Luma {
        &self.luma
    }

    /// Mean absolute difference from `reference`, in [0, 1].
    pub(super) fn difference(&self, reference: &Luma) -> f32 {
        mean_abs_difference(reference, &self.luma)
    }
}

/// Pixel coordinates sampled for each thumbnail cell: a 4x4 grid spread over the cell (fewer
/// distinct pixels when the image is smaller than the thumbnail). Recomputed only when the frame
/// size changes, so the per-frame work is loads and adds.
#[derive(Debug, Clone)]
struct SampleGrid {
    size: (u32, u32),
    columns: [usize; THUMB_WIDTH * SAMPLES_PER_AXIS],
    rows: [usize; THUMB_HEIGHT * SAMPLES_PER_AXIS],
}

impl SampleGrid {
    fn new() -> Self {
        SampleGrid {
            size: (0, 0),
            columns: [0; THUMB_WIDTH * SAMPLES_PER_AXIS],
            rows: [0; THUMB_HEIGHT * SAMPLES_PER_AXIS],
        }
    }

    fn fit(&mut self, width: u32, height: u32) {
        if self.size != (width, height) {
            fill_axis(&mut self.columns, width as usize);
            fill_axis(&mut self.rows, height as usize);
            self.size = (width, height);
        }
    }
}

/// Sample positions along one axis of `size > 0` pixels: `SAMPLES_PER_AXIS` per cell, each
/// centred in an equal part of the cell.
fn fill_axis(positions: &mut [usize], size: usize) {
    let cells = positions.len() / SAMPLES_PER_AXIS;
    for (cell, samples) in positions.chunks_exact_mut(SAMPLES_PER_AXIS).enumerate() {
        let start = cell * size / cells;
        let span = ((cell + 1) * size / cells).max(start + 1) - start;
        for (index, position) in samples.iter_mut().enumerate() {
            *position = start + (2 * index + 1) * span / (2 * SAMPLES_PER_AXIS);
        }
    }
}

/// Area-samples `rgb` into a 32x24 BT.601 luma thumbnail.
fn grayscale_thumbnail(rgb: &RgbImage, grid: &mut SampleGrid, out: &mut Luma) {
    grid.fit(rgb.width(), rgb.height());
    let width = rgb.width() as usize;
    let pixels = rgb.as_raw();
    let samples = (SAMPLES_PER_AXIS * SAMPLES_PER_AXIS) as u32;
    for (cell_y, rows) in grid.rows.chunks_exact(SAMPLES_PER_AXIS).enumerate() {
        for (cell_x, columns) in grid.columns.chunks_exact(SAMPLES_PER_AXIS).enumerate() {
            let mut sum = 0u32;
            for &y in rows {
                for &x in columns {
                    let at = (y * width + x) * 3;
                    let (r, g, b) = (pixels[at], pixels[at + 1], pixels[at + 2]);
                    sum += (77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b)) >> 8;
                }
            }
            out[cell_y * THUMB_WIDTH + cell_x] = (sum / samples) as u8;
        }
    }
}

fn mean_abs_difference(a: &Luma, b: &Luma) -> f32 {
    let total: u32 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u32::from(x.abs_diff(*y)))
        .sum();
    total as f32 / (THUMB_LEN as f32 * 255.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_skip_s: u64) -> MotionGate {
        MotionGate::new(&MotionConfig {
            enabled: true,
            threshold: 0.02,
            max_skip_s,
        })
    }

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
        })
    }

    #[test]
    fn max_skip_forces_a_classification_of_a_static_scene() {
        let mut gate = gate(60);
        let frame = gradient(64, 48);
        let start = Instant::now();
        assert!(gate.changed_at(&frame, start));
        assert!(!gate.changed_at(&frame, start + Duration::from_secs(59)));
        assert!(gate.changed_at(&frame, start + Duration::from_secs(60)));
        assert!(!gate.changed_at(&frame, start + Duration::from_secs(61)));
    }

    #[test]
    fn zero_max_skip_never_forces() {
        let mut gate = gate(0);
        let frame = gradient(64, 48);
        let start = Instant::now();
        assert!(gate.changed_at(&frame, start));
        assert!(!gate.changed_at(&frame, start + Duration::from_secs(100_000)));
    }

    #[test]
    fn images_smaller_than_the_thumbnail_work() {
        let mut gate = gate(0);
        assert!(gate.changed(&gradient(3, 2)));
        assert!(!gate.changed(&gradient(3, 2)));
        assert!(gate.changed(&RgbImage::new(0, 0)));
    }

    #[test]
    fn thumbnail_of_a_uniform_image_is_its_luma() {
        let mut out = [0u8; THUMB_LEN];
        let image = RgbImage::from_pixel(100, 75, image::Rgb([200, 200, 200]));
        grayscale_thumbnail(&image, &mut SampleGrid::new(), &mut out);
        assert!(out.iter().all(|&v| v.abs_diff(200) <= 1), "{out:?}");
    }

    #[test]
    fn sample_positions_stay_inside_the_image_and_cover_it() {
        for size in [1, 2, 31, 32, 33, 320, 1920] {
            let mut positions = [0; THUMB_WIDTH * SAMPLES_PER_AXIS];
            fill_axis(&mut positions, size);
            assert!(
                positions.iter().all(|&p| p < size),
                "size {size}: {positions:?}"
            );
            assert!(positions.windows(2).all(|w| w[0] <= w[1]), "size {size}");
            if size >= 320 {
                assert!(positions[0] < size / 64 && positions[127] > size - size / 64);
            }
        }
    }
}
