//! Measured accuracy on a labelled set: what `edgeclass eval` computes from the model's logits
//! and each frame's true class, independent of where the frames came from.
//!
//! - [`metrics`]: the pure functions (accuracy, confusion matrix, calibration error, threshold
//!   trade-off, temperature scaling);
//! - [`Evaluation`]: all of them for one set, ready for text, JSON ([`serde::Serialize`]) and
//!   the HTML [`report`];
//! - [`Evaluation::thresholds_toml`]: the recommended thresholds in the config's
//!   `[postprocess]` form.
//!
//! Scores are the model's softmax as the daemon thresholds them (divided by any temperature
//! the model file stores). The fitted temperature is reported with the calibration error it
//! gives; `edgeclass eval --update-model` stores it in the model file, and then recommends
//! thresholds on the calibrated scores.

pub mod metrics;
pub mod report;

use std::fmt::Write as _;

use serde::Serialize;

use metrics::{CalibrationBin, ClassScores, TradeOff};

/// One labelled frame: the model's logits and the index of its true class.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The model's raw logits for the frame, one per class (before softmax).
    pub logits: Vec<f32>,
    /// Model output index of the frame's true class.
    pub truth: usize,
}

/// A class of the labelled set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelledClass {
    /// Model output index.
    pub index: usize,
    /// Key that names the class in `[postprocess.thresholds]` (a WordNet id for ImageNet).
    pub key: String,
    /// Human-readable name.
    pub name: String,
}

/// The lowest threshold reaching a target precision, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recommendation {
    /// The lowest threshold whose covered accuracy reaches the target; `None`: unreachable.
    pub reached: Option<TradeOff>,
    /// The highest covered accuracy any threshold gives, to say how far off an unreachable
    /// target is.
    pub best_accuracy: Option<f64>,
}

impl Recommendation {
    fn new(curve: &[TradeOff], target: f64) -> Self {
        Self {
            reached: metrics::lowest_reaching(curve, target),
            best_accuracy: curve.iter().filter_map(|p| p.accuracy).reduce(f64::max),
        }
    }
}

/// Figures of one class of the set.
#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    /// Which class (its fields are flattened into the JSON object).
    #[serde(flatten)]
    pub class: LabelledClass,
    /// Its support, precision, recall and F1 (flattened into the JSON object).
    #[serde(flatten)]
    pub scores: ClassScores,
    /// Frames whose top-1 is this class (right or wrong).
    pub predicted: usize,
    /// Trade-off over the frames predicted as this class: coverage is the share of them that
    /// reach the threshold.
    pub trade_off: Vec<TradeOff>,
    /// Per-class threshold for the target precision, when one was asked for.
    pub recommended: Option<Recommendation>,
}

/// Calibration before and after temperature scaling.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// Expected calibration error of the raw softmax.
    pub ece: f64,
    /// Reliability diagram of the raw softmax, [`metrics::CALIBRATION_BINS`] equal-width bins.
    pub bins: Vec<CalibrationBin>,
    /// The temperature minimizing the negative log-likelihood on this set.
    pub temperature: f64,
    /// Mean negative log-likelihood of the true classes under the raw softmax.
    pub nll: f64,
    /// Mean negative log-likelihood of the true classes under softmax(logits / temperature).
    pub nll_calibrated: f64,
    /// Expected calibration error of softmax(logits / temperature).
    pub ece_calibrated: f64,
    /// Reliability diagram of softmax(logits / temperature).
    pub bins_calibrated: Vec<CalibrationBin>,
}

/// Every figure of `edgeclass eval` for one labelled set.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Number of frames evaluated.
    pub images: usize,
    /// Share of frames whose top-1 is the true class, in [0, 1].
    pub top1_accuracy: f64,
    /// Share of frames whose true class is among the five highest scores, in [0, 1].
    pub top5_accuracy: f64,
    /// In the order of the confusion matrix's rows.
    pub classes: Vec<ClassReport>,
    /// Rows: true class; columns: predicted class, then "other" (outside the set).
    pub confusion: Vec<Vec<usize>>,
    /// Calibration of the raw softmax, and after temperature scaling.
    pub calibration: Calibration,
    /// Global trade-off over all frames.
    pub trade_off: Vec<TradeOff>,
    /// The precision asked for with `--target-precision`.
    pub target_precision: Option<f64>,
    /// Global threshold for the target precision.
    pub recommended: Option<Recommendation>,
}

