//! A camera's `crop`: the part of the frame that is classified (a door, a driveway), cut out of
//! the decoded frame before the eval transform's resize and center crop.

use serde::{Deserialize, Serialize};

/// Slack for `x + w <= 1` and `y + h <= 1`, so `[0.7, 0, 0.3, 1]` is accepted although
/// 0.7 + 0.3 is not exactly 1 in binary floating point.
const SUM_TOLERANCE: f64 = 1e-9;

/// A rectangle of the frame as fractions of its width and height: `crop = [x, y, w, h]`, and the
/// motion gate's `mask` rectangles.
///
/// Checked when made or deserialized (each value in 0..=1, `w` and `h` above 0, `x + w` and
/// `y + h` at most 1), so every `CropRegion` in the program is valid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "[f64; 4]", into = "[f64; 4]")]
pub struct CropRegion {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
}

/// Why four numbers are not a [`CropRegion`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{values:?}: {problem}; expected [x, y, w, h] as fractions of the frame: each in 0..=1, \
     w and h above 0, x + w and y + h at most 1"
)]
pub struct InvalidCropRegion {
    values: [f64; 4],
    problem: String,
}

impl CropRegion {
    /// The region `[x, y, w, h]`, if valid.
    pub fn new(x: f64, y: f64, width: f64, height: f64) -> Result<Self, InvalidCropRegion> {
        let values = [x, y, width, height];
        let invalid = |problem: String| InvalidCropRegion { values, problem };
        for (name, value) in ["x", "y", "w", "h"].into_iter().zip(values) {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(format!("{name} = {value} is outside 0..=1")));
            }
        }
        for (name, value) in [("w", width), ("h", height)] {
            if value <= 0.0 {
                return Err(invalid(format!("{name} must be above 0")));
            }
        }
        for (sum, value) in [("x + w", x + width), ("y + h", y + height)] {
            if value > 1.0 + SUM_TOLERANCE {
                return Err(invalid(format!("{sum} = {value} is beyond the frame")));
            }
        }
        Ok(CropRegion {
            x,
            y,
            width,
            height,
        })
    }

    /// Whether the point `(x, y)`, as fractions of the frame, lies inside the region (its left
    /// and top edges included, its right and bottom edges not).
    pub fn contains(&self, x: f64, y: f64) -> bool {
        (self.x..self.x + self.width).contains(&x) && (self.y..self.y + self.height).contains(&y)
    }

    /// The region in pixels of a `width x height` frame. Edges are rounded to the nearest pixel
    /// (so regions that share an edge share it in pixels too) and kept inside the frame; the
    /// rectangle is at least 1x1 unless the frame is empty.
    pub(super) fn pixels(&self, width: u32, height: u32) -> PixelRect {
        let (x, width) = pixel_span(self.x, self.width, width);
        let (y, height) = pixel_span(self.y, self.height, height);
        PixelRect {
            x,
            y,
            width,
            height,
        }
    }

    /// The region's size in pixels in a `width x height` frame.
    pub(super) fn size(&self, width: u32, height: u32) -> (u32, u32) {
        let rect = self.pixels(width, height);
        (rect.width, rect.height)
    }

    /// Copies the region of `pixels` (packed RGB, `width x height`) into `out` and returns the
    /// region's size. Reuses `out`'s capacity: no allocation once it has held a region as large.
    pub(super) fn cut(
        &self,
        pixels: &[u8],
        width: u32,
        height: u32,
        out: &mut Vec<u8>,
    ) -> (u32, u32) {
        let rect = self.pixels(width, height);
        out.clear();
        if rect.width == 0 || rect.height == 0 {
            return (0, 0);
        }
        let stride = width as usize * 3;
        let row_start = rect.x as usize * 3;
        let row_len = rect.width as usize * 3;
        for row in pixels
            .chunks_exact(stride)
            .skip(rect.y as usize)
            .take(rect.height as usize)
        {
            out.extend_from_slice(&row[row_start..row_start + row_len]);
        }
        (rect.width, rect.height)
    }
}

impl TryFrom<[f64; 4]> for CropRegion {
    type Error = InvalidCropRegion;

    fn try_from([x, y, width, height]: [f64; 4]) -> Result<Self, Self::Error> {
        CropRegion::new(x, y, width, height)
    }
}

impl From<CropRegion> for [f64; 4] {
    fn from(region: CropRegion) -> Self {
        [region.x, region.y, region.width, region.height]
    }
}

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PixelRect {
    pub(super) x: u32,
    pub(super) y: u32,
    pub(super) width: u32,
    pub(super) height: u32,
}

