//! Preprocessing against torchvision's reference output, raw camera formats, errors, buffer reuse.
//!
//! The reference tensors in tests/fixtures were written by make_preprocess_reference.py with
//! torchvision (PIL path) from the same image bytes this test reads.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use edgeclass::capture::{Frame, PixelFormat};
use edgeclass::preprocess::{
    read_image_file, CropRegion, PreprocessConfig, PreprocessError, Preprocessor,
};
use edgeclass::sysexits::Sysexit;
use image::codecs::jpeg::JpegEncoder;
use image::{ImageEncoder, RgbImage};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Reads a little-endian float32 `.npy` of shape `(1, 3, crop, crop)`.
fn read_npy(path: &Path, crop: usize) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(
        header.contains(&format!("'shape': (1, 3, {crop}, {crop})")),
        "{header}"
    );
    let values: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(values.len(), 3 * crop * crop);
    values
}

fn frame(format: PixelFormat, width: u32, height: u32, data: Vec<u8>, origin: &str) -> Frame {
    Frame {
        format,
        width,
        height,
        data,
        captured_at: SystemTime::now(),
        seq: 0,
        origin: origin.to_string(),
    }
}

/// Per-value difference in [0, 1] pixel units (`x * std + mean`, before normalization).
fn pixel_errors(actual: &[f32], expected: &[f32], config: &PreprocessConfig) -> Vec<f32> {
    assert_eq!(actual.len(), expected.len());
    let plane = actual.len() / 3;
    actual
        .iter()
        .zip(expected)
        .enumerate()
        .map(|(i, (a, e))| (a - e).abs() * config.std[i / plane])
        .collect()
}

/// (image, resize, crop, lossless): lossless inputs must match torchvision bit for bit.
const REFERENCES: [(&str, u32, u32, bool); 4] = [
    ("preprocess_coffee.jpg", 256, 224, false),
    ("preprocess_chelsea.jpg", 128, 112, false),
    ("preprocess_chelsea_small.png", 256, 160, true),
    ("preprocess_tiny.png", 5, 8, true),
];

#[test]
fn matches_torchvision_reference() {
    for (image, resize, crop, lossless) in REFERENCES {
        let config = PreprocessConfig {
            resize,
            crop,
            exact: true,
            ..Default::default()
        };
        let mut preprocessor = Preprocessor::new(config.clone());
        let frame = read_image_file(&fixture(image)).unwrap();
        let tensor = preprocessor.run(&frame).unwrap();
        assert_eq!(tensor.len(), 3 * (crop * crop) as usize);

        let stem = image.rsplit_once('.').unwrap().0;
        let expected = read_npy(
            &fixture(&format!("{stem}_r{resize}_c{crop}.npy")),
            crop as usize,
        );
        let errors = pixel_errors(tensor, &expected, &config);
        let max_error = errors.iter().copied().fold(0.0, f32::max);
        let mean_error = errors.iter().sum::<f32>() / errors.len() as f32;
        let over_two_levels = errors.iter().filter(|&&e| e > 2.5 / 255.0).count();
        eprintln!(
            "{image} (resize {resize}, crop {crop}): max error {:.2}/255, mean {:.3}/255, \
             {over_two_levels} of {} values off by more than 2/255",
            max_error * 255.0,
            mean_error * 255.0,
            errors.len()
        );
        if lossless {
            assert_eq!(
                tensor,
                &expected[..],
                "{image}: lossless input must match exactly"
            );
        } else {
            // The transform is exact (see the PNGs); what remains is JPEG decoding: zune-jpeg
            // (the `image` crate) rounds its chroma upsampling differently from PIL's
            // libjpeg-turbo, which moves a few decoded pixels by up to 6 levels. After the
            // resize that is at most 3/255, and only on a handful of values.
            assert!(
                max_error <= 3.0 / 255.0 + 1e-6,
                "{image}: max error {max_error}"
            );
            assert!(
                mean_error <= 0.3 / 255.0,
                "{image}: mean error {mean_error}"
            );
            assert!(
                over_two_levels * 10_000 <= errors.len(),
                "{image}: {over_two_levels} values"
            );
        }
    }
}

/// BT.601 limited range from first principles (Kr, Kb), independent of the module's constants.
const KR: f64 = 0.299;
const KB: f64 = 0.114;
const KG: f64 = 1.0 - KR - KB;

