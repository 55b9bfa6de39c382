//! Frames to normalized tensors, identical to torchvision's ImageNet eval transform.
//!
//! [`Preprocessor::decode`] turns any [`Frame`] into an RGB image, cut to the camera's
//! [`CropRegion`] when it has one; [`Preprocessor::normalize`] applies what users of the
//! torchvision weights run on a PIL image:
//!
//! ```text
//! Resize(resize) -> CenterCrop(crop) -> ToTensor() -> Normalize(mean, std)
//! ```
//!
//! The resize reproduces Pillow's bilinear filter bit for bit (fixed-point triangle filter whose
//! support grows with the downscale factor, i.e. antialiased), the crop uses torchvision's offset
//! rounding (and its zero padding when the crop is larger than the image), and normalization is
//! done in `f32` in the same order as torch. For lossless inputs the output equals torchvision's
//! exactly; JPEG inputs differ only by what two JPEG decoders disagree on.
//!
//! That is with `exact = true` (what `classify`, `eval` and `train` use). The daemon's default,
//! `exact = false`, decodes a JPEG with libjpeg-turbo at the smallest DCT scale (1/2, 1/4, 1/8)
//! whose short side (of the crop region, if any) still covers `resize`, as Pillow's `draft()`
//! does, then applies the same transform; [`Preprocessor::decode_if_changed`] lets the motion
//! gate judge a JPEG frame on its 1/8-scale decode before any larger one. YUYV and NV12 frames
//! that [`Preprocessor::load`] takes in fast mode are not converted to a full-size RGB image:
//! [`Preprocessor::normalize`] filters their Y, Cb and Cr planes with the same weights and
//! converts only the output pixels (module `yuv`: within one level of the RGB path for colours
//! inside the RGB cube; chroma siting and the clamping exception are explained there).
//!
//! Raw camera formats are converted with BT.601 limited-range ("TV range") YCbCr coefficients,
//! which is what UVC cameras send for YUYV and NV12.
//!
//! [`Preprocessor::view`] gives the test-time augmented views ([`Tta`]) of the same image.
//!
//! All buffers (decoded RGB, the cut region, a raw frame's copy, intermediate rows, output
//! tensor) are kept and
//! reused, so a stream of same-sized frames does not allocate after the first one, except inside
//! the decoders of compressed formats (the `image` crate's, libjpeg's).

mod crop;
mod decode;
mod mjpeg;
mod resample;
mod tta;
mod yuv;

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::capture::{Frame, LumaPlane, MotionGate, PixelFormat};
use crate::sysexits::Sysexit;
use crop::PixelRect;
use decode::FrameDecoder;
use yuv::{YuvFrame, YuvLayout, YuvResampler};

pub use crop::{CropRegion, InvalidCropRegion};
use resample::{CropResampler, NormalizeTable};
pub use tta::{Tta, TtaView, UnknownTta};
pub(crate) use yuv::{rgb_to_nv12, rgb_to_yuyv};

/// Parameters of the eval transform; the defaults are torchvision's ImageNet values.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Length the shorter image side is resized to (torchvision `Resize(resize)`).
    pub resize: u32,
    /// Side of the square center crop taken from the resized image; the output is `crop x crop`.
    pub crop: u32,
    /// Per-channel (R, G, B) mean subtracted from pixel values scaled to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation the centered values are divided by.
    pub std: [f32; 3],
    /// Decode JPEG frames at full size, as torchvision does (`true`), or at the smallest
    /// DCT scale (1/2, 1/4, 1/8) whose short side still covers `resize` (`false`, like
    /// Pillow's `draft()`): several times cheaper, and Top-3 scores move by a few tenths of a
    /// percentage point. With `false`, YUYV and NV12 frames are also resized straight from their
    /// planes instead of converted to RGB first ([`Preprocessor::load`]). The daemon's default
    /// is `false`; `classify`, `eval` and `train`, which reproduce torchvision, always run exact.
    pub exact: bool,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            exact: false,
        }
    }
}

/// Largest accepted `resize` and `crop`: far above any classifier input, small enough that a
/// typo cannot make the preprocessor allocate gigabytes.
pub const MAX_SIDE: u32 = 8192;

