//! The motion gate and the grayscale thumbnails it (and the collector) compare.
//!
//! A YUYV or NV12 frame is judged on its own luma plane ([`LumaPlane`]), read in place: the gate
//! never needs its RGB conversion.
//!
//! The gate downsamples each frame (the camera's crop region, if it has one) to a 64x48 luma
//! grid and counts the cells that changed since the last classified frame, after removing the
//! frame's global brightness change. A small object changes few cells but each by a lot, which a
//! whole-frame mean dilutes away: on the fixture photos (`tests/capture_frames.rs`) a cat covering
//! 2% of the frame moved the mean of a 32x24 thumbnail by 0.001-0.007, far below the former
//! threshold of 0.02, while 0.9-2% of the 64x48 cells changed by more than 0.06.
//!
//! While the scene is settled (no motion for a second, [`SETTLE`]), the gate looks at no more than
//! `idle_fps` frames a second ([`MotionGate::idle_until`]): a static 1080p MJPEG scene at 30 fps
//! would otherwise cost a JPEG entropy decode per frame, which no DCT scale skips. The frames
//! in between are dropped by the camera's [`FrameSlot`](super::FrameSlot), and where the source
//! allows never captured; motion is noticed at most `1 / idle_fps` s plus one frame late, and
//! from then on every frame is judged until the scene settles again.

use std::time::{Duration, Instant};

use image::RgbImage;

use super::MotionConfig;
use crate::preprocess::CropRegion;

/// The gate's grid: fine enough that an object covering 2% of the frame spans ~60 cells.
const GATE_WIDTH: usize = 64;
const GATE_HEIGHT: usize = 48;
const GATE_CELLS: usize = GATE_WIDTH * GATE_HEIGHT;

/// The luma values of a `W x H` thumbnail, row by row.
pub(super) type Luma<const W: usize, const H: usize> = [[u8; W]; H];
/// Which cells of the gate's grid are watched (not masked out).
type Watched = [[bool; GATE_WIDTH]; GATE_HEIGHT];
/// Pixels sampled per thumbnail cell along each axis: 16 reads per cell whatever the resolution,
/// which keeps the gate far cheaper than decoding the frame.
const SAMPLES_PER_AXIS: usize = 4;
/// Signed luma differences, -255..=255, shifted to index a histogram.
const DIFFERENCE_BINS: usize = 511;
/// How long after the gate last opened for motion it keeps judging every frame: objects move
/// on for a while, and `on_change`'s `hold` counts consecutive frames at the camera's rate.
const SETTLE: Duration = Duration::from_secs(1);

/// The luma of a region of a YUYV or NV12 frame, straight from its bytes: what
/// [`MotionGate::changed_luma`] judges instead of an RGB image.
#[derive(Debug, Clone, Copy)]
pub struct LumaPlane<'a> {
    /// The frame's bytes, starting with the luma of its pixel (0, 0).
    pub data: &'a [u8],
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Bytes from one pixel's luma to the next: 2 for YUYV, 1 for NV12.
    pub step: usize,
    /// The region's first column and row in the frame.
    pub origin: (usize, usize),
    /// The region's width and height in pixels.
    pub size: (u32, u32),
}

/// What the gate judges: an RGB image, or a raw frame's luma.
#[derive(Clone, Copy)]
enum GateImage<'a> {
    Rgb(&'a RgbImage),
    Luma(&'a LumaPlane<'a>),
}

impl GateImage<'_> {
    fn is_empty(&self) -> bool {
        let (width, height) = match self {
            Self::Rgb(rgb) => rgb.dimensions(),
            Self::Luma(luma) => luma.size,
        };
        width == 0 || height == 0
    }
}

/// How many frames a [`MotionGate`] sent to classification and how many it skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Frames the gate said to classify (including the first, forced and ungated ones).
    pub classified: u64,
    /// Frames the gate found unchanged.
    pub skipped: u64,
}

