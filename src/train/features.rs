//! The frozen part of the network, run once: every picture's backbone features, for the
//! picture itself (the eval transform, as the daemon sees it) and for its augmented views.
//! Epochs then train on these cached vectors, so they cost microseconds, not inferences.

use std::path::PathBuf;

use image::RgbImage;

use super::augment::Augmentation;
use crate::dataset::TrainingClass;
use crate::model::{Model, ModelError, SplitMix};
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
/// ones (none without `augmentation`). Unreadable or corrupt pictures are skipped and
/// reported, never fatal; `progress` is called after each picture. Seeded: the same inputs
/// give the same features.
pub fn extract(
    model: &Model,
    preprocessor: &mut Preprocessor,
    classes: &[TrainingClass],
    augmentation: Option<&Augmentation>,
    views: usize,
    seed: u64,
    mut progress: impl FnMut(),
) -> Result<(Vec<Picture>, Vec<Skipped>), ModelError> {
    let mut pictures = Vec::new();
    let mut skipped = Vec::new();
    let mut rng = SplitMix::new(seed);
    let mut source = RgbImage::default();
    let mut view_image = RgbImage::default();
    let mut logits = Vec::new();
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
            };
            let mut features = Vec::new();
            model.forward_with_features(preprocessor.normalize(), &mut logits, &mut features)?;
            picture.views.push(features);
            if let Some(augmentation) = augmentation {
                for _ in 0..views {
                    let view = augmentation.draw(&mut rng, source.width(), source.height());
                    view.render(&source, side, &mut view_image);
                    let mut features = Vec::new();
                    model.forward_with_features(
                        preprocessor.transform(&view_image),
                        &mut logits,
                        &mut features,
                    )?;
                    picture.views.push(features);
                }
            }
            pictures.push(picture);
            progress();
        }
    }
    Ok((pictures, skipped))
}