impl PreprocessConfig {
    /// torchvision's eval transform for a model taking `size x size` inputs: the shorter side
    /// resized to `size * 256 / 224`, then the center `size x size` crop.
    pub fn for_input_size(size: u32) -> Self {
        Self {
            resize: size * 256 / 224,
            crop: size,
            exact: true,
            ..Self::default()
        }
    }

    /// Checks the values a config file could get wrong; call it when loading configuration.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let (key, problem) = if !(1..=MAX_SIDE).contains(&self.resize) {
            (
                "preprocess.resize",
                format!("resize = {} must be between 1 and {MAX_SIDE}", self.resize),
            )
        } else if !(1..=MAX_SIDE).contains(&self.crop) {
            (
                "preprocess.crop",
                format!("crop = {} must be between 1 and {MAX_SIDE}", self.crop),
            )
        } else if let Some(mean) = self.mean.iter().find(|m| !m.is_finite()) {
            (
                "preprocess.mean",
                format!("mean contains {mean}, which is not a finite number"),
            )
        } else if let Some(std) = self.std.iter().find(|s| !s.is_finite() || **s <= 0.0) {
            (
                "preprocess.std",
                format!("std contains {std}, but every std must be a finite number above 0"),
            )
        } else {
            return Ok(());
        };
        Err(PreprocessError::InvalidConfig { key, problem })
    }
}

/// What went wrong turning a frame into a tensor.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// An image file could not be read from disk.
    #[error("cannot read image file {}", path.display())]
    ReadFile {
        /// The image file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The frame carries no bytes at all.
    #[error("frame from {origin} is empty ({} {width}x{height}, 0 bytes)", format_name(*format))]
    EmptyFrame {
        /// Where the frame came from ([`Frame::origin`]).
        origin: String,
        /// The frame's declared pixel format.
        format: PixelFormat,
        /// The frame's declared width in pixels (0 for encoded files).
        width: u32,
        /// The frame's declared height in pixels (0 for encoded files).
        height: u32,
    },
    /// A JPEG frame or file without its end-of-image marker: cut off by the camera or on its way.
    #[error(
        "JPEG from {origin} is cut off ({bytes} bytes, no end-of-image marker): skipped rather \
         than classified half grey"
    )]
    Truncated {
        /// Where the frame came from ([`Frame::origin`]).
        origin: String,
        /// Bytes it has.
        bytes: usize,
    },
    /// A raw frame whose byte count does not match its format and dimensions.
    #[error(
        "frame from {origin} has {actual} bytes, but {} at {width}x{height} needs {expected}",
        format_name(*format)
    )]
    WrongBufferSize {
        /// Where the frame came from ([`Frame::origin`]).
        origin: String,
        /// The frame's pixel format.
        format: PixelFormat,
        /// The frame's declared width in pixels.
        width: u32,
        /// The frame's declared height in pixels.
        height: u32,
        /// Bytes the format needs at that size.
        expected: u64,
        /// Bytes the frame carries.
        actual: usize,
    },
    /// A frame layout this module does not handle.
    #[error("frame from {origin} ({} {width}x{height}) is unsupported: {problem}", format_name(*format))]
    Unsupported {
        /// Where the frame came from ([`Frame::origin`]).
        origin: String,
        /// The frame's pixel format.
        format: PixelFormat,
        /// The frame's declared width in pixels.
        width: u32,
        /// The frame's declared height in pixels.
        height: u32,
        /// What about the layout is not handled.
        problem: &'static str,
    },
    /// Compressed bytes that do not decode: corrupt, truncated or of an unknown format.
    #[error("cannot decode {} from {origin}", format_name(*format))]
    Decode {
        /// Where the frame came from ([`Frame::origin`]).
        origin: String,
        /// The frame's pixel format ([`PixelFormat::Mjpeg`] or [`PixelFormat::Encoded`]).
        format: PixelFormat,
        /// The `image` crate's decoding error.
        #[source]
        source: image::ImageError,
    },
    /// A [`PreprocessConfig`] value out of range; `key` is its path, e.g. `preprocess.crop`.
    #[error("invalid preprocess configuration: {problem}")]
    InvalidConfig {
        /// Path of the offending key, e.g. `preprocess.crop`.
        key: &'static str,
        /// The value and the accepted range.
        problem: String,
    },
}

