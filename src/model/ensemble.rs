//! Ensembles of heads: several heads on one backbone with the same classes, whose
//! probabilities are averaged (with optional weights). One head is an ensemble of one.

use std::path::{Path, PathBuf};

use super::{FeatureMap, Head, Model, ModelError};
use crate::postprocess::MeanProbabilities;

/// Heads with the same classes, run on the same features; their softmax probabilities are
/// averaged with their weights.
#[derive(Debug, Clone)]
pub struct Ensemble {
    members: Vec<Head>,
    /// The members' files, for messages.
    paths: Vec<PathBuf>,
    weights: Vec<f32>,
}

/// The buffers [`Ensemble::forward`] reuses from call to call.
#[derive(Debug, Default)]
pub struct EnsembleBuffers {
    hidden: Vec<f32>,
    /// The pooled output of a member's own last stage.
    own_features: Vec<f32>,
    member_logits: Vec<f32>,
    mean: MeanProbabilities,
}

impl Ensemble {
    /// Reads the head files into an ensemble (see [`Ensemble::new`]).
    pub fn load(paths: &[PathBuf], weights: Option<Vec<f32>>) -> Result<Ensemble, ModelError> {
        let heads = paths
            .iter()
            .map(|path| Ok((path.clone(), Head::load(path)?)))
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ensemble::new(heads, weights)
    }

    /// Fails unless every member was trained on `model`'s backbone ([`Model::check_head`]).
    pub fn check_backbone(&self, model: &Model) -> Result<(), ModelError> {
        self.members
            .iter()
            .zip(&self.paths)
            .try_for_each(|(head, path)| model.check_head(head, path))
    }

    /// The members' files, in order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// An ensemble of the heads read from their files, weighted by `weights` (one per head,
    /// each finite and above 0; `None`: equal weights). Fails naming the file of a head whose
    /// classes (names and order) differ from the first head's.
    pub fn new(
        members: Vec<(PathBuf, Head)>,
        weights: Option<Vec<f32>>,
    ) -> Result<Ensemble, ModelError> {
        let Some((first, first_head)) = members.first() else {
            return Err(ModelError::Ensemble {
                path: PathBuf::new(),
                first: PathBuf::new(),
                reason: "an ensemble needs at least one head".into(),
            });
        };
        let problem = |path: &Path, reason: String| ModelError::Ensemble {
            path: path.to_path_buf(),
            first: first.clone(),
            reason,
        };
        for (path, head) in &members[1..] {
            if head.classes() != first_head.classes() {
                return Err(problem(
                    path,
                    format!(
                        "its classes {:?} are not the first head's {:?}",
                        head.classes(),
                        first_head.classes()
                    ),
                ));
            }
        }
        let weights = weights.unwrap_or_else(|| vec![1.0; members.len()]);
        if let Some(reason) = Ensemble::weights_problem(&weights, members.len()) {
            return Err(problem(first, reason));
        }
        let (paths, members) = members.into_iter().unzip();
        Ok(Ensemble {
            members,
            paths,
            weights,
        })
    }

    /// What is wrong with `weights` for an ensemble of `members` heads, if anything: one per
    /// head, each finite and above 0.
    pub fn weights_problem(weights: &[f32], members: usize) -> Option<String> {
        if weights.len() != members {
            return Some(format!(
                "{} weights for {members} head files: give one per file",
                weights.len()
            ));
        }
        weights
            .iter()
            .find(|w| !w.is_finite() || **w <= 0.0)
            .map(|w| format!("weight {w} is not a finite number above 0"))
    }

    /// The classes every member classifies into.
    pub fn classes(&self) -> &[String] {
        self.members[0].classes()
    }

    /// The members, in order.
    pub fn members(&self) -> &[Head] {
        &self.members
    }

    /// Whether a member brings its own last stage, so [`Ensemble::forward`] needs the
    /// backbone's feature map before it ([`Model::forward_with_stage_input`]).
    pub fn needs_stage_input(&self) -> bool {
        self.members.iter().any(|h| h.last_stage().is_some())
    }

    /// The only member, when there is one.
    pub fn single(&self) -> Option<&Head> {
        match self.members.as_slice() {
            [head] => Some(head),
            _ => None,
        }
    }