/// `(start, length)` in pixels of the span `[start, start + length)` given as fractions of
/// `size` pixels.
fn pixel_span(start: f64, length: f64, size: u32) -> (u32, u32) {
    if size == 0 {
        return (0, 0);
    }
    let edge = |fraction: f64| {
        (fraction * f64::from(size))
            .round()
            .clamp(0.0, f64::from(size)) as u32
    };
    let first = edge(start).min(size - 1);
    let end = edge(start + length).max(first + 1);
    (first, end - first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(x: f64, y: f64, w: f64, h: f64) -> CropRegion {
        CropRegion::new(x, y, w, h).expect("valid region")
    }

    fn rect(x: u32, y: u32, width: u32, height: u32) -> PixelRect {
        PixelRect {
            x,
            y,
            width,
            height,
        }
    }

    #[test]
    fn fractions_become_pixel_rects() {
        assert_eq!(
            region(0.0, 0.0, 1.0, 1.0).pixels(640, 480),
            rect(0, 0, 640, 480)
        );
        assert_eq!(
            region(0.25, 0.5, 0.5, 0.5).pixels(640, 480),
            rect(160, 240, 320, 240)
        );
        // 0.7 + 0.3 is a hair off 1 in binary: still the right edge.
        assert_eq!(
            region(0.7, 0.0, 0.3, 1.0).pixels(1920, 1080),
            rect(1344, 0, 576, 1080)
        );
    }

    #[test]
    fn edges_round_to_the_nearest_pixel_so_neighbours_tile() {
        // 1/3 of 100 pixels: edges at 33.3 and 66.7 round to 33 and 67.
        let third = 1.0 / 3.0;
        let left = region(0.0, 0.0, third, 1.0).pixels(100, 10);
        let middle = region(third, 0.0, third, 1.0).pixels(100, 10);
        let right = region(2.0 * third, 0.0, third, 1.0).pixels(100, 10);
        assert_eq!(left, rect(0, 0, 33, 10));
        assert_eq!(middle, rect(33, 0, 34, 10));
        assert_eq!(right, rect(67, 0, 33, 10));
    }

    #[test]
    fn tiny_regions_keep_one_pixel_inside_the_frame() {
        assert_eq!(
            region(0.5, 0.5, 0.001, 0.001).pixels(100, 100),
            rect(50, 50, 1, 1)
        );
        // Both edges round to the frame's far edge: the last column and row.
        assert_eq!(
            region(0.9999, 0.9999, 0.0001, 0.0001).pixels(100, 100),
            rect(99, 99, 1, 1)
        );
        assert_eq!(region(0.2, 0.2, 0.5, 0.5).pixels(1, 1), rect(0, 0, 1, 1));
        assert_eq!(region(0.2, 0.2, 0.5, 0.5).pixels(0, 0), rect(0, 0, 0, 0));
    }

    #[test]
    fn invalid_regions_say_what_is_wrong() {
        let cases = [
            ([-0.1, 0.0, 0.5, 0.5], "x = -0.1 is outside 0..=1"),
            ([0.0, 1.5, 0.5, 0.5], "y = 1.5 is outside 0..=1"),
            ([0.0, 0.0, 0.0, 0.5], "w must be above 0"),
            ([0.0, 0.0, 0.5, 0.0], "h must be above 0"),
            ([0.75, 0.0, 0.5, 0.5], "x + w = 1.25 is beyond the frame"),
            ([0.0, 0.5, 0.5, 0.75], "y + h = 1.25 is beyond the frame"),
            ([f64::NAN, 0.0, 0.5, 0.5], "x = NaN"),
        ];
        for (values, problem) in cases {
            let error = CropRegion::try_from(values).unwrap_err().to_string();
            assert!(error.contains(problem), "{values:?}: {error}");
            assert!(error.contains("[x, y, w, h]"), "{error}");
        }
    }

    #[test]
    fn cut_copies_the_region_rows() {
        // 4x3 image whose red channel is the pixel index.
        let pixels: Vec<u8> = (0..12u8).flat_map(|i| [i, 0, 0]).collect();
        let mut out = Vec::new();
        let size = region(0.25, 1.0 / 3.0, 0.5, 2.0 / 3.0).cut(&pixels, 4, 3, &mut out);
        assert_eq!(size, (2, 2));
        let red: Vec<u8> = out.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(red, [5, 6, 9, 10]);
        // An empty frame has an empty region.
        assert_eq!(region(0.0, 0.0, 1.0, 1.0).cut(&[], 0, 0, &mut out), (0, 0));
        assert!(out.is_empty());
    }
}
