//! Data augmentation: random views of a training picture, so a head learns the class and not
//! where, how large or how bright it happened to be in the few pictures a user labelled.
//!
//! Every view is one pass over the output pixels: each is mapped back through a random
//! resized crop, a horizontal flip (optional: some states are not mirror-symmetric), a small
//! rotation and translation, sampled bilinearly (edges clamped), then jittered in brightness,
//! contrast and saturation. The output is square (the preprocess `resize` side) so the eval
//! transform's center crop sees a whole augmented view.

use image::{Rgb, RgbImage};
use serde::Serialize;

use crate::model::SplitMix;

/// How strongly views vary. The defaults follow torchvision's usual fine-tuning recipe,
/// milder in scale (a fixed camera sees its scene at one distance).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Augmentation {
    /// Smallest share of the picture's area a random crop keeps (`RandomResizedCrop`'s
    /// scale), in `(0, 1]`.
    pub min_scale: f32,
    /// Aspect ratios of the crop range over `[1/max_aspect, max_aspect]`.
    pub max_aspect: f32,
    /// Mirror half of the views left-right.
    pub flip: bool,
    /// Largest rotation either way, in degrees.
    pub max_rotation_deg: f32,
    /// Largest shift either way, as a share of the output side.
    pub max_translation: f32,
    /// Brightness, contrast and saturation factors range over `[1 - j, 1 + j]`.
    pub color_jitter: f32,
}

impl Default for Augmentation {
    fn default() -> Self {
        Self {
            min_scale: 0.5,
            max_aspect: 4.0 / 3.0,
            flip: true,
            max_rotation_deg: 10.0,
            max_translation: 0.1,
            color_jitter: 0.4,
        }
    }
}

/// One random view's parameters, drawn by [`Augmentation::draw`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct View {
    /// The crop in source pixels: left, top, width, height.
    crop: [f32; 4],
    flip: bool,
    rotation_rad: f32,
    /// Shift of the output, as a share of its side.
    translation: [f32; 2],
    brightness: f32,
    contrast: f32,
    saturation: f32,
}

impl Augmentation {
    /// Draws a view of a `width x height` picture.
    pub(crate) fn draw(&self, rng: &mut SplitMix, width: u32, height: u32) -> View {
        let (w, h) = (width as f32, height as f32);
        let uniform = |rng: &mut SplitMix, low: f32, high: f32| low + (high - low) * rng.next_f32();
        // RandomResizedCrop: area share and log-uniform aspect; fall back to the whole picture
        // when the drawn crop does not fit (as torchvision does after its retries).
        let mut crop = [0.0, 0.0, w, h];
        for _ in 0..10 {
            let area = w * h * uniform(rng, self.min_scale.clamp(0.01, 1.0), 1.0);
            let log_aspect = self.max_aspect.max(1.0).ln();
            let aspect = uniform(rng, -log_aspect, log_aspect).exp();
            let (cw, ch) = ((area * aspect).sqrt(), (area / aspect).sqrt());
            if cw <= w && ch <= h {
                crop = [uniform(rng, 0.0, w - cw), uniform(rng, 0.0, h - ch), cw, ch];
                break;
            }
        }
        let jitter =
            |rng: &mut SplitMix| uniform(rng, 1.0 - self.color_jitter, 1.0 + self.color_jitter);
        let shift = self.max_translation;
        View {
            crop,
            flip: self.flip && rng.next_f32() < 0.5,
            rotation_rad: uniform(rng, -self.max_rotation_deg, self.max_rotation_deg).to_radians(),
            translation: [uniform(rng, -shift, shift), uniform(rng, -shift, shift)],
            brightness: jitter(rng),
            contrast: jitter(rng),
            saturation: jitter(rng),
        }
    }
}

impl View {
    /// The identity view of a `width x height` picture: the whole picture, unchanged colours.
    #[cfg(test)]
    fn identity(width: u32, height: u32) -> View {
        View {
            crop: [0.0, 0.0, width as f32, height as f32],
            flip: false,
            rotation_rad: 0.0,
            translation: [0.0, 0.0],
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
        }
    }

    /// Only the horizontal mirror of the whole picture.
    #[cfg(test)]
    fn mirror(width: u32, height: u32) -> View {
        View {
            flip: true,
            ..View::identity(width, height)
        }
    }

