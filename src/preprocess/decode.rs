//! Any [`Frame`] to packed 8-bit RGB.

use std::io::Cursor;

use image::error::{DecodingError, ImageFormatHint};
use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use super::yuv::{YuvFrame, YuvLayout};
use super::{mjpeg, PreprocessError};
use crate::capture::{Frame, PixelFormat};

/// Frame decoder holding scratch buffers that are reused from frame to frame.
#[derive(Default)]
pub(super) struct FrameDecoder {
    /// An MJPEG frame with the default Huffman tables spliced in.
    jpeg_with_tables: Vec<u8>,
    /// Decoder output that still needs converting to RGB (grey, alpha).
    scratch: Vec<u8>,
}

impl FrameDecoder {
    /// Decodes `frame` into `pixels` (resized to `width * height * 3`) and returns
    /// `(width, height)`.
    ///
    /// With `large_enough`, a JPEG is decoded at the smallest DCT scale (1/8, 1/4, 1/2) whose
    /// size it accepts ([`dct_scale`]); without it, or when no smaller scale is, at full size.
    pub fn decode(
        &mut self,
        frame: &Frame,
        pixels: &mut Vec<u8>,
        large_enough: Option<&dyn Fn(u32, u32) -> bool>,
    ) -> Result<(u32, u32), PreprocessError> {
        let (width, height) = (frame.width, frame.height);
        check_not_empty(frame)?;
        let decode_error = |source| PreprocessError::Decode {
            origin: frame.origin.clone(),
            format: frame.format,
            source,
        };
        if matches!(frame.format, PixelFormat::Mjpeg | PixelFormat::Encoded) {
            check_jpeg_end(frame)?;
        }
        match frame.format {
            PixelFormat::Rgb24 => {
                check_raw_size(frame, 3, 1)?;
                pixels.clear();
                pixels.extend_from_slice(&frame.data);
            }
            PixelFormat::Bgr24 => {
                check_raw_size(frame, 3, 1)?;
                pixels.clear();
                pixels.extend(
                    frame
                        .data
                        .chunks_exact(3)
                        .flat_map(|bgr| [bgr[2], bgr[1], bgr[0]]),
                );
            }
            PixelFormat::Gray => {
                check_raw_size(frame, 1, 1)?;
                pixels.clear();
                pixels.extend(frame.data.iter().flat_map(|&luma| [luma; 3]));
            }
            PixelFormat::Yuyv | PixelFormat::Nv12 => {
                if let Some(layout) = yuv_layout(frame)? {
                    let data = &frame.data;
                    yuv_to_rgb(
                        YuvFrame {
                            layout,
                            data,
                            width,
                            height,
                        },
                        pixels,
                    );
                }
            }
            PixelFormat::Mjpeg => {
                let jpeg = mjpeg::with_huffman_tables(&frame.data, &mut self.jpeg_with_tables);
                if let Some(large_enough) = large_enough {
                    if let Some(size) =
                        decode_jpeg_scaled(jpeg, large_enough, pixels).map_err(decode_error)?
                    {
                        return Ok(size);
                    }
                }
                let reader = ImageReader::with_format(Cursor::new(jpeg), ImageFormat::Jpeg);
                return decode_compressed(reader, pixels, &mut self.scratch).map_err(decode_error);
            }
            PixelFormat::Encoded => {
                if let Some(large_enough) = large_enough.filter(|_| frame.is_jpeg()) {
                    if let Some(size) = decode_jpeg_scaled(&frame.data, large_enough, pixels)
                        .map_err(decode_error)?
                    {
                        return Ok(size);
                    }
                }
                let reader = ImageReader::new(Cursor::new(frame.data.as_slice()))
                    .with_guessed_format()
                    .map_err(|err| decode_error(err.into()))?;
                return decode_compressed(reader, pixels, &mut self.scratch).map_err(decode_error);
            }
        }
        Ok((width, height))
    }
}