/// Decides whether a frame differs enough from the last classified one to be worth inference.
///
/// Compares a 64x48 grayscale thumbnail with the last classified frame's, cell by cell. The
/// median cell difference is subtracted first, so a global brightness change (clouds, auto
/// exposure) moves no cell; a cell then counts as changed when it differs by more than
/// `cell_threshold`, and the frame when at least `min_area` of the watched cells (those outside
/// `mask`) changed. The reference is updated only when the gate says "classify", so slow local
/// change accumulates until it crosses the threshold instead of creeping past it frame by frame.
/// Works on fixed buffers: no allocation per frame.
#[derive(Debug, Clone)]
pub struct MotionGate {
    enabled: bool,
    /// `cell_threshold` in luma levels (0..=255).
    cell_limit: f32,
    /// Changed cells at or above which the frame counts as changed; at least 1.
    min_cells: usize,
    watched: Watched,
    watched_cells: usize,
    max_skip: Option<Duration>,
    /// `1 / idle_fps`; `None` judges every frame.
    idle_interval: Option<Duration>,
    reference: Option<Luma<GATE_WIDTH, GATE_HEIGHT>>,
    last_classified: Option<Instant>,
    /// When the gate last judged a frame, and last opened because the scene changed.
    last_judged: Option<Instant>,
    last_motion: Option<Instant>,
    thumbnail: Thumbnail<GATE_WIDTH, GATE_HEIGHT>,
    histogram: [u32; DIFFERENCE_BINS],
    last_changed_area: f32,
    stats: GateStats,
}

impl MotionGate {
    /// A gate with no reference thumbnail yet: its first [`MotionGate::changed`] call returns
    /// `true`. A mask that covers every cell (refused by the config's validation) leaves the
    /// whole region watched.
    pub fn new(config: &MotionConfig) -> Self {
        let (watched, watched_cells) = match watched_cells_of(&config.mask) {
            (_, 0) => watched_cells_of(&[]),
            watched => watched,
        };
        let min_cells = (f64::from(config.min_area) * watched_cells as f64).ceil() as usize;
        MotionGate {
            enabled: config.enabled,
            cell_limit: config.cell_threshold * 255.0,
            min_cells: min_cells.max(1),
            watched,
            watched_cells,
            max_skip: (config.max_skip_s > 0).then(|| Duration::from_secs(config.max_skip_s)),
            // Validated configs keep 1 / idle_fps within 1 ms..=10 s.
            idle_interval: (config.idle_fps > 0.0)
                .then(|| Duration::from_secs_f64(1.0 / f64::from(config.idle_fps))),
            reference: None,
            last_classified: None,
            last_judged: None,
            last_motion: None,
            thumbnail: Thumbnail::new(),
            histogram: [0; DIFFERENCE_BINS],
            last_changed_area: 0.0,
            stats: GateStats::default(),
        }
    }

    /// `true` means classify this frame (and it becomes the new reference); `false` means the
    /// scene is unchanged: publish a heartbeat instead. Always `true` when the gate is disabled,
    /// for the first frame, for an empty image, and once `max_skip_s` has passed.
    pub fn changed(&mut self, rgb: &RgbImage) -> bool {
        self.judge(GateImage::Rgb(rgb), Instant::now())
    }

    /// [`MotionGate::changed`] for a YUYV or NV12 frame's luma, read where it lies in the
    /// frame: no RGB conversion. Limited-range luma (16..=235) is stretched to 0..=255, so the
    /// thresholds mean what they mean for RGB frames (within a level of BT.601 luma of the
    /// converted image).
    pub fn changed_luma(&mut self, luma: &LumaPlane) -> bool {
        self.judge(GateImage::Luma(luma), Instant::now())
    }

