//! The daemon's typed configuration: one TOML file plus `EDGECLASS__SECTION__KEY` overrides.
//!
//! Every section is owned by the stage it configures (`capture::CameraConfig`,
//! `publish::MqttConfig`, ...); this module only assembles them, reports errors with the key
//! path and the file, and checks rules that span sections. `[[heads]]` ([`HeadConfig`]) is one
//! of those rules: it names a head file, its postprocess and policy tables, and the cameras'
//! `heads` lists must name its entries.
//!
//! Loading merges the file, the [`overrides`] file the daemon writes (the web page's
//! thresholds) and the environment overrides into one tree (the private `tree` module), in that
//! order, deserializes it while `serde_path_to_error` tracks the key path, then runs every section's
//! own validation, so a configuration that loads is one `run` accepts.

mod heads;
pub mod overrides;
mod tree;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capture::{CameraConfig, CaptureError};
use crate::model::{Architecture, Ensemble, Model, ModelConfig};
use crate::postprocess::{PolicyConfig, PostprocessConfig, PostprocessError, Postprocessor};
use crate::preprocess::{PreprocessConfig, PreprocessError};
use crate::publish::{MqttConfig, PublishError};
use crate::sysexits::Sysexit;
use crate::web::{WebConfig, WebError};

pub use heads::{HeadConfig, HeadName};
use tree::{Node, TreeError};

