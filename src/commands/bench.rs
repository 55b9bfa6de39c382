//! `edgeclass bench`: tensor -> Top-3 latency per precision and thread count.
//!
//! Each configuration runs in a child process of this binary (`bench --child ...`) so its peak
//! RSS (VmHWM) is its own and one configuration's caches do not warm the next.
//!
//! With `--head`, each run also classifies the frame with the backbone's features and every
//! head, alternating which of the two goes first, so both see the same machine state: the
//! ratio of their medians is what the heads add to a frame, and the heads alone are timed too.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::model::{synthetic_input, Head, Model, ModelError, Precision};
use crate::postprocess::topk::{softmax_in_place, top_k};

/// Seed of the synthetic network and input used without `--weights`.
const SYNTHETIC_SEED: u64 = 18;

/// Arguments of `edgeclass bench`: the weights (or a synthetic network), the precisions and
/// thread counts to measure, and how many runs.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Weights to measure; without it, a seeded synthetic full-size ResNet-18 calibrated on
    /// two other seeded inputs.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Measure the synthetic network with dynamic (per-frame) activation scales instead of
    /// calibrated ones.
    #[arg(long, conflicts_with = "weights")]
    pub dynamic: bool,
    /// Precisions to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "f32,q8_0,q4_0")]
    pub precisions: Vec<Precision>,
    /// Thread counts to measure, comma separated; 0 means every core [default: 1 and 0].
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Timed runs per configuration.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Untimed runs first (page faults, caches, thread start-up).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// One JSON object per line per configuration.
    #[arg(long)]
    pub json: bool,
    /// Also print the time of each layer (f32 and q8_0).
    #[arg(long)]
    pub layers: bool,
    /// A head file to run on the backbone's features (repeatable): measures backbone + fc
    /// against backbone + fc + every head, in alternating rounds.
    #[arg(long = "head")]
    pub heads: Vec<PathBuf>,
    /// Time camera frames -> Top-3 per stage instead (decode, resize+normalize, inference,
    /// postprocess) for YUYV, MJPEG and NV12 frames made from `--images`, each in the fast and
    /// the exact preprocess mode, with the first
    /// `--threads` value and q8_0 (or the one `--precisions` value given).
    #[arg(long)]
    pub frames: bool,
    /// With `--frames`: the folder of photos the frames are made from.
    #[arg(long, default_value = "tests/fixtures/images", requires = "frames")]
    pub images: PathBuf,
    /// With `--frames`: also write the frames measured into this folder (MJPEG as `.jpg`, raw
    /// formats as `.yuyv` / `.nv12`), e.g. as a `file:` camera's source; each MJPEG frame also
    /// as two copies with sensor noise (`-noise1.jpg`, `-noise2.jpg`), a static scene as a
    /// camera delivers it (`tests/bench/static_scene.sh`).
    #[arg(long, requires = "frames")]
    pub save_frames: Option<PathBuf>,
    /// Internal: measure the single configuration given and print it as JSON.
    #[arg(long, hide = true)]
    pub child: bool,
}

/// The result of one (precision, threads) configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Measurement {
    precision: Precision,
    threads: usize,
    /// "calibrated", "dynamic" or "none" (f32); see `Model::activation_scales`.
    activations: String,
    median_ms: f64,
    p90_ms: f64,
    images_per_s: f64,
    peak_rss_mib: Option<f64>,
    /// f32 median over this median at the same thread count.
    #[serde(skip_serializing_if = "Option::is_none")]
    speedup_vs_f32: Option<f64>,
    /// Median milliseconds per layer, in execution order (`--layers`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    layers: Vec<(String, f64)>,
    /// With `--head`: the same frame with the heads.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    heads: Option<HeadsMeasurement>,
}