    /// While the scene is settled (unchanged for a second since the gate last opened for
    /// motion, or since the first frame), the earliest instant the gate wants to see another
    /// frame: `1 / idle_fps` after the last one it judged. `None` means every frame: the gate is
    /// disabled or `idle_fps` is 0, nothing was judged yet, or the scene moved within the last
    /// second. The pipeline hands this to [`FrameSlot::want_from`](super::FrameSlot), which
    /// drops the frames before it unjudged.
    pub fn idle_until(&self) -> Option<Instant> {
        let (interval, judged) = (self.idle_interval?, self.last_judged?);
        if !self.enabled {
            return None;
        }
        let settled = self
            .last_motion
            .is_none_or(|motion| judged.saturating_duration_since(motion) >= SETTLE);
        settled.then(|| judged + interval)
    }

    /// Whether the gate judges frames at all (`enabled`); a disabled gate says "classify" to
    /// every frame.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The fraction of watched cells that changed, measured by the last
    /// [`changed`](Self::changed) call that had a reference to compare with, in [0, 1].
    pub fn last_changed_area(&self) -> f32 {
        self.last_changed_area
    }

    /// The gate's decisions so far.
    pub fn stats(&self) -> GateStats {
        self.stats
    }

    /// [`MotionGate::changed`] judged as if at `now` (for simulated timelines).
    #[cfg(test)]
    fn changed_at(&mut self, rgb: &RgbImage, now: Instant) -> bool {
        self.judge(GateImage::Rgb(rgb), now)
    }

    fn judge(&mut self, image: GateImage, now: Instant) -> bool {
        let changed = self.decide(image, now);
        if changed {
            self.stats.classified += 1;
        } else {
            self.stats.skipped += 1;
        }
        changed
    }

    fn decide(&mut self, image: GateImage, now: Instant) -> bool {
        if !self.enabled || image.is_empty() {
            return true;
        }
        match image {
            GateImage::Rgb(rgb) => self.thumbnail.update(rgb),
            GateImage::Luma(luma) => self.thumbnail.update_luma(luma),
        }
        self.last_judged = Some(now);
        let changed = match self.reference {
            // The first frame is classified, but is no evidence of motion: the gate starts idle.
            None => true,
            Some(reference) => {
                let changed_cells = self.changed_cells(&reference);
                self.last_changed_area = changed_cells as f32 / self.watched_cells as f32;
                let overdue = match (self.max_skip, self.last_classified) {
                    (Some(max_skip), Some(last)) => now.saturating_duration_since(last) >= max_skip,
                    _ => false,
                };
                let moved = changed_cells >= self.min_cells;
                if moved {
                    self.last_motion = Some(now);
                }
                moved || overdue
            }
        };
        if changed {
            self.reference = Some(*self.thumbnail.luma());
            self.last_classified = Some(now);
        }
        changed
    }

    /// Watched cells whose difference from `reference`, less the median difference, exceeds
    /// the cell threshold.
    fn changed_cells(&mut self, reference: &Luma<GATE_WIDTH, GATE_HEIGHT>) -> usize {
        let current = self.thumbnail.luma().as_flattened();
        let reference = reference.as_flattened();
        let watched = self.watched.as_flattened();
        let difference = |at: usize| i16::from(current[at]) - i16::from(reference[at]);
        // The median of a histogram: two passes over the cells, no sorting, no allocation.
        self.histogram.fill(0);
        for at in (0..GATE_CELLS).filter(|&at| watched[at]) {
            self.histogram[(difference(at) + 255) as usize] += 1;
        }
        let half = self.watched_cells.div_ceil(2) as u32;
        let mut seen = 0;
        let median = self
            .histogram
            .iter()
            .position(|&count| {
                seen += count;
                seen >= half
            })
            .map_or(0, |bin| bin as i16 - 255);
        (0..GATE_CELLS)
            .filter(|&at| {
                watched[at] && f32::from((difference(at) - median).abs()) > self.cell_limit
            })
            .count()
    }
}