impl Evaluation {
    /// Evaluates `samples`, whose truths must all be among `classes`.
    pub fn new(samples: &[Sample], classes: Vec<LabelledClass>, target: Option<f64>) -> Self {
        let truth: Vec<usize> = samples.iter().map(|s| s.truth).collect();
        let logits: Vec<Vec<f32>> = samples.iter().map(|s| s.logits.clone()).collect();
        let probs: Vec<Vec<f32>> = logits
            .iter()
            .map(|z| metrics::softmax_with_temperature(z, 1.0))
            .collect();
        let best: Vec<(usize, f32)> = probs.iter().map(|p| metrics::top1(p)).collect();
        let predicted: Vec<usize> = best.iter().map(|&(class, _)| class).collect();
        let frames: Vec<(f32, bool)> = best
            .iter()
            .zip(&truth)
            .map(|(&(class, score), &t)| (score, class == t))
            .collect();

        let indices: Vec<usize> = classes.iter().map(|c| c.index).collect();
        let confusion = metrics::confusion_matrix(&predicted, &truth, &indices);
        let scores = metrics::class_scores(&confusion);
        let class_reports = classes
            .into_iter()
            .zip(scores)
            .map(|(class, scores)| {
                let own: Vec<(f32, bool)> = frames
                    .iter()
                    .zip(&predicted)
                    .filter(|(_, &p)| p == class.index)
                    .map(|(&frame, _)| frame)
                    .collect();
                let trade_off = metrics::trade_off(&own);
                ClassReport {
                    recommended: target.map(|t| Recommendation::new(&trade_off, t)),
                    predicted: own.len(),
                    trade_off,
                    class,
                    scores,
                }
            })
            .collect();

        let trade_off = metrics::trade_off(&frames);
        Self {
            images: samples.len(),
            top1_accuracy: metrics::top_k_accuracy(&probs, &truth, 1),
            top5_accuracy: metrics::top_k_accuracy(&probs, &truth, 5),
            classes: class_reports,
            confusion,
            calibration: calibrate(&logits, &truth, &frames),
            recommended: target.map(|t| Recommendation::new(&trade_off, t)),
            trade_off,
            target_precision: target,
        }
    }

    /// One threshold per class (in class order) for a model's metadata: the class's lowest
    /// threshold reaching the target precision, else the global one, else `floor`; never below
    /// `floor` (a perfect but small set would otherwise recommend 0, "always sure").
    pub fn class_thresholds(&self, floor: f32) -> Vec<f32> {
        let reached = |r: &Option<Recommendation>| r.and_then(|r| r.reached).map(|p| p.threshold);
        let global = reached(&self.recommended);
        self.classes
            .iter()
            .map(|class| {
                reached(&class.recommended)
                    .or(global)
                    .unwrap_or(floor)
                    .max(floor)
            })
            .collect()
    }