impl PreprocessError {
    /// The kind of failure, for the process exit status.
    pub fn sysexit(&self) -> Sysexit {
        match self {
            Self::ReadFile { .. } => Sysexit::NoInput,
            Self::InvalidConfig { .. } => Sysexit::Config,
            _ => Sysexit::DataErr,
        }
    }
}

/// Human name of a pixel format for error messages.
fn format_name(format: PixelFormat) -> &'static str {
    match format {
        PixelFormat::Rgb24 => "RGB24 frame",
        PixelFormat::Bgr24 => "BGR24 frame",
        PixelFormat::Gray => "GREY frame",
        PixelFormat::Yuyv => "YUYV frame",
        PixelFormat::Nv12 => "NV12 frame",
        PixelFormat::Mjpeg => "MJPEG frame",
        PixelFormat::Encoded => "encoded image",
    }
}

/// Decodes frames and applies the eval transform, reusing its buffers from frame to frame.
pub struct Preprocessor {
    config: PreprocessConfig,
    normalize_table: NormalizeTable,
    decoder: FrameDecoder,
    resampler: CropResampler,
    region: Option<CropRegion>,
    /// The whole decoded frame, when `region` is cut out of it into `rgb`.
    whole: Vec<u8>,
    /// The motion gate's thumbnail of a JPEG frame (1/8 scale, the region cut out).
    thumbnail: RgbImage,
    /// Frames decoded at the classified size (counted for the gate's tests and statistics).
    full_decodes: u64,
    /// The image that is classified: the decoded frame, or its region.
    rgb: RgbImage,
    /// A test-time view (mirrored or corner) of `rgb`.
    view: RgbImage,
    /// The corner views' own resampler: their size differs from the frame's, and one
    /// resampler would recompute (and allocate) its filters at every switch.
    corner_resampler: CropResampler,
    /// The last frame's bytes, when [`Preprocessor::load`] kept a YUYV or NV12 frame as it came.
    raw: Vec<u8>,
    /// Layout and size of the frame in `raw`; `None` when the last frame was decoded to `rgb`.
    raw_frame: Option<(YuvLayout, u32, u32)>,
    /// Whether `rgb` holds the conversion of `raw` (done only when asked for).
    raw_converted: bool,
    /// Resamples `raw` straight from its planes.
    yuv_resampler: YuvResampler,
    tensor: Vec<f32>,
}

impl Preprocessor {
    /// Creates a preprocessor and allocates its output tensor.
    ///
    /// Expects a config that passed [`PreprocessConfig::validate`]; an unvalidated one does not
    /// panic, but a zero `resize` gives all-padding output and a zero `std` gives infinities.
    pub fn new(config: PreprocessConfig) -> Self {
        let crop = config.crop as usize;
        Self {
            normalize_table: NormalizeTable::new(&config.mean, &config.std),
            tensor: vec![0.0; 3 * crop * crop],
            config,
            decoder: FrameDecoder::default(),
            resampler: CropResampler::default(),
            region: None,
            whole: Vec::new(),
            thumbnail: RgbImage::default(),
            full_decodes: 0,
            rgb: RgbImage::default(),
            view: RgbImage::default(),
            corner_resampler: CropResampler::default(),
            raw: Vec::new(),
            raw_frame: None,
            raw_converted: false,
            yuv_resampler: YuvResampler::default(),
        }
    }

    /// Classify only `region` of each frame (a camera's `crop`): [`Preprocessor::decode`] cuts
    /// it out of the decoded frame, before the resize and center crop. `None` keeps the whole
    /// frame.
    pub fn with_region(mut self, region: Option<CropRegion>) -> Self {
        self.region = region;
        self
    }

