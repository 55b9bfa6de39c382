//! [`Postprocessor`]: logits to [`Classification`] (semantics in the [module docs](super)).

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::labels::{class_by_key, imagenet, load_groups, Group, LabelMap};
use super::topk::{softmax_in_place, top_k};
use super::{HeadPostprocessConfig, PostprocessConfig, PostprocessError};

/// One entry of the top-k; serialized as is in the MQTT event's `top3`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// Output label: mapped name, group label, or the class name.
    pub label: String,
    /// Name of the class: the ImageNet English name or a head's class name (for a group: its
    /// most probable member).
    pub raw_label: String,
    /// Index of that class in the classifier's output (ImageNet index, or head class index).
    pub index: usize,
    /// WordNet id of that class; empty, and left out of the JSON, for a head's classes.
    #[serde(skip_serializing_if = "String::is_empty")]
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
    /// Whether a per-label `thresholds` key set `threshold` (else it follows the table's
    /// `threshold`).
    own_threshold: bool,
}

/// The classes a [`Postprocessor`] classifies into, in logit order.
#[derive(Debug, Clone)]
enum Classes {
    /// The 1000 ImageNet-1k classes of `configs/labels/imagenet1k.tsv`.
    ImageNet,
    /// A head's own classes, by name.
    Head(Vec<String>),
}

impl Classes {
    fn len(&self) -> usize {
        match self {
            Classes::ImageNet => imagenet().len(),
            Classes::Head(names) => names.len(),
        }
    }

    fn name(&self, class: usize) -> &str {
        match self {
            Classes::ImageNet => &imagenet()[class].name,
            Classes::Head(names) => &names[class],
        }
    }

    fn wnid(&self, class: usize) -> &str {
        match self {
            Classes::ImageNet => &imagenet()[class].wnid,
            Classes::Head(_) => "",
        }
    }

    /// The class a threshold key names when it names no output label or group. `Err` says why
    /// none.
    fn by_key(&self, key: &str) -> Result<usize, String> {
        match self {
            Classes::ImageNet => class_by_key(key)
                .map_err(|_| "names no output label, group or ImageNet class".to_string()),
            Classes::Head(names) => names.iter().position(|n| n == key).ok_or_else(|| {
                format!(
                    "names no output label or class of this head (classes: {})",
                    names.join(", ")
                )
            }),
        }
    }
}

/// Turns logits into classifications. Immutable and cheap to rebuild, so a config reload builds
/// a new one and swaps it in.
#[derive(Debug, Clone)]
pub struct Postprocessor {
    top_k: usize,
    unknown_label: String,
    /// The table's `threshold` (a head's is optional).
    global_threshold: Option<f32>,
    classes: Classes,
    /// For each class, the index into `outputs` it contributes to.
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

fn config_error(key: String, problem: impl Into<String>) -> PostprocessError {
    PostprocessError::Config {
        key,
        problem: problem.into(),
    }
}

pub(super) fn check_unit(key: impl FnOnce() -> String, value: f32) -> Result<(), PostprocessError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(config_error(
            key(),
            format!("{value} is not a probability in 0.0..=1.0"),
        ))
    }
}