    /// The recommended thresholds as a `[postprocess]` TOML snippet the config loads; an
    /// unreachable target leaves its key out and says so in a comment. `None` without a target.
    pub fn thresholds_toml(&self) -> Option<String> {
        let target = self.target_precision?;
        let mut toml = format!(
            "# edgeclass eval: thresholds for a precision of {target:.2} on {} labelled images.\n\
             # Keys are WordNet ids; a class in a configured group needs the group's threshold.\n\
             [postprocess]\n",
            self.images
        );
        let line =
            |name: &str, key: &str, recommendation: &Recommendation| match recommendation.reached {
                Some(point) => format!(
                    "{key} = {:.2}  # {name}: {:.1} % covered, {:.1} % right\n",
                    point.threshold,
                    point.coverage * 100.0,
                    point.accuracy.unwrap_or(0.0) * 100.0
                ),
                None => format!(
                    "# {key}: {name}: {target:.2} unreachable (best {})\n",
                    percent(recommendation.best_accuracy)
                ),
            };
        if let Some(global) = &self.recommended {
            toml.push_str(&line("every other output", "threshold", global));
        }
        toml.push_str("\n[postprocess.thresholds]\n");
        for class in &self.classes {
            if let Some(recommendation) = &class.recommended {
                let name = class.class.name.replace(['\n', '\r'], " ");
                toml.push_str(&line(&name, &class.class.key, recommendation));
            }
        }
        Some(toml)
    }

    /// A plain-text summary: totals, per-class table, calibration and recommendations.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} images: top-1 {:.1} %, top-5 {:.1} %",
            self.images,
            self.top1_accuracy * 100.0,
            self.top5_accuracy * 100.0
        );
        let c = &self.calibration;
        let _ = writeln!(
            out,
            "calibration error (ECE, 15 bins): {:.4}; temperature {:.3} gives {:.4} (NLL {:.4} -> {:.4})\n",
            c.ece, c.temperature, c.ece_calibrated, c.nll, c.nll_calibrated
        );
        let _ = writeln!(
            out,
            "{:<30} {:>8} {:>9} {:>9} {:>7} {:>9}",
            "class", "support", "precision", "recall", "F1", "threshold"
        );
        for class in &self.classes {
            let s = &class.scores;
            let _ = writeln!(
                out,
                "{:<30} {:>8} {:>9.3} {:>9.3} {:>7.3} {:>9}",
                class.class.name,
                s.support,
                s.precision,
                s.recall,
                s.f1,
                class
                    .recommended
                    .as_ref()
                    .map_or("-".to_string(), threshold)
            );
        }
        let _ = writeln!(
            out,
            "\nconfusion (rows: truth, columns: predicted, last: other)"
        );
        for (class, row) in self.classes.iter().zip(&self.confusion) {
            let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
            let _ = writeln!(out, "{:<30} {}", class.class.name, cells.join(""));
        }
        let _ = writeln!(out, "\nthreshold  coverage  accuracy");
        for point in self.trade_off.iter().step_by(10) {
            let _ = writeln!(
                out,
                "{:>9.2} {:>8.1}% {:>9}",
                point.threshold,
                point.coverage * 100.0,
                percent(point.accuracy)
            );
        }
        if let (Some(target), Some(global)) = (self.target_precision, &self.recommended) {
            let _ = writeln!(
                out,
                "\nglobal threshold for precision {target:.2}: {}",
                recommendation_text(global)
            );
        }
        out
    }
}

/// `62.5 %`, or `-` for no value.
fn percent(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{:.1} %", v * 100.0))
}

/// The recommended threshold, or `unreachable`.
fn threshold(recommendation: &Recommendation) -> String {
    recommendation
        .reached
        .map_or("unreachable".to_string(), |p| format!("{:.2}", p.threshold))
}

/// A recommendation with what it costs in coverage.
fn recommendation_text(recommendation: &Recommendation) -> String {
    match recommendation.reached {
        Some(point) => format!(
            "{:.2} (covers {:.1} % of frames, {} right; {:.1} % become unknown)",
            point.threshold,
            point.coverage * 100.0,
            percent(point.accuracy),
            (1.0 - point.coverage) * 100.0
        ),
        None => format!(
            "unreachable (the best any threshold gives is {})",
            percent(recommendation.best_accuracy)
        ),
    }
}

