//! Pure metric functions over probabilities and true labels: accuracy, per-class figures, the
//! confusion matrix, calibration error, the threshold trade-off and temperature scaling.

use serde::Serialize;

use crate::postprocess::topk::top_k;

/// Equal-width confidence bins of the expected calibration error.
pub const CALIBRATION_BINS: usize = 15;
/// Thresholds of the trade-off: 0.00, 0.01, ..., 0.99.
pub const THRESHOLD_STEPS: usize = 100;

/// The threshold of step `step`, as the config loader would read it from `step / 100` written
/// with two decimals (TOML floats are parsed as f64 and then narrowed).
pub fn threshold_at(step: usize) -> f32 {
    (step as f64 / THRESHOLD_STEPS as f64) as f32
}

/// Share of frames whose true class is among the `k` highest probabilities.
pub fn top_k_accuracy(probs: &[Vec<f32>], truth: &[usize], k: usize) -> f64 {
    let hits = probs
        .iter()
        .zip(truth)
        .filter(|(p, &t)| top_k(p, k).iter().any(|&(i, _)| i == t))
        .count();
    ratio(hits, probs.len()).unwrap_or(0.0)
}

/// `part / whole`, `None` when `whole` is zero.
fn ratio(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The top-1 class and its probability.
pub fn top1(probs: &[f32]) -> (usize, f32) {
    top_k(probs, 1).first().copied().unwrap_or((0, 0.0))
}

/// Frames by true class (rows) and predicted class (columns), over `classes` plus a last
/// "other" column for predictions outside them. Frames whose truth is outside `classes` are
/// not counted.
pub fn confusion_matrix(
    predicted: &[usize],
    truth: &[usize],
    classes: &[usize],
) -> Vec<Vec<usize>> {
    let position = |class: usize| classes.iter().position(|&c| c == class);
    let mut matrix = vec![vec![0; classes.len() + 1]; classes.len()];
    for (&p, &t) in predicted.iter().zip(truth) {
        if let Some(row) = position(t) {
            matrix[row][position(p).unwrap_or(classes.len())] += 1;
        }
    }
    matrix
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassScores {
    /// Frames whose true class this is.
    pub support: usize,
    /// Share of the frames predicted as this class that are this class; 0 when none is
    /// (scikit-learn's convention).
    pub precision: f64,
    /// Share of this class's frames predicted as it; 0 without support.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
}

/// Per-class scores from a [`confusion_matrix`] of frames whose truths all lie among its
/// classes (column `i` is row `i`'s class, the last column "other").
pub fn class_scores(matrix: &[Vec<usize>]) -> Vec<ClassScores> {
    matrix
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let support: usize = row.iter().sum();
            let predicted: usize = matrix.iter().map(|r| r[i]).sum();
            let precision = ratio(row[i], predicted).unwrap_or(0.0);
            let recall = ratio(row[i], support).unwrap_or(0.0);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassScores {
                support,
                precision,
                recall,
                f1,
            }
        })
        .collect()
}

/// One bin of the reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// Confidence range `(lower, upper]` (the first bin also holds 0).
    pub lower: f64,
    /// Upper end of the range, included in the bin.
    pub upper: f64,
    /// Frames whose top-1 score falls in the bin.
    pub count: usize,
    /// Mean top-1 score of those frames (`None` when empty).
    pub confidence: Option<f64>,
    /// Share of those frames whose top-1 is right.
    pub accuracy: Option<f64>,
}

/// Reliability bins and the expected calibration error: the count-weighted mean of
/// `|accuracy - confidence|` over [`CALIBRATION_BINS`] equal-width bins of top-1 scores.
pub fn calibration(confidence: &[f64], correct: &[bool]) -> (Vec<CalibrationBin>, f64) {
    let bins = CALIBRATION_BINS;
    let mut count = vec![0usize; bins];
    let mut score_sum = vec![0.0f64; bins];
    let mut right = vec![0usize; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        // Bin b holds (b/15, (b+1)/15]; ceil puts a score on a boundary in the lower bin.
        let bin = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        count[bin] += 1;
        score_sum[bin] += c;
        right[bin] += usize::from(ok);
    }
    let total = confidence.len();
    let mut ece = 0.0;
    let table = (0..bins)
        .map(|b| {
            let accuracy = ratio(right[b], count[b]);
            let mean = (count[b] > 0).then(|| score_sum[b] / count[b] as f64);
            if let (Some(a), Some(m)) = (accuracy, mean) {
                ece += count[b] as f64 / total as f64 * (a - m).abs();
            }
            CalibrationBin {
                lower: b as f64 / bins as f64,
                upper: (b + 1) as f64 / bins as f64,
                count: count[b],
                confidence: mean,
                accuracy,
            }
        })
        .collect();
    (table, ece)
}

