//! Frames as cameras and files deliver them: raw YUYV, NV12, RGB, BGR, gray at any declared
//! size (the data's length disagreeing in every way), and encoded JPEG/PNG/... bytes, decoded
//! and preprocessed into the model's tensor; with a crop region and JPEG's reduced-scale decode
//! or not. The tensor is 32x32 (the daemon's 224x224 runs the same code, slower). `Ok` with a finite tensor of the right length, or an error; never a panic.
#![no_main]

use std::time::SystemTime;

use arbitrary::Arbitrary;
use edgeclass::capture::{Frame, PixelFormat};
use edgeclass::preprocess::{CropRegion, PreprocessConfig, Preprocessor};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    format: u8,
    width: u16,
    height: u16,
    exact: bool,
    crop: Option<[u8; 4]>,
    data: Vec<u8>,
}

const FORMATS: [PixelFormat; 7] = [
    PixelFormat::Encoded,
    PixelFormat::Mjpeg,
    PixelFormat::Yuyv,
    PixelFormat::Nv12,
    PixelFormat::Rgb24,
    PixelFormat::Bgr24,
    PixelFormat::Gray,
];

fuzz_target!(|input: Input| {
    let config = PreprocessConfig {
        exact: input.exact,
        ..PreprocessConfig::for_input_size(32)
    };
    // Only valid regions: the config rejects the others before a frame is seen.
    let region = input
        .crop
        .and_then(|c| CropRegion::try_from(c.map(|v| f64::from(v) / 255.0)).ok());
    let mut preprocessor = Preprocessor::new(config).with_region(region);
    let frame = Frame {
        format: FORMATS[usize::from(input.format) % FORMATS.len()],
        width: u32::from(input.width),
        height: u32::from(input.height),
        data: input.data,
        captured_at: SystemTime::now(),
        seq: 0,
        origin: "fuzz".into(),
    };
    if let Ok(tensor) = preprocessor.run(&frame) {
        assert_eq!(tensor.len(), 3 * 32 * 32);
        assert!(tensor.iter().all(|v| v.is_finite()));
    }
});
