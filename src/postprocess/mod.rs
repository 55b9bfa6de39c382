//! Logits to a [`Classification`]: softmax, top-k, thresholds, label mapping, groups, and the
//! per-camera [`PublishPolicy`] that decides which classifications become MQTT events.
//!
//! The same steps serve the ImageNet classifier ([`Postprocessor::new`], `[postprocess]`) and
//! every custom head ([`Postprocessor::for_head`], see [Heads](#heads)); each camera keeps one
//! [`PublishPolicy`] per classifier.
//!
//! # Pipeline
//!
//! 1. Softmax over the model's 1000 ImageNet-1k logits (non-finite logits count as "impossible",
//!    so a broken tensor yields `unknown` instead of NaN scores).
//! 2. **Groups** (optional file): the probabilities of a group's members are summed into one
//!    output named after the group (`dog` = sum of the 118 dog breeds). A group competes with the
//!    ungrouped classes in the top-k. Its [`Prediction`] carries the group's label and summed
//!    score, and the `raw_label`, `index` and `wnid` of its most probable member.
//! 3. **Label map** (optional file): friendly or translated names for classes and groups. It only
//!    renames; it never merges (two classes mapped to the same name stay two outputs; use a group
//!    to merge them).
//! 4. **Top-k** (`top_k`, default 3) over the outputs, highest first.
//! 5. **Thresholds**: the top-1 output must reach its threshold (per-label if configured, else the
//!    global `threshold`, default 0.6; a score equal to the threshold passes), otherwise the
//!    classification's `label` becomes `unknown_label` and `unknown` is set. `top` is reported
//!    unchanged either way.
//!
//! # Configuration
//!
//! ```toml
//! [postprocess]
//! top_k = 3                       # 1..=1000 outputs reported in `top`
//! threshold = 0.6                 # global threshold for the top-1, 0.0..=1.0
//! unknown_label = "unrecognized"  # label published when the top-1 is below its threshold
//! label_map = "/etc/edgeclass/labels/zh.toml"        # optional
//! groups = "/etc/edgeclass/labels/groups-home.toml"  # optional
//! [postprocess.thresholds]        # optional per-output thresholds, 0.0..=1.0
//! dog = 0.4                       # a group (or its mapped label: "狗" = 0.4), ...
//! mailbox = 0.5                   # ... or an ungrouped class (name, "637" or "n03710193")
//!
//! [publish_policy]                # see [`PublishPolicy`] for the semantics
//! mode = "on_change"              # every | on_change
//! hold = 3
//! min_interval_ms = 0
//! heartbeat_s = 60
//! ```
//!
//! A threshold key is resolved, in order, as: a mapped output label (applies to every output
//! with that label), a group name, or an ImageNet class key (index, WordNet id, English name) of
//! an ungrouped class. A key naming a grouped class is an error (set the group's threshold), as
//! are a key naming nothing and two keys naming the same output (`dog` and `狗`).
//!
//! # Class keys
//!
//! Label map and groups files name ImageNet classes (see `configs/labels/imagenet1k.tsv`) by:
//! - index: `"281"` (0..=999, model output order);
//! - WordNet id: `"n02123045"`;
//! - English name (torchvision's): `"tabby"`; exact match first, then ASCII case-insensitive
//!   (`"Cardigan"` the corgi is 264, `"cardigan"` the sweater is 474);
//! - groups only: an inclusive index range `"151-268"`.
//!
//! # Label map file
//!
//! ```toml
//! [names]                 # class key -> output label; each class may be named once
//! "281" = "虎斑猫"          # by index
//! n02123394 = "波斯猫"      # by WordNet id
//! "golden retriever" = "金毛寻回犬"   # by English name
//! [groups]                # group name -> output label; ignored when no groups file is configured
//! dog = "狗"
//! ```
//!
//! Unmapped classes keep their English name; unmapped groups keep their group name. Names given
//! to classes that belong to a group are accepted but unused, because the group's label is
//! published (`raw_label` stays the ImageNet name).
//!
//! # Groups file
//!
//! ```toml
//! [groups.dog]
//! members = ["151-268"]                       # ranges, indices, WordNet ids, English names
//! [groups.package]
//! members = ["carton", "crate", "n03291819"]
//! ```
//!
//! A class may belong to at most one group and appear once in it; a group needs at least one
//! member.
//!
//! # Heads
//!
//! A head (a classifier trained on the user's own classes, `crate::model::Head`) has its own
//! table, `[heads.postprocess]` ([`HeadPostprocessConfig`]), with the same `top_k`,
//! `threshold`, `unknown_label` and `thresholds`, and a `labels` table instead of a label map
//! file:
//!
//! ```toml
//! [heads.postprocess]
//! threshold = 0.8                 # optional: for every class, instead of the file's
//! [heads.postprocess.labels]      # class name -> published label
//! open = "Door open"
//! [heads.postprocess.thresholds]  # class name or mapped label
//! "Door open" = 0.9
//! ```
//!
//! A class's threshold is, by precedence: its `thresholds` key, the head's `threshold`, the
//! threshold the head file recommends for it (`edgeclass train` writes them), or 0.6. Groups are
//! ImageNet-only. A head's predictions carry the class name as `raw_label`, the class's output
//! index as `index`, and no `wnid`.
//!
//! # Labels Home Assistant would misread
//!
//! A published label becomes a Home Assistant sensor's state, so no label may be one of Home
//! Assistant's own words for "no value" ([`HOME_ASSISTANT_STATE_WORDS`]: `unknown`,
//! `unavailable`, `None`, any case) or empty: the sensor would look like one that never received
//! anything, and `to: unknown` automations would fire on it. Such an `unknown_label`, label map
//! or group label, head `labels` value or (unmapped) head class name is a config error; only
//! `unknown_label = "unknown"`, the default of earlier versions, is still accepted, with a
//! warning ([`PostprocessConfig::warning`]). The default is `unrecognized`.
//!
//! # Errors
//!
//! Bad files give a [`PostprocessError`] naming the file, the line, the key or entry and the
//! problem, e.g. `groups file /etc/edgeclass/labels/groups-home.toml, line 4, groups.dog.members
//! "151-": bad index range (expected N or N-M with N <= M <= 999)`.

