//! The classifier the image commands run: a whole network (ImageNet classes), or a head file
//! on the backbone it was trained on.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::model::{is_head_file, Head, Model, ModelError, IMAGENET_CLASSES};
use crate::postprocess::labels::imagenet;
use crate::postprocess::MeanProbabilities;
use crate::preprocess::{Preprocessor, Tta};

use super::InferenceArgs;

/// What `classify` and `eval` run: the ImageNet fc, or a head on the backbone's features.
pub(crate) struct Classifier {
    pub(crate) model: Model,
    pub(crate) head: Option<Head>,
    /// `model` of the report: the network and precision, and the head file's name.
    pub(crate) description: String,
}

impl Classifier {
    /// The model in `weights`, or the head in `weights` on `backbone` (default: the backbone
    /// file the head records), checked to be the backbone it was trained on.
    pub(crate) fn load(
        weights: &Path,
        backbone: Option<&Path>,
        inference: &InferenceArgs,
    ) -> anyhow::Result<Self> {
        let load = |path: &Path| Model::load(path, inference.precision, inference.threads);
        if !is_head_file(weights) {
            if let Some(backbone) = backbone {
                anyhow::bail!(
                    "--backbone {} is for a head file, but {} is a whole network",
                    backbone.display(),
                    weights.display()
                );
            }
            let model = load(weights).context(
                "no usable model (download one with `edgeclass fetch-model`, or pass --weights)",
            )?;
            model.require_classes(IMAGENET_CLASSES)?;
            let description = model.description();
            return Ok(Classifier {
                model,
                head: None,
                description,
            });
        }
        let head = Head::load(weights)?;
        let backbone = backbone.unwrap_or(&head.backbone().file);
        let model = load(backbone).with_context(|| {
            format!(
                "no usable backbone for the head {} (pass --backbone)",
                weights.display()
            )
        })?;
        model.check_head(&head, weights)?;
        let name = weights.file_stem().unwrap_or_default().to_string_lossy();
        let description = format!("{}+{name}", model.description());
        Ok(Classifier {
            model,
            head: Some(head),
            description,
        })
    }

    /// Name and WordNet id (empty for a head's classes) of class `index`.
    pub(crate) fn class(&self, index: usize) -> (&str, &str) {
        match &self.head {
            Some(head) => (&head.classes()[index], ""),
            None => {
                let class = &imagenet()[index];
                (&class.name, &class.wnid)
            }
        }
    }
}

/// The buffers one image's classification writes, reused from image to image.
#[derive(Default)]
pub(crate) struct Buffers {
    pass: Pass,
    /// The probabilities averaged over the test-time views.
    mean: MeanProbabilities,
    /// The plain view's logits.
    plain: Vec<f32>,
    /// The logits averaged over the views (the plain ones without TTA).
    scores: Vec<f32>,
    /// Preprocessing and inference of the plain view, of the last image.
    pub(crate) plain_time: Duration,
    /// Preprocessing and inference of every view, of the last image.
    pub(crate) time: Duration,
}

impl Buffers {
    /// Runs `classifier` on each of `tta`'s views of the image `preprocessor` decoded last;
    /// [`Buffers::scores`] then holds the logits of the mean probabilities,
    /// [`Buffers::plain_scores`] the plain view's.
    pub(crate) fn classify(
        &mut self,
        classifier: &Classifier,
        preprocessor: &mut Preprocessor,
        tta: Tta,
    ) -> Result<(), ModelError> {
        let started = Instant::now();
        let views = tta.views();
        self.mean.clear();
        for (n, &view) in views.iter().enumerate() {
            let logits = self.pass.run(classifier, preprocessor.view(view))?;
            if n == 0 {
                self.plain.clone_from(logits);
                self.plain_time = started.elapsed();
            }
            if views.len() > 1 {
                self.mean.add(logits, 1.0);
            }
        }
        if views.len() > 1 {
            self.scores.clear();
            self.scores.extend_from_slice(self.mean.logits());
        } else {
            self.scores.clone_from(&self.plain);
        }
        self.time = started.elapsed();
        Ok(())
    }

    /// The classifier's output of the last [`Buffers::classify`], averaged over the views.
    pub(crate) fn scores(&mut self) -> &mut [f32] {
        &mut self.scores
    }

    /// The plain view's output of the last [`Buffers::classify`].
    pub(crate) fn plain_scores(&self) -> &[f32] {
        &self.plain
    }
}

/// The buffers of one pass of the classifier over one tensor.
#[derive(Default)]
struct Pass {
    logits: Vec<f32>,
    features: Vec<f32>,
    hidden: Vec<f32>,
    head_logits: Vec<f32>,
}

impl Pass {
    /// The logits of `classifier` on one tensor.
    fn run(&mut self, classifier: &Classifier, tensor: &[f32]) -> Result<&Vec<f32>, ModelError> {
        let Some(head) = &classifier.head else {
            classifier.model.forward(tensor, &mut self.logits)?;
            return Ok(&self.logits);
        };
        classifier
            .model
            .forward_with_features(tensor, &mut self.logits, &mut self.features)?;
        head.forward(&self.features, &mut self.hidden, &mut self.head_logits);
        Ok(&self.head_logits)
    }
}