fn check_not_empty(frame: &Frame) -> Result<(), PreprocessError> {
    if frame.data.is_empty() {
        return Err(PreprocessError::EmptyFrame {
            origin: frame.origin.clone(),
            format: frame.format,
            width: frame.width,
            height: frame.height,
        });
    }
    Ok(())
}

/// The layout of a YUYV or NV12 frame once its bytes are checked against its size; `None` for
/// other formats.
pub(super) fn yuv_layout(frame: &Frame) -> Result<Option<YuvLayout>, PreprocessError> {
    let layout = match frame.format {
        PixelFormat::Yuyv => YuvLayout::Yuyv,
        PixelFormat::Nv12 => YuvLayout::Nv12,
        _ => return Ok(None),
    };
    check_not_empty(frame)?;
    match layout {
        YuvLayout::Yuyv => {
            check_even(frame, frame.width, "YUYV needs an even width")?;
            check_raw_size(frame, 2, 1)?;
        }
        YuvLayout::Nv12 => {
            check_even(frame, frame.width, "NV12 needs an even width")?;
            check_even(frame, frame.height, "NV12 needs an even height")?;
            check_raw_size(frame, 3, 2)?;
        }
    }
    Ok(Some(layout))
}

/// A checked raw frame ([`yuv_layout`]) to packed RGB in `pixels`.
pub(super) fn yuv_to_rgb(frame: YuvFrame, pixels: &mut Vec<u8>) {
    pixels.resize(frame.width as usize * frame.height as usize * 3, 0);
    match frame.layout {
        YuvLayout::Yuyv => yuyv_to_rgb(frame.data, pixels),
        YuvLayout::Nv12 => nv12_to_rgb(frame.data, frame.width as usize, pixels),
    }
}

/// A JPEG must end with its end-of-image marker (`FF D9`; cameras may pad zeros after it):
/// the decoder would fill a cut-off frame's missing part with grey and classify it silently.
fn check_jpeg_end(frame: &Frame) -> Result<(), PreprocessError> {
    let data = &frame.data;
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Ok(());
    }
    let end = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    if data[..end].ends_with(&[0xFF, 0xD9]) {
        Ok(())
    } else {
        Err(PreprocessError::Truncated {
            origin: frame.origin.clone(),
            bytes: data.len(),
        })
    }
}

/// Checks that a raw frame holds `width * height * numerator / denominator` bytes.
fn check_raw_size(frame: &Frame, numerator: u64, denominator: u64) -> Result<(), PreprocessError> {
    let expected = u64::from(frame.width) * u64::from(frame.height) * numerator / denominator;
    if frame.data.len() as u64 == expected {
        Ok(())
    } else {
        Err(PreprocessError::WrongBufferSize {
            origin: frame.origin.clone(),
            format: frame.format,
            width: frame.width,
            height: frame.height,
            expected,
            actual: frame.data.len(),
        })
    }
}

/// Chroma-subsampled layouts pair pixels, so the paired side must be even.
fn check_even(frame: &Frame, side: u32, problem: &'static str) -> Result<(), PreprocessError> {
    if side.is_multiple_of(2) {
        Ok(())
    } else {
        Err(PreprocessError::Unsupported {
            origin: frame.origin.clone(),
            format: frame.format,
            width: frame.width,
            height: frame.height,
            problem,
        })
    }
}