/// Backbone + fc + heads, measured in the rounds that alternate with backbone + fc.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeadsMeasurement {
    /// How many heads ran on each frame.
    count: usize,
    /// Median of the whole frame with the heads.
    median_ms: f64,
    /// That median over the median without heads.
    ratio: f64,
    /// Median time of the heads alone (forward, softmax, top-3), all of them.
    heads_median_ms: f64,
    /// `heads_median_ms` per head, as a percentage of the median frame without heads.
    percent_per_head: f64,
}

/// Measures every (thread count, precision) pair in its own child process and prints median and
/// p90 latency, images per second, peak RSS and the speedup over f32, as a table or JSON lines.
/// With `--child`, measures the single configuration given in this process instead.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    if args.frames {
        return run_frames(&args);
    }
    let threads = if args.threads.is_empty() {
        vec![1, 0]
    } else {
        args.threads.clone()
    };
    if args.child {
        let (&[precision], &[threads]) = (args.precisions.as_slice(), threads.as_slice()) else {
            anyhow::bail!("bench --child measures exactly one precision and one thread count");
        };
        let m = measure(&args, precision, threads)?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads: Vec<usize> = threads
        .into_iter()
        .map(|t| if t == 0 { cores } else { t })
        .collect();
    threads.dedup();
    let mut results = Vec::new();
    for &t in &threads {
        for &p in &args.precisions {
            results.push(measure_in_child(&args, p, t)?);
        }
    }
    for i in 0..results.len() {
        let f32_median = results
            .iter()
            .find(|r| r.precision == Precision::F32 && r.threads == results[i].threads)
            .map(|r| r.median_ms);
        results[i].speedup_vs_f32 = f32_median.map(|f| f / results[i].median_ms);
    }
    if args.json {
        for r in &results {
            let line = Measurement {
                layers: Vec::new(),
                ..r.clone()
            };
            println!("{}", serde_json::to_string(&line)?);
        }
    } else {
        print_table(&args, &results);
    }
    if args.layers {
        print_layers(&results);
    }
    if !args.json && !args.heads.is_empty() {
        print_heads(&results);
    }
    Ok(())
}

/// `bench --frames`: one model, every frame case, in this process.
fn run_frames(args: &Args) -> anyhow::Result<()> {
    let precision = match args.precisions.as_slice() {
        &[one] => one,
        _ => Precision::Q8_0,
    };
    let threads = args.threads.first().copied().unwrap_or(1);
    let model = match &args.weights {
        Some(path) => Model::load(path, precision, threads)?,
        None if args.dynamic => Model::synthetic(SYNTHETIC_SEED, precision, threads)?,
        None => Model::synthetic_calibrated(SYNTHETIC_SEED, precision, threads)?,
    };
    super::bench_frames::run(
        &model,
        &args.images,
        args.save_frames.as_deref(),
        args.runs,
        args.warmup,
        args.json,
    )
}