fn rgb_to_ycbcr(rgb: &[u8]) -> [f64; 3] {
    let [r, g, b] = [rgb[0], rgb[1], rgb[2]].map(f64::from);
    let luma = KR * r + KG * g + KB * b;
    [
        16.0 + luma * 219.0 / 255.0,
        128.0 + (b - luma) / (2.0 * (1.0 - KB)) * 224.0 / 255.0,
        128.0 + (r - luma) / (2.0 * (1.0 - KR)) * 224.0 / 255.0,
    ]
}

fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let luma = (f64::from(y) - 16.0) * 255.0 / 219.0;
    let cb = (f64::from(cb) - 128.0) * 255.0 / 224.0;
    let cr = (f64::from(cr) - 128.0) * 255.0 / 224.0;
    let r = luma + 2.0 * (1.0 - KR) * cr;
    let b = luma + 2.0 * (1.0 - KB) * cb;
    let g = (luma - KR * r - KB * b) / KG;
    [r, g, b].map(|v| v.round().clamp(0.0, 255.0) as u8)
}

fn to_byte(value: f64) -> u8 {
    value.round().clamp(0.0, 255.0) as u8
}

/// A real photo with even dimensions (YUV 4:2:x needs them).
fn sample_image() -> RgbImage {
    let frame = read_image_file(&fixture("preprocess_chelsea_small.png")).unwrap();
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let image = preprocessor.decode(&frame).unwrap();
    image::imageops::crop_imm(image, 0, 0, 134, 180).to_image()
}

/// YUV planes for `image` with chroma averaged over `block_w x block_h` pixels.
struct Yuv {
    luma: Vec<u8>,
    /// Per block: (Cb, Cr), blocks row-major.
    chroma: Vec<(u8, u8)>,
}

fn to_yuv(image: &RgbImage, block_w: u32, block_h: u32) -> Yuv {
    let (width, height) = image.dimensions();
    let luma = image
        .pixels()
        .map(|p| to_byte(rgb_to_ycbcr(&p.0)[0]))
        .collect();
    let mut chroma = Vec::new();
    for by in (0..height).step_by(block_h as usize) {
        for bx in (0..width).step_by(block_w as usize) {
            let mut sum = [0.0; 2];
            for y in by..by + block_h {
                for x in bx..bx + block_w {
                    let [_, cb, cr] = rgb_to_ycbcr(&image.get_pixel(x, y).0);
                    sum = [sum[0] + cb, sum[1] + cr];
                }
            }
            let n = f64::from(block_w * block_h);
            chroma.push((to_byte(sum[0] / n), to_byte(sum[1] / n)));
        }
    }
    Yuv { luma, chroma }
}

/// Checks a decoded YUV frame against the exact conversion of its own samples, and against the
/// photo it was made from.
fn assert_yuv_decoded(
    decoded: &RgbImage,
    original: &RgbImage,
    yuv: &Yuv,
    block_w: u32,
    block_h: u32,
) {
    assert_eq!(decoded.dimensions(), original.dimensions());
    let width = original.width();
    let mut total_difference = 0u64;
    for (x, y, pixel) in decoded.enumerate_pixels() {
        let block = (y / block_h * width.div_ceil(block_w) + x / block_w) as usize;
        let (cb, cr) = yuv.chroma[block];
        let expected = ycbcr_to_rgb(yuv.luma[(y * width + x) as usize], cb, cr);
        for (actual, expected) in pixel.0.iter().zip(expected) {
            assert!(
                actual.abs_diff(expected) <= 1,
                "pixel ({x}, {y}): {:?} vs {expected:?}",
                pixel.0
            );
        }
        for (actual, source) in pixel.0.iter().zip(original.get_pixel(x, y).0) {
            total_difference += u64::from(actual.abs_diff(source));
        }
    }
    // Round trip through YUV with subsampled chroma stays close to the photo.
    let mean_difference = total_difference as f64 / (original.len() as f64);
    assert!(
        mean_difference < 3.0,
        "mean difference to source {mean_difference}"
    );
}