mod classify;
pub mod labels;
mod mean;
mod policy;
pub mod topk;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sysexits::Sysexit;

pub use classify::{Classification, Postprocessor, Prediction};
pub use mean::MeanProbabilities;
pub use policy::{Decision, PolicyConfig, PublishMode, PublishPolicy};

/// The `[postprocess]` config table. See the module docs for semantics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostprocessConfig {
    /// How many outputs `Classification::top` reports.
    pub top_k: usize,
    /// Global threshold the top-1 score must reach to be reported as known.
    pub threshold: f32,
    /// Label reported when the top-1 score is below its threshold.
    pub unknown_label: String,
    /// Optional label map file (friendly or translated names).
    pub label_map: Option<PathBuf>,
    /// Optional groups file (classes whose probabilities are summed).
    pub groups: Option<PathBuf>,
    /// Per-output thresholds, keyed by output label, group name or ungrouped class key.
    pub thresholds: BTreeMap<String, f32>,
}

/// The threshold of a class nothing else sets one for.
pub const DEFAULT_THRESHOLD: f32 = 0.6;

/// The label of a classification below its threshold unless `unknown_label` says otherwise; not
/// one of [`HOME_ASSISTANT_STATE_WORDS`].
pub const DEFAULT_UNKNOWN_LABEL: &str = "unrecognized";

/// Home Assistant's words for a sensor without a value (`unknown`, `unavailable`) and the MQTT
/// sensor payload that clears its value (`None`); labels are compared with them ignoring case.
pub const HOME_ASSISTANT_STATE_WORDS: [&str; 3] = ["unknown", "unavailable", "none"];

/// Why `label` cannot be published, or `None` if it can: it is empty or one of
/// [`HOME_ASSISTANT_STATE_WORDS`].
pub fn label_problem(label: &str) -> Option<String> {
    if label.trim().is_empty() {
        return Some("must not be empty".to_string());
    }
    HOME_ASSISTANT_STATE_WORDS
        .iter()
        .any(|word| label.eq_ignore_ascii_case(word))
        .then(|| {
            format!(
                "{label:?} is Home Assistant's own state for a sensor without a value (reserved: \
                 unknown, unavailable, None, any case); a sensor showing it could not be told from \
                 one that received nothing: choose another label, e.g. \"{DEFAULT_UNKNOWN_LABEL}\""
            )
        })
}

/// The warning for `unknown_label = "unknown"` (any case) at key path `section`: accepted
/// because it was the default before, but Home Assistant cannot tell it from its own `unknown`.
fn unknown_label_warning(section: &str, unknown_label: &str) -> Option<String> {
    unknown_label.eq_ignore_ascii_case("unknown").then(|| {
        format!(
            "{section}.unknown_label = {unknown_label:?} is Home Assistant's own state for a \
             sensor without a value, so \"to: unknown\" automations also fire when edgeclass \
             recognises nothing; set it to another label, e.g. \"{DEFAULT_UNKNOWN_LABEL}\" (the \
             default), and update automations that use it"
        )
    })
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        Self {
            top_k: 3,
            threshold: DEFAULT_THRESHOLD,
            unknown_label: DEFAULT_UNKNOWN_LABEL.to_string(),
            label_map: None,
            groups: None,
            thresholds: BTreeMap::new(),
        }
    }
}

