//! [`Postprocessor`]: logits to [`Classification`] (semantics in the [module docs](super)).

use std::cell::RefCell;

use super::labels::{class_by_key, imagenet, load_groups, Group, LabelMap};
use super::topk::{softmax_in_place, top_k};
use super::{PostprocessConfig, PostprocessError};

/// One entry of the top-k; serialized as is in the MQTT event's `top3`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// Output label: mapped name, group label, or the English name.
    pub label: String,
    /// ImageNet English name of the class (for a group: its most probable member).
    pub raw_label: String,
    /// ImageNet index of that class.
    pub index: usize,
    /// WordNet id of that class.
    pub wnid: String,
    /// Probability (for a group: the sum over its members).
    pub score: f32,
}

/// The result for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The top-1 output label, or the configured unknown label when below its threshold.
    pub label: String,
    /// The top-1 score (also when `unknown`).
    pub score: f32,
    /// Whether the top-1 was below its threshold.
    pub unknown: bool,
    /// The top-k outputs, highest score first, regardless of thresholds.
    pub top: Vec<Prediction>,
}

/// One thing that can appear in the top-k: a group or an ungrouped class.
#[derive(Debug, Clone)]
struct Output {
    label: String,
    threshold: f32,
}

/// Turns logits into classifications. Immutable and cheap to rebuild, so a config reload builds
/// a new one and swaps it in.
#[derive(Debug, Clone)]
pub struct Postprocessor {
    top_k: usize,
    unknown_label: String,
    /// For each ImageNet class, the index into `outputs` it contributes to.
    output_of_class: Vec<usize>,
    outputs: Vec<Output>,
}

/// Per-thread buffers so `classify` can take `&self`, stay `Sync` and not allocate per frame.
#[derive(Default)]
struct Scratch {
    probs: Vec<f32>,
    output_scores: Vec<f32>,
    /// Per output: the most probable member class and its probability.
    best_member: Vec<(usize, f32)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn check_unit(key: impl FnOnce() -> String, value: f32) -> Result<(), PostprocessError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(PostprocessError::Config {
            key: key(),
            problem: format!("{value} is not a probability in 0.0..=1.0"),
        })
    }
}

/// How classes map onto outputs.
struct OutputLayout {
    outputs: Vec<Output>,
    /// For each class, the output it contributes to.
    output_of_class: Vec<usize>,
    /// For each class, the group it belongs to.
    group_of_class: Vec<Option<usize>>,
}

impl OutputLayout {
    /// One output per group and per ungrouped class, labelled through `label_map`, all with the
    /// global `threshold`. Outputs are ordered by their lowest class index, so top-k ties are
    /// deterministic.
    fn new(
        groups: &[Group],
        label_map: Option<&LabelMap>,
        threshold: f32,
    ) -> Result<Self, PostprocessError> {
        let classes = imagenet();
        let group_labels = match label_map {
            Some(map) => map.group_labels(groups)?,
            None => vec![None; groups.len()],
        };
        let mut group_of_class: Vec<Option<usize>> = vec![None; classes.len()];
        for (g, group) in groups.iter().enumerate() {
            for &member in &group.members {
                group_of_class[member] = Some(g);
            }
        }
        let mut output_of_group: Vec<Option<usize>> = vec![None; groups.len()];
        let mut output_of_class = Vec::with_capacity(classes.len());
        let mut outputs = Vec::new();
        for class in classes {
            let group = group_of_class[class.index];
            if let Some(output) = group.and_then(|g| output_of_group[g]) {
                output_of_class.push(output);
                continue;
            }
            let label = match group {
                Some(g) => group_labels[g].unwrap_or(&groups[g].name),
                None => label_map
                    .and_then(|map| map.class_label(class.index))
                    .unwrap_or(&class.name),
            };
            outputs.push(Output {
                label: label.to_string(),
                threshold,
            });
            let output = outputs.len() - 1;
            if let Some(g) = group {
                output_of_group[g] = Some(output);
            }
            output_of_class.push(output);
        }
        Ok(Self {
            outputs,
            output_of_class,
            group_of_class,
        })
    }

    /// The outputs a per-label threshold `key` applies to: those whose label is `key`, else the
    /// group named `key`, else the ungrouped class named by `key`. `Err` explains why none.
    fn threshold_targets(&self, key: &str, groups: &[Group]) -> Result<Vec<usize>, String> {
        let by_label: Vec<usize> = (0..self.outputs.len())
            .filter(|&o| self.outputs[o].label == key)
            .collect();
        if !by_label.is_empty() {
            return Ok(by_label);
        }
        if let Some(group) = groups.iter().find(|g| g.name == key) {
            return Ok(vec![self.output_of_class[group.members[0]]]);
        }
        let class = class_by_key(key)
            .map_err(|_| "names no output label, group or ImageNet class".to_string())?;
        match self.group_of_class[class] {
            Some(g) => Err(format!(
                "class {class} ({}) is in group {}; set the group's threshold",
                imagenet()[class].name,
                groups[g].name
            )),
            None => Ok(vec![self.output_of_class[class]]),
        }
    }
}