    /// Decodes/converts any frame to RGB and cuts out the region if one is set (buffers
    /// reused). Errors name `frame.origin` and the problem.
    ///
    /// Compressed frames (MJPEG, encoded files) take their size from the data, not from
    /// `frame.width`/`frame.height`. After an error the decoded image is empty (0x0).
    pub fn decode(&mut self, frame: &Frame) -> Result<&RgbImage, PreprocessError> {
        self.full_decodes += 1;
        self.raw_frame = None;
        let mut pixels = std::mem::take(&mut self.rgb).into_raw();
        let (resize, region) = (self.config.resize, self.region);
        // Fast mode: the classified image (the region, if any) keeps its short side >= resize.
        let large_enough = move |width, height| {
            let (width, height) = region.map_or((width, height), |r| r.size(width, height));
            width.min(height) >= resize
        };
        let large_enough: Option<&dyn Fn(u32, u32) -> bool> =
            (!self.config.exact).then_some(&large_enough);
        let decoded = match &self.region {
            None => self.decoder.decode(frame, &mut pixels, large_enough),
            Some(region) => self
                .decoder
                .decode(frame, &mut self.whole, large_enough)
                .map(|(width, height)| region.cut(&self.whole, width, height, &mut pixels)),
        };
        let (width, height) = *decoded.as_ref().unwrap_or(&(0, 0));
        if decoded.is_err() {
            pixels.clear();
        }
        // `pixels` holds width * height * 3 bytes (decoded or cut), so this never falls back.
        self.rgb = RgbImage::from_raw(width, height, pixels).unwrap_or_default();
        decoded.map(|_| &self.rgb)
    }

    /// Takes `frame` as the one to classify: [`Preprocessor::decode`], except for YUYV and NV12
    /// frames in fast mode (`exact = false`). Their bytes are only checked and copied (into a
    /// reused buffer); [`Preprocessor::normalize`] and the plain view resample them straight from
    /// their planes, with no full-size RGB image, within one level of the RGB path (see the `yuv`
    /// module), and the RGB image is converted only if [`Preprocessor::decoded`] or another
    /// view asks for it.
    pub fn load(&mut self, frame: &Frame) -> Result<(), PreprocessError> {
        if self.config.exact {
            return self.decode(frame).map(drop);
        }
        match decode::yuv_layout(frame) {
            Ok(Some(layout)) => {
                self.full_decodes += 1;
                self.raw.clear();
                self.raw.extend_from_slice(&frame.data);
                self.raw_frame = Some((layout, frame.width, frame.height));
                self.raw_converted = false;
                Ok(())
            }
            // Other formats, and the errors again, the way `decode` gives them.
            Ok(None) | Err(_) => self.decode(frame).map(drop),
        }
    }

    /// Converts the frame [`Preprocessor::load`] kept raw to RGB (its region cut out) in `rgb`,
    /// unless that is done already.
    fn convert_raw(&mut self) {
        let Some((layout, width, height)) = self.raw_frame else {
            return;
        };
        if self.raw_converted {
            return;
        }
        let frame = YuvFrame {
            layout,
            data: &self.raw,
            width,
            height,
        };
        let mut pixels = std::mem::take(&mut self.rgb).into_raw();
        let (width, height) = match &self.region {
            None => {
                decode::yuv_to_rgb(frame, &mut pixels);
                (width, height)
            }
            Some(region) => {
                decode::yuv_to_rgb(frame, &mut self.whole);
                region.cut(&self.whole, width, height, &mut pixels)
            }
        };
        // `pixels` holds width * height * 3 bytes (converted or cut), so this never falls back.
        self.rgb = RgbImage::from_raw(width, height, pixels).unwrap_or_default();
        self.raw_converted = true;
    }

    /// The eval transform of the frame [`Preprocessor::load`] kept raw, straight from its
    /// planes; `false` when the last frame was decoded to RGB instead.
    fn normalize_raw(&mut self) -> bool {
        let Some((layout, width, height)) = self.raw_frame else {
            return false;
        };
        let region = self.region_pixels(width, height);
        let frame = YuvFrame {
            layout,
            data: &self.raw,
            width,
            height,
        };
        self.yuv_resampler.resize_crop_normalize(
            frame,
            region,
            (self.config.resize, self.config.crop),
            &self.normalize_table,
            &mut self.tensor,
        );
        true
    }