/// The cells of the gate's grid outside every `mask` rectangle (fractions of the watched
/// image; a cell is masked when its centre is inside one), and how many there are.
fn watched_cells_of(mask: &[CropRegion]) -> (Watched, usize) {
    let mut watched = [[true; GATE_WIDTH]; GATE_HEIGHT];
    let mut count = 0;
    for (y, row) in watched.iter_mut().enumerate() {
        for (x, cell) in row.iter_mut().enumerate() {
            let centre = (
                (x as f64 + 0.5) / GATE_WIDTH as f64,
                (y as f64 + 0.5) / GATE_HEIGHT as f64,
            );
            *cell = !mask.iter().any(|r| r.contains(centre.0, centre.1));
            count += usize::from(*cell);
        }
    }
    (watched, count)
}

/// How many of the gate's cells `mask` leaves watched; 0 means it masks out everything.
pub(super) fn watched_cell_count(mask: &[CropRegion]) -> usize {
    watched_cells_of(mask).1
}

/// A `W x H` grayscale thumbnail of the last frame given to [`Thumbnail::update`]. The gate
/// compares 64x48 ones cell by cell; the collector's near-duplicate check compares 32x24 ones by
/// mean absolute difference. Fixed buffers: no allocation per frame.
#[derive(Debug, Clone)]
pub(super) struct Thumbnail<const W: usize, const H: usize> {
    grid: SampleGrid<W, H>,
    luma: Luma<W, H>,
}

impl<const W: usize, const H: usize> Thumbnail<W, H> {
    pub(super) fn new() -> Self {
        Thumbnail {
            grid: SampleGrid::new(),
            luma: [[0; W]; H],
        }
    }

    /// Recomputes the thumbnail from `rgb` (which must not be empty).
    pub(super) fn update(&mut self, rgb: &RgbImage) {
        let stride = rgb.width() as usize * 3;
        let pixels = rgb.as_raw();
        let luma = |x: usize, y: usize| {
            let pixel = &pixels[y * stride + 3 * x..][..3];
            let (r, g, b) = (pixel[0], pixel[1], pixel[2]);
            (77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b)) >> 8
        };
        grayscale_thumbnail(rgb.dimensions(), &mut self.grid, &mut self.luma, luma);
    }

    /// Recomputes the thumbnail from a raw frame's luma (its region must not be empty).
    fn update_luma(&mut self, plane: &LumaPlane) {
        let (x0, y0) = plane.origin;
        let luma = |x: usize, y: usize| {
            let value = plane.data[(y0 + y) * plane.stride + (x0 + x) * plane.step];
            (u32::from(value.clamp(16, 235)) - 16) * 255 / 219
        };
        grayscale_thumbnail(plane.size, &mut self.grid, &mut self.luma, luma);
    }

    pub(super) fn luma(&self) -> &Luma<W, H> {
        &self.luma
    }

    /// Mean absolute difference from `reference`, in [0, 1].
    pub(super) fn difference(&self, reference: &Luma<W, H>) -> f32 {
        let total: u32 = self
            .luma
            .as_flattened()
            .iter()
            .zip(reference.as_flattened())
            .map(|(x, y)| u32::from(x.abs_diff(*y)))
            .sum();
        total as f32 / ((W * H) as f32 * 255.0)
    }
}

/// Pixel coordinates sampled for each thumbnail cell: a 4x4 grid spread over the cell (fewer
/// distinct pixels when the image is smaller than the thumbnail). Recomputed only when the frame
/// size changes, so the per-frame work is loads and adds.
#[derive(Debug, Clone)]
struct SampleGrid<const W: usize, const H: usize> {
    size: (u32, u32),
    columns: [[usize; SAMPLES_PER_AXIS]; W],
    rows: [[usize; SAMPLES_PER_AXIS]; H],
}

