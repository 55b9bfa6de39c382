//! `edgeclass bench --frames`: camera frame -> Top-3, timed per stage.
//!
//! Frames are made from the photos in `--images` (the fixture photos by default): each photo is
//! scaled and cut to cover the frame size, then stored as the camera would send it (YUYV, NV12,
//! or a quality-90 MJPEG frame). Every round times every case on every photo, the cases in
//! alternating order, so a busy machine slows all of them alike; the medians of each stage
//! (decode, resize+normalize, inference, postprocess) and the ratio of the time spent outside
//! the model to the model's own are printed. Every case runs in the fast and in the exact (torchvision)
//! preprocess mode: MJPEG fast decodes at a reduced DCT scale, YUYV and NV12 fast resize straight
//! from the frame's planes, while exact converts the whole frame to RGB first. Each fast row
//! also says how far the fast mode moved the Top-3 from the exact one on the same frames: with
//! real weights (`--weights`) that is what a user's scores would move by.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use image::RgbImage;

use super::bench::percentile_ms;
use crate::capture::{Frame, PixelFormat};
use crate::model::Model;
use crate::postprocess::topk::{softmax_in_place, top_k};
use crate::preprocess::{
    read_image_file, rgb_to_nv12, rgb_to_yuyv, PreprocessConfig, Preprocessor,
};

/// The frames measured: format and size.
const CASES: [(PixelFormat, u32, u32); 5] = [
    (PixelFormat::Yuyv, 640, 480),
    (PixelFormat::Mjpeg, 1280, 720),
    (PixelFormat::Mjpeg, 1920, 1080),
    (PixelFormat::Nv12, 1280, 720),
    (PixelFormat::Nv12, 1920, 1080),
];

/// Stages of a frame, in order.
const STAGES: [&str; 4] = ["decode", "resize+norm", "inference", "postprocess"];

/// One case in one preprocess mode, with its frames and timings.
struct Case {
    name: String,
    frames: Vec<Frame>,
    preprocessor: Preprocessor,
    /// Per stage, one time per frame per round.
    times: [Vec<Duration>; 4],
}

/// Medians of one case.
#[derive(Debug, Clone, serde::Serialize)]
struct CaseResult {
    case: String,
    decode_ms: f64,
    resize_normalize_ms: f64,
    inference_ms: f64,
    postprocess_ms: f64,
    /// (decode + resize+normalize + postprocess) / inference, in percent.
    non_model_percent: f64,
    /// Fast mode only: how many photos kept the exact mode's Top-3 classes, in the same order.
    top3_same_as_exact: Option<usize>,
    /// Fast mode only: the largest change, against exact mode, of the probability of a class in
    /// either mode's Top-3, in percentage points.
    top3_max_shift_pp: Option<f64>,
}