#[test]
fn yuyv_frame_decodes_with_bt601_limited_range() {
    let original = sample_image();
    let (width, height) = original.dimensions();
    let yuv = to_yuv(&original, 2, 1);
    let mut data = Vec::new();
    for (i, luma_pair) in yuv.luma.chunks_exact(2).enumerate() {
        let (cb, cr) = yuv.chroma[i];
        data.extend_from_slice(&[luma_pair[0], cb, luma_pair[1], cr]);
    }
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let decoded = preprocessor
        .decode(&frame(PixelFormat::Yuyv, width, height, data, "yuyv"))
        .unwrap();
    assert_yuv_decoded(decoded, &original, &yuv, 2, 1);
}

#[test]
fn nv12_frame_decodes_with_bt601_limited_range() {
    let original = sample_image();
    let (width, height) = original.dimensions();
    let yuv = to_yuv(&original, 2, 2);
    let mut data = yuv.luma.clone();
    for &(cb, cr) in &yuv.chroma {
        data.extend_from_slice(&[cb, cr]);
    }
    assert_eq!(data.len(), (width * height * 3 / 2) as usize);
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let decoded = preprocessor
        .decode(&frame(PixelFormat::Nv12, width, height, data, "nv12"))
        .unwrap();
    assert_yuv_decoded(decoded, &original, &yuv, 2, 2);
}

#[test]
fn rgb24_frame_decodes_unchanged() {
    let original = sample_image();
    let (width, height) = original.dimensions();
    let rgb = frame(
        PixelFormat::Rgb24,
        width,
        height,
        original.as_raw().clone(),
        "rgb",
    );
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    assert_eq!(preprocessor.decode(&rgb).unwrap(), &original);
}

#[test]
fn bgr24_and_grey_frames_decode_like_their_rgb_equivalents() {
    let original = sample_image();
    let (width, height) = original.dimensions();
    let bgr: Vec<u8> = original
        .pixels()
        .flat_map(|p| [p.0[2], p.0[1], p.0[0]])
        .collect();
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let decoded = preprocessor
        .decode(&frame(PixelFormat::Bgr24, width, height, bgr, "bgr"))
        .unwrap();
    assert_eq!(decoded, &original);

    let grey = image::imageops::grayscale(&original);
    let decoded = preprocessor
        .decode(&frame(
            PixelFormat::Gray,
            width,
            height,
            grey.as_raw().clone(),
            "grey",
        ))
        .unwrap();
    let expected = image::DynamicImage::ImageLuma8(grey).to_rgb8();
    assert_eq!(decoded, &expected);
}

fn encode_png(pixels: &[u8], width: u32, height: u32, color: image::ExtendedColorType) -> Frame {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(pixels, width, height, color)
        .unwrap();
    frame(PixelFormat::Encoded, 0, 0, png, "memory.png")
}

#[test]
fn grey_alpha_and_16_bit_images_convert_like_pil() {
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    // Grey is replicated into R, G and B.
    let grey = encode_png(&[0, 100, 200, 255], 2, 2, image::ExtendedColorType::L8);
    let decoded = preprocessor.decode(&grey).unwrap();
    assert_eq!(
        decoded.as_raw(),
        &[0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255]
    );
    // Alpha is dropped, not composited.
    let rgba = encode_png(
        &[10, 20, 30, 0, 40, 50, 60, 128],
        2,
        1,
        image::ExtendedColorType::Rgba8,
    );
    assert_eq!(
        preprocessor.decode(&rgba).unwrap().as_raw(),
        &[10, 20, 30, 40, 50, 60]
    );
    // 16-bit samples are scaled to 8 bits.
    let wide: Vec<u8> = [0u16, 0x8080, 0xFFFF]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let rgb16 = encode_png(&wide, 1, 1, image::ExtendedColorType::Rgb16);
    assert_eq!(
        preprocessor.decode(&rgb16).unwrap().as_raw(),
        &[0, 128, 255]
    );
}

fn encode_jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, quality)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    jpeg
}

/// Removes every DHT segment, as UVC cameras do (they rely on the standard tables).
fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut position = 2;
    loop {
        let marker = jpeg[position + 1];
        if marker == 0xDA {
            out.extend_from_slice(&jpeg[position..]);
            return out;
        }
        let length = usize::from(u16::from_be_bytes([jpeg[position + 2], jpeg[position + 3]]));
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[position..position + 2 + length]);
        }
        position += 2 + length;
    }
}