/// The checks `[postprocess]` and a head's table share; `section` is the table's key path.
pub(super) fn check_common(
    section: &str,
    top_k: usize,
    unknown_label: &str,
    thresholds: &BTreeMap<String, f32>,
) -> Result<(), PostprocessError> {
    if top_k == 0 {
        return Err(config_error(
            format!("{section}.top_k"),
            "must be at least 1",
        ));
    }
    // "unknown" was the default before: accepted, with a warning (see `unknown_label_warning`).
    if !unknown_label.eq_ignore_ascii_case("unknown") {
        if let Some(problem) = super::label_problem(unknown_label) {
            return Err(config_error(format!("{section}.unknown_label"), problem));
        }
    }
    for (key, threshold) in thresholds {
        check_unit(|| format!("{section}.thresholds.{key:?}"), *threshold)?;
    }
    Ok(())
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
    /// One output per group and per ungrouped class, labelled through `group_labels` (one per
    /// group) and `class_labels` (per class; shorter means unmapped), each ungrouped class with
    /// `threshold(class)` and each group with `threshold` of its first member. Outputs are
    /// ordered by their lowest class index, so top-k ties are deterministic.
    fn new(
        classes: &Classes,
        groups: &[Group],
        group_labels: &[Option<&str>],
        class_labels: &[Option<String>],
        threshold: impl Fn(usize) -> f32,
    ) -> Self {
        let mut group_of_class: Vec<Option<usize>> = vec![None; classes.len()];
        for (g, group) in groups.iter().enumerate() {
            for &member in &group.members {
                group_of_class[member] = Some(g);
            }
        }
        let mut output_of_group: Vec<Option<usize>> = vec![None; groups.len()];
        let mut output_of_class = Vec::with_capacity(classes.len());
        let mut outputs = Vec::new();
        for (class, &group) in group_of_class.iter().enumerate() {
            if let Some(output) = group.and_then(|g| output_of_group[g]) {
                output_of_class.push(output);
                continue;
            }
            let label = match group {
                Some(g) => group_labels
                    .get(g)
                    .copied()
                    .flatten()
                    .unwrap_or(&groups[g].name),
                None => class_labels
                    .get(class)
                    .and_then(Option::as_deref)
                    .unwrap_or(classes.name(class)),
            };
            outputs.push(Output {
                label: label.to_string(),
                threshold: threshold(class),
                own_threshold: false,
            });
            let output = outputs.len() - 1;
            if let Some(g) = group {
                output_of_group[g] = Some(output);
            }
            output_of_class.push(output);
        }
        Self {
            outputs,
            output_of_class,
            group_of_class,
        }
    }

    /// Rejects an output label Home Assistant would misread (see `label_problem`), naming the
    /// config key it came from.
    fn check_labels(&self, key: impl FnOnce() -> String) -> Result<(), PostprocessError> {
        match self
            .outputs
            .iter()
            .find_map(|o| super::label_problem(&o.label))
        {
            Some(problem) => Err(config_error(key(), format!("output label {problem}"))),
            None => Ok(()),
        }
    }

    /// The outputs a per-label threshold `key` applies to: those whose label is `key`, else the
    /// group named `key`, else the ungrouped class named by `key`. `Err` explains why none.
    fn threshold_targets(
        &self,
        key: &str,
        classes: &Classes,
        groups: &[Group],
    ) -> Result<Vec<usize>, String> {
        let by_label: Vec<usize> = (0..self.outputs.len())
            .filter(|&o| self.outputs[o].label == key)
            .collect();
        if !by_label.is_empty() {
            return Ok(by_label);
        }
        if let Some(group) = groups.iter().find(|g| g.name == key) {
            return Ok(vec![self.output_of_class[group.members[0]]]);
        }
        let class = classes.by_key(key)?;
        match self.group_of_class[class] {
            Some(g) => Err(format!(
                "class {class} ({}) is in group {}; set the group's threshold",
                classes.name(class),
                groups[g].name
            )),
            None => Ok(vec![self.output_of_class[class]]),
        }
    }

    /// Applies per-label `thresholds` (keys of `{section}.thresholds`), rejecting two keys for
    /// one output.
    fn set_thresholds<'k>(
        &mut self,
        section: &str,
        thresholds: impl IntoIterator<Item = (&'k String, &'k f32)>,
        classes: &Classes,
        groups: &[Group],
    ) -> Result<(), PostprocessError> {
        // Which threshold key set each output, to reject two keys for one output.
        let mut set_by: Vec<Option<&str>> = vec![None; self.outputs.len()];
        for (key, &threshold) in thresholds {
            let config_key = || format!("{section}.thresholds.{key:?}");
            let targets = self
                .threshold_targets(key, classes, groups)
                .map_err(|problem| config_error(config_key(), problem))?;
            for output in targets {
                if let Some(other) = set_by[output].replace(key) {
                    return Err(config_error(
                        config_key(),
                        format!(
                            "output {:?} already has a threshold from key {other:?}",
                            self.outputs[output].label
                        ),
                    ));
                }
                self.outputs[output].threshold = threshold;
                self.outputs[output].own_threshold = true;
            }
        }
        Ok(())
    }
}

impl Postprocessor {
    /// A postprocessor for the 1000 ImageNet classes: validates `config` (`[postprocess]`) and
    /// loads its label map and groups files.
    pub fn new(config: &PostprocessConfig) -> Result<Self, PostprocessError> {
        const SECTION: &str = "postprocess";
        check_common(
            SECTION,
            config.top_k,
            &config.unknown_label,
            &config.thresholds,
        )?;
        check_unit(|| format!("{SECTION}.threshold"), config.threshold)?;
        let groups = match &config.groups {
            Some(path) => load_groups(path)?,
            None => Vec::new(),
        };
        let label_map = config
            .label_map
            .as_deref()
            .map(LabelMap::load)
            .transpose()?;
        let group_labels = match &label_map {
            Some(map) => map.group_labels(&groups)?,
            None => Vec::new(),
        };
        let class_labels = label_map.as_ref().map_or(&[][..], LabelMap::class_labels);
        let classes = Classes::ImageNet;
        let mut layout = OutputLayout::new(&classes, &groups, &group_labels, class_labels, |_| {
            config.threshold
        });
        // ImageNet's own names are fine; a reserved label comes from one of the two files.
        let file_key = if config.label_map.is_some() {
            "label_map"
        } else {
            "groups"
        };
        layout.check_labels(|| format!("{SECTION}.{file_key}"))?;
        layout.set_thresholds(SECTION, &config.thresholds, &classes, &groups)?;
        Ok(Self::from_layout(
            config.top_k,
            &config.unknown_label,
            Some(config.threshold),
            classes,
            layout,
        ))
    }