    /// Renders the view of `source` into `out`, `side x side` pixels (its allocation reused).
    pub(crate) fn render(&self, source: &RgbImage, side: u32, out: &mut RgbImage) {
        if out.dimensions() != (side, side) {
            *out = RgbImage::new(side, side);
        }
        let (sw, sh) = source.dimensions();
        if sw == 0 || sh == 0 {
            return;
        }
        let [left, top, cw, ch] = self.crop;
        let s = side as f32;
        let (sin, cos) = self.rotation_rad.sin_cos();
        let (tx, ty) = (self.translation[0] * s, self.translation[1] * s);
        let centre = s / 2.0;
        let mean_luma = if self.contrast != 1.0 {
            mean_luma(source)
        } else {
            0.0
        };
        for (x, y, pixel) in out.enumerate_pixels_mut() {
            // Output pixel centre → undo the shift and rotation about the centre → crop
            // coordinates (flipped if asked) → source pixel coordinates.
            let (px, py) = (x as f32 + 0.5 - centre - tx, y as f32 + 0.5 - centre - ty);
            let (rx, ry) = (cos * px + sin * py + centre, -sin * px + cos * py + centre);
            let u = if self.flip { s - rx } else { rx } / s;
            let v = ry / s;
            let sample = bilinear(source, left + u * cw - 0.5, top + v * ch - 0.5);
            *pixel = self.colour(sample, mean_luma);
        }
    }

    /// Brightness, then contrast about the picture's mean luma, then saturation about each
    /// pixel's luma (torchvision's `ColorJitter` formulas, in a fixed order).
    fn colour(&self, [r, g, b]: [f32; 3], mean_luma: f32) -> Rgb<u8> {
        let mut c = [r, g, b].map(|v| v * self.brightness);
        if self.contrast != 1.0 {
            c = c.map(|v| {
                mean_luma * self.brightness + (v - mean_luma * self.brightness) * self.contrast
            });
        }
        if self.saturation != 1.0 {
            let luma = luma(c);
            c = c.map(|v| luma + (v - luma) * self.saturation);
        }
        Rgb(c.map(|v| v.round().clamp(0.0, 255.0) as u8))
    }
}

fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

fn mean_luma(image: &RgbImage) -> f32 {
    let sum: f64 = image
        .pixels()
        .map(|p| luma(p.0.map(f32::from)) as f64)
        .sum();
    (sum / (image.width() as f64 * image.height() as f64).max(1.0)) as f32
}

/// Bilinear sample at source coordinates (pixel centres at integers), edges clamped.
fn bilinear(image: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x, y) = (x.clamp(0.0, (w - 1) as f32), y.clamp(0.0, (h - 1) as f32));
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |x: i64, y: i64| image.get_pixel(x as u32, y as u32).0.map(f32::from);
    let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
    std::array::from_fn(|i| {
        let top = a[i] + (b[i] - a[i]) * fx;
        let bottom = c[i] + (d[i] - c[i]) * fx;
        top + (bottom - top) * fy
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x * 7) as u8, (y * 5) as u8, 100])
        })
    }

    #[test]
    fn identity_view_of_a_square_picture_reproduces_it() {
        let source = gradient(32, 32);
        let mut out = RgbImage::default();
        View::identity(32, 32).render(&source, 32, &mut out);
        assert_eq!(out, source);
    }

    #[test]
    fn mirror_view_flips_columns() {
        let source = gradient(32, 32);
        let mut out = RgbImage::default();
        View::mirror(32, 32).render(&source, 32, &mut out);
        for (x, y, pixel) in out.enumerate_pixels() {
            assert_eq!(pixel, source.get_pixel(31 - x, y), "({x}, {y})");
        }
    }

    #[test]
    fn brightness_scales_and_saturation_zero_is_grey() {
        let view = View {
            brightness: 0.5,
            saturation: 0.0,
            ..View::identity(1, 1)
        };
        let Rgb([r, g, b]) = view.colour([200.0, 100.0, 50.0], 0.0);
        assert_eq!((r, g), (g, b), "no saturation: one grey level");
        let expected = luma([100.0, 50.0, 25.0]).round() as u8;
        assert_eq!(r, expected);
    }

    #[test]
    fn views_are_seeded_and_stay_in_bounds() {
        let augmentation = Augmentation::default();
        let draw = |seed| {
            let mut rng = SplitMix::new(seed);
            (0..20)
                .map(|_| augmentation.draw(&mut rng, 160, 120))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        for view in draw(5) {
            let [left, top, w, h] = view.crop;
            assert!(
                left >= 0.0 && top >= 0.0 && left + w <= 160.0 + 1e-3 && top + h <= 120.0 + 1e-3
            );
            assert!(w * h >= 0.5 * 160.0 * 120.0 - 1.0, "{view:?}");
            assert!(view.rotation_rad.abs() <= 10f32.to_radians() + 1e-6);
        }
        let no_flip = Augmentation {
            flip: false,
            ..augmentation
        };
        let mut rng = SplitMix::new(9);
        assert!((0..50).all(|_| !no_flip.draw(&mut rng, 10, 10).flip));
    }
}