/// Prefix of environment overrides: `EDGECLASS__MQTT__URL` sets `mqtt.url`.
pub const ENV_PREFIX: &str = "EDGECLASS";
const ENV_SEPARATOR: &str = "__";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[model]`
    #[serde(default)]
    pub model: ModelConfig,
    /// `[preprocess]`; its `mean` and `std` follow the model's architecture unless the file
    /// sets them ([`Config::preprocess_for`]).
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    /// Whether the file (or the environment) sets `preprocess.mean` and `preprocess.std`.
    #[serde(skip)]
    normalization_set: [bool; 2],
    /// `[postprocess]`
    #[serde(default)]
    pub postprocess: PostprocessConfig,
    /// `[publish_policy]`
    #[serde(default)]
    pub publish_policy: PolicyConfig,
    /// `[mqtt]`
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// `[[cameras]]`, at least one.
    pub cameras: Vec<CameraConfig>,
    /// `[[heads]]`: custom classifiers on the backbone's features, run by the cameras that
    /// list them.
    #[serde(default)]
    pub heads: Vec<HeadConfig>,
    /// `[log]`
    #[serde(default)]
    pub log: LogConfig,
    /// `[web]`
    #[serde(default)]
    pub web: WebConfig,
    /// The [`overrides`] file merged into this configuration, when there was one.
    #[serde(skip)]
    pub overrides_file: Option<PathBuf>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// error | warn | info | debug | trace; `RUST_LOG` wins when set.
    pub level: String,
    /// Also print every published event as a JSON line on stdout (demos).
    pub print_events: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            print_events: false,
        }
    }
}

/// A configuration problem, always naming the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}", file.display())]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML (the message has the line and column).
    #[error("config file {}: {message}", file.display())]
    Syntax {
        /// The configuration file.
        file: PathBuf,
        /// The TOML parser's description.
        message: String,
    },
    /// An `EDGECLASS__...` variable that cannot be applied as an override.
    #[error("config file {}: environment variable {var}: {message}", file.display())]
    Override {
        /// The configuration file the override applies to.
        file: PathBuf,
        /// The variable's name (lossily converted if it is not UTF-8).
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// The overrides file cannot be read or is not valid TOML.
    #[error("config file {}", file.display())]
    OverridesFile {
        /// The configuration file the overrides apply to.
        file: PathBuf,
        /// What is wrong; names the overrides file.
        #[source]
        source: overrides::OverridesError,
    },
    /// A key is missing, unknown or has an invalid value.
    #[error("config file {}: key `{key}`{}: {message}", file.display(), Origin { var: from_env.as_deref(), overrides: from_overrides.as_deref() })]
    Key {
        /// The configuration file.
        file: PathBuf,
        /// Path of the key, e.g. `cameras[0].id` or `mqtt.qos`.
        key: String,
        /// The environment variable that set the key, if one did.
        from_env: Option<String>,
        /// The overrides file, if it set the key.
        from_overrides: Option<PathBuf>,
        /// The problem and, where it helps, the expected form.
        message: String,
    },
    /// A file a key names is unusable: a head file that is missing, malformed or trained on
    /// another backbone than the model's.
    #[error("config file {}, key `{key}`", file.display())]
    Referenced {
        /// The configuration file.
        file: PathBuf,
        /// The key naming the file, e.g. `heads[0].weights`.
        key: String,
        /// Why the file is unusable; names the file.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A section refers to something that is unusable, e.g. a label file that cannot be read.
    #[error("config file {}", file.display())]
    Section {
        /// The configuration file.
        file: PathBuf,
        /// The section's error, which names what it refers to.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// ` (from environment variable X)` or ` (from overrides file F)` after a key an override
/// set, so users look in the right place.
struct Origin<'a> {
    var: Option<&'a str>,
    overrides: Option<&'a Path>,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.var, self.overrides) {
            (Some(var), _) => write!(f, " (from environment variable {var})"),
            (None, Some(file)) => write!(f, " (from overrides file {})", file.display()),
            (None, None) => Ok(()),
        }
    }
}

impl ConfigError {
    /// The kind of failure, for the process exit status: always a configuration error.
    pub fn sysexit(&self) -> Sysexit {
        Sysexit::Config
    }
}

impl Config {
    /// Reads `file`, merges the [`overrides`] file of the data directory
    /// ([`overrides::path`]) over it when there is one, applies environment overrides,
    /// deserializes and validates every section.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        Self::load_with_overrides(file, &overrides::path())
    }

    /// [`Config::load`] with the overrides file at `overrides_file` (it may not exist).
    pub fn load_with_overrides(file: &Path, overrides_file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let table =
            overrides::read(overrides_file).map_err(|source| ConfigError::OverridesFile {
                file: file.to_path_buf(),
                source,
            })?;
        let merged = table.map(|table| (overrides_file, table));
        Self::from_sources(file, &text, merged, std::env::vars_os())
    }

    /// Like [`Config::load`] with the file's text already read (`file` names it in errors),
    /// without an overrides file.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::from_sources(file, text, None, std::env::vars_os())
    }

    /// [`Config::parse`] with the overrides file's table and the environment given, so tests
    /// need not change the process's.
    fn from_sources(
        file: &Path,
        text: &str,
        overrides_file: Option<(&Path, toml::Table)>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    file: file.to_path_buf(),
                    message: e.to_string(),
                })?;
        let mut root = Node::from(toml::Value::Table(table));
        let (overrides_file, set_by_file) = match overrides_file {
            Some((path, table)) => {
                let set = overrides::merge(&mut root, table).map_err(|(key, message)| {
                    ConfigError::Key {
                        file: file.to_path_buf(),
                        key,
                        from_env: None,
                        from_overrides: Some(path.to_path_buf()),
                        message,
                    }
                })?;
                (Some(path), set)
            }
            None => (None, Vec::new()),
        };
        let env_overrides = Overrides::apply(file, &mut root, env)?;
        let errors = Errors {
            file,
            overrides: &env_overrides,
            overrides_file: overrides_file.map(|path| (path, set_by_file.as_slice())),
        };
        heads::prepare(&mut root).map_err(|(key, message)| errors.key(key, message))?;
        let normalization_set = match &root {
            Node::Table(root) => match root.get("preprocess") {
                Some(Node::Table(preprocess)) => {
                    ["mean", "std"].map(|k| preprocess.contains_key(k))
                }
                _ => [false; 2],
            },
            _ => [false; 2],
        };
        let mut config: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let key = match e.inner() {
                TreeError::MissingField(field) => key_path(e.path(), Some(field)),
                TreeError::Invalid(_) => key_path(e.path(), None),
            };
            let message = e.into_inner().to_string();
            errors.key(key, message)
        })?;
        config.validate(&errors)?;
        config.overrides_file = overrides_file.map(Path::to_path_buf);
        config.normalization_set = normalization_set;
        Ok(config)
    }

    /// `[preprocess]` for a model of `architecture`: `mean` and `std` as the file sets them,
    /// else the normalization the architecture was trained with.
    pub fn preprocess_for(&self, architecture: Architecture) -> PreprocessConfig {
        let (mean, std) = architecture.normalization();
        let [mean_set, std_set] = self.normalization_set;
        PreprocessConfig {
            mean: if mean_set { self.preprocess.mean } else { mean },
            std: if std_set { self.preprocess.std } else { std },
            ..self.preprocess.clone()
        }
    }

    /// Settings that are valid but probably not what the user wants, each as `key...: why`:
    /// a camera's `motion.threshold` (ignored) and `unknown_label = "unknown"` (Home Assistant
    /// cannot tell it from its own `unknown`). `check-config` prints them, the daemon logs them.
    pub fn warnings(&self) -> Vec<String> {
        let cameras = self
            .cameras
            .iter()
            .enumerate()
            .filter_map(|(index, camera)| {
                let deprecation = camera.motion.deprecation()?;
                Some(format!("cameras[{index}].{deprecation}"))
            });
        let heads = self.heads.iter().enumerate().filter_map(|(index, head)| {
            head.postprocess
                .warning(&format!("heads[{index}].postprocess"))
        });
        cameras
            .chain(self.postprocess.warning())
            .chain(heads)
            .collect()
    }

    /// Rules serde cannot express: ranges, uniqueness, cross-key consistency, files the
    /// postprocess section names. Each stage checks its own section.
    fn validate(&self, errors: &Errors) -> Result<(), ConfigError> {
        if self.cameras.is_empty() {
            return Err(errors.key(
                "cameras".into(),
                "expected at least one [[cameras]] table".into(),
            ));
        }
        crate::capture::validate_cameras(&self.cameras).map_err(|e| errors.stage(e))?;
        self.mqtt.validate().map_err(|e| errors.stage(e))?;
        self.preprocess.validate().map_err(|e| errors.stage(e))?;
        self.postprocess.validate().map_err(|e| errors.stage(e))?;
        self.publish_policy
            .validate()
            .map_err(|e| errors.stage(e))?;
        self.web.validate().map_err(|e| errors.stage(e))?;
        self.validate_heads(errors)
    }

    /// Head names are unique, each head's tables are valid, and cameras list only existing
    /// heads, each once.
    fn validate_heads(&self, errors: &Errors) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (index, head) in self.heads.iter().enumerate() {
            if !names.insert(head.name.as_str()) {
                return Err(errors.key(
                    format!("heads[{index}].name"),
                    format!("{:?} is used by an earlier head", head.name.as_str()),
                ));
            }
            if let Some(weights) = &head.ensemble_weights {
                if let Some(problem) = Ensemble::weights_problem(weights, head.weights.len()) {
                    return Err(errors.key(format!("heads[{index}].ensemble_weights"), problem));
                }
            }
            head.postprocess
                .validate(&format!("heads[{index}].postprocess"))
                .map_err(|e| errors.stage(e))?;
            head.publish_policy
                .validate_section(&format!("heads[{index}].publish_policy"))
                .map_err(|e| errors.stage(e))?;
        }
        for (c, camera) in self.cameras.iter().enumerate() {
            for (h, name) in camera.heads.iter().enumerate() {
                let key = || format!("cameras[{c}].heads[{h}]");
                if !names.contains(name.as_str()) {
                    let known: Vec<&str> = self.heads.iter().map(|h| h.name.as_str()).collect();
                    return Err(errors.key(
                        key(),
                        format!(
                            "no [[heads]] entry is named {name:?} (heads: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                if camera.heads[..h].contains(name) {
                    return Err(errors.key(key(), format!("{name:?} is listed twice")));
                }
            }
        }
        Ok(())
    }

    /// Loads every head file with its postprocessor, in `[[heads]]` order; given the model,
    /// also checks each head was trained on its backbone. `file` is this config's file, for
    /// errors, which are configuration errors naming the key (`heads[N].weights` for a file
    /// that is missing, malformed or trained on another backbone).
    pub fn load_heads(
        &self,
        file: &Path,
        backbone: Option<&Model>,
    ) -> Result<Vec<(Ensemble, Postprocessor)>, ConfigError> {
        let no_overrides = Overrides {
            var_of_key: BTreeMap::new(),
        };
        let errors = Errors {
            file,
            overrides: &no_overrides,
            overrides_file: None,
        };
        self.heads
            .iter()
            .enumerate()
            .map(|(index, config)| {
                let head = config
                    .load(backbone)
                    .map_err(|source| ConfigError::Referenced {
                        file: file.to_path_buf(),
                        key: format!("heads[{index}].weights"),
                        source: Box::new(source),
                    })?;
                let postprocessor = config
                    .postprocessor(index, &head)
                    .map_err(|e| errors.stage(e))?;
                Ok((head, postprocessor))
            })
            .collect()
    }
}

/// `cameras[0].id`: serde_path_to_error's path, plus the field a missing-field error names (it
/// is reported at its parent's path).
fn key_path(path: &serde_path_to_error::Path, field: Option<&str>) -> String {
    let parent = path.to_string();
    match field {
        Some(field) if path.iter().next().is_none() => field.to_string(),
        Some(field) => format!("{parent}.{field}"),
        None => parent,
    }
}

/// The `EDGECLASS__...` variables applied to the tree, by the key path each set.
struct Overrides {
    var_of_key: BTreeMap<String, String>,
}

impl Overrides {
    /// Writes every `EDGECLASS__SECTION__KEY` variable of `env` into `root` as an untyped
    /// [`Node::Override`]; nested tables are created as needed. Keys are lowercase, as written
    /// in the file.
    fn apply(
        file: &Path,
        root: &mut Node,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigError> {
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
        let mut vars: Vec<(String, OsString)> = env
            .into_iter()
            .filter_map(|(var, value)| {
                let var = var.to_string_lossy().into_owned();
                var.starts_with(&prefix).then_some((var, value))
            })
            .collect();
        // A fixed order, so which of two clashing variables is reported does not vary.
        vars.sort();
        let mut var_of_key = BTreeMap::new();
        for (var, value) in vars {
            let invalid = |message: String| ConfigError::Override {
                file: file.to_path_buf(),
                var: var.clone(),
                message,
            };
            let Some(value) = value.to_str() else {
                return Err(invalid("value is not UTF-8".into()));
            };
            let segments: Vec<String> = var[prefix.len()..]
                .split(ENV_SEPARATOR)
                .map(str::to_lowercase)
                .collect();
            if segments.iter().any(String::is_empty) {
                return Err(invalid(format!(
                    "expected {prefix}SECTION{ENV_SEPARATOR}KEY with non-empty parts"
                )));
            }
            let key = segments.join(".");
            set(root, &segments, value).map_err(|parent| {
                invalid(format!("cannot set `{key}`: `{parent}` is not a table"))
            })?;
            var_of_key.insert(key, var);
        }
        Ok(Self { var_of_key })
    }

    /// The variable that set `key`. Stage errors quote map keys that may hold dots
    /// (`postprocess.thresholds."dog"`); an override's key never holds a quote.
    fn var_of(&self, key: &str) -> Option<&str> {
        self.var_of_key
            .get(&key.replace('"', ""))
            .map(String::as_str)
    }
}

/// Sets `path` in `node` to the override `value`; `Err` is the path of a value in the way.
fn set(node: &mut Node, path: &[String], value: &str) -> Result<(), String> {
    let Node::Table(table) = node else {
        return Err(String::new());
    };
    let (first, rest) = path.split_first().ok_or_else(String::new)?;
    if rest.is_empty() {
        table.insert(first.clone(), Node::Override(value.to_string()));
        return Ok(());
    }
    let child = table
        .entry(first.clone())
        .or_insert_with(|| Node::Table(BTreeMap::new()));
    set(child, rest, value).map_err(|inner| {
        if inner.is_empty() {
            first.clone()
        } else {
            format!("{first}.{inner}")
        }
    })
}

/// Builds [`ConfigError`]s naming the file and, for keys an override set, the variable or the
/// overrides file.
struct Errors<'a> {
    file: &'a Path,
    overrides: &'a Overrides,
    /// The overrides file and the key paths it set.
    overrides_file: Option<(&'a Path, &'a [String])>,
}

impl Errors<'_> {
    fn key(&self, key: String, message: String) -> ConfigError {
        let from_env = self.overrides.var_of(&key).map(str::to_string);
        let from_overrides = self
            .overrides_file
            .filter(|(_, set)| from_env.is_none() && overrides::covers(set, &key))
            .map(|(path, _)| path.to_path_buf());
        ConfigError::Key {
            file: self.file.to_path_buf(),
            from_env,
            from_overrides,
            key,
            message,
        }
    }

    /// A stage's validation error: a key error when it names one, else a section error.
    fn stage(&self, error: impl StageError) -> ConfigError {
        match error.into_key() {
            Ok((key, message)) => self.key(key, message),
            Err(other) => ConfigError::Section {
                file: self.file.to_path_buf(),
                source: Box::new(other),
            },
        }
    }
}

/// A stage's validation error, which carries the key it is about when it is about one.
trait StageError: std::error::Error + Send + Sync + Sized + 'static {
    /// `(key path, problem)`, or the error itself when it is not about one key.
    fn into_key(self) -> Result<(String, String), Self>;
}

impl StageError for CaptureError {
    fn into_key(self) -> Result<(String, String), Self> {
        match self {
            CaptureError::Config { key, message } => Ok((key, message)),
            other => Err(other),
        }
    }
}

impl StageError for PublishError {
    fn into_key(self) -> Result<(String, String), Self> {
        match self {
            PublishError::Config { key, reason } => Ok((key.to_string(), reason)),
            other => Err(other),
        }
    }
}

impl StageError for WebError {
    fn into_key(self) -> Result<(String, String), Self> {
        match self {
            WebError::Config { key, message } => Ok((key.to_string(), message)),
            other => Err(other),
        }
    }
}

impl StageError for PreprocessError {
    fn into_key(self) -> Result<(String, String), Self> {
        match self {
            PreprocessError::InvalidConfig { key, problem } => Ok((key.to_string(), problem)),
            other => Err(other),
        }
    }
}

impl StageError for PostprocessError {
    fn into_key(self) -> Result<(String, String), Self> {
        match self {
            PostprocessError::Config { key, problem } => Ok((key, problem)),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAMERA: &str = "[[cameras]]\nid = \"door\"\nsource = \"file:/tmp\"\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env
            .iter()
            .map(|(var, value)| (OsString::from(var), OsString::from(value)));
        Config::from_sources(Path::new("/etc/edgeclass.toml"), text, None, env)
    }

    fn key_error(text: &str, env: &[(&str, &str)]) -> (String, Option<String>, String) {
        match load(text, env) {
            Err(ConfigError::Key {
                key,
                from_env,
                message,
                ..
            }) => (key, from_env, message),
            other => panic!("expected a key error, got {other:?}"),
        }
    }

    #[test]
    fn normalization_follows_the_architecture_unless_the_file_sets_it() {
        let effnet = Architecture::EfficientNetLite0;
        let config = load(CAMERA, &[]).unwrap();
        let preprocess = config.preprocess_for(effnet);
        assert_eq!((preprocess.mean, preprocess.std), effnet.normalization());
        let resnet = config.preprocess_for(Architecture::ResNet18);
        assert_eq!(
            (resnet.mean, resnet.std),
            Architecture::ResNet18.normalization()
        );

        let text = format!("{CAMERA}[preprocess]\nmean = [0.5, 0.5, 0.5]\nresize = 300\n");
        let preprocess = load(&text, &[]).unwrap().preprocess_for(effnet);
        assert_eq!(preprocess.mean, [0.5; 3]);
        assert_eq!(preprocess.std, effnet.normalization().1);
        assert_eq!(preprocess.resize, 300);
    }

    #[test]
    fn model_arch_is_parsed_and_unknown_names_listed() {
        let config = load(
            &format!("{CAMERA}[model]\narch = \"efficientnet-lite0\"\n"),
            &[],
        );
        assert_eq!(
            config.unwrap().model.arch,
            Some(Architecture::EfficientNetLite0)
        );
        let (key, _, message) = key_error(&format!("{CAMERA}[model]\narch = \"vgg16\"\n"), &[]);
        assert_eq!(key, "model.arch");
        assert!(
            message.contains("resnet18 or efficientnet-lite0"),
            "{message}"
        );
    }

    #[test]
    fn missing_unknown_and_invalid_keys_are_named_by_path() {
        let (key, _, message) = key_error("[[cameras]]\nid = \"door\"\n", &[]);
        assert_eq!(key, "cameras[0].source");
        assert!(message.contains("missing"), "{message}");

        let (key, _, _) = key_error("[model]\nthreads = 2\n", &[]);
        assert_eq!(key, "cameras");

        let (key, _, message) = key_error(&format!("{CAMERA}[mqtt]\nqso = 1\n"), &[]);
        assert!(key.starts_with("mqtt"), "{key}");
        assert!(message.contains("qso"), "{message}");

        let (key, _, message) = key_error(&format!("{CAMERA}[mqtt]\nqos = \"high\"\n"), &[]);
        assert_eq!(key, "mqtt.qos");
        assert!(message.contains("u8"), "{message}");

        let (key, _, message) = key_error(
            "[[cameras]]\nid = \"front door\"\nsource = \"file:/tmp\"\n",
            &[],
        );
        assert_eq!(key, "cameras[0].id");
        assert!(message.contains("MQTT"), "{message}");
    }

    #[test]
    fn overrides_are_typed_by_their_field_and_named_in_errors() {
        let config = load(
            CAMERA,
            &[
                ("EDGECLASS__MQTT__PASSWORD", "1234"),
                ("EDGECLASS__MQTT__USERNAME", "true"),
                ("EDGECLASS__MQTT__KEEP_ALIVE_S", "15"),
                ("EDGECLASS__MQTT__SNAPSHOT__ENABLED", "false"),
                ("EDGECLASS__PUBLISH_POLICY__MODE", "every"),
                ("EDGECLASS__POSTPROCESS__THRESHOLD", "0.5"),
                ("EDGECLASS_ISA", "scalar"),
            ],
        )
        .unwrap();
        assert_eq!(config.mqtt.password.as_deref(), Some("1234"));
        assert_eq!(config.mqtt.username.as_deref(), Some("true"));
        assert_eq!(config.mqtt.keep_alive_s, 15);
        assert!(!config.mqtt.snapshot.enabled);
        assert_eq!(
            config.publish_policy.mode,
            crate::postprocess::PublishMode::Every
        );
        assert_eq!(config.postprocess.threshold, 0.5);

        let (key, var, message) = key_error(CAMERA, &[("EDGECLASS__MQTT__QOS", "5")]);
        assert_eq!(key, "mqtt.qos");
        assert_eq!(var.as_deref(), Some("EDGECLASS__MQTT__QOS"));
        assert!(message.contains("not 0, 1 or 2"), "{message}");

        let (key, var, _) = key_error(CAMERA, &[("EDGECLASS__MQTT__QOS", "often")]);
        assert_eq!(
            (key.as_str(), var.as_deref()),
            ("mqtt.qos", Some("EDGECLASS__MQTT__QOS"))
        );

        let (key, var, _) = key_error(CAMERA, &[("EDGECLASS__POSTPROCESS__THRESHOLDS__DOG", "2")]);
        assert_eq!(key, "postprocess.thresholds.\"dog\"");
        assert_eq!(
            var.as_deref(),
            Some("EDGECLASS__POSTPROCESS__THRESHOLDS__DOG")
        );

        // The same error from the file names no variable.
        let (_, var, _) = key_error(&format!("{CAMERA}[mqtt]\nqos = 5\n"), &[]);
        assert_eq!(var, None);
    }

    #[test]
    fn overrides_that_do_not_fit_the_tree_are_refused() {
        let error = load(
            &format!("{CAMERA}[log]\nlevel = \"info\"\n"),
            &[("EDGECLASS__LOG__LEVEL__X", "1")],
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("EDGECLASS__LOG__LEVEL__X")
                && text.contains("`log.level` is not a table"),
            "{text}"
        );
        let error = load(CAMERA, &[("EDGECLASS__MQTT____QOS", "1")]).unwrap_err();
        assert!(matches!(error, ConfigError::Override { .. }), "{error}");
    }

    #[test]
    fn every_section_is_validated_at_load() {
        let (key, _, _) = key_error(&format!("{CAMERA}[postprocess]\ntop_k = 0\n"), &[]);
        assert_eq!(key, "postprocess.top_k");
        let (key, _, _) = key_error(&format!("{CAMERA}[preprocess]\ncrop = 0\n"), &[]);
        assert_eq!(key, "preprocess.crop");
        let (key, _, _) = key_error(&format!("{CAMERA}[publish_policy]\nhold = 0\n"), &[]);
        assert_eq!(key, "publish_policy.hold");
        let error = load(
            &format!("{CAMERA}[postprocess]\nlabel_map = \"/nonexistent/map.toml\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(matches!(error, ConfigError::Section { .. }), "{error}");
    }

    const HEAD: &str = "[[heads]]\nname = \"garage_door\"\nweights = \"/h/door.gguf\"\n";

    #[test]
    fn heads_inherit_the_policy_keys_they_do_not_set() {
        let config = load(
            &format!(
                "[publish_policy]\nmode = \"every\"\nheartbeat_s = 5\n{HEAD}\
                 [heads.publish_policy]\nheartbeat_s = 9\n\
                 [[cameras]]\nid = \"door\"\nsource = \"file:/tmp\"\nheads = [\"garage_door\"]\n"
            ),
            &[],
        )
        .unwrap();
        let policy = &config.heads[0].publish_policy;
        assert_eq!(policy.mode, crate::postprocess::PublishMode::Every);
        assert_eq!((policy.heartbeat_s, policy.hold), (9, 3));
        assert_eq!(config.cameras[0].heads, ["garage_door"]);
        // Without a [publish_policy], the defaults.
        let config = load(&format!("{CAMERA}{HEAD}"), &[]).unwrap();
        assert_eq!(config.heads[0].publish_policy, PolicyConfig::default());
    }

    #[test]
    fn head_keys_are_checked_with_their_path() {
        let camera_with = |heads: &str| {
            format!("[[cameras]]\nid = \"door\"\nsource = \"file:/tmp\"\nheads = {heads}\n")
        };
        let cases = [
            (
                format!("{}{HEAD}", camera_with("[\"garage\"]")),
                "cameras[0].heads[0]",
                "no [[heads]] entry is named \"garage\" (heads: garage_door)",
            ),
            (
                format!(
                    "{}{HEAD}",
                    camera_with("[\"garage_door\", \"garage_door\"]")
                ),
                "cameras[0].heads[1]",
                "listed twice",
            ),
            (
                format!("{CAMERA}{HEAD}{HEAD}"),
                "heads[1].name",
                "used by an earlier head",
            ),
            (
                format!("{CAMERA}[[heads]]\nname = \"garage door\"\nweights = \"x\"\n"),
                "heads[0].name",
                "MQTT",
            ),
            (
                format!("{CAMERA}{HEAD}[heads.postprocess]\ngroups = \"g.toml\"\n"),
                "heads[0].postprocess.groups",
                "ImageNet",
            ),
            (
                format!("{CAMERA}{HEAD}[heads.postprocess]\nlabel_map = \"m.toml\"\n"),
                "heads[0].postprocess.label_map",
                "[heads.postprocess.labels]",
            ),
            (
                format!("{CAMERA}{HEAD}[heads.postprocess]\nthreshold = 2.0\n"),
                "heads[0].postprocess.threshold",
                "probability",
            ),
            (
                format!("{CAMERA}{HEAD}[heads.publish_policy]\nhold = 0\n"),
                "heads[0].publish_policy.hold",
                "at least 1",
            ),
            (
                format!("{CAMERA}[[heads]]\nname = \"x\"\n"),
                "heads[0].weights",
                "missing",
            ),
            (
                format!("{CAMERA}[[heads]]\nname = \"x\"\nweights = []\n"),
                "heads[0].weights",
                "at least one head file",
            ),
            (
                format!("{CAMERA}[[heads]]\nname = \"x\"\nweights = 3\n"),
                "heads[0].weights",
                "a head file path or a non-empty list of them",
            ),
            (
                format!("{CAMERA}{HEAD}ensemble_weights = [1.0, 2.0]\n"),
                "heads[0].ensemble_weights",
                "2 weights for 1 head files",
            ),
            (
                format!("{CAMERA}[model]\ntta = \"mirror\"\n"),
                "model.tta",
                "none, flip or flip+crops",
            ),
            // A bad top-level policy is reported where it is written, not where it is inherited.
            (
                format!("{CAMERA}[publish_policy]\nmode = \"often\"\n{HEAD}"),
                "publish_policy.mode",
                "often",
            ),
        ];
        for (text, want_key, want_message) in cases {
            let (key, _, message) = key_error(&text, &[]);
            assert_eq!(key, want_key, "{text}");
            assert!(message.contains(want_message), "{key}: {message}");
        }
    }

    #[test]
    fn table_keys_keep_their_case() {
        let config = load(
            &format!("{CAMERA}[postprocess.thresholds]\nChihuahua = 0.7\n"),
            &[],
        )
        .unwrap();
        assert_eq!(config.postprocess.thresholds["Chihuahua"], 0.7);
    }

    #[test]
    fn the_default_weights_path_is_resolved_when_asked_not_in_default() {
        assert_eq!(ModelConfig::default().weights, None);
        let config = load(CAMERA, &[]).unwrap();
        assert_eq!(
            config.model.weights_path(),
            crate::model::default_weights_path()
        );
    }

    fn load_over(text: &str, overrides: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env
            .iter()
            .map(|(var, value)| (OsString::from(var), OsString::from(value)));
        let table = overrides.parse().unwrap();
        let path = Path::new("/var/lib/edgeclass/overrides.toml");
        Config::from_sources(
            Path::new("/etc/edgeclass.toml"),
            text,
            Some((path, table)),
            env,
        )
    }

    #[test]
    fn the_overrides_file_is_merged_over_the_file_and_under_the_environment() {
        let text = format!(
            "{CAMERA}[postprocess]\nthreshold = 0.6\n[postprocess.thresholds]\ntabby = 0.4\n"
        );
        let config = load_over(
            &text,
            "[postprocess]\nthreshold = 0.3\n[postprocess.thresholds]\nbeagle = 0.8\n\
             [[cameras]]\nid = \"door\"\ninterval_ms = 250\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.postprocess.threshold, 0.3);
        assert_eq!(
            config.postprocess.thresholds,
            BTreeMap::from([("beagle".to_string(), 0.8), ("tabby".to_string(), 0.4)])
        );
        assert_eq!(config.cameras.len(), 1);
        assert_eq!(config.cameras[0].interval_ms, 250);
        assert_eq!(
            config.overrides_file.as_deref(),
            Some(Path::new("/var/lib/edgeclass/overrides.toml"))
        );
        let config = load_over(
            &text,
            "[postprocess]\nthreshold = 0.3\n",
            &[("EDGECLASS__POSTPROCESS__THRESHOLD", "0.2")],
        )
        .unwrap();
        assert_eq!(config.postprocess.threshold, 0.2);
        assert_eq!(load(CAMERA, &[]).unwrap().overrides_file, None);
    }

    #[test]
    fn errors_in_the_overrides_file_name_it_and_the_key() {
        let cases = [
            (
                "[postprocess]\nthreshold = 2.0\n",
                "postprocess.threshold",
                true,
            ),
            (
                "[postprocess.thresholds]\nnothing_at_all = 0.5\n",
                "postprocess.thresholds.\"nothing_at_all\"",
                true,
            ),
            ("[[cameras]]\nid = \"yard\"\n", "cameras[1].source", true),
            ("[[cameras]]\nsource = \"file:/x\"\n", "cameras[0].id", true),
            ("[mqtt]\nqso = 1\n", "mqtt", true),
            // A mistake of the config file itself is not blamed on the overrides.
            ("[postprocess]\ntop_k = 2\n", "mqtt.qos", false),
        ];
        for (overrides, want_key, blamed) in cases {
            let text = format!("{CAMERA}[mqtt]\nqos = 7\n");
            let text = if blamed { CAMERA.to_string() } else { text };
            match load_over(&text, overrides, &[]) {
                Err(error @ ConfigError::Key { .. }) => {
                    let ConfigError::Key {
                        ref key,
                        ref from_overrides,
                        ..
                    } = error
                    else {
                        unreachable!()
                    };
                    assert!(key.starts_with(want_key), "{key} for {overrides}");
                    assert_eq!(from_overrides.is_some(), blamed, "{error}");
                    if blamed {
                        let text = error.to_string();
                        assert!(
                            text.contains(
                                "(from overrides file /var/lib/edgeclass/overrides.toml)"
                            ),
                            "{text}"
                        );
                    }
                }
                other => panic!("expected a key error for {overrides}, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_unreadable_overrides_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edgeclass.toml");
        std::fs::write(&file, CAMERA).unwrap();
        let overrides_file = dir.path().join("overrides.toml");
        std::fs::write(&overrides_file, "[postprocess\n").unwrap();
        let error = Config::load_with_overrides(&file, &overrides_file).unwrap_err();
        assert!(
            matches!(error, ConfigError::OverridesFile { .. }),
            "{error}"
        );
        let chain = format!("{:#}", anyhow::Error::from(error));
        assert!(
            chain.contains(&overrides_file.display().to_string()),
            "{chain}"
        );
        assert_eq!(
            Config::load_with_overrides(&file, &dir.path().join("none.toml"))
                .unwrap()
                .overrides_file,
            None
        );
    }
}
