//! The classifier the image commands run: a whole network (ImageNet classes), or a head file
//! on the backbone it was trained on.

use std::path::Path;

use anyhow::Context;

use crate::model::{is_head_file, Head, Model, IMAGENET_CLASSES};
use crate::postprocess::labels::imagenet;

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
    logits: Vec<f32>,
    features: Vec<f32>,
    hidden: Vec<f32>,
    head_logits: Vec<f32>,
}

impl Buffers {
    /// Runs `classifier` on `tensor`; [`Buffers::scores`] then holds its logits.
    pub(crate) fn classify(
        &mut self,
        classifier: &Classifier,
        tensor: &[f32],
    ) -> Result<(), crate::model::ModelError> {
        let Some(head) = &classifier.head else {
            return classifier.model.forward(tensor, &mut self.logits);
        };
        classifier
            .model
            .forward_with_features(tensor, &mut self.logits, &mut self.features)?;
        head.forward(&self.features, &mut self.hidden, &mut self.head_logits);
        Ok(())
    }

    /// The classifier's output of the last [`Buffers::classify`].
    pub(crate) fn scores(&mut self, classifier: &Classifier) -> &mut [f32] {
        match classifier.head {
            Some(_) => &mut self.head_logits,
            None => &mut self.logits,
        }
    }
}