/// Calibration of the raw softmax and after fitting a temperature.
fn calibrate(logits: &[Vec<f32>], truth: &[usize], frames: &[(f32, bool)]) -> Calibration {
    let confidence: Vec<f64> = frames.iter().map(|&(s, _)| s as f64).collect();
    let correct: Vec<bool> = frames.iter().map(|&(_, ok)| ok).collect();
    let (bins, ece) = metrics::calibration(&confidence, &correct);
    let temperature = metrics::fit_temperature(logits, truth);
    // Dividing by T keeps the arg max, so only the confidences change.
    let scaled: Vec<f64> = logits
        .iter()
        .map(|z| metrics::top1(&metrics::softmax_with_temperature(z, temperature)).1 as f64)
        .collect();
    let (bins_calibrated, ece_calibrated) = metrics::calibration(&scaled, &correct);
    Calibration {
        ece,
        bins,
        temperature,
        nll: metrics::nll(logits, truth, 1.0),
        nll_calibrated: metrics::nll(logits, truth, temperature),
        ece_calibrated,
        bins_calibrated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(index: usize, name: &str) -> LabelledClass {
        LabelledClass {
            index,
            key: format!("n{index:08}"),
            name: name.to_string(),
        }
    }

    fn sample(logits: &[f32], truth: usize) -> Sample {
        Sample {
            logits: logits.to_vec(),
            truth,
        }
    }

    /// Six frames over classes 0 and 1 of a 3-class model (class 2 stands for "other").
    fn six() -> Evaluation {
        let samples = [
            sample(&[4.0, 0.0, 0.0], 0),
            sample(&[3.0, 0.0, 0.0], 0),
            sample(&[0.0, 1.0, 0.0], 0),
            sample(&[0.0, 4.0, 0.0], 1),
            sample(&[0.0, 0.5, 1.0], 1),
            sample(&[1.0, 0.0, 0.0], 1),
        ];
        Evaluation::new(&samples, vec![class(0, "a<b"), class(1, "c&d")], Some(0.99))
    }

    #[test]
    fn evaluation_assembles_the_metrics() {
        let e = six();
        assert_eq!(e.images, 6);
        assert!((e.top1_accuracy - 0.5).abs() < 1e-12);
        assert_eq!(e.confusion, vec![vec![2, 1, 0], vec![1, 1, 1]]);
        assert_eq!(e.classes[0].predicted, 3);
        assert_eq!(e.classes[1].predicted, 2);
        // Class 0's frames: scores e^4/(e^4+2), e^3/(e^3+2) right, e/(e+2) = 0.576 wrong.
        let reached = e.classes[0].recommended.unwrap().reached.unwrap();
        assert_eq!(reached.threshold, 0.58);
        assert!((reached.coverage - 2.0 / 3.0).abs() < 1e-12);
        // Globally the three right frames score 0.965, 0.965, 0.909; the wrong ones 0.576,
        // 0.576, 0.507.
        let global = e.recommended.unwrap().reached.unwrap();
        assert_eq!(global.threshold, 0.58);
        assert!((global.coverage - 0.5).abs() < 1e-12);
        assert_eq!(global.accuracy, Some(1.0));
        assert!(e.calibration.nll_calibrated <= e.calibration.nll);
    }

    #[test]
    fn thresholds_snippet_loads_as_postprocess_config() {
        let e = six();
        let toml_text = e.thresholds_toml().unwrap();
        #[derive(serde::Deserialize)]
        struct File {
            postprocess: crate::postprocess::PostprocessConfig,
        }
        let file: File = toml::from_str(&toml_text).unwrap();
        let global = e.recommended.unwrap().reached.unwrap().threshold;
        assert_eq!(file.postprocess.threshold, global);
        assert_eq!(
            file.postprocess.thresholds.get("n00000000"),
            Some(&0.58),
            "{toml_text}"
        );
        // Class 1's frames: 0.965 right, 0.576 wrong.
        assert_eq!(file.postprocess.thresholds.get("n00000001"), Some(&0.58));
        assert!(toml_text.contains("c&d"), "{toml_text}");
    }

    #[test]
    fn no_snippet_without_target() {
        let e = Evaluation::new(&[sample(&[1.0, 0.0], 0)], vec![class(0, "a")], None);
        assert_eq!(e.thresholds_toml(), None);
        assert!(e.text().contains("1 images"));
    }
}
