//! The frozen part of the network, run once: every picture's backbone features, for the
//! picture itself (the eval transform, as the daemon sees it) and for its augmented views.
//! Epochs then train on these cached vectors, so they cost microseconds, not inferences.
//! With the last stage unfrozen, each view's feature map before layer4 is cached too (as f16:
//! `256 x 14 x 14` values, 98 KiB a view at 224 pixels).

use std::path::PathBuf;

use half::f16;
use image::RgbImage;

use super::augment::Augmentation;
use crate::dataset::TrainingClass;
use crate::model::{FeatureMap, Model, ModelError, SplitMix};
use crate::preprocess::{read_image_file, Preprocessor};

/// One picture's cached features.
#[derive(Debug, Clone)]
pub struct Picture {
    /// Its file.
    pub path: PathBuf,
    /// Index of its class.
    pub class: usize,
    /// Features of the picture as the daemon sees it, then of each augmented view.
    pub views: Vec<Vec<f32>>,
    /// Per view, the feature map before the last stage (f16), when kept; else empty.
    pub maps: Vec<Vec<f16>>,
}

impl Picture {
    /// The features of the picture itself (no augmentation): what validation uses.
    pub fn plain(&self) -> &[f32] {
        &self.views[0]
    }
}

/// A picture that could not be used, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped (decoding error, with the file's name).
    pub reason: String,
}

/// Runs the backbone over every picture of `classes`: the plain view and `views` augmented
/// ones (none without `augmentation`), keeping each view's feature map before the last stage
/// too with `keep_maps`. Unreadable or corrupt pictures are skipped and reported, never fatal;
/// `progress` is called after each picture. Seeded: the same inputs give the same features.
#[allow(clippy::too_many_arguments)]
pub fn extract(
    model: &Model,
    preprocessor: &mut Preprocessor,
    classes: &[TrainingClass],
    augmentation: Option<&Augmentation>,
    views: usize,
    keep_maps: bool,
    seed: u64,
    mut progress: impl FnMut(),
) -> Result<(Vec<Picture>, Vec<Skipped>), ModelError> {
    let mut map = FeatureMap::default();
    let mut logits = Vec::new();
    // One backbone pass: the pooled features, and the stage input when kept.
    let mut run = |input: &[f32], picture: &mut Picture| -> Result<(), ModelError> {
        let mut features = Vec::new();
        if keep_maps {
            model.forward_with_stage_input(input, &mut logits, &mut features, &mut map)?;
            picture
                .maps
                .push(map.values.iter().map(|&v| f16::from_f32(v)).collect());
        } else {
            model.forward_with_features(input, &mut logits, &mut features)?;
        }
        picture.views.push(features);
        Ok(())
    };
    let mut pictures = Vec::new();
    let mut skipped = Vec::new();
    let mut rng = SplitMix::new(seed);
    let mut source = RgbImage::default();
    let mut view_image = RgbImage::default();
    let side = preprocessor.config().resize;
    for (class, training_class) in classes.iter().enumerate() {
        for path in &training_class.images {
            let decoded = read_image_file(path).and_then(|frame| {
                let rgb = preprocessor.decode(&frame)?;
                source.clone_from(rgb);
                Ok(())
            });
            if let Err(err) = decoded {
                skipped.push(Skipped {
                    path: path.clone(),
                    reason: format!("{err:#}"),
                });
                progress();
                continue;
            }
            let mut picture = Picture {
                path: path.clone(),
                class,
                views: Vec::with_capacity(1 + views),
                maps: Vec::new(),
            };
            run(preprocessor.normalize(), &mut picture)?;
            if let Some(augmentation) = augmentation {
                for _ in 0..views {
                    let view = augmentation.draw(&mut rng, source.width(), source.height());
                    view.render(&source, side, &mut view_image);
                    run(preprocessor.transform(&view_image), &mut picture)?;
                }
            }
            pictures.push(picture);
            progress();
        }
    }
    Ok((pictures, skipped))
}
