//! Static activation quantization: per-tensor ranges measured on sample images
//! (`edgeclass quantize --calibrate DIR`), stored in the GGUF file's metadata.
//!
//! With ranges for the input and for every convolution's output, the int8 network keeps its
//! activations as 7-bit levels from layer to layer (see [`super::kernels::Requant`]) instead of
//! measuring each tensor's range per frame. Values beyond a calibrated range saturate, so the
//! sample images should look like what the camera sees.
//!
//! Each range trades clipping against rounding ([`Calibrator`]): a wide range keeps rare large
//! values but rounds every other value more coarsely, a narrow one the reverse. The range is
//! the one with the least quantization error on a histogram of the tensor over the sample
//! images (and their mirror images), never narrower than what leaves out only the rarest
//! 0.1 % of the tensor's values in each image.

use std::collections::BTreeMap;

use candle_core::quantized::gguf_file::Value;

use super::kernels::ActQuant;

/// Name of the network input's range.
pub(crate) const INPUT: &str = "input";
/// GGUF metadata key: how many images the ranges were measured on.
const IMAGES_KEY: &str = "edgeclass.calibration.images";
/// GGUF metadata key prefix: `[min, max]` of one tensor (`INPUT` or a layer's output).
const RANGE_PREFIX: &str = "edgeclass.activation_range.";

/// The range of every activation tensor over the calibration images.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActivationRanges {
    images: usize,
    ranges: BTreeMap<String, (f32, f32)>,
}

impl ActivationRanges {
    /// How many images the ranges cover.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Widens the range of `name` to cover `(min, max)`.
    pub(crate) fn widen(&mut self, name: &str, (min, max): (f32, f32)) {
        let range = self.ranges.entry(name.to_string()).or_insert((min, max));
        *range = (range.0.min(min), range.1.max(max));
    }

    /// The quantization covering tensor `name`'s range, if it was measured.
    pub(crate) fn quant(&self, name: &str) -> Option<ActQuant> {
        self.ranges
            .get(name)
            .map(|&(min, max)| ActQuant::for_range(min, max))
    }

    /// The GGUF metadata entries that store these ranges.
    pub(crate) fn to_metadata(&self) -> Vec<(String, Value)> {
        let mut entries = vec![(IMAGES_KEY.to_string(), Value::U32(self.images as u32))];
        entries.extend(self.ranges.iter().map(|(name, &(min, max))| {
            (
                format!("{RANGE_PREFIX}{name}"),
                Value::Array(vec![Value::F32(min), Value::F32(max)]),
            )
        }));
        entries
    }

    /// Reads the ranges of `names` from GGUF metadata. `Ok(None)` when the file carries no
    /// calibration; an error names the key that is missing or malformed.
    pub(crate) fn from_metadata<'a>(
        metadata: &std::collections::HashMap<String, Value>,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<ActivationRanges>, String> {
        let Some(images) = metadata.get(IMAGES_KEY) else {
            return Ok(None);
        };
        let images = match images.to_u32() {
            Ok(n) if n > 0 => n as usize,
            _ => {
                return Err(format!(
                    "{IMAGES_KEY} is {images:?}, expected a positive count"
                ))
            }
        };
        let mut ranges = BTreeMap::new();
        for name in names {
            let key = format!("{RANGE_PREFIX}{name}");
            let value = metadata
                .get(&key)
                .ok_or_else(|| format!("{key} is missing (the file has {IMAGES_KEY})"))?;
            let range = match value {
                Value::Array(v) => match v.as_slice() {
                    [Value::F32(min), Value::F32(max)]
                        if min.is_finite() && max.is_finite() && min <= max =>
                    {
                        Some((*min, *max))
                    }
                    _ => None,
                },
                _ => None,
            };
            let range = range.ok_or_else(|| {
                format!("{key} is {value:?}, expected [min, max] as two finite f32")
            })?;
            ranges.insert(name.to_string(), range);
        }
        Ok(Some(ActivationRanges { images, ranges }))
    }
}