#[test]
fn mjpeg_frames_decode_with_and_without_huffman_tables() {
    let original = sample_image();
    let (width, height) = original.dimensions();
    let jpeg = encode_jpeg(&original, 90);
    let abbreviated = strip_huffman_tables(&jpeg);
    assert!(
        abbreviated.len() < jpeg.len() - 400,
        "the encoder wrote standard tables"
    );

    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let complete = preprocessor
        .decode(&frame(
            PixelFormat::Mjpeg,
            width,
            height,
            jpeg.clone(),
            "mjpeg",
        ))
        .unwrap()
        .clone();
    let as_file = preprocessor
        .decode(&frame(PixelFormat::Encoded, 0, 0, jpeg, "file"))
        .unwrap()
        .clone();
    assert_eq!(complete, as_file);
    let mean_difference = complete
        .as_raw()
        .iter()
        .zip(original.as_raw())
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / original.len() as f64;
    assert!(
        mean_difference < 3.0,
        "JPEG round trip mean difference {mean_difference}"
    );

    // The plain decoder cannot read the abbreviated frame; the MJPEG path restores the tables.
    let plain = preprocessor.decode(&frame(
        PixelFormat::Encoded,
        0,
        0,
        abbreviated.clone(),
        "plain",
    ));
    assert!(
        plain.is_err(),
        "abbreviated JPEG unexpectedly decoded without tables"
    );
    let restored = preprocessor
        .decode(&frame(
            PixelFormat::Mjpeg,
            width,
            height,
            abbreviated,
            "uvc",
        ))
        .unwrap();
    assert_eq!(restored, &complete);
}

/// Runs `frame` and returns the error's message chain and exit code.
fn failure(preprocessor: &mut Preprocessor, frame: &Frame) -> (String, Sysexit) {
    let err: PreprocessError = preprocessor.run(frame).unwrap_err();
    let sysexit = err.sysexit();
    (format!("{:#}", anyhow::Error::from(err)), sysexit)
}