/// Decodes a compressed image with the `image` crate into RGB.
///
/// RGB, grey and alpha images decode without allocating beyond the decoder's own work; other
/// layouts (16-bit, float) go through a temporary `DynamicImage`. Like PIL's `convert("RGB")`,
/// grey is replicated and alpha dropped; EXIF orientation is ignored, as it is by torchvision.
fn decode_compressed(
    reader: ImageReader<Cursor<&[u8]>>,
    pixels: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(u32, u32), image::ImageError> {
    let decoder = reader.into_decoder()?;
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    // Dimensions come from the (possibly corrupt) header: refuse what would not fit the `image`
    // crate's default memory limit before allocating, counting decoder output and RGB copy.
    let total_bytes = decoder.total_bytes();
    let mut limits = Limits::default();
    limits.reserve(total_bytes)?;
    limits.reserve(u64::from(width) * u64::from(height) * 3)?;
    // Below the 512 MiB limit, so this fits in usize on 32-bit targets too.
    let total_bytes = total_bytes as usize;
    match color {
        ColorType::Rgb8 => {
            pixels.resize(total_bytes, 0);
            decoder.read_image(pixels)?;
        }
        ColorType::L8 | ColorType::La8 | ColorType::Rgba8 => {
            scratch.resize(total_bytes, 0);
            decoder.read_image(scratch)?;
            let channels = usize::from(color.channel_count());
            pixels.clear();
            for pixel in scratch.chunks_exact(channels) {
                if channels <= 2 {
                    pixels.extend_from_slice(&[pixel[0]; 3]);
                } else {
                    pixels.extend_from_slice(&pixel[..3]);
                }
            }
        }
        _ => {
            let rgb = DynamicImage::from_decoder(decoder)?.into_rgb8();
            pixels.clear();
            pixels.extend_from_slice(rgb.as_raw());
        }
    }
    Ok((width, height))
}

/// The `image` crate's memory limit for one decode (its `Limits::default()`), for libjpeg too.
const MAX_DECODE_BYTES: usize = 512 * 1024 * 1024;

/// The DCT scale denominator (8, 4, 2, or 1 for full size) of the smallest JPEG decode of a
/// `width x height` image that `large_enough` accepts: libjpeg's `ceil(side / denominator)`.
pub(super) fn dct_scale(width: u32, height: u32, large_enough: &dyn Fn(u32, u32) -> bool) -> u32 {
    [8, 4, 2]
        .into_iter()
        .find(|&d| large_enough(width.div_ceil(d), height.div_ceil(d)))
        .unwrap_or(1)
}

/// Decodes a JPEG at its [`dct_scale`] with libjpeg-turbo's decoder (`mozjpeg`), whose
/// reduced-size IDCTs skip the work full-size pixels would need (Pillow's `draft()`). `None`
/// when the image is to be decoded at full size: no smaller scale is large enough.
fn decode_jpeg_scaled(
    jpeg: &[u8],
    large_enough: &dyn Fn(u32, u32) -> bool,
    pixels: &mut Vec<u8>,
) -> Result<Option<(u32, u32)>, ImageError> {
    // libjpeg reports errors by unwinding out of its callbacks (the `mozjpeg` crate's design).
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_with_libjpeg(jpeg, large_enough, pixels)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map_or("libjpeg failed", String::as_str);
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            message.to_owned(),
        ))
    });
    decoded.map_err(|err| {
        pixels.clear();
        ImageError::Decoding(DecodingError::new(
            ImageFormatHint::Exact(ImageFormat::Jpeg),
            err,
        ))
    })
}

fn decode_with_libjpeg(
    jpeg: &[u8],
    large_enough: &dyn Fn(u32, u32) -> bool,
    pixels: &mut Vec<u8>,
) -> std::io::Result<Option<(u32, u32)>> {
    let mut decompress = mozjpeg::Decompress::new_mem(jpeg)?;
    let (width, height) = decompress.size();
    // The header may be corrupt: refuse what the exact decoder refuses (decoder output and RGB
    // copy at full size over the limit), so both modes accept the same images.
    if width.saturating_mul(height).saturating_mul(6) > MAX_DECODE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!("{width}x{height} pixels exceed the {MAX_DECODE_BYTES}-byte decoding limit"),
        ));
    }
    // JPEG sides are 16-bit.
    let denominator = dct_scale(width as u32, height as u32, large_enough);
    if denominator == 1 {
        return Ok(None);
    }
    decompress.scale((8 / denominator) as u8);
    let mut started = decompress.rgb()?;
    let (width, height) = (started.width(), started.height());
    pixels.resize(width * height * 3, 0);
    started.read_scanlines_into(&mut pixels[..])?;
    started.finish()?;
    Ok(Some((width as u32, height as u32)))
}