impl<const W: usize, const H: usize> SampleGrid<W, H> {
    fn new() -> Self {
        SampleGrid {
            size: (0, 0),
            columns: [[0; SAMPLES_PER_AXIS]; W],
            rows: [[0; SAMPLES_PER_AXIS]; H],
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
fn fill_axis(positions: &mut [[usize; SAMPLES_PER_AXIS]], size: usize) {
    let cells = positions.len();
    for (cell, samples) in positions.iter_mut().enumerate() {
        let start = cell * size / cells;
        let span = ((cell + 1) * size / cells).max(start + 1) - start;
        for (index, position) in samples.iter_mut().enumerate() {
            *position = start + (2 * index + 1) * span / (2 * SAMPLES_PER_AXIS);
        }
    }
}

/// Area-samples an image of `(width, height)` pixels whose luma (0..=255) at `(x, y)` is
/// `luma(x, y)` into a `W x H` thumbnail.
fn grayscale_thumbnail<const W: usize, const H: usize>(
    (width, height): (u32, u32),
    grid: &mut SampleGrid<W, H>,
    out: &mut Luma<W, H>,
    luma: impl Fn(usize, usize) -> u32,
) {
    grid.fit(width, height);
    let samples = (SAMPLES_PER_AXIS * SAMPLES_PER_AXIS) as u32;
    // Row by row, left to right, so each sampled pixel row is read in one sequential pass.
    let mut sums = [0u32; W];
    for (rows, out_row) in grid.rows.iter().zip(out.iter_mut()) {
        sums.fill(0);
        for &y in rows {
            for (columns, sum) in grid.columns.iter().zip(sums.iter_mut()) {
                for &x in columns {
                    *sum += luma(x, y);
                }
            }
        }
        for (cell, sum) in out_row.iter_mut().zip(&sums) {
            *cell = (sum / samples) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Frame, PixelFormat};
    use crate::preprocess::{rgb_to_nv12, rgb_to_yuyv, PreprocessConfig, Preprocessor};

    fn config(max_skip_s: u64) -> MotionConfig {
        MotionConfig {
            max_skip_s,
            ..MotionConfig::default()
        }
    }

    fn gate(max_skip_s: u64) -> MotionGate {
        MotionGate::new(&config(max_skip_s))
    }

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
        })
    }

    /// `image` with the pixels inside `[x0, x1) x [y0, y1)` set to `level`.
    fn with_patch(image: &RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32), level: u8) -> RgbImage {
        let mut out = image.clone();
        for y in y0..y1 {
            for x in x0..x1 {
                out.put_pixel(x, y, image::Rgb([level; 3]));
            }
        }
        out
    }

    /// A YUYV or NV12 frame's luma judged in place gives the thumbnail of its RGB conversion
    /// within a few levels (limited-range rounding, chroma rounding), region offsets included.
    #[test]
    fn raw_luma_thumbnails_match_the_rgb_ones() {
        let rgb = gradient(320, 240);
        let patched = with_patch(&rgb, (40, 30, 200, 150), 230);
        for (format, step) in [(PixelFormat::Yuyv, 2), (PixelFormat::Nv12, 1)] {
            let data = match format {
                PixelFormat::Yuyv => rgb_to_yuyv(&patched),
                _ => rgb_to_nv12(&patched),
            };
            let frame = Frame {
                format,
                width: 320,
                height: 240,
                data,
                captured_at: std::time::SystemTime::now(),
                seq: 0,
                origin: "test".into(),
            };
            let mut converted = Preprocessor::new(PreprocessConfig {
                exact: true,
                ..PreprocessConfig::default()
            });
            let whole = converted.decode(&frame).expect("decode").clone();
            for (x, y, width, height) in [(0, 0, 320, 240), (33, 17, 201, 151)] {
                let cut = image::imageops::crop_imm(&whole, x, y, width, height).to_image();
                let mut from_rgb = Thumbnail::<GATE_WIDTH, GATE_HEIGHT>::new();
                from_rgb.update(&cut);
                let mut from_luma = Thumbnail::<GATE_WIDTH, GATE_HEIGHT>::new();
                from_luma.update_luma(&LumaPlane {
                    data: &frame.data,
                    stride: 320 * step,
                    step,
                    origin: (x as usize, y as usize),
                    size: (width, height),
                });
                let largest = from_rgb
                    .luma()
                    .as_flattened()
                    .iter()
                    .zip(from_luma.luma().as_flattened())
                    .map(|(a, b)| a.abs_diff(*b))
                    .max();
                assert!(largest <= Some(3), "{format:?} at ({x}, {y}): {largest:?}");
            }
        }
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
        assert_eq!(
            gate.stats(),
            GateStats {
                classified: 2,
                skipped: 2
            }
        );
    }