#[test]
fn bad_frames_give_errors_naming_origin() {
    let png = std::fs::read(fixture("preprocess_chelsea_small.png")).unwrap();
    let jpeg = std::fs::read(fixture("preprocess_coffee.jpg")).unwrap();
    let mut corrupt_jpeg = jpeg[..2].to_vec();
    corrupt_jpeg.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    // Ends like a whole JPEG, so the decoder (not the cut-off check) has to refuse it.
    corrupt_jpeg.extend_from_slice(&[0xFF, 0xD9]);
    // A header claiming 65000x65000 pixels (12 GB of RGB) must be refused, not allocated.
    let mut huge = jpeg.clone();
    let frame_header = huge.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    huge[frame_header + 5..frame_header + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
    let mut broken_header = jpeg.clone();
    broken_header[2..600].fill(0x5A);

    let cases = [
        (
            frame(PixelFormat::Rgb24, 4, 4, vec![0; 47], "cam0"),
            "has 47 bytes, but RGB24 frame at 4x4 needs 48",
        ),
        (
            frame(PixelFormat::Yuyv, 640, 480, vec![0; 640 * 480 * 3], "cam1"),
            "YUYV frame at 640x480 needs 614400",
        ),
        (
            frame(PixelFormat::Nv12, 4, 2, vec![0; 8], "cam2"),
            "NV12 frame at 4x2 needs 12",
        ),
        (
            frame(PixelFormat::Gray, 4, 2, vec![0; 7], "cam6"),
            "GREY frame at 4x2 needs 8",
        ),
        (
            frame(PixelFormat::Yuyv, 3, 2, vec![0; 12], "cam3"),
            "needs an even width",
        ),
        (
            frame(PixelFormat::Rgb24, 0, 0, vec![1, 2, 3], "cam4"),
            "needs 0",
        ),
        (
            frame(PixelFormat::Mjpeg, 640, 480, Vec::new(), "cam5"),
            "is empty",
        ),
        (
            frame(PixelFormat::Encoded, 0, 0, Vec::new(), "empty.png"),
            "is empty",
        ),
        (
            frame(PixelFormat::Mjpeg, 640, 480, corrupt_jpeg, "cam6"),
            "cannot decode MJPEG frame",
        ),
        (
            frame(PixelFormat::Encoded, 0, 0, huge.clone(), "huge.jpg"),
            "cannot decode encoded image",
        ),
        (
            frame(PixelFormat::Mjpeg, 640, 480, huge, "cam7"),
            "cannot decode MJPEG frame",
        ),
        (
            frame(PixelFormat::Encoded, 0, 0, broken_header, "broken.jpg"),
            "cannot decode encoded image",
        ),
        (
            frame(
                PixelFormat::Encoded,
                0,
                0,
                png[..png.len() / 2].to_vec(),
                "half.png",
            ),
            "cannot decode encoded image",
        ),
        (
            frame(
                PixelFormat::Encoded,
                0,
                0,
                b"plain text, no image".to_vec(),
                "notes.txt",
            ),
            "cannot decode encoded image",
        ),
    ];
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    for (bad, expected) in &cases {
        let (message, code) = failure(&mut preprocessor, bad);
        eprintln!("{message}");
        assert!(message.contains(&bad.origin), "{message}");
        assert!(message.contains(expected), "{message}");
        assert_eq!(code, Sysexit::DataErr, "{message}");
        // After a failure the last image is empty, so the tensor is all padding.
        let config = PreprocessConfig::default();
        let padding = -config.mean[0] / config.std[0];
        assert!(preprocessor.normalize()[..224 * 224]
            .iter()
            .all(|&v| v == padding));
    }

    // A failure leaves the preprocessor usable.
    let good = read_image_file(&fixture("preprocess_tiny.png")).unwrap();
    assert_eq!(preprocessor.decode(&good).unwrap().dimensions(), (13, 7));
}

#[test]
fn missing_file_error_names_path() {
    let path = fixture("no_such_image.png");
    let err = read_image_file(&path).unwrap_err();
    assert_eq!(err.sysexit(), Sysexit::NoInput);
    let message = format!("{:#}", anyhow::Error::from(err));
    assert!(message.contains("no_such_image.png"), "{message}");
}

#[test]
fn buffers_are_reused_across_frames() {
    let image = sample_image();
    let (width, height) = image.dimensions();
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let mut inverted = image.clone();
    image::imageops::invert(&mut inverted);

    let first_frame = frame(
        PixelFormat::Rgb24,
        width,
        height,
        image.as_raw().clone(),
        "a",
    );
    let second_frame = frame(PixelFormat::Rgb24, width, height, inverted.into_raw(), "b");
    let first = preprocessor.run(&first_frame).unwrap().to_vec();
    let rgb_pointer = preprocessor.decode(&first_frame).unwrap().as_ptr();
    let tensor_pointer = preprocessor.run(&first_frame).unwrap().as_ptr();

    let second = preprocessor.run(&second_frame).unwrap();
    assert_eq!(second.as_ptr(), tensor_pointer);
    assert_ne!(
        second,
        &first[..],
        "second frame must produce its own output"
    );
    assert_eq!(
        preprocessor.decode(&second_frame).unwrap().as_ptr(),
        rgb_pointer
    );
    // Back to the first frame: same buffer, same values.
    assert_eq!(preprocessor.run(&first_frame).unwrap(), &first[..]);
    assert_eq!(preprocessor.normalize().as_ptr(), tensor_pointer);
}

#[test]
fn a_crop_region_is_classified_exactly_like_the_image_cut_to_it() {
    let photo = read_image_file(&fixture("preprocess_coffee.jpg")).unwrap();
    let mut whole = Preprocessor::new(PreprocessConfig::default());
    let uncropped = whole.run(&photo).unwrap().to_vec();
    // 600x400: x from 150 to 450, y from 40 to 340.
    let region = CropRegion::new(0.25, 0.1, 0.5, 0.75).unwrap();
    let cut = image::imageops::crop_imm(whole.decoded(), 150, 40, 300, 300).to_image();
    let pre_cut = frame_from(PixelFormat::Rgb24, &cut, cut.as_raw().clone());
    let expected = whole.run(&pre_cut).unwrap().to_vec();

    let mut cropped = Preprocessor::new(PreprocessConfig::default()).with_region(Some(region));
    assert_eq!(cropped.decode(&photo).unwrap(), &cut);
    assert_eq!(cropped.decoded(), &cut);
    let tensor = cropped.run(&photo).unwrap();
    assert_eq!(tensor, &expected[..]);
    assert_ne!(
        tensor,
        &uncropped[..],
        "the crop changes what is classified"
    );

    // A frame that fails to decode leaves no stale region behind.
    let broken = frame(
        PixelFormat::Encoded,
        0,
        0,
        b"not an image".to_vec(),
        "broken",
    );
    assert!(cropped.decode(&broken).is_err());
    assert_eq!(cropped.decoded().dimensions(), (0, 0));
}

#[test]
fn non_default_sizes_shape_the_output() {
    let frame = read_image_file(&fixture("preprocess_coffee.jpg")).unwrap();
    for (resize, crop) in [(64, 32), (300, 299), (100, 150)] {
        let config = PreprocessConfig {
            resize,
            crop,
            ..Default::default()
        };
        let mut preprocessor = Preprocessor::new(config);
        let len = preprocessor.run(&frame).unwrap().len();
        assert_eq!(len, 3 * (crop * crop) as usize);
        assert_eq!(
            preprocessor.tensor_shape(),
            [1, 3, crop as usize, crop as usize]
        );
        assert_eq!(preprocessor.config().crop, crop);
    }
    // A crop larger than the resized image pads with black, normalized: (0 - mean) / std.
    let config = PreprocessConfig {
        resize: 100,
        crop: 150,
        ..Default::default()
    };
    let mut preprocessor = Preprocessor::new(config.clone());
    let tensor = preprocessor.run(&frame).unwrap();
    assert_eq!(tensor[0], -config.mean[0] / config.std[0]);
    assert_ne!(
        tensor[75 * 150 + 75],
        tensor[0],
        "center comes from the image"
    );
}

#[test]
fn extreme_aspect_ratio_resamples_only_the_crop() {
    // 2x30000 upscales to 256x3840000: only the 224 kept rows get filter weights.
    let (width, height) = (2, 30_000);
    let data = [200u8, 100, 50].repeat(width * height);
    let tall = frame(
        PixelFormat::Rgb24,
        width as u32,
        height as u32,
        data,
        "tall",
    );
    let config = PreprocessConfig::default();
    let mut preprocessor = Preprocessor::new(config.clone());
    let tensor = preprocessor.run(&tall).unwrap();
    for (channel, plane) in tensor.chunks_exact(224 * 224).enumerate() {
        let value = f32::from([200u8, 100, 50][channel]);
        let expected = (value / 255.0 - config.mean[channel]) / config.std[channel];
        assert!(plane.iter().all(|&v| v == expected), "channel {channel}");
    }
}

/// Not a benchmark with thresholds: prints how decode compares to the transform on a 640x480
/// camera-sized JPEG, and checks repeated runs agree.
#[test]
fn report_decode_and_transform_cost() {
    let frame = read_image_file(&fixture("preprocess_coffee.jpg")).unwrap();
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let photo = preprocessor.decode(&frame).unwrap();
    let camera = image::imageops::resize(photo, 640, 480, image::imageops::FilterType::Triangle);
    let jpeg = frame_from(PixelFormat::Mjpeg, &camera, encode_jpeg(&camera, 85));
    let rgb = frame_from(PixelFormat::Rgb24, &camera, camera.as_raw().clone());

    let reference = preprocessor.run(&jpeg).unwrap().to_vec();
    // Best of several batches: the machine is shared, the minimum is the least disturbed.
    let time = |preprocessor: &mut Preprocessor, work: &dyn Fn(&mut Preprocessor)| {
        (0..10)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..5 {
                    work(preprocessor);
                }
                start.elapsed().as_secs_f64() / 5.0
            })
            .fold(f64::MAX, f64::min)
    };
    let full = time(&mut preprocessor, &|p| {
        p.run(&jpeg).unwrap();
    });
    let transform = time(&mut preprocessor, &|p| {
        p.normalize();
    });
    let from_rgb = time(&mut preprocessor, &|p| {
        p.run(&rgb).unwrap();
    });
    assert_eq!(preprocessor.run(&jpeg).unwrap(), &reference[..]);
    eprintln!(
        "640x480: JPEG decode + transform = {:.1}x the transform alone; RGB24 copy + transform = {:.2}x; \
         (this machine: {:.2} ms vs {:.2} ms, noisy)",
        full / transform,
        from_rgb / transform,
        full * 1e3,
        transform * 1e3
    );
}