fn measure_in_child(
    args: &Args,
    precision: Precision,
    threads: usize,
) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("locating the edgeclass binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "--child", "--precisions", precision.as_str()])
        .args(["--threads", &threads.to_string()])
        .args(["--runs", &args.runs.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        // candle's f32 matmul sizes its parallelism from this variable.
        .env("RAYON_NUM_THREADS", threads.to_string());
    if let Some(w) = &args.weights {
        cmd.arg("--weights").arg(w);
    }
    if args.layers {
        cmd.arg("--layers");
    }
    if args.dynamic {
        cmd.arg("--dynamic");
    }
    for head in &args.heads {
        cmd.arg("--head").arg(head);
    }
    let out = cmd
        .output()
        .with_context(|| format!("starting the {precision} x{threads} benchmark"))?;
    if !out.status.success() {
        anyhow::bail!(
            "the {precision} x{threads} benchmark failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .with_context(|| format!("reading the {precision} x{threads} benchmark result {stdout:?}"))
}

/// Loads the `--head` files for `model`. A head trained on another backbone is only noted:
/// its timing does not depend on its weights. Its feature count must fit, though. A head with
/// its own layer4 is refused, as the daemon's `[[heads]]` refuse it.
fn load_heads(paths: &[PathBuf], model: &Model) -> anyhow::Result<Vec<Head>> {
    paths
        .iter()
        .map(|path| {
            let head = Head::load(path)?;
            if head.last_stage().is_some() {
                return Err(ModelError::OwnLastStage { path: path.clone() }.into());
            }
            match model.check_head(&head, path) {
                Err(ModelError::BackboneMismatch { .. }) => eprintln!(
                    "edgeclass: {} was trained on another backbone; timing it anyway",
                    path.display()
                ),
                other => other?,
            }
            Ok(head)
        })
        .collect()
}

/// Buffers of a frame classified by fc and by every head on the backbone's features.
#[derive(Default)]
struct HeadBuffers {
    fc_logits: Vec<f32>,
    features: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
}

/// One frame with the heads: backbone, fc and Top-3, then every head and its Top-3. Returns
/// the time of the heads alone.
fn forward_with_heads(
    model: &Model,
    heads: &[Head],
    input: &[f32],
    buffers: &mut HeadBuffers,
) -> Result<Duration, ModelError> {
    model.forward_with_features(input, &mut buffers.fc_logits, &mut buffers.features)?;
    softmax_in_place(&mut buffers.fc_logits);
    std::hint::black_box(top_k(&buffers.fc_logits, 3));
    let started = Instant::now();
    for head in heads {
        head.forward(&buffers.features, &mut buffers.hidden, &mut buffers.logits);
        softmax_in_place(&mut buffers.logits);
        std::hint::black_box(top_k(&buffers.logits, 3));
    }
    Ok(started.elapsed())
}

fn measure(args: &Args, precision: Precision, threads: usize) -> anyhow::Result<Measurement> {
    let model = match &args.weights {
        Some(path) => Model::load(path, precision, threads)?,
        None if args.dynamic => Model::synthetic(SYNTHETIC_SEED, precision, threads)?,
        None => Model::synthetic_calibrated(SYNTHETIC_SEED, precision, threads)?,
    };
    let heads = load_heads(&args.heads, &model)?;
    let input = synthetic_input(SYNTHETIC_SEED, model.input_size());
    let mut logits = Vec::new();
    let mut buffers = HeadBuffers::default();
    for _ in 0..args.warmup {
        model.forward(&input, &mut logits)?;
        if !heads.is_empty() {
            forward_with_heads(&model, &heads, &input, &mut buffers)?;
        }
    }
    let mut times = Vec::with_capacity(args.runs);
    let mut with_heads = Vec::with_capacity(args.runs);
    let mut heads_only = Vec::with_capacity(args.runs);
    let mut layer_times: Vec<(String, Vec<Duration>)> = Vec::new();
    for run in 0..args.runs {
        // Odd runs time the frame with heads first, so neither kind always follows the other.
        let heads_first = !heads.is_empty() && run % 2 == 1;
        let mut time_with_heads = || -> Result<(), ModelError> {
            if heads.is_empty() {
                return Ok(());
            }
            let started = Instant::now();
            let alone = forward_with_heads(&model, &heads, &input, &mut buffers)?;
            with_heads.push(started.elapsed());
            heads_only.push(alone);
            Ok(())
        };
        if heads_first {
            time_with_heads()?;
        }
        let started = Instant::now();
        if args.layers {
            let profile = model.forward_profiled(&input, &mut logits)?;
            if layer_times.is_empty() {
                layer_times = profile
                    .iter()
                    .map(|(n, _)| (n.clone(), Vec::new()))
                    .collect();
            }
            for ((_, all), (_, d)) in layer_times.iter_mut().zip(profile) {
                all.push(d);
            }
        } else {
            model.forward(&input, &mut logits)?;
        }
        softmax_in_place(&mut logits);
        std::hint::black_box(top_k(&logits, 3));
        times.push(started.elapsed());
        if !heads_first {
            time_with_heads()?;
        }
    }
    let median_ms = percentile_ms(&mut times, 0.5);
    let heads = (!heads.is_empty()).then(|| {
        let with_median = percentile_ms(&mut with_heads, 0.5);
        let heads_median_ms = percentile_ms(&mut heads_only, 0.5);
        HeadsMeasurement {
            count: heads.len(),
            median_ms: with_median,
            ratio: with_median / median_ms,
            heads_median_ms,
            percent_per_head: heads_median_ms / heads.len() as f64 / median_ms * 100.0,
        }
    });
    Ok(Measurement {
        precision,
        threads: model.threads(),
        activations: model.activation_scales().to_string(),
        median_ms,
        p90_ms: percentile_ms(&mut times, 0.9),
        images_per_s: 1e3 / median_ms,
        peak_rss_mib: peak_rss_mib(),
        speedup_vs_f32: None,
        layers: layer_times
            .into_iter()
            .map(|(name, mut d)| (name, percentile_ms(&mut d, 0.5)))
            .collect(),
        heads,
    })
}

/// The `q` quantile (nearest rank) in milliseconds.
pub(super) fn percentile_ms(times: &mut [Duration], q: f64) -> f64 {
    times.sort_unstable();
    let rank = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len().max(1));
    times
        .get(rank - 1)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// This process's peak resident set (VmHWM), Linux only.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn print_table(args: &Args, results: &[Measurement]) {
    let source = args.weights.as_ref().map_or_else(
        || format!("synthetic ResNet-18 (seed {SYNTHETIC_SEED})"),
        |p| p.display().to_string(),
    );
    println!(
        "{source}: tensor -> Top-3, {} runs after {} warm-up",
        args.runs, args.warmup
    );
    println!(
        "{:<9} {:<11} {:>7} {:>11} {:>9} {:>9} {:>10} {:>9}",
        "precision", "activations", "threads", "median ms", "p90 ms", "img/s", "peak MiB", "vs f32"
    );
    for r in results {
        let rss = r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.1}"));
        let ratio = r.speedup_vs_f32.map_or("-".into(), |s| format!("{s:.2}x"));
        println!(
            "{:<9} {:<11} {:>7} {:>11.2} {:>9.2} {:>9.1} {:>10} {:>9}",
            r.precision.as_str(),
            r.activations,
            r.threads,
            r.median_ms,
            r.p90_ms,
            r.images_per_s,
            rss,
            ratio
        );
    }
}

/// Per-layer medians of the f32 and q8_0 configurations side by side.
fn print_layers(results: &[Measurement]) {
    let shown: Vec<&Measurement> = results
        .iter()
        .filter(|r| matches!(r.precision, Precision::F32 | Precision::Q8_0) && !r.layers.is_empty())
        .collect();
    let Some(first) = shown.first() else {
        return;
    };
    print!("\n{:<22}", "layer (median ms)");
    for r in &shown {
        print!(" {:>12}", format!("{} x{}", r.precision, r.threads));
    }
    println!();
    for (i, (name, _)) in first.layers.iter().enumerate() {
        print!("{name:<22}");
        for r in &shown {
            let ms = r.layers.get(i).map_or(f64::NAN, |(_, ms)| *ms);
            print!(" {ms:>12.3}");
        }
        println!();
    }
}

/// Each configuration with and without the heads.
fn print_heads(results: &[Measurement]) {
    println!(
        "\n{:<9} {:>7} {:>12} {:>13} {:>7} {:>10} {:>14}",
        "precision", "threads", "fc only ms", "with heads ms", "ratio", "heads ms", "% per head"
    );
    for r in results {
        let Some(h) = &r.heads else {
            continue;
        };
        println!(
            "{:<9} {:>7} {:>12.2} {:>13.2} {:>6.3}x {:>10.4} {:>13.3}%",
            r.precision.as_str(),
            r.threads,
            r.median_ms,
            h.median_ms,
            h.ratio,
            h.heads_median_ms,
            h.percent_per_head
        );
    }
}