    /// The classified part of a `width x height` frame: the region, or all of it.
    fn region_pixels(&self, width: u32, height: u32) -> PixelRect {
        let whole = PixelRect {
            x: 0,
            y: 0,
            width,
            height,
        };
        self.region
            .map_or(whole, |region| region.pixels(width, height))
    }

    /// Decodes `frame` only if `gate` finds the scene changed (or `force`), and says whether
    /// it did: the frame is then to be classified.
    ///
    /// In fast mode (`exact = false`) with the gate on, a JPEG frame is judged on its 1/8-scale
    /// decode (DC coefficients only, region cut out), so a frame of an unchanged scene is never
    /// decoded at full size, and a YUYV or NV12 frame on its own luma
    /// ([`MotionGate::changed_luma`]), then [`Preprocessor::load`]ed if classified. Other
    /// frames are decoded and judged as they are. After `false`,
    /// [`Preprocessor::decoded`] still holds the last decoded (classified) image.
    pub fn decode_if_changed(
        &mut self,
        frame: &Frame,
        gate: &mut MotionGate,
        force: bool,
    ) -> Result<bool, PreprocessError> {
        if !gate.is_enabled() {
            self.load(frame)?;
            // A disabled gate says "classify" without looking at the image.
            return Ok(gate.changed(&self.rgb) || force);
        }
        if !self.config.exact {
            if let Ok(Some(layout)) = decode::yuv_layout(frame) {
                // Judged on the frame's own luma; copied (`load`) only when classified, so
                // `decoded` keeps the last classified image.
                let (width, height) = (frame.width, frame.height);
                let region = self.region_pixels(width, height);
                let step = match layout {
                    YuvLayout::Yuyv => 2,
                    YuvLayout::Nv12 => 1,
                };
                let luma = LumaPlane {
                    data: &frame.data,
                    stride: width as usize * step,
                    step,
                    origin: (region.x as usize, region.y as usize),
                    size: (region.width, region.height),
                };
                let changed = gate.changed_luma(&luma) || force;
                if changed {
                    self.load(frame)?;
                }
                return Ok(changed);
            }
        }
        if self.config.exact || !frame.is_jpeg() {
            let rgb = self.decode(frame)?;
            return Ok(gate.changed(rgb) || force);
        }
        let mut pixels = std::mem::take(&mut self.thumbnail).into_raw();
        let smallest: &dyn Fn(u32, u32) -> bool = &|_, _| true;
        let decoded = match &self.region {
            None => self.decoder.decode(frame, &mut pixels, Some(smallest)),
            Some(region) => self
                .decoder
                .decode(frame, &mut self.whole, Some(smallest))
                .map(|(width, height)| region.cut(&self.whole, width, height, &mut pixels)),
        };
        let (width, height) = *decoded.as_ref().unwrap_or(&(0, 0));
        if decoded.is_err() {
            pixels.clear();
        }
        self.thumbnail = RgbImage::from_raw(width, height, pixels).unwrap_or_default();
        decoded?;
        let changed = gate.changed(&self.thumbnail) || force;
        if changed {
            self.decode(frame)?;
        }
        Ok(changed)
    }

    /// How many frames [`Preprocessor::decode`] (directly or through
    /// [`Preprocessor::decode_if_changed`]) decoded at the classified size.
    pub fn full_decodes(&self) -> u64 {
        self.full_decodes
    }

    /// The image the last [`Preprocessor::decode`] or [`Preprocessor::load`] produced (the
    /// region, if one is set): what [`Preprocessor::normalize`] transforms. Empty (0x0) before
    /// the first decode and after a failed one. A frame `load` kept raw is converted here, once.
    pub fn decoded(&mut self) -> &RgbImage {
        self.convert_raw();
        &self.rgb
    }