// The BT.601 limited-range YCbCr → RGB conversion, in 16-bit fixed point:
//
// R = 1.164383 (Y - 16)                      + 1.596027 (Cr - 128)
// G = 1.164383 (Y - 16) - 0.391762 (Cb - 128) - 0.812968 (Cr - 128)
// B = 1.164383 (Y - 16) + 2.017232 (Cb - 128)
/// Factor of `Y - 16` in every channel.
pub(super) const LUMA_GAIN: i32 = 76_309;
/// Factor of `Cr - 128` in red.
pub(super) const CR_TO_RED: i32 = 104_597;
/// Factor of `Cb - 128` in green.
pub(super) const CB_TO_GREEN: i32 = -25_675;
/// Factor of `Cr - 128` in green.
pub(super) const CR_TO_GREEN: i32 = -53_279;
/// Factor of `Cb - 128` in blue.
pub(super) const CB_TO_BLUE: i32 = 132_201;

/// Chroma part of the conversion of one pixel.
struct Chroma {
    red: i32,
    green: i32,
    blue: i32,
}

impl Chroma {
    fn new(cb: u8, cr: u8) -> Self {
        let (cb, cr) = (i32::from(cb) - 128, i32::from(cr) - 128);
        Self {
            red: CR_TO_RED * cr,
            green: CB_TO_GREEN * cb + CR_TO_GREEN * cr,
            blue: CB_TO_BLUE * cb,
        }
    }

    /// Writes the RGB pixel for luma `y` into `out[..3]`.
    fn write_rgb(&self, y: u8, out: &mut [u8]) {
        // 1 << 15 rounds to nearest.
        let luma = LUMA_GAIN * (i32::from(y) - 16) + (1 << 15);
        let channel = |chroma: i32| ((luma + chroma) >> 16).clamp(0, 255) as u8;
        out[0] = channel(self.red);
        out[1] = channel(self.green);
        out[2] = channel(self.blue);
    }
}

/// Packed Y0 Cb Y1 Cr (two pixels sharing chroma) to RGB.
fn yuyv_to_rgb(yuyv: &[u8], rgb: &mut [u8]) {
    for (pair, out) in yuyv.chunks_exact(4).zip(rgb.chunks_exact_mut(6)) {
        let chroma = Chroma::new(pair[1], pair[3]);
        chroma.write_rgb(pair[0], &mut out[..3]);
        chroma.write_rgb(pair[2], &mut out[3..]);
    }
}

/// Y plane, then a half-resolution plane of interleaved Cb Cr (2x2 pixels sharing chroma), to RGB.
fn nv12_to_rgb(nv12: &[u8], width: usize, rgb: &mut [u8]) {
    let (luma, chroma) = nv12.split_at(rgb.len() / 3);
    let luma_rows = luma.chunks_exact(width);
    let out_rows = rgb.chunks_exact_mut(width * 3);
    for (row, (luma_row, out_row)) in luma_rows.zip(out_rows).enumerate() {
        let chroma_row = &chroma[row / 2 * width..][..width];
        let pixel_pairs = luma_row.chunks_exact(2).zip(out_row.chunks_exact_mut(6));
        for ((luma_pair, out), cbcr) in pixel_pairs.zip(chroma_row.chunks_exact(2)) {
            let chroma = Chroma::new(cbcr[0], cbcr[1]);
            chroma.write_rgb(luma_pair[0], &mut out[..3]);
            chroma.write_rgb(luma_pair[1], &mut out[3..]);
        }
    }
}
