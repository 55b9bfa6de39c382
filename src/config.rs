//! The daemon's typed configuration: one TOML file plus `EDGECLASS__SECTION__KEY` overrides.
//!
//! Every section is owned by the stage it configures (`capture::CameraConfig`,
//! `publish::MqttConfig`, ...); this module only assembles them, reports errors with the key
//! path and the file, and checks rules that span sections.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capture::CameraConfig;
use crate::model::Precision;
use crate::postprocess::{PolicyConfig, PostprocessConfig};
use crate::preprocess::PreprocessConfig;
use crate::publish::MqttConfig;
use crate::sysexits::Sysexit;

/// Prefix of environment overrides: `EDGECLASS__MQTT__URL` sets `mqtt.url`.
pub const ENV_PREFIX: &str = "EDGECLASS";
const ENV_SEPARATOR: &str = "__";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    #[serde(default)]
    pub postprocess: PostprocessConfig,
    #[serde(default)]
    pub publish_policy: PolicyConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    pub cameras: Vec<CameraConfig>,
    #[serde(default)]
    pub log: LogConfig,
}

/// `[model]`: which weights, at which precision, on how many threads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// safetensors or GGUF; downloaded (and quantized) on first start when missing.
    pub weights: PathBuf,
    pub precision: Precision,
    /// Inference threads; 0 means one per core.
    pub threads: usize,
    /// Download missing weights from `base_url` (a Hugging Face hub or a mirror of it).
    pub fetch: bool,
    pub base_url: String,
    /// Expected SHA-256 of the download (default: the pinned torchvision weights).
    pub sha256: String,
    /// Seeded random weights of the real shapes instead of a file: for tests and benchmarks.
    pub synthetic_seed: Option<u64>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            weights: crate::model::fetch::data_dir().join("resnet18-q8_0.gguf"),
            precision: Precision::Q8_0,
            threads: 0,
            fetch: true,
            base_url: crate::model::fetch::WeightsSource::default().base_url,
            sha256: crate::model::fetch::WeightsSource::default().sha256,
            synthetic_seed: None,
        }
    }
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
    #[error("cannot read config file {}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    #[error("config file {}: key `{key}`{origin}: {message}", file.display())]
    Key {
        file: PathBuf,
        key: String,
        origin: String,
        message: String,
    },
    #[error("config file {}: {message}{origin}", file.display())]
    Invalid {
        file: PathBuf,
        message: String,
        origin: String,
    },
}

impl ConfigError {
    /// The kind of failure, for the process exit status: always a configuration error.
    pub fn sysexit(&self) -> Sysexit {
        Sysexit::Config
    }
}

impl ConfigError {
    /// An invalid value at `key`, with the form that was expected.
    pub fn invalid(file: &Path, key: impl Into<String>, expected: impl std::fmt::Display) -> Self {
        let key = key.into();
        let origin = env_origin(&key);
        Self::Key {
            file: file.to_path_buf(),
            key,
            origin,
            message: format!("expected {expected}"),
        }
    }
}

impl Config {
    /// Reads `file`, applies environment overrides, deserializes and validates.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(file, &text)
    }

    /// Like [`Config::load`] with the file's text already read (`file` names it in errors).
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let merged = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| ConfigError::Syntax {
                file: file.to_path_buf(),
                message: e.to_string(),
            })?;
        let value: config::Value = merged.try_deserialize().map_err(|e| ConfigError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            // The `config` crate appends " for key `...`"; the key is named separately.
            let message = e.inner().to_string();
            let message = message
                .split(" for key `")
                .next()
                .unwrap_or_default()
                .to_string();
            let key = key_of(&e.path().to_string(), &message);
            let origin = env_origin(&key);
            ConfigError::Key {
                file: file.to_path_buf(),
                key,
                origin,
                message,
            }
        })?;
        config.validate(file)?;
        Ok(config)
    }

    /// Rules serde cannot express: ranges, uniqueness, cross-key consistency. Each stage checks
    /// its own section; this adds the file name.
    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        if self.cameras.is_empty() {
            return Err(ConfigError::invalid(
                file,
                "cameras",
                "at least one [[cameras]] table",
            ));
        }
        let in_file = |error: &dyn std::error::Error| {
            let message = error.to_string();
            let origin = env_origin_in(&message);
            ConfigError::Invalid {
                file: file.to_path_buf(),
                message,
                origin,
            }
        };
        crate::capture::validate_cameras(&self.cameras).map_err(|e| in_file(&e))?;
        self.mqtt.validate().map_err(|e| in_file(&e))?;
        self.publish_policy.validate().map_err(|e| in_file(&e))?;
        self.preprocess.validate().map_err(|e| in_file(&e))?;
        Ok(())
    }
}

/// ` (from environment variable X)` when an override for `key` is set, so users look in the
/// right place.
fn env_origin(key: &str) -> String {
    let var = std::iter::once(ENV_PREFIX.to_string())
        .chain(key.split('.').map(str::to_uppercase))
        .collect::<Vec<_>>()
        .join(ENV_SEPARATOR);
    if std::env::var_os(&var).is_some() {
        format!(" (from environment variable {var})")
    } else {
        String::new()
    }
}

/// The same for a stage's message that names its key itself (`mqtt.qos: ...`).
fn env_origin_in(message: &str) -> String {
    std::env::vars()
        .filter_map(|(var, _)| {
            let key = var.strip_prefix(ENV_PREFIX)?.strip_prefix(ENV_SEPARATOR)?;
            let key = key.to_lowercase().replace(ENV_SEPARATOR, ".");
            message
                .contains(&key)
                .then(|| format!(" (from environment variable {var})"))
        })
        .next()
        .unwrap_or_default()
}

/// The key an error is about: serde reports a missing field at its parent's path, and the
/// `config` crate names it with its own path syntax (`cameras[0]id`).
fn key_of(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing configuration field \"")
        .or_else(|| message.strip_prefix("missing field `"))
        .and_then(|rest| rest.split(['"', '`']).next())
        .map(|field| {
            field
                .replace("]", "].")
                .replace("].[", "][")
                .replace("]..", "].")
        });
    match missing {
        Some(field) if path == "." || field.contains(['[', '.']) => {
            field.trim_end_matches('.').to_string()
        }
        Some(field) => format!("{path}.{field}"),
        None => path.to_string(),
    }
}
