//! The `[[heads]]` section: custom classifiers that share the backbone, and the cameras that
//! run them.
//!
//! ```toml
//! [[heads]]
//! name = "garage_door"                               # one MQTT topic level, unique
//! weights = "/var/lib/edgeclass/heads/garage_door.gguf"  # or a list: an ensemble
//! # ensemble_weights = [2.0, 1.0]                   # optional, one per file of the list
//! [heads.postprocess]                                # optional, see crate::postprocess
//! [heads.publish_policy]                             # optional; keys not given: [publish_policy]'s
//!
//! [[cameras]]
//! heads = ["garage_door"]
//! ```

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::tree::Node;
use crate::capture::is_topic_id;
use crate::model::{Ensemble, Head, Model, ModelError};
use crate::postprocess::{HeadPostprocessConfig, PolicyConfig, PostprocessError, Postprocessor};

/// One `[[heads]]` entry: a head file, and how its classifications are postprocessed and
/// published.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// The head's name: in its topics (`<prefix>/<camera>/<name>/event`), Home Assistant ids
    /// and the cameras' `heads` lists.
    pub name: HeadName,
    /// The head file, as `edgeclass train` writes it; or several (a list in the config), with
    /// the same classes: an ensemble averaging their probabilities.
    #[serde(deserialize_with = "one_or_more")]
    pub weights: Vec<PathBuf>,
    /// One weight per file of an ensemble (default: equal), each above 0.
    #[serde(default)]
    pub ensemble_weights: Option<Vec<f32>>,
    /// `[heads.postprocess]`: thresholds, labels, top-k over the head's classes.
    #[serde(default)]
    pub postprocess: HeadPostprocessConfig,
    /// `[heads.publish_policy]`; keys not given take the value of `[publish_policy]`.
    #[serde(default)]
    pub publish_policy: PolicyConfig,
}

impl HeadConfig {
    /// Reads the head files into an ensemble (of one, for one file); given the model, also
    /// checks that each head was trained on its backbone. A head with its own last stage
    /// (`train --unfreeze layer4`) is refused: heads in the daemon share the whole backbone.
    pub fn load(&self, backbone: Option<&Model>) -> Result<Ensemble, ModelError> {
        let heads = Ensemble::load(&self.weights, self.ensemble_weights.clone())?;
        let own_stage = heads
            .members()
            .iter()
            .position(|h| h.last_stage().is_some());
        if let Some(index) = own_stage {
            return Err(ModelError::OwnLastStage {
                path: heads.paths()[index].clone(),
            });
        }
        if let Some(model) = backbone {
            heads.check_backbone(model)?;
        }
        Ok(heads)
    }

    /// The postprocessor of `head` (loaded from this entry, the `index`th), from the head's
    /// classes, its recommended thresholds (a single head's: they were fitted to its own
    /// scores) and `[heads.postprocess]`.
    pub fn postprocessor(
        &self,
        index: usize,
        head: &Ensemble,
    ) -> Result<Postprocessor, PostprocessError> {
        Postprocessor::for_head(
            head.classes(),
            head.single().and_then(Head::thresholds),
            &self.postprocess,
            &format!("heads[{index}].postprocess"),
        )
    }
}

/// `weights`: one path, or a non-empty list of them.
fn one_or_more<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a head file path or a non-empty list of them")]
    enum OneOrMore {
        One(PathBuf),
        More(Vec<PathBuf>),
    }
    match OneOrMore::deserialize(deserializer)? {
        OneOrMore::One(path) => Ok(vec![path]),
        OneOrMore::More(paths) if !paths.is_empty() => Ok(paths),
        OneOrMore::More(_) => Err(serde::de::Error::custom(
            "an empty list: give at least one head file",
        )),
    }
}

/// A head's name: like a camera id, one MQTT topic level, so non-empty ASCII letters, digits,
/// `_` and `-`. Checked when deserialized.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct HeadName(String);

impl HeadName {
    /// The name as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HeadName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        if is_topic_id(&name) {
            Ok(HeadName(name))
        } else {
            Err(format!(
                "{name:?} must be non-empty ASCII letters, digits, '_' or '-' (it goes into MQTT \
                 topics)"
            ))
        }
    }
}

impl fmt::Display for HeadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prepares the merged tree's `heads` before deserializing: refuses the ImageNet-only
/// postprocess keys with a reason, and gives each head's `publish_policy` the keys of the
/// top-level `[publish_policy]` it does not set. `Err` is `(key, problem)`.
pub(super) fn prepare(root: &mut Node) -> Result<(), (String, String)> {
    let Node::Table(root) = root else {
        return Ok(());
    };
    // Only a valid table is inherited: a bad one is reported at its own key, not at a head's.
    let policy = match root.get("publish_policy") {
        Some(Node::Table(policy))
            if PolicyConfig::deserialize(Node::Table(policy.clone())).is_ok() =>
        {
            policy.clone()
        }
        _ => Default::default(),
    };
    let Some(Node::Array(heads)) = root.get_mut("heads") else {
        return Ok(());
    };
    for (index, head) in heads.iter_mut().enumerate() {
        let Node::Table(head) = head else {
            continue;
        };
        if let Some(Node::Table(postprocess)) = head.get("postprocess") {
            for (key, problem) in [
                (
                    "groups",
                    "groups sum ImageNet classes and belong in [postprocess]; a head's classes \
                     are the ones it was trained on",
                ),
                (
                    "label_map",
                    "a head's labels are a table: [heads.postprocess.labels] with class = \
                     \"label\"",
                ),
            ] {
                if postprocess.contains_key(key) {
                    return Err((format!("heads[{index}].postprocess.{key}"), problem.into()));
                }
            }
        }
        if policy.is_empty() {
            continue;
        }
        let own = head
            .entry("publish_policy".to_string())
            .or_insert_with(|| Node::Table(Default::default()));
        // A publish_policy that is not a table is left for deserializing to report.
        if let Node::Table(own) = own {
            for (key, value) in &policy {
                own.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    Ok(())
}