/// One point of the threshold trade-off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TradeOff {
    /// The threshold the top-1 score is compared with (0.00..=0.99 in steps of 0.01).
    pub threshold: f32,
    /// Share of the frames whose top-1 score reaches the threshold (the rest are "unknown").
    pub coverage: f64,
    /// Share of the covered frames whose top-1 is right (`None` when none is covered).
    pub accuracy: Option<f64>,
}

/// Coverage and covered accuracy for each threshold 0.00..=0.99 over frames given as
/// `(top-1 score, top-1 right)`; a score equal to the threshold is covered, as in the daemon.
pub fn trade_off(frames: &[(f32, bool)]) -> Vec<TradeOff> {
    (0..THRESHOLD_STEPS)
        .map(|step| {
            let threshold = threshold_at(step);
            let covered = frames.iter().filter(|(s, _)| *s >= threshold);
            let (n, right) = covered.fold((0, 0), |(n, r), (_, ok)| (n + 1, r + usize::from(*ok)));
            TradeOff {
                threshold,
                coverage: ratio(n, frames.len()).unwrap_or(0.0),
                accuracy: ratio(right, n),
            }
        })
        .collect()
}

/// The lowest threshold of `curve` whose covered accuracy reaches `target`, `None` when none
/// does.
pub fn lowest_reaching(curve: &[TradeOff], target: f64) -> Option<TradeOff> {
    curve
        .iter()
        .find(|point| point.accuracy.is_some_and(|a| a >= target))
        .copied()
}

/// Mean negative log-likelihood of the true classes under softmax(logits / temperature).
pub fn nll(logits: &[Vec<f32>], truth: &[usize], temperature: f64) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(truth)
        .map(|(z, &t)| {
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = z
                .iter()
                .map(|&v| ((v as f64 - max) / temperature).exp())
                .sum();
            sum.ln() - (z[t] as f64 - max) / temperature
        })
        .sum();
    total / logits.len().max(1) as f64
}

/// The temperature minimizing [`nll`], by golden-section search on log T over [0.01, 100].
/// The NLL is convex in 1/T, so it has a single minimum along log T too.
pub fn fit_temperature(logits: &[Vec<f32>], truth: &[usize]) -> f64 {
    let cost = |log_t: f64| nll(logits, truth, log_t.exp());
    let golden = (5f64.sqrt() - 1.0) / 2.0;
    let (mut low, mut high) = (0.01f64.ln(), 100f64.ln());
    let mut left = high - golden * (high - low);
    let mut right = low + golden * (high - low);
    let (mut cost_left, mut cost_right) = (cost(left), cost(right));
    // 60 steps shrink the 9.2-wide interval below 1e-11.
    for _ in 0..60 {
        if cost_left <= cost_right {
            high = right;
            right = left;
            cost_right = cost_left;
            left = high - golden * (high - low);
            cost_left = cost(left);
        } else {
            low = left;
            left = right;
            cost_left = cost_right;
            right = low + golden * (high - low);
            cost_right = cost(right);
        }
    }
    ((low + high) / 2.0).exp()
}