    /// Classifies one backbone pass (its pooled `features`, and the feature map before its
    /// last stage when [`Ensemble::needs_stage_input`]) into `logits` whose softmax at
    /// `temperature` is the weighted mean of the members' softmax at `temperature` (1 in the
    /// daemon; distillation's temperature for a teacher). One member writes its own logits
    /// unchanged. `each` sees every member's own logits. Fails only when a member with its own
    /// last stage gets no stage input.
    pub fn forward(
        &self,
        features: &[f32],
        stage_input: Option<&FeatureMap>,
        temperature: f32,
        buffers: &mut EnsembleBuffers,
        logits: &mut Vec<f32>,
        mut each: impl FnMut(usize, &[f32]),
    ) -> Result<(), ModelError> {
        if let Some(head) = self.single() {
            let read = head.features(features, stage_input, &mut buffers.own_features)?;
            head.forward(read, &mut buffers.hidden, logits);
            each(0, logits);
            return Ok(());
        }
        buffers.mean.clear();
        for (index, (head, weight)) in self.members.iter().zip(&self.weights).enumerate() {
            let read = head.features(features, stage_input, &mut buffers.own_features)?;
            head.forward(read, &mut buffers.hidden, &mut buffers.member_logits);
            each(index, &buffers.member_logits);
            buffers
                .member_logits
                .iter_mut()
                .for_each(|l| *l /= temperature);
            buffers.mean.add(&buffers.member_logits, *weight);
        }
        logits.clear();
        logits.extend(buffers.mean.logits().iter().map(|l| l * temperature));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackboneRef, Dense};
    use crate::postprocess::topk::softmax_in_place;

    fn head(classes: &[&str], weight: Vec<f32>) -> Head {
        let backbone = BackboneRef {
            fingerprint: "f".into(),
            file: "b.gguf".into(),
        };
        let classes = classes.iter().map(|c| c.to_string()).collect();
        let dense = Dense {
            weight,
            bias: vec![0.0, 0.5],
        };
        Head::new(classes, vec![dense], 2, backbone).unwrap()
    }

    fn softmax_at(logits: &[f32], temperature: f32) -> Vec<f32> {
        let mut p: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
        softmax_in_place(&mut p);
        p
    }

    fn run(ensemble: &Ensemble, temperature: f32) -> Vec<f32> {
        let (mut buffers, mut logits) = (EnsembleBuffers::default(), Vec::new());
        ensemble
            .forward(
                &[1.0, -2.0],
                None,
                temperature,
                &mut buffers,
                &mut logits,
                |_, _| {},
            )
            .expect("no last stage");
        logits
    }

    #[test]
    fn a_head_with_itself_is_the_head_and_the_mean_holds_at_any_temperature() {
        let a = head(&["open", "closed"], vec![1.0, 2.0, -1.0, 0.5]);
        let b = head(&["open", "closed"], vec![-1.0, 0.0, 3.0, 0.5]);
        let single = Ensemble::new(vec![("a".into(), a.clone())], None).unwrap();
        let twice = Ensemble::new(vec![("a".into(), a.clone()), ("a".into(), a.clone())], None);
        let (one, two) = (run(&single, 1.0), run(&twice.unwrap(), 1.0));
        for (p, q) in softmax_at(&one, 1.0).iter().zip(softmax_at(&two, 1.0)) {
            assert!((p - q).abs() < 1e-6, "{one:?} vs {two:?}");
        }
        // A teacher at temperature 4: softmax(logits / 4) is the weighted mean of the members'.
        let pair =
            Ensemble::new(vec![("a".into(), a), ("b".into(), b)], Some(vec![3.0, 1.0])).unwrap();
        let mut each = Vec::new();
        let (mut buffers, mut logits) = (EnsembleBuffers::default(), Vec::new());
        pair.forward(
            &[1.0, -2.0],
            None,
            4.0,
            &mut buffers,
            &mut logits,
            |_, l| each.push(l.to_vec()),
        )
        .expect("no last stage");
        let (pa, pb) = (softmax_at(&each[0], 4.0), softmax_at(&each[1], 4.0));
        for (i, p) in softmax_at(&logits, 4.0).iter().enumerate() {
            assert!((p - (0.75 * pa[i] + 0.25 * pb[i])).abs() < 1e-6);
        }
    }

    #[test]
    fn members_with_other_classes_or_bad_weights_are_refused_by_file() {
        let a = head(&["open", "closed"], vec![1.0; 4]);
        let b = head(&["closed", "open"], vec![1.0; 4]);
        let err = Ensemble::new(
            vec![("a.gguf".into(), a.clone()), ("b.gguf".into(), b)],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("b.gguf") && err.contains("a.gguf"), "{err}");
        let members = vec![("a.gguf".into(), a.clone()), ("c.gguf".into(), a)];
        let err = Ensemble::new(members, Some(vec![1.0, 0.0])).unwrap_err();
        assert!(err.to_string().contains("weight 0"), "{err}");
    }
}