/// Histogram bins per tensor, over its whole range (over the positive and the negative side
/// when it has both, in proportion).
const BINS: usize = 2048;
/// Candidate range ends per side (every `BINS / CANDIDATES`-th bin edge).
const CANDIDATES: usize = 256;
/// How much a clipped value's squared error counts against a rounded one's when the least-error
/// range is chosen: below 1 the range comes out narrower, and the [`CLIPPED`] percentile floor
/// keeps it from clipping more than a few values per image. Top-1 agreement and mean logits
/// cosine with f32 (`tests/bench/int8_fidelity.py`: 64 crops, then `--holdout`; the narrow
/// reference network of `tests/model_reference.rs`: its unseen photo, then 36 views of photos
/// left out of the calibration; the single photo varies by a few 1e-4 between close methods):
///
/// | ranges | 64 crops | holdout | unseen photo | 36 views |
/// |---|---|---|---|---|
/// | 0.1 % percentile per image | 59, 0.99628 | 28, 0.99629 | 0.99907 | 0.99870 |
/// | least error | 59, 0.99936 | 29, 0.99940 | 0.99836 | 0.99896 |
/// | least error, floor, mirrored views | 58, 0.99934 | 31, 0.99940 | 0.99839 | 0.99904 |
/// | clipping weighted 1/2, floor, mirrored views | 60, 0.99930 | 30, 0.99924 | 0.99914 | 0.99909 |
///
/// (ONNX Runtime's static int8: 58, 0.99894 and 30, 0.99902.)
const CLIPPING_WEIGHT: f64 = 0.5;
/// Fraction of each tensor's values, per image and end, that a range may leave out at most:
/// the range always covers the `CLIPPED` and `1 - CLIPPED` quantiles of every image.
const CLIPPED: f64 = 1e-3;

/// Measures the activation ranges over calibration images in two passes over the same images:
/// the first finds each tensor's extremes and per-image percentile range, the second fills a
/// histogram between the extremes, from which [`Calibrator::finish`] picks the range with the
/// least weighted squared quantization error, widened to the percentile range if narrower.
#[derive(Debug, Default)]
pub(crate) struct Calibrator {
    /// Extremes per tensor (first pass), including 0.
    extremes: ActivationRanges,
    /// Per tensor, the union of each image's range without its rarest [`CLIPPED`] values at
    /// either end (first pass), including 0.
    percentiles: ActivationRanges,
    /// Histograms per tensor (second pass), once [`Calibrator::start_histograms`] was called.
    histograms: Option<BTreeMap<String, Histogram>>,
}

impl Calibrator {
    /// Records `values` (one image's) of tensor `name`: widens its extremes and percentile
    /// range on the first pass, adds them to its histogram on the second.
    pub(crate) fn observe(&mut self, name: &str, values: &[f32]) {
        match &mut self.histograms {
            None => {
                let (min, max) = values
                    .iter()
                    .filter(|v| !v.is_nan())
                    .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                self.extremes.widen(name, (min, max));
                if let Some(range) = percentile_range(values) {
                    self.percentiles.widen(name, range);
                }
            }
            Some(histograms) => {
                if let Some(&range) = self.extremes.ranges.get(name) {
                    histograms
                        .entry(name.to_string())
                        .or_insert_with(|| Histogram::new(range))
                        .add(values);
                }
            }
        }
    }

    /// Counts one more image of the first pass.
    pub(crate) fn add_image(&mut self) {
        if self.histograms.is_none() {
            self.extremes.images += 1;
        }
    }

    /// Ends the first pass: the same images are to be observed again.
    pub(crate) fn start_histograms(&mut self) {
        self.histograms.get_or_insert_with(BTreeMap::new);
    }

    /// The range of every tensor: its least-error range widened to its percentile range (its
    /// extremes when it had no second pass).
    pub(crate) fn finish(self) -> ActivationRanges {
        let mut ranges = self.extremes;
        for (name, histogram) in self.histograms.unwrap_or_default() {
            let (lo, hi) = histogram.best_range();
            let (floor_lo, floor_hi) = self
                .percentiles
                .ranges
                .get(&name)
                .copied()
                .unwrap_or_default();
            ranges
                .ranges
                .insert(name, (lo.min(floor_lo), hi.max(floor_hi)));
        }
        ranges
    }
}

/// `values`' range without their rarest [`CLIPPED`] at each end (NaN ignored), including 0;
/// `None` when there is no number.
fn percentile_range(values: &[f32]) -> Option<(f32, f32)> {
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let last = sorted.len().checked_sub(1)?;
    let skip = ((sorted.len() as f64 * CLIPPED) as usize).min(last);
    let (_, &mut max, _) = sorted.select_nth_unstable_by(last - skip, f32::total_cmp);
    let (_, &mut min, _) = sorted.select_nth_unstable_by(skip, f32::total_cmp);
    Some((min.min(0.0), max.max(0.0)))
}

/// Counts of a tensor's non-zero values in `BINS` equal bins over `[min, max]` (0 is a bin
/// edge; zeros are exact at any range, since 0 is always a level, so they are not counted).
#[derive(Debug)]
struct Histogram {
    min: f32,
    width: f32,
    counts: Vec<u64>,
}

