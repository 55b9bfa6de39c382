//! The classifier the image commands run: a whole network (ImageNet classes), or head files
//! (one, or an ensemble averaging several) on the backbone they were trained on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::model::{
    is_head_file, Ensemble, EnsembleBuffers, FeatureMap, Model, ModelError, IMAGENET_CLASSES,
};
use crate::postprocess::labels::imagenet;
use crate::postprocess::MeanProbabilities;
use crate::preprocess::{Preprocessor, Tta};

use super::InferenceArgs;

/// What `classify` and `eval` run: the ImageNet fc, or heads on the backbone's features.
pub(crate) struct Classifier {
    /// Shared with the daemon's pipelines when the web page classifies uploads.
    pub(crate) model: Arc<Model>,
    /// The head, or the ensemble of heads; `None`: the ImageNet fc.
    pub(crate) head: Option<Ensemble>,
    /// `model` of the report: the network and precision, and the head files' names.
    pub(crate) description: String,
}

impl Classifier {
    /// The model in `weights` (one file), or the heads in `weights` (averaged when several) on
    /// `backbone` (default: the backbone file the first head records), checked to be the
    /// backbone each was trained on.
    pub(crate) fn load(
        weights: &[PathBuf],
        backbone: Option<&Path>,
        inference: &InferenceArgs,
    ) -> anyhow::Result<Self> {
        let load = |path: &Path| Model::load(path, inference.precision, inference.threads);
        let [first, rest @ ..] = weights else {
            anyhow::bail!("no --weights given");
        };
        if !is_head_file(first) {
            if let Some(other) = rest.first() {
                anyhow::bail!(
                    "several --weights make an ensemble of head files, but {} is a whole \
                     network (and {} ...)",
                    first.display(),
                    other.display()
                );
            }
            if let Some(backbone) = backbone {
                anyhow::bail!(
                    "--backbone {} is for a head file, but {} is a whole network",
                    backbone.display(),
                    first.display()
                );
            }
            let model = load(first).context(
                "no usable model (download one with `edgeclass fetch-model`, or pass --weights)",
            )?;
            model.require_classes(IMAGENET_CLASSES)?;
            return Ok(Classifier::imagenet(Arc::new(model)));
        }
        let heads = Ensemble::load(weights, None)?;
        let backbone = backbone.unwrap_or(&heads.members()[0].backbone().file);
        let model = load(backbone).with_context(|| {
            format!(
                "no usable backbone for the head {} (pass --backbone)",
                first.display()
            )
        })?;
        heads.check_backbone(&model)?;
        let names: Vec<_> = weights
            .iter()
            .map(|path| path.file_stem().unwrap_or_default().to_string_lossy())
            .collect();
        let description = format!("{}+{}", model.description(), names.join("+"));
        Ok(Classifier {
            model: Arc::new(model),
            head: Some(heads),
            description,
        })
    }

    /// The ImageNet classifier of `model`.
    pub(crate) fn imagenet(model: Arc<Model>) -> Self {
        let description = model.description();
        Classifier {
            model,
            head: None,
            description,
        }
    }

    /// Name and WordNet id (empty for a head's classes) of class `index`.
    pub(crate) fn class(&self, index: usize) -> (&str, &str) {
        match &self.head {
            Some(heads) => (&heads.classes()[index], ""),
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
    /// Each ensemble member's probabilities, averaged over the views.
    members: Vec<MeanProbabilities>,
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
        let members = classifier.head.as_ref().map_or(0, |h| h.members().len());
        self.members
            .resize_with(members, MeanProbabilities::default);
        self.members.iter_mut().for_each(MeanProbabilities::clear);
        for (n, &view) in views.iter().enumerate() {
            let each = |member: usize, logits: &[f32]| self.members[member].add(logits, 1.0);
            let logits = self.pass.run(classifier, preprocessor.view(view), each)?;
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

    /// Ensemble member `index`'s output of the last [`Buffers::classify`], averaged over the
    /// views.
    pub(crate) fn member_scores(&mut self, index: usize) -> &[f32] {
        self.members[index].logits()
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
    /// The feature map before the backbone's last stage, for heads with their own.
    stage_input: FeatureMap,
    heads: EnsembleBuffers,
    head_logits: Vec<f32>,
}

impl Pass {
    /// The logits of `classifier` on one tensor; `each` sees each ensemble member's.
    fn run(
        &mut self,
        classifier: &Classifier,
        tensor: &[f32],
        each: impl FnMut(usize, &[f32]),
    ) -> Result<&Vec<f32>, ModelError> {
        let Some(head) = &classifier.head else {
            classifier.model.forward(tensor, &mut self.logits)?;
            return Ok(&self.logits);
        };
        let model = &classifier.model;
        let stage_input = if head.needs_stage_input() {
            let (logits, features) = (&mut self.logits, &mut self.features);
            model.forward_with_stage_input(tensor, logits, features, &mut self.stage_input)?;
            Some(&self.stage_input)
        } else {
            model.forward_with_features(tensor, &mut self.logits, &mut self.features)?;
            None
        };
        head.forward(
            &self.features,
            stage_input,
            1.0,
            &mut self.heads,
            &mut self.head_logits,
            each,
        )?;
        Ok(&self.head_logits)
    }
}