impl Postprocessor {
    /// Validates `config` and loads its label map and groups files.
    pub fn new(config: &PostprocessConfig) -> Result<Self, PostprocessError> {
        if config.top_k == 0 {
            return Err(PostprocessError::Config {
                key: "postprocess.top_k".to_string(),
                problem: "must be at least 1".to_string(),
            });
        }
        check_unit(|| "postprocess.threshold".to_string(), config.threshold)?;
        if config.unknown_label.trim().is_empty() {
            return Err(PostprocessError::Config {
                key: "postprocess.unknown_label".to_string(),
                problem: "must not be empty".to_string(),
            });
        }
        let groups = match &config.groups {
            Some(path) => load_groups(path)?,
            None => Vec::new(),
        };
        let label_map = config
            .label_map
            .as_deref()
            .map(LabelMap::load)
            .transpose()?;
        let mut layout = OutputLayout::new(&groups, label_map.as_ref(), config.threshold)?;

        // Which threshold key set each output, to reject two keys for one output.
        let mut set_by: Vec<Option<&str>> = vec![None; layout.outputs.len()];
        for (key, &threshold) in &config.thresholds {
            let config_key = || format!("postprocess.thresholds.{key:?}");
            check_unit(config_key, threshold)?;
            let targets = layout.threshold_targets(key, &groups).map_err(|problem| {
                PostprocessError::Config {
                    key: config_key(),
                    problem,
                }
            })?;
            for output in targets {
                if let Some(other) = set_by[output].replace(key) {
                    return Err(PostprocessError::Config {
                        key: config_key(),
                        problem: format!(
                            "output {:?} already has a threshold from key {other:?}",
                            layout.outputs[output].label
                        ),
                    });
                }
                layout.outputs[output].threshold = threshold;
            }
        }

        Ok(Self {
            top_k: config.top_k,
            unknown_label: config.unknown_label.clone(),
            output_of_class: layout.output_of_class,
            outputs: layout.outputs,
        })
    }

    /// The label published when the top-1 is below its threshold.
    pub fn unknown_label(&self) -> &str {
        &self.unknown_label
    }

    /// Every label a classification can carry (outputs, then the unknown label), e.g. for Home
    /// Assistant discovery. Outputs that share a mapped label appear once per output.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.outputs
            .iter()
            .map(|o| o.label.as_str())
            .chain(std::iter::once(self.unknown_label.as_str()))
    }

    /// Classifies one frame's logits (model output order). Logits beyond the 1000 ImageNet
    /// classes are ignored; missing ones count as impossible. NaN or infinite logits never
    /// produce NaN scores.
    pub fn classify(&self, logits: &[f32]) -> Classification {
        SCRATCH.with_borrow_mut(|scratch| self.classify_with(logits, scratch))
    }

    fn classify_with(&self, logits: &[f32], scratch: &mut Scratch) -> Classification {
        let classes = imagenet();
        let used = logits.len().min(classes.len());
        scratch.probs.clear();
        // Clamp non-finite logits to the extremes so softmax cannot produce NaN.
        scratch.probs.extend(logits[..used].iter().map(|&l| {
            if l.is_nan() {
                f32::MIN
            } else {
                l.clamp(f32::MIN, f32::MAX)
            }
        }));
        softmax_in_place(&mut scratch.probs);

        scratch.output_scores.clear();
        scratch.output_scores.resize(self.outputs.len(), 0.0);
        scratch.best_member.clear();
        scratch
            .best_member
            .resize(self.outputs.len(), (usize::MAX, -1.0));
        for (class, &p) in scratch.probs.iter().enumerate() {
            let output = self.output_of_class[class];
            scratch.output_scores[output] += p;
            if p > scratch.best_member[output].1 {
                scratch.best_member[output] = (class, p);
            }
        }

        let top: Vec<Prediction> = top_k(&scratch.output_scores, self.top_k)
            .into_iter()
            // Outputs with no class in `used` (short logits) are not predictions.
            .filter_map(|(output, score)| {
                let class = classes.get(scratch.best_member[output].0)?;
                Some(Prediction {
                    label: self.outputs[output].label.clone(),
                    raw_label: class.name.clone(),
                    index: class.index,
                    wnid: class.wnid.clone(),
                    score,
                })
            })
            .collect();

        let known = top.first().filter(|best| {
            let output = self.output_of_class[best.index];
            best.score >= self.outputs[output].threshold
        });
        Classification {
            label: known.map_or_else(|| self.unknown_label.clone(), |best| best.label.clone()),
            score: top.first().map_or(0.0, |best| best.score),
            unknown: known.is_none(),
            top,
        }
    }
}