/// softmax(logits / temperature).
pub fn softmax_with_temperature(logits: &[f32], temperature: f64) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = logits
        .iter()
        .map(|&v| ((v as f64 - max) / temperature).exp())
        .collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| (e / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn top_k_accuracy_counts_truth_in_the_k_best() {
        let probs = vec![
            vec![0.7, 0.2, 0.1],
            vec![0.5, 0.3, 0.2],
            vec![0.1, 0.1, 0.8],
            vec![0.2, 0.5, 0.3],
        ];
        let truth = [0, 1, 2, 0];
        assert!(close(top_k_accuracy(&probs, &truth, 1), 0.5));
        // Frame 1's truth is second, frame 3's third.
        assert!(close(top_k_accuracy(&probs, &truth, 2), 0.75));
        assert!(close(top_k_accuracy(&probs, &truth, 3), 1.0));
    }

    #[test]
    fn confusion_matrix_and_scores_by_hand() {
        // Classes 3 and 7 are in the set; 9 is predicted but not in it.
        let classes = [3, 7];
        let truth = [3, 3, 3, 7, 7, 7, 7];
        let predicted = [3, 3, 7, 7, 7, 3, 9];
        let matrix = confusion_matrix(&predicted, &truth, &classes);
        assert_eq!(matrix, vec![vec![2, 1, 0], vec![1, 2, 1]]);
        let scores = class_scores(&matrix);
        // Class 3: TP 2, predicted 3, support 3.
        assert_eq!(scores[0].support, 3);
        assert!(close(scores[0].precision, 2.0 / 3.0));
        assert!(close(scores[0].recall, 2.0 / 3.0));
        assert!(close(scores[0].f1, 2.0 / 3.0));
        // Class 7: TP 2, predicted 3, support 4: P 2/3, R 1/2, F1 = 2PR/(P+R) = 4/7.
        assert_eq!(scores[1].support, 4);
        assert!(close(scores[1].precision, 2.0 / 3.0));
        assert!(close(scores[1].recall, 0.5));
        assert!(close(scores[1].f1, 4.0 / 7.0));
    }

    #[test]
    fn scores_are_zero_without_predictions_or_support() {
        let scores = class_scores(&[vec![0, 0, 2]]);
        assert_eq!(
            scores[0],
            ClassScores {
                support: 2,
                precision: 0.0,
                recall: 0.0,
                f1: 0.0
            }
        );
    }

    #[test]
    fn calibration_error_by_hand() {
        // Bin 14 (14/15, 1]: scores 0.95, 0.99, one right: |0.5 - 0.97| = 0.47, weight 2/4.
        // Bin 8 (8/15, 9/15]: 0.6 right: |1 - 0.6| = 0.4, weight 1/4.
        // 1/15 lands on a boundary, in bin 0 [0, 1/15]: wrong: |0 - 1/15|, weight 1/4.
        let confidence = [0.95, 0.99, 0.6, 1.0 / 15.0];
        let correct = [true, false, true, false];
        let (bins, ece) = calibration(&confidence, &correct);
        assert_eq!(bins.len(), 15);
        assert_eq!(bins[14].count, 2);
        assert_eq!(bins[8].count, 1);
        assert_eq!(bins[0].count, 1);
        assert_eq!(bins[1].accuracy, None);
        let expected = 0.5 * 0.47 + 0.25 * 0.4 + 0.25 / 15.0;
        assert!(close(ece, expected), "{ece} vs {expected}");
        // Perfectly calibrated: half right at 0.5.
        let (_, ece) = calibration(&[0.5, 0.5], &[true, false]);
        assert!(close(ece, 0.0));
    }

    #[test]
    fn trade_off_and_recommendation_by_hand() {
        let frames = [
            (0.9, true),
            (0.8, true),
            (0.6, false),
            (0.5, true),
            (0.3, false),
        ];
        let curve = trade_off(&frames);
        assert_eq!(curve.len(), 100);
        assert_eq!(curve[0].threshold, 0.0);
        assert_eq!(curve[99].threshold, 0.99);
        assert!(close(curve[0].coverage, 1.0));
        assert!(close(curve[0].accuracy.unwrap(), 0.6));
        // At 0.5 (equal passes): 4 frames, 3 right.
        assert!(close(curve[50].coverage, 0.8));
        assert!(close(curve[50].accuracy.unwrap(), 0.75));
        // At 0.61: 0.9 and 0.8, both right.
        assert!(close(curve[61].accuracy.unwrap(), 1.0));
        assert_eq!(curve[95].accuracy, None);
        assert_eq!(
            lowest_reaching(&curve, 0.75).map(|p| p.threshold),
            Some(0.31)
        );
        assert_eq!(
            lowest_reaching(&curve, 0.9).map(|p| p.threshold),
            Some(0.61)
        );
        let no_right = trade_off(&[(0.9, false)]);
        assert_eq!(lowest_reaching(&no_right, 0.5), None);
    }

    #[test]
    fn thresholds_round_trip_through_two_decimals() {
        for step in 0..THRESHOLD_STEPS {
            let text = format!("{:.2}", threshold_at(step));
            let parsed: f64 = text.parse().unwrap();
            assert_eq!(parsed as f32, threshold_at(step), "{text}");
        }
    }

    #[test]
    fn nll_by_hand() {
        // softmax([0, ln 3]) = [1/4, 3/4].
        let logits = vec![vec![0.0, 3f32.ln()]];
        assert!((nll(&logits, &[1], 1.0) - (4.0f64 / 3.0).ln()).abs() < 1e-6);
        // At T = 2 the logits halve: softmax([0, ln 3 / 2]) = [1/(1+√3), √3/(1+√3)].
        let expected = ((1.0 + 3f64.sqrt()) / 3f64.sqrt()).ln();
        assert!((nll(&logits, &[1], 2.0) - expected).abs() < 1e-6);
    }

    #[test]
    fn fitted_temperature_recovers_a_known_optimum() {
        // Two classes, logits ±a, right with frequency q: the NLL is minimal where
        // sigmoid(2a/T) = q, i.e. T = 2a / ln(q / (1 - q)). With a = 2, q = 3/4: T = 4 / ln 3.
        let mut logits = Vec::new();
        let mut truth = Vec::new();
        for i in 0..4 {
            logits.push(vec![2.0, -2.0]);
            truth.push(usize::from(i == 3));
        }
        let t = fit_temperature(&logits, &truth);
        assert!((t - 4.0 / 3f64.ln()).abs() < 1e-6, "{t}");
        let probs = softmax_with_temperature(&logits[0], t);
        assert!((probs[0] - 0.75).abs() < 1e-6, "{probs:?}");
        // Overconfident (0.98 for 75 % right) before, calibrated after.
        let correct = [true, true, true, false];
        let (_, before) = calibration(&[0.98; 4], &correct);
        let (_, after) = calibration(&[probs[0] as f64; 4], &correct);
        assert!(before > 0.2 && after < 1e-6, "{before} -> {after}");
    }
}
