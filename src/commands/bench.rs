//! `edgeclass bench`: tensor -> Top-3 latency per precision and thread count.
//!
//! Each configuration runs in a child process of this binary (`bench --child ...`) so its peak
//! RSS (VmHWM) is its own and one configuration's caches do not warm the next.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::model::{synthetic_input, Model, Precision};
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
}

/// Measures every (thread count, precision) pair in its own child process and prints median and
/// p90 latency, images per second, peak RSS and the speedup over f32, as a table or JSON lines.
/// With `--child`, measures the single configuration given in this process instead.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.runs == 0 {
        anyhow::bail!("--runs must be at least 1");
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
    Ok(())
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

fn measure(args: &Args, precision: Precision, threads: usize) -> anyhow::Result<Measurement> {
    let model = match &args.weights {
        Some(path) => Model::load(path, precision, threads)?,
        None if args.dynamic => Model::synthetic(SYNTHETIC_SEED, precision, threads)?,
        None => Model::synthetic_calibrated(SYNTHETIC_SEED, precision, threads)?,
    };
    let input = synthetic_input(SYNTHETIC_SEED, model.input_size());
    let mut logits = Vec::new();
    for _ in 0..args.warmup {
        model.forward(&input, &mut logits)?;
    }
    let mut times = Vec::with_capacity(args.runs);
    let mut layer_times: Vec<(String, Vec<Duration>)> = Vec::new();
    for _ in 0..args.runs {
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
    }
    let median_ms = percentile_ms(&mut times, 0.5);
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
    })
}

/// The `q` quantile (nearest rank) in milliseconds.
fn percentile_ms(times: &mut [Duration], q: f64) -> f64 {
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