/// Measures every case with `model` for `rounds` rounds after `warmup` untimed ones, and prints
/// a table (or JSON lines). With `save_frames`, first writes the frames into that folder.
pub fn run(
    model: &Model,
    images: &Path,
    save_frames: Option<&Path>,
    rounds: usize,
    warmup: usize,
    json: bool,
) -> anyhow::Result<()> {
    let photos = load_photos(images)?;
    let size = model.input_size() as u32;
    let mut cases = Vec::new();
    for (format, width, height) in CASES {
        let frames = photos
            .iter()
            .map(|(_, photo)| make_frame(photo, format, width, height))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(dir) = save_frames {
            for ((name, photo), frame) in photos.iter().zip(&frames) {
                let extension = match format {
                    PixelFormat::Mjpeg => "jpg",
                    _ => &format_name(format).to_ascii_lowercase(),
                };
                let write = |suffix: &str, data: &[u8]| {
                    let path = dir.join(format!("{name}-{width}x{height}{suffix}.{extension}"));
                    std::fs::write(&path, data)
                        .with_context(|| format!("cannot write {}", path.display()))
                };
                write("", &frame.data)?;
                if format == PixelFormat::Mjpeg {
                    let view = camera_view(photo, width, height);
                    for copy in 1..=NOISY_COPIES {
                        write(
                            &format!("-noise{copy}"),
                            &encode_jpeg(&with_sensor_noise(&view, copy))?,
                        )?;
                    }
                }
            }
        }
        for exact in [false, true] {
            let config = PreprocessConfig {
                exact,
                ..PreprocessConfig::for_input_size(size)
            };
            let mode = if exact { "exact" } else { "fast" };
            cases.push(Case {
                name: format!("{} {width}x{height} {mode}", format_name(format)),
                frames: frames.clone(),
                preprocessor: Preprocessor::new(config),
                times: Default::default(),
            });
        }
    }
    let mut logits = Vec::new();
    for round in 0..warmup + rounds {
        let timed = round >= warmup;
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cases.len()).collect()
        } else {
            (0..cases.len()).rev().collect()
        };
        for index in order {
            let case = &mut cases[index];
            for frame in &case.frames {
                let stages = time_frame(model, &mut case.preprocessor, frame, &mut logits)
                    .with_context(|| format!("classifying a {} frame", case.name))?;
                if timed {
                    for (all, time) in case.times.iter_mut().zip(stages) {
                        all.push(time);
                    }
                }
            }
        }
    }
    let mut results: Vec<CaseResult> = cases.iter_mut().map(summarize).collect();
    // Cases come in pairs, fast then exact, over the same frames.
    for (pair, rows) in cases.chunks_exact_mut(2).zip(results.chunks_exact_mut(2)) {
        let [fast, exact] = pair else {
            unreachable!("chunks of two")
        };
        let mut same = 0;
        let mut max_shift: f32 = 0.0;
        let (mut fast_p, mut exact_p) = (Vec::new(), Vec::new());
        for frame in &fast.frames {
            // A frame's pass leaves its class probabilities in the logits buffer.
            time_frame(model, &mut fast.preprocessor, frame, &mut fast_p)?;
            time_frame(model, &mut exact.preprocessor, frame, &mut exact_p)?;
            let (fast_top, exact_top) = (top_k(&fast_p, 3), top_k(&exact_p, 3));
            same += usize::from(
                fast_top
                    .iter()
                    .map(|t| t.0)
                    .eq(exact_top.iter().map(|t| t.0)),
            );
            for &(class, _) in fast_top.iter().chain(&exact_top) {
                max_shift = max_shift.max((fast_p[class] - exact_p[class]).abs());
            }
        }
        rows[0].top3_same_as_exact = Some(same);
        rows[0].top3_max_shift_pp = Some(f64::from(max_shift) * 100.0);
    }
    if json {
        for r in &results {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print_table(&results, photos.len(), rounds, model.threads());
    }
    Ok(())
}

/// The four stage times of one frame; `logits` ends up holding its class probabilities.
fn time_frame(
    model: &Model,
    preprocessor: &mut Preprocessor,
    frame: &Frame,
    logits: &mut Vec<f32>,
) -> anyhow::Result<[Duration; 4]> {
    let started = Instant::now();
    preprocessor.load(frame)?;
    let decoded = Instant::now();
    let input = preprocessor.normalize();
    let normalized = Instant::now();
    model.forward(input, logits)?;
    let inferred = Instant::now();
    softmax_in_place(logits);
    std::hint::black_box(top_k(logits, 3));
    let done = Instant::now();
    Ok([
        decoded - started,
        normalized - decoded,
        inferred - normalized,
        done - inferred,
    ])
}

fn summarize(case: &mut Case) -> CaseResult {
    let [decode_ms, resize_normalize_ms, inference_ms, postprocess_ms] =
        case.times.each_mut().map(|t| percentile_ms(t, 0.5));
    CaseResult {
        case: case.name.clone(),
        decode_ms,
        resize_normalize_ms,
        inference_ms,
        postprocess_ms,
        non_model_percent: (decode_ms + resize_normalize_ms + postprocess_ms) / inference_ms
            * 100.0,
        top3_same_as_exact: None,
        top3_max_shift_pp: None,
    }
}