impl PostprocessConfig {
    /// Checks every key. Thresholds name outputs of the label map and groups files, so this
    /// loads them: it is [`Postprocessor::new`] with the result dropped.
    pub fn validate(&self) -> Result<(), PostprocessError> {
        Postprocessor::new(self).map(drop)
    }

    /// The warning for a valid but misleading setting: `unknown_label = "unknown"`.
    pub fn warning(&self) -> Option<String> {
        unknown_label_warning("postprocess", &self.unknown_label)
    }
}

/// A head's `[heads.postprocess]` table: `[postprocess]` for the head's own classes. Groups and
/// label map files are ImageNet-only; a head's label map is the `labels` table. Its class names
/// are only known once the head file is loaded, so the keys naming classes are checked by
/// [`Postprocessor::for_head`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadPostprocessConfig {
    /// How many outputs `Classification::top` reports (at most the head's class count).
    pub top_k: usize,
    /// Threshold for every class; unset, each class takes the head file's recommended
    /// threshold, else [`DEFAULT_THRESHOLD`].
    pub threshold: Option<f32>,
    /// Label reported when the top-1 score is below its threshold.
    pub unknown_label: String,
    /// Published label per class name (friendly or translated names).
    pub labels: BTreeMap<String, String>,
    /// Per-output thresholds, keyed by class name or mapped label; they override the file's.
    pub thresholds: BTreeMap<String, f32>,
}

impl Default for HeadPostprocessConfig {
    fn default() -> Self {
        let imagenet = PostprocessConfig::default();
        Self {
            top_k: imagenet.top_k,
            threshold: None,
            unknown_label: imagenet.unknown_label,
            labels: BTreeMap::new(),
            thresholds: BTreeMap::new(),
        }
    }
}

impl HeadPostprocessConfig {
    /// Checks what does not need the head's classes; `section` is the table's key path, e.g.
    /// `heads[0].postprocess`.
    pub fn validate(&self, section: &str) -> Result<(), PostprocessError> {
        classify::check_common(section, self.top_k, &self.unknown_label, &self.thresholds)?;
        if let Some(threshold) = self.threshold {
            classify::check_unit(|| format!("{section}.threshold"), threshold)?;
        }
        for (class, label) in &self.labels {
            if let Some(problem) = label_problem(label) {
                return Err(PostprocessError::Config {
                    key: format!("{section}.labels.{class:?}"),
                    problem,
                });
            }
        }
        Ok(())
    }

    /// [`PostprocessConfig::warning`] for the head's table at key path `section`.
    pub fn warning(&self, section: &str) -> Option<String> {
        unknown_label_warning(section, &self.unknown_label)
    }
}

/// Which kind of file a [`PostprocessError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The `label_map` file (friendly or translated names).
    LabelMap,
    /// The `groups` file (classes whose probabilities are summed).
    Groups,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::LabelMap => "label map",
            FileKind::Groups => "groups",
        })
    }
}

/// Why a [`Postprocessor`] or [`PublishPolicy`] could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum PostprocessError {
    /// A label map or groups file cannot be read.
    #[error("reading {kind} file {}", path.display())]
    Read {
        /// Which of the two files.
        kind: FileKind,
        /// The path as configured.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A label map or groups file is not valid TOML or does not match the file format.
    #[error("parsing {kind} file {}, line {line}: {message}", path.display())]
    Parse {
        /// Which of the two files.
        kind: FileKind,
        /// The path as configured.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// The TOML parser's description.
        message: String,
    },
    /// An entry parsed but does not make sense (unknown class, bad range, duplicate, ...).
    #[error("{kind} file {}, line {line}, {entry}: {problem}", path.display())]
    Entry {
        /// Which of the two files.
        kind: FileKind,
        /// The path as configured.
        path: PathBuf,
        /// 1-based line of the entry.
        line: usize,
        /// Where in the file, e.g. `names."n99999999"` or `groups.dog.members "151-"`.
        entry: String,
        /// What is wrong with the entry.
        problem: String,
    },
    /// A config value is out of range or names nothing, e.g. `postprocess.thresholds.dgo`.
    #[error("config key {key}: {problem}")]
    Config {
        /// Path of the key, e.g. `postprocess.top_k` or `publish_policy.hold`.
        key: String,
        /// What is wrong with its value.
        problem: String,
    },
}

impl PostprocessError {
    /// The kind of failure, for the process exit status.
    pub fn sysexit(&self) -> Sysexit {
        // Every variant is a configuration mistake (a missing label file is referenced from the
        // config), so systemd should not restart-loop on it.
        Sysexit::Config
    }
}