fn frame_from(format: PixelFormat, image: &RgbImage, data: Vec<u8>) -> Frame {
    frame(format, image.width(), image.height(), data, "camera")
}

/// A cut-off JPEG (USB cameras drop the end of frames) is an error naming its origin, not a
/// frame classified half grey; zero padding after the end marker is fine.
#[test]
fn cut_off_jpegs_are_refused_and_padded_ones_decode() {
    let jpeg = encode_jpeg(&sample_image(), 90);
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    for format in [PixelFormat::Mjpeg, PixelFormat::Encoded] {
        let (width, height) = (sample_image().width(), sample_image().height());
        let cut = frame(
            format,
            width,
            height,
            jpeg[..jpeg.len() * 2 / 3].to_vec(),
            "cam0",
        );
        let (message, code) = failure(&mut preprocessor, &cut);
        assert!(
            message.contains("JPEG from cam0 is cut off") && message.contains("end-of-image"),
            "{message}"
        );
        assert_eq!(code, Sysexit::DataErr);
        // The image crate alone decodes the cut frame without a word: the check is ours.
        assert!(image::load_from_memory(&cut.data).is_ok());

        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 64]);
        let padded = frame(format, width, height, padded, "cam0");
        assert!(preprocessor.run(&padded).is_ok(), "{format:?}");
    }
}