fn print_table(results: &[CaseResult], photos: usize, rounds: usize, threads: usize) {
    println!(
        "frame -> Top-3, median ms per stage ({photos} photos x {rounds} alternating rounds, \
         {threads} inference thread(s))"
    );
    println!(
        "{:<22} {:>9} {:>12} {:>10} {:>12} {:>10}  Top-3 vs exact",
        "frame", STAGES[0], STAGES[1], STAGES[2], STAGES[3], "non-model"
    );
    for r in results {
        let top3 = match (r.top3_same_as_exact, r.top3_max_shift_pp) {
            (Some(same), Some(shift)) => {
                format!("{same}/{photos} same, scores moved <= {shift:.2} pp")
            }
            _ => String::new(),
        };
        println!(
            "{:<22} {:>9.3} {:>12.3} {:>10.3} {:>12.3} {:>9.1}%  {top3}",
            r.case,
            r.decode_ms,
            r.resize_normalize_ms,
            r.inference_ms,
            r.postprocess_ms,
            r.non_model_percent
        );
    }
}

fn format_name(format: PixelFormat) -> &'static str {
    match format {
        PixelFormat::Yuyv => "YUYV",
        PixelFormat::Nv12 => "NV12",
        PixelFormat::Mjpeg => "MJPEG",
        _ => "other",
    }
}

/// The photos (JPEG or PNG files) in `dir`, decoded, with their file stems; at least one.
fn load_photos(dir: &Path) -> anyhow::Result<Vec<(String, RgbImage)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the --images folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        anyhow::bail!(
            "the --images folder {} holds no JPEG or PNG photo",
            dir.display()
        );
    }
    let mut preprocessor = Preprocessor::new(PreprocessConfig {
        exact: true,
        ..PreprocessConfig::default()
    });
    paths
        .iter()
        .map(|path| {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let photo = preprocessor.decode(&read_image_file(path)?)?.clone();
            Ok((stem.into_owned(), photo))
        })
        .collect()
}

/// `photo` scaled to cover `width x height`, centered, in `format`.
fn make_frame(
    photo: &RgbImage,
    format: PixelFormat,
    width: u32,
    height: u32,
) -> anyhow::Result<Frame> {
    let rgb = camera_view(photo, width, height);
    let data = match format {
        PixelFormat::Yuyv => rgb_to_yuyv(&rgb),
        PixelFormat::Nv12 => rgb_to_nv12(&rgb),
        _ => encode_jpeg(&rgb)?,
    };
    Ok(Frame {
        format,
        width,
        height,
        data,
        captured_at: std::time::SystemTime::now(),
        seq: 0,
        origin: format!("bench {width}x{height}"),
    })
}

/// How many copies with sensor noise `--save-frames` writes of each MJPEG frame.
const NOISY_COPIES: u32 = 2;

/// `photo` scaled to cover `width x height` and center-cropped to it, as a camera frames it.
fn camera_view(photo: &RgbImage, width: u32, height: u32) -> RgbImage {
    let scale = f64::max(
        f64::from(width) / f64::from(photo.width()),
        f64::from(height) / f64::from(photo.height()),
    );
    let (scaled_w, scaled_h) = (
        ((f64::from(photo.width()) * scale).ceil() as u32).max(width),
        ((f64::from(photo.height()) * scale).ceil() as u32).max(height),
    );
    let scaled = image::imageops::resize(
        photo,
        scaled_w,
        scaled_h,
        image::imageops::FilterType::Triangle,
    );
    image::imageops::crop_imm(
        &scaled,
        (scaled_w - width) / 2,
        (scaled_h - height) / 2,
        width,
        height,
    )
    .to_image()
}

/// `rgb` as a quality-90 JPEG, what the MJPEG cases measure.
fn encode_jpeg(rgb: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(rgb)
        .context("encoding a benchmark frame as JPEG")?;
    Ok(jpeg)
}

/// `rgb` with a camera sensor's noise in a static scene: each value moved by up to 3 levels,
/// in a pattern of its own for each `seed`.
fn with_sensor_noise(rgb: &RgbImage, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut noisy = rgb.clone();
    for value in noisy.iter_mut() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let noise = ((state >> 16) % 7) as i16 - 3;
        *value = (i16::from(*value) + noise).clamp(0, 255) as u8;
    }
    noisy
}
