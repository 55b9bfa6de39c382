//! Test-time augmentation: the views of one decoded image a classifier averages over
//! (`[model] tta`, `eval --tta`, `classify --tta`).
//!
//! - `none`: the eval transform only (one pass);
//! - `flip`: it and its mirror image (two passes);
//! - `flip+crops`: those and torchvision's four corner crops (`FiveCrop` without its centre,
//!   which is the plain view): the short side resized to `resize`, a `crop x crop` square
//!   taken at each corner (six passes).
//!
//! Every view costs one backbone pass, so the cost grows with the number of views. The
//! probabilities of the views are averaged with [`crate::postprocess::MeanProbabilities`].

use std::fmt;
use std::str::FromStr;

use image::RgbImage;

/// Which views of each image are classified and averaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Tta {
    /// The eval transform only.
    #[default]
    None,
    /// The image and its mirror image.
    Flip,
    /// The image, its mirror image and the four corner crops.
    FlipCrops,
}

/// One view of an image; [`crate::preprocess::Preprocessor::view`] writes its tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtaView {
    /// The eval transform (resize, center crop).
    Plain,
    /// The eval transform mirrored left-right.
    Mirror,
    /// The `crop x crop` square at one corner of the resized image: `(right, bottom)`.
    Corner(bool, bool),
}

impl Tta {
    /// Every mode; parsing a name matches against this list.
    pub const ALL: [Tta; 3] = [Tta::None, Tta::Flip, Tta::FlipCrops];

    /// The name in configs and on the command line: `none`, `flip` or `flip+crops`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::Flip => "flip",
            Tta::FlipCrops => "flip+crops",
        }
    }

    /// The views classified, the plain view first.
    pub fn views(self) -> &'static [TtaView] {
        use TtaView::*;
        match self {
            Tta::None => &[Plain],
            Tta::Flip => &[Plain, Mirror],
            Tta::FlipCrops => &[
                Plain,
                Mirror,
                Corner(false, false),
                Corner(true, false),
                Corner(false, true),
                Corner(true, true),
            ],
        }
    }
}

impl fmt::Display for Tta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a TTA name that is not `none`, `flip` or `flip+crops`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown tta `{0}` (expected none, flip or flip+crops)")]
pub struct UnknownTta(pub String);

impl FromStr for Tta {
    type Err = UnknownTta;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tta::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownTta(s.to_string()))
    }
}

impl TryFrom<String> for Tta {
    type Error = UnknownTta;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<Tta> for &'static str {
    fn from(tta: Tta) -> Self {
        tta.as_str()
    }
}

/// Copies `image` mirrored left-right into `out` (its allocation reused). The image, not the
/// tensor, is mirrored: the center crop's rounding may be off-centre by a pixel, and a
/// mirror-symmetric picture must give exactly its plain result.
pub(super) fn mirror(image: &RgbImage, out: &mut RgbImage) {
    let (width, height) = image.dimensions();
    let mut pixels = std::mem::take(out).into_raw();
    pixels.clear();
    pixels.extend_from_slice(image.as_raw());
    for row in pixels.chunks_exact_mut(3 * width.max(1) as usize) {
        row.reverse();
        // Reversing the bytes reversed each pixel's channels too: put them back.
        for pixel in row.chunks_exact_mut(3) {
            pixel.reverse();
        }
    }
    // `pixels` holds the image's bytes, so this never falls back.
    *out = RgbImage::from_raw(width, height, pixels).unwrap_or_default();
}

/// Copies the square at one corner of `image` that becomes a `crop x crop` corner of the image
/// resized to `resize` on its short side, into `out` (its allocation reused).
pub(super) fn cut_corner(
    image: &RgbImage,
    (right, bottom): (bool, bool),
    resize: u32,
    crop: u32,
    out: &mut RgbImage,
) {
    let (width, height) = image.dimensions();
    let short = width.min(height);
    // The corner square in source pixels: crop / resize of the short side.
    let side = ((u64::from(short) * u64::from(crop) + u64::from(resize) / 2)
        / u64::from(resize.max(1)))
    .clamp(1, u64::from(short.max(1))) as u32;
    let left = if right { width.saturating_sub(side) } else { 0 };
    let top = if bottom {
        height.saturating_sub(side)
    } else {
        0
    };
    let side = side.min(width).min(height);
    let mut pixels = std::mem::take(out).into_raw();
    pixels.clear();
    let row_bytes = 3 * side as usize;
    for y in top..top + side {
        let start = 3 * (y as usize * width as usize + left as usize);
        pixels.extend_from_slice(&image.as_raw()[start..start + row_bytes]);
    }
    // `pixels` holds side * side * 3 bytes, so this never falls back.
    *out = RgbImage::from_raw(side, side, pixels).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for tta in Tta::ALL {
            assert_eq!(tta.as_str().parse::<Tta>().unwrap(), tta);
        }
        let err = "crops".parse::<Tta>().unwrap_err();
        assert!(err.to_string().contains("flip+crops"), "{err}");
        assert_eq!(Tta::default().views(), &[TtaView::Plain]);
        assert_eq!(Tta::FlipCrops.views().len(), 6);
    }

    #[test]
    fn mirror_flips_columns_and_keeps_channels() {
        let image = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = RgbImage::default();
        mirror(&image, &mut out);
        assert_eq!(out, image::imageops::flip_horizontal(&image));
    }

    #[test]
    fn corners_are_the_crop_share_of_the_short_side() {
        let image = RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let mut out = RgbImage::default();
        cut_corner(&image, (true, true), 8, 6, &mut out);
        assert_eq!(out.dimensions(), (6, 6));
        assert_eq!(out.get_pixel(0, 0).0, [10, 2, 0]);
        cut_corner(&image, (false, false), 8, 6, &mut out);
        assert_eq!(out.get_pixel(5, 5).0, [5, 5, 0]);
    }
}