impl Histogram {
    fn new((min, max): (f32, f32)) -> Self {
        let span = max - min;
        let width = if span > 0.0 { span / BINS as f32 } else { 1.0 };
        // Round the negative side to whole bins so that 0 falls on an edge.
        let below = (-min / width).ceil();
        Histogram {
            min: -below * width,
            width,
            counts: vec![0; BINS + 1],
        }
    }

    fn add(&mut self, values: &[f32]) {
        let last = self.counts.len() - 1;
        for &v in values {
            if v != 0.0 && !v.is_nan() {
                let bin = ((v - self.min) / self.width).max(0.0) as usize;
                self.counts[bin.min(last)] += 1;
            }
        }
    }

    /// The range `[lo, hi]` (bin edges, `lo <= 0 <= hi`) that minimizes the expected squared
    /// error of quantizing the counted values to `ActQuant::MAX` steps: values outside are
    /// clipped to the nearest end (error weighted by [`CLIPPING_WEIGHT`]), values inside round
    /// to a step of `(hi - lo) / MAX` (error `step^2 / 12`). Counts sit at their bin's centre.
    fn best_range(&self) -> (f32, f32) {
        let n = self.counts.len();
        let centre = |i: usize| self.min + (i as f64 as f32 + 0.5) * self.width;
        // Prefix sums of count, count * x and count * x^2: the clipping error of a tail is
        // then sum(c (x - t)^2) = S2 - 2 t S1 + t^2 S0 over the tail, in O(1).
        let mut s0 = vec![0f64; n + 1];
        let mut s1 = vec![0f64; n + 1];
        let mut s2 = vec![0f64; n + 1];
        for i in 0..n {
            let (c, x) = (self.counts[i] as f64, centre(i) as f64);
            s0[i + 1] = s0[i] + c;
            s1[i + 1] = s1[i] + c * x;
            s2[i + 1] = s2[i] + c * x * x;
        }
        let sum = |s: &[f64], from: usize, to: usize| s[to] - s[from];
        let edge = |i: usize| self.min as f64 + i as f64 * self.width as f64;
        let zero = ((-self.min / self.width).round() as usize).min(n);
        let step = |count: usize| (count / CANDIDATES).max(1);
        // Candidate ends: edges at or below 0 (bins 0..zero lie below), at or above 0.
        let lows: Vec<usize> = (0..=zero).step_by(step(zero)).collect();
        let highs: Vec<usize> = (zero..=n).rev().step_by(step(n - zero)).collect();
        let mut best = (f64::INFINITY, 0, n);
        for &lo in &lows {
            let t = edge(lo);
            let below = sum(&s2, 0, lo) - 2.0 * t * sum(&s1, 0, lo) + t * t * sum(&s0, 0, lo);
            for &hi in &highs {
                let t = edge(hi);
                let above = sum(&s2, hi, n) - 2.0 * t * sum(&s1, hi, n) + t * t * sum(&s0, hi, n);
                let step = (edge(hi) - edge(lo)) / ActQuant::MAX as f64;
                let rounding = sum(&s0, lo, hi) * step * step / 12.0;
                let error = CLIPPING_WEIGHT * (below + above) + rounding;
                if error < best.0 {
                    best = (error, lo, hi);
                }
            }
        }
        (edge(best.1) as f32, edge(best.2) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn ranges_round_trip_through_metadata_and_bad_entries_are_named() {
        let mut ranges = ActivationRanges {
            images: 1,
            ..ActivationRanges::default()
        };
        ranges.widen(INPUT, (-2.0, 2.5));
        ranges.widen("conv1", (0.0, 3.0));
        ranges.widen("conv1", (0.0, 4.0));
        assert_eq!(ranges.quant("conv1"), Some(ActQuant::for_range(0.0, 4.0)));
        ranges.widen("layer1.0.conv1", (-2.0, 17.99));
        let metadata: HashMap<String, Value> = ranges.to_metadata().into_iter().collect();
        let back = ActivationRanges::from_metadata(&metadata, [INPUT, "conv1", "layer1.0.conv1"]);
        assert_eq!(back, Ok(Some(ranges)));

        let missing = ActivationRanges::from_metadata(&metadata, ["layer1.0.conv2"]);
        assert!(
            matches!(missing, Err(e) if e.contains("edgeclass.activation_range.layer1.0.conv2 is missing"))
        );
        let mut bad = metadata.clone();
        bad.insert(
            format!("{RANGE_PREFIX}conv1"),
            Value::Array(vec![Value::F32(f32::NAN), Value::F32(1.0)]),
        );
        let err = ActivationRanges::from_metadata(&bad, ["conv1"]).unwrap_err();
        assert!(
            err.contains("activation_range.conv1") && err.contains("two finite f32"),
            "{err}"
        );
        assert_eq!(
            ActivationRanges::from_metadata(&HashMap::new(), ["conv1"]),
            Ok(None)
        );
    }

    /// The squared error of quantizing `values` to the levels of `[lo, hi]`, as the int8 path
    /// does (clamped to the range, rounded to the nearest level).
    fn quantization_error(values: &[f32], (lo, hi): (f32, f32)) -> f64 {
        let q = ActQuant::for_range(lo, hi);
        values
            .iter()
            .map(|&v| (q.dequantize(q.quantize(v)) - v) as f64)
            .map(|e| e * e)
            .sum()
    }

    #[test]
    fn the_least_error_range_clips_the_tail_less_than_a_percentile_and_beats_both() {
        // Post-ReLU-like: half zeros, half exponential (max about 12, 0.1 % percentile about 6).
        let mut rng = super::super::weights::SplitMix::new(7);
        let values: Vec<f32> = (0..200_000)
            .map(|i| match i % 2 {
                0 => 0.0,
                _ => -(1.0 - rng.next_f32()).ln(),
            })
            .collect();
        let mut calibrator = Calibrator::default();
        calibrator.observe("conv1", &values[..100_000]);
        calibrator.observe("conv1", &values[100_000..]);
        calibrator.add_image();
        calibrator.start_histograms();
        calibrator.observe("conv1", &values[..100_000]);
        calibrator.observe("conv1", &values[100_000..]);
        let ranges = calibrator.finish();
        assert_eq!(ranges.images(), 1);
        let (lo, hi) = ranges.ranges["conv1"];
        let max = values.iter().fold(0f32, |m, &v| m.max(v));
        assert_eq!(lo, 0.0);
        assert!(
            hi > 0.6 * max && hi < 0.95 * max,
            "range {lo}..{hi} (max {max})"
        );
        // It beats min/max and the old 0.1 % percentile on the real quantization error.
        let best = quantization_error(&values, (lo, hi));
        let mut sorted = values.clone();
        sorted.sort_by(f32::total_cmp);
        let percentile = sorted[sorted.len() - 1 - sorted.len() / 1000];
        for other in [max, percentile] {
            let error = quantization_error(&values, (0.0, other));
            assert!(best < error, "{best} vs {error} at 0..{other}");
        }
    }

    #[test]
    fn the_range_never_clips_more_than_the_percentile_of_an_image() {
        // 0.3 % of the values just above the bulk: the least-error range clips them (cheap),
        // but the range must keep all but the rarest 0.1 % of the image.
        let mut rng = super::super::weights::SplitMix::new(11);
        let values: Vec<f32> = (0..100_000)
            .map(|i| {
                let u = rng.next_f32();
                if i % 1000 < 3 {
                    1.0 + 0.01 * u
                } else {
                    u
                }
            })
            .collect();
        let mut calibrator = Calibrator::default();
        calibrator.observe("conv1", &values);
        calibrator.start_histograms();
        calibrator.observe("conv1", &values);
        let least_error = calibrator.histograms.as_ref().unwrap()["conv1"].best_range();
        let ranges = calibrator.finish();
        let mut sorted = values.clone();
        sorted.sort_by(f32::total_cmp);
        let percentile = sorted[sorted.len() - 1 - 100];
        assert!(
            least_error.1 < percentile,
            "{least_error:?} vs {percentile}"
        );
        assert_eq!(ranges.ranges["conv1"], (0.0, percentile));
    }

    #[test]
    fn signed_tensors_get_both_ends_and_a_tensor_without_histogram_keeps_its_extremes() {
        let values: Vec<f32> = (0..10_000).map(|i| (i as f32 - 3000.0) / 1000.0).collect();
        let mut calibrator = Calibrator::default();
        calibrator.observe(INPUT, &values);
        calibrator.observe("only_first_pass", &[-1.0, 2.0]);
        calibrator.start_histograms();
        calibrator.observe(INPUT, &values);
        let ranges = calibrator.finish();
        // Uniform values: clipping anything costs more than it saves.
        let (lo, hi) = ranges.ranges[INPUT];
        assert!(
            (lo + 3.0).abs() < 0.05 && (hi - 7.0).abs() < 0.05,
            "{lo}..{hi}"
        );
        assert_eq!(ranges.ranges["only_first_pass"], (-1.0, 2.0));
    }
}