/// Mean of each `scale x scale` block of `image` (partial blocks at the right and bottom
/// edges): what a JPEG decode at DCT scale `1 / scale` approximates.
fn box_downscale(image: &RgbImage, scale: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    RgbImage::from_fn(width.div_ceil(scale), height.div_ceil(scale), |bx, by| {
        let (mut sum, mut count) = ([0u32; 3], 0);
        for y in by * scale..((by + 1) * scale).min(height) {
            for x in bx * scale..((bx + 1) * scale).min(width) {
                for (s, v) in sum.iter_mut().zip(image.get_pixel(x, y).0) {
                    *s += u32::from(v);
                }
                count += 1;
            }
        }
        image::Rgb(sum.map(|s| ((s + count / 2) / count) as u8))
    })
}

/// Fast mode decodes a JPEG at the smallest DCT scale whose short side still covers `resize`,
/// and what it decodes is the exact decode averaged over the same blocks, within the
/// tolerance of this test: mean difference at most 1 level, 99% of the values within 8 levels
/// (measured on the fixture photos: means 0.40-0.87, 99th percentiles 2-7; the reduced IDCTs
/// are not exact box filters and the two decoders upsample chroma differently, so the largest
/// differences sit on sharp edges). At scale 1 both modes run the same decoder.
#[test]
fn fast_mode_decodes_a_jpeg_at_its_dct_scale_like_a_box_of_the_exact_decode() {
    for photo in ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"] {
        let frame = read_image_file(&fixture("images").join(photo)).unwrap();
        let mut exact = Preprocessor::new(PreprocessConfig {
            exact: true,
            ..PreprocessConfig::default()
        });
        let full = exact.decode(&frame).unwrap().clone();
        let short = full.width().min(full.height());
        for scale in [1, 2, 4, 8] {
            let mut fast = Preprocessor::new(PreprocessConfig {
                resize: short.div_ceil(scale),
                crop: 8,
                ..PreprocessConfig::default()
            });
            let decoded = fast.decode(&frame).unwrap();
            let expected = box_downscale(&full, scale);
            assert_eq!(
                decoded.dimensions(),
                expected.dimensions(),
                "{photo} 1/{scale}"
            );
            let mut errors: Vec<u8> = decoded
                .iter()
                .zip(expected.iter())
                .map(|(a, b)| a.abs_diff(*b))
                .collect();
            errors.sort_unstable();
            let mean = errors.iter().map(|&e| f64::from(e)).sum::<f64>() / errors.len() as f64;
            let p99 = errors[errors.len() * 99 / 100];
            assert!(
                mean <= 1.0 && p99 <= 8,
                "{photo} 1/{scale}: mean {mean}, p99 {p99}"
            );
        }
    }
}