    /// What the pipeline and its slot do with a camera at 30 fps: a frame is judged only at or
    /// after [`MotionGate::idle_until`]. Returns the times (from `start`) of the judged frames
    /// and whether the gate opened for each, over `frames` frames; `scene(index)` is frame
    /// `index`.
    fn judged_at_30_fps(
        gate: &mut MotionGate,
        frames: u32,
        scene: impl Fn(u32) -> RgbImage,
    ) -> Vec<(Duration, bool)> {
        let start = Instant::now();
        let mut judged = Vec::new();
        for index in 0..frames {
            let at = Duration::from_millis(u64::from(index) * 1000 / 30);
            if gate.idle_until().is_none_or(|from| start + at >= from) {
                judged.push((at, gate.changed_at(&scene(index), start + at)));
            }
        }
        judged
    }

    #[test]
    fn a_settled_scene_is_judged_idle_fps_times_a_second_and_motion_still_noticed() {
        let idle_fps = 5;
        let frame = gradient(64, 48);
        let moved = with_patch(&frame, (0, 0, 32, 24), 255);
        let gate_with = |idle_fps| {
            MotionGate::new(&MotionConfig {
                idle_fps,
                ..config(0)
            })
        };
        // Ten unchanged seconds: at most ceil(5 x 10) + 1 frames judged, the first classified.
        let mut gate = gate_with(idle_fps as f32);
        let judged = judged_at_30_fps(&mut gate, 300, |_| frame.clone());
        assert!(judged.len() <= 5 * 10 + 1, "{}", judged.len());
        assert!(judged.len() >= 5 * 10 - 1, "{}", judged.len());
        assert_eq!(gate.stats().classified, 1);
        // 0 looks at every frame.
        let mut every = gate_with(0.0);
        assert_eq!(
            judged_at_30_fps(&mut every, 300, |_| frame.clone()).len(),
            300
        );

        // Whenever the change comes, the gate opens within 1 / idle_fps s and one frame of it,
        // then judges every frame for as long as the scene moves and `SETTLE` after.
        let one_frame = Duration::from_millis(1000 / 30 + 1);
        for change in [31, 40, 45, 52, 59] {
            let mut gate = gate_with(idle_fps as f32);
            let moving_until = change + 30;
            let scene = |index: u32| match index {
                i if i < change => frame.clone(),
                // The object moves: a different patch each frame.
                i if i < moving_until => with_patch(&frame, (i % 32, 0, i % 32 + 32, 24), 255),
                _ => moved.clone(),
            };
            let judged = judged_at_30_fps(&mut gate, 150, scene);
            let changed_at = Duration::from_millis(u64::from(change) * 1000 / 30);
            let (opened_at, _) = judged
                .iter()
                .find(|(at, opened)| *opened && *at >= changed_at)
                .copied()
                .expect("the gate opens");
            assert!(
                opened_at - changed_at <= Duration::from_secs(1) / idle_fps + one_frame,
                "change at frame {change}: opened {:?} later",
                opened_at - changed_at
            );
            let settled_at = Duration::from_millis(u64::from(moving_until) * 1000 / 30) + SETTLE;
            let active = judged
                .iter()
                .filter(|(at, _)| *at >= opened_at && *at < settled_at)
                .count();
            let camera_frames = (settled_at - opened_at).as_millis().div_ceil(1000 / 30 + 1);
            assert!(
                active as u128 >= camera_frames - 1,
                "{active} of {camera_frames} frames judged while moving"
            );
            // Settled again: back to idle_fps.
            let idle = judged.iter().filter(|(at, _)| *at > settled_at).count();
            let idle_time = Duration::from_secs(5) - settled_at;
            assert!(
                idle as f64 <= (idle_time.as_secs_f64() * idle_fps as f64).ceil() + 1.0,
                "{idle} frames judged in {idle_time:?} after settling"
            );
        }
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
    fn a_uniform_brightness_change_moves_no_cell() {
        let mut gate = gate(0);
        let dim = |offset: u32| {
            RgbImage::from_fn(640, 480, |x, y| {
                image::Rgb([
                    (x * 200 / 640 + offset) as u8,
                    (y * 200 / 480 + offset) as u8,
                    100,
                ])
            })
        };
        assert!(gate.changed(&dim(0)));
        // 40 levels everywhere is 0.16 per cell, above any cell threshold, yet no cell
        // differs from the median difference.
        let brighter = dim(40);
        assert!(!gate.changed(&brighter), "{}", gate.last_changed_area());
    }

    #[test]
    fn a_small_patch_opens_the_gate_unless_masked() {
        let frame = gradient(640, 480);
        // 60x60 pixels: 1.2% of the frame, 36 cells of 10x10 pixels.
        let patch = with_patch(&frame, (580, 420, 640, 480), 255);
        let mut gate = gate(0);
        assert!(gate.changed(&frame));
        assert!(gate.changed(&patch), "{}", gate.last_changed_area());
        let corner = CropRegion::new(0.85, 0.85, 0.15, 0.15).expect("valid region");
        let mut masked = MotionGate::new(&MotionConfig {
            mask: vec![corner],
            ..config(0)
        });
        assert!(masked.changed(&frame));
        assert!(!masked.changed(&patch), "{}", masked.last_changed_area());
        assert_eq!(masked.last_changed_area(), 0.0);
    }

    #[test]
    fn fewer_changed_cells_than_min_area_keep_the_gate_shut() {
        let frame = gradient(640, 480);
        // 10x10 pixels: one cell.
        let speck = with_patch(&frame, (300, 200, 310, 210), 255);
        let mut gate = gate(0);
        assert!(gate.changed(&frame));
        assert!(!gate.changed(&speck));
        assert_eq!(gate.last_changed_area(), 1.0 / GATE_CELLS as f32);
    }

    #[test]
    fn masks_count_the_cells_whose_centre_they_cover() {
        assert_eq!(watched_cell_count(&[]), GATE_CELLS);
        let left_half = CropRegion::new(0.0, 0.0, 0.5, 1.0).expect("valid region");
        assert_eq!(watched_cell_count(&[left_half]), GATE_CELLS / 2);
        let right_half = CropRegion::new(0.5, 0.0, 0.5, 1.0).expect("valid region");
        assert_eq!(watched_cell_count(&[left_half, right_half]), 0);
    }

    #[test]
    fn thumbnail_of_a_uniform_image_is_its_luma() {
        let image = RgbImage::from_pixel(100, 75, image::Rgb([200, 200, 200]));
        let mut thumbnail = Thumbnail::<32, 24>::new();
        thumbnail.update(&image);
        let out = thumbnail.luma();
        assert!(
            out.as_flattened().iter().all(|&v| v.abs_diff(200) <= 1),
            "{out:?}"
        );
    }

    #[test]
    fn sample_positions_stay_inside_the_image_and_cover_it() {
        for size in [1, 2, 31, 32, 33, 320, 1920] {
            let mut positions = [[0; SAMPLES_PER_AXIS]; 32];
            fill_axis(&mut positions, size);
            let positions = positions.as_flattened();
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
