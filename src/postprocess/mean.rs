//! Averaging classifiers' probabilities: over the test-time views of an image
//! ([`crate::preprocess::Tta`]) and over the members of an ensemble.

use super::topk::softmax_in_place;

/// A weighted mean of softmax probabilities, handed on as logits: the log of the mean, whose
/// softmax is the mean again, so the postprocessor and `eval` take it like any logits. Its
/// buffers are reused from image to image.
#[derive(Debug, Default, Clone)]
pub struct MeanProbabilities {
    sum: Vec<f32>,
    weight: f32,
    scratch: Vec<f32>,
}

impl MeanProbabilities {
    /// Starts a new mean.
    pub fn clear(&mut self) {
        self.sum.clear();
        self.weight = 0.0;
    }

    /// Adds softmax(`logits`) with `weight`. All logits of one mean have the same length.
    pub fn add(&mut self, logits: &[f32], weight: f32) {
        self.scratch.clear();
        self.scratch.extend_from_slice(logits);
        softmax_in_place(&mut self.scratch);
        if self.sum.is_empty() {
            self.sum.resize(logits.len(), 0.0);
        }
        for (sum, p) in self.sum.iter_mut().zip(&self.scratch) {
            *sum += weight * p;
        }
        self.weight += weight;
    }

    /// The log of the mean probabilities: logits whose softmax is the mean. A probability that
    /// underflowed to 0 becomes the log of the smallest normal float, not minus infinity, so
    /// log-likelihoods stay finite.
    pub fn logits(&mut self) -> &[f32] {
        self.scratch.clear();
        let weight = self.weight;
        self.scratch.extend(
            self.sum
                .iter()
                .map(|sum| (sum / weight).max(f32::MIN_POSITIVE).ln()),
        );
        &self.scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax(logits: &[f32]) -> Vec<f32> {
        let mut p = logits.to_vec();
        softmax_in_place(&mut p);
        p
    }

    #[test]
    fn the_mean_of_one_classifier_with_itself_is_its_softmax() {
        let logits = [2.0, -1.0, 0.5, 7.0];
        let mut mean = MeanProbabilities::default();
        mean.add(&logits, 1.0);
        mean.add(&logits, 3.0);
        let averaged = softmax(mean.logits());
        for (a, b) in averaged.iter().zip(softmax(&logits)) {
            assert!((a - b).abs() < 1e-6, "{averaged:?}");
        }
    }

    #[test]
    fn weights_shift_the_mean_and_clear_starts_over() {
        let mut mean = MeanProbabilities::default();
        mean.add(&[10.0, -10.0], 3.0);
        mean.add(&[-10.0, 10.0], 1.0);
        let p = softmax(mean.logits());
        assert!((p[0] - 0.75).abs() < 1e-4, "{p:?}");
        mean.clear();
        mean.add(&[0.0, 0.0], 1.0);
        assert_eq!(softmax(mean.logits()), [0.5, 0.5]);
    }
}