    /// torchvision eval transform of the last decoded image → NCHW f32 (`1 x 3 x crop x crop`).
    ///
    /// The slice is the same buffer on every call. Before the first successful decode (or after
    /// a failed one) it holds the transform of an empty image: all padding.
    pub fn normalize(&mut self) -> &[f32] {
        if self.normalize_raw() {
            return &self.tensor;
        }
        // Moved out and back (no copy) so `transform` can borrow the preprocessor mutably.
        let rgb = std::mem::take(&mut self.rgb);
        self.transform(&rgb);
        self.rgb = rgb;
        &self.tensor
    }

    /// The eval transform of `image` instead of the last decoded frame (training's augmented
    /// views); the same reused buffer as [`Preprocessor::normalize`].
    pub fn transform(&mut self, image: &RgbImage) -> &[f32] {
        self.resampler.resize_crop_normalize(
            image,
            self.config.resize,
            self.config.crop,
            &self.normalize_table,
            &mut self.tensor,
        );
        &self.tensor
    }

    /// The tensor of one test-time view ([`Tta::views`]) of the last decoded image, in the
    /// same reused buffer as [`Preprocessor::normalize`] (which is the plain view).
    pub fn view(&mut self, view: TtaView) -> &[f32] {
        if view == TtaView::Plain && self.normalize_raw() {
            return &self.tensor;
        }
        self.convert_raw();
        let (resize, crop) = (self.config.resize, self.config.crop);
        let (rgb, mut out) = (
            std::mem::take(&mut self.rgb),
            std::mem::take(&mut self.view),
        );
        match view {
            TtaView::Plain => {
                self.transform(&rgb);
            }
            TtaView::Mirror => {
                tta::mirror(&rgb, &mut out);
                self.transform(&out);
            }
            TtaView::Corner(right, bottom) => {
                tta::cut_corner(&rgb, (right, bottom), resize, crop, &mut out);
                // The corner square already is the crop: only resized to `crop`.
                self.corner_resampler.resize_crop_normalize(
                    &out,
                    crop,
                    crop,
                    &self.normalize_table,
                    &mut self.tensor,
                );
            }
        }
        (self.rgb, self.view) = (rgb, out);
        &self.tensor
    }

    /// load + normalize.
    pub fn run(&mut self, frame: &Frame) -> Result<&[f32], PreprocessError> {
        self.load(frame)?;
        Ok(self.normalize())
    }

    /// The configuration this preprocessor was built with.
    pub fn config(&self) -> &PreprocessConfig {
        &self.config
    }

    /// Shape of the output tensor: `[1, 3, crop, crop]` (NCHW).
    pub fn tensor_shape(&self) -> [usize; 4] {
        let crop = self.config.crop as usize;
        [1, 3, crop, crop]
    }
}

/// Reads an image file into an [`PixelFormat::Encoded`] frame whose origin is the path; the
/// error names the path.
pub fn read_image_file(path: &Path) -> Result<Frame, PreprocessError> {
    let data = std::fs::read(path).map_err(|source| PreprocessError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Frame::encoded(data, path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_torchvision_imagenet() {
        let config = PreprocessConfig::default();
        assert_eq!((config.resize, config.crop), (256, 224));
        assert_eq!(config.mean, [0.485, 0.456, 0.406]);
        assert_eq!(config.std, [0.229, 0.224, 0.225]);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn config_deserializes_partially_and_rejects_unknown_keys() {
        let config: PreprocessConfig = toml::from_str("crop = 160").unwrap();
        assert_eq!((config.resize, config.crop), (256, 160));
        let err = toml::from_str::<PreprocessConfig>("size = 3").unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }

    #[test]
    fn validate_names_the_bad_value() {
        let cases = [
            (
                PreprocessConfig {
                    resize: 0,
                    ..Default::default()
                },
                "resize = 0",
            ),
            (
                PreprocessConfig {
                    crop: 100_000,
                    ..Default::default()
                },
                "crop = 100000",
            ),
            (
                PreprocessConfig {
                    std: [0.2, 0.0, 0.2],
                    ..Default::default()
                },
                "std contains 0",
            ),
            (
                PreprocessConfig {
                    mean: [f32::NAN, 0.0, 0.0],
                    ..Default::default()
                },
                "mean contains NaN",
            ),
        ];
        for (config, expected) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert_eq!(err.sysexit(), Sysexit::Config);
        }
    }
}