    /// A postprocessor for a head's own `classes` (output order): validates `config`, the
    /// head's table at key path `section` (e.g. `heads[0].postprocess`). A class's threshold
    /// is, by precedence, its `thresholds` key (class name or mapped label), the global
    /// `threshold`, its entry in `recommended` (the head file's per-class thresholds), or
    /// [`DEFAULT_THRESHOLD`](super::DEFAULT_THRESHOLD). Top-k is clamped to the class count.
    pub fn for_head(
        classes: &[String],
        recommended: Option<&[f32]>,
        config: &HeadPostprocessConfig,
        section: &str,
    ) -> Result<Self, PostprocessError> {
        config.validate(section)?;
        let mut class_labels = vec![None; classes.len()];
        for (class, label) in &config.labels {
            let index = classes.iter().position(|c| c == class).ok_or_else(|| {
                config_error(
                    format!("{section}.labels.{class:?}"),
                    format!(
                        "names no class of this head (classes: {})",
                        classes.join(", ")
                    ),
                )
            })?;
            class_labels[index] = Some(label.clone());
        }
        let threshold = |class: usize| {
            config
                .threshold
                .or_else(|| recommended.and_then(|r| r.get(class).copied()))
                .unwrap_or(super::DEFAULT_THRESHOLD)
        };
        // Mapped labels were checked by `validate`; an unmapped class publishes its name.
        if let Some((class, problem)) = classes
            .iter()
            .zip(&class_labels)
            .filter(|(_, label)| label.is_none())
            .find_map(|(class, _)| super::label_problem(class).map(|p| (class, p)))
        {
            return Err(config_error(
                format!("{section}.labels.{class:?}"),
                format!("the head's class {problem}; publish it under another name with this key"),
            ));
        }
        let classes = Classes::Head(classes.to_vec());
        let mut layout = OutputLayout::new(&classes, &[], &[], &class_labels, threshold);
        layout.set_thresholds(section, &config.thresholds, &classes, &[])?;
        Ok(Self::from_layout(
            config.top_k,
            &config.unknown_label,
            config.threshold,
            classes,
            layout,
        ))
    }

    fn from_layout(
        top_k: usize,
        unknown_label: &str,
        global_threshold: Option<f32>,
        classes: Classes,
        layout: OutputLayout,
    ) -> Self {
        Self {
            top_k: top_k.min(classes.len()),
            unknown_label: unknown_label.to_string(),
            global_threshold,
            classes,
            output_of_class: layout.output_of_class,
            outputs: layout.outputs,
        }
    }

    /// The label published when the top-1 is below its threshold.
    pub fn unknown_label(&self) -> &str {
        &self.unknown_label
    }

    /// The threshold the output labelled `label` must reach (the first such output's, when
    /// several share a mapped label); `None` if no output has that label.
    pub fn threshold_of(&self, label: &str) -> Option<f32> {
        self.outputs
            .iter()
            .find(|o| o.label == label)
            .map(|o| o.threshold)
    }

    /// The table's `threshold`: ImageNet's always; a head's when set (unset, its classes take
    /// the head file's recommended thresholds).
    pub fn global_threshold(&self) -> Option<f32> {
        self.global_threshold
    }

    /// Whether a per-label `thresholds` key set the threshold of the output labelled `label`;
    /// `false` when it follows the table's `threshold` (or there is no such output).
    pub fn has_own_threshold(&self, label: &str) -> bool {
        self.outputs
            .iter()
            .find(|o| o.label == label)
            .is_some_and(|o| o.own_threshold)
    }

    /// Every label a classification can carry (outputs, then the unknown label), e.g. for Home
    /// Assistant discovery. Outputs that share a mapped label appear once per output.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.outputs
            .iter()
            .map(|o| o.label.as_str())
            .chain(std::iter::once(self.unknown_label.as_str()))
    }

    /// Classifies one frame's logits (model or head output order). Logits beyond the classes
    /// are ignored; missing ones count as impossible. NaN or infinite logits never produce NaN
    /// scores.
    pub fn classify(&self, logits: &[f32]) -> Classification {
        SCRATCH.with_borrow_mut(|scratch| self.classify_with(logits, scratch))
    }

    fn classify_with(&self, logits: &[f32], scratch: &mut Scratch) -> Classification {
        let used = logits.len().min(self.classes.len());
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
                let class = scratch.best_member[output].0;
                (class < used).then(|| Prediction {
                    label: self.outputs[output].label.clone(),
                    raw_label: self.classes.name(class).to_string(),
                    index: class,
                    wnid: self.classes.wnid(class).to_string(),
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
