//! A classifier for the user's own classes, trained by `edgeclass train` on a backbone's pooled
//! features and run after it: the backbone runs once per frame, the ImageNet fc and every head
//! read the same features.
//!
//! A head file is a small GGUF (`general.architecture = "edgeclass-head"`): one or two dense
//! layers (a ReLU between them) as F32 tensors `head.N.weight` (`[out][in]`) and `head.N.bias`,
//! and metadata:
//!
//! | key | value |
//! |---|---|
//! | `edgeclass.head.classes` | the class names, in output order |
//! | `edgeclass.head.backbone.fingerprint` | [`Network::backbone_fingerprint`] of the backbone it was trained on |
//! | `edgeclass.head.backbone.file` | that backbone's file when trained (a hint for `classify`) |
//! | `edgeclass.head.temperature` | divides the logits (temperature scaling; 1 = none) |
//! | `edgeclass.head.thresholds` | recommended per-class thresholds (optional) |
//! | `edgeclass.head.report` | the training report as JSON (optional) |
//!
//! Feature standardization is folded into the first layer when training ends, so a head reads
//! the backbone's features as they are.
//!
//! A head trained with layer4 unfrozen (`edgeclass train --unfreeze layer4`) also carries its
//! own [`LastStage`] as F32 tensors `layer4.B.conv1.weight`/`.bias`, `layer4.B.conv2.*` and
//! `layer4.0.downsample.0.*` (BatchNorm folded, PyTorch shapes): it reads the backbone's
//! feature map before layer4 and its dense layers read the pooled output of its own layer4
//! ([`Head::features`]). Such a head cannot share the backbone's layer4, so the daemon's
//! `[[heads]]` refuse it ([`Head::last_stage`]); `classify`, `eval` and `--teacher` run it.
//!
//! [`Network::backbone_fingerprint`]: super::Network::backbone_fingerprint

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::{Device, Tensor};

use super::quantize::{f32_tensor, write_gguf_file};
use super::stage::{FeatureMap, LastStage, LAST_STAGE};
use super::weights::checked_elem_count;
use super::ModelError;

/// `general.architecture` of a head file.
pub const HEAD_ARCHITECTURE: &str = "edgeclass-head";
const CLASSES: &str = "edgeclass.head.classes";
const FINGERPRINT: &str = "edgeclass.head.backbone.fingerprint";
const BACKBONE_FILE: &str = "edgeclass.head.backbone.file";
const TEMPERATURE: &str = "edgeclass.head.temperature";
const THRESHOLDS: &str = "edgeclass.head.thresholds";
const REPORT: &str = "edgeclass.head.report";

/// A fully connected layer: `outputs = weight · inputs + bias`, `weight` row-major
/// `[outputs][inputs]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// `outputs x inputs` weights, one row per output.
    pub weight: Vec<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
}

impl Dense {
    /// Number of outputs (rows).
    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// Number of inputs (columns).
    pub fn inputs(&self) -> usize {
        self.weight.len() / self.bias.len().max(1)
    }

    fn apply(&self, input: &[f32], output: &mut Vec<f32>, relu: bool) {
        output.clear();
        output.extend(
            self.weight
                .chunks_exact(self.inputs())
                .zip(&self.bias)
                .map(|(row, &b)| {
                    let v = b + row.iter().zip(input).map(|(w, x)| w * x).sum::<f32>();
                    if relu {
                        v.max(0.0)
                    } else {
                        v
                    }
                }),
        );
    }
}

/// Where a head's features come from: the backbone it was trained on.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneRef {
    /// [`super::Network::backbone_fingerprint`] of that backbone.
    pub fingerprint: String,
    /// Its file at training time.
    pub file: PathBuf,
}

/// A trained classifier over backbone features, with its class names and recommendations.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    classes: Vec<String>,
    hidden: Option<Dense>,
    output: Dense,
    backbone: BackboneRef,
    temperature: f32,
    thresholds: Option<Vec<f32>>,
    report: Option<String>,
    /// Its own layer4, when trained with it unfrozen.
    last_stage: Option<LastStage>,
}

impl Head {
    /// A head classifying `features` features into `classes` through `layers` (one dense layer,
    /// or two with a ReLU between them). Fails with a reason when the shapes do not chain or a
    /// value is not finite.
    pub fn new(
        classes: Vec<String>,
        layers: Vec<Dense>,
        features: usize,
        backbone: BackboneRef,
    ) -> Result<Head, String> {
        let mut layers = layers.into_iter();
        let (hidden, output) = match (layers.next(), layers.next(), layers.next()) {
            (Some(output), None, None) => (None, output),
            (Some(hidden), Some(output), None) => (Some(hidden), output),
            _ => return Err("a head has one or two dense layers".into()),
        };
        let mut inputs = features;
        for (i, layer) in hidden.iter().chain([&output]).enumerate() {
            if layer.outputs() == 0 || layer.weight.len() != layer.outputs() * inputs {
                return Err(format!(
                    "head.{i}.weight has {} values, expected {} outputs x {inputs} inputs",
                    layer.weight.len(),
                    layer.outputs()
                ));
            }
            if !layer
                .weight
                .iter()
                .chain(&layer.bias)
                .all(|v| v.is_finite())
            {
                return Err(format!("head.{i} has a non-finite value"));
            }
            inputs = layer.outputs();
        }
        if output.outputs() != classes.len() {
            return Err(format!(
                "the head has {} outputs but {} class names",
                output.outputs(),
                classes.len()
            ));
        }
        Ok(Head {
            classes,
            hidden,
            output,
            backbone,
            temperature: 1.0,
            thresholds: None,
            report: None,
            last_stage: None,
        })
    }

    /// Gives the head its own last stage (trained with it unfrozen): the dense layers then
    /// read that stage's pooled output, which must have [`Head::feature_len`] channels.
    pub fn with_last_stage(mut self, stage: LastStage) -> Result<Head, String> {
        if stage.output_channels() != self.feature_len() {
            return Err(format!(
                "the head's layer4 gives {} features, its first layer reads {}",
                stage.output_channels(),
                self.feature_len()
            ));
        }
        self.last_stage = Some(stage);
        Ok(self)
    }

    /// The head's own last stage (layer4), when it was trained with it unfrozen: it then
    /// reads the backbone's feature map before layer4, not its pooled features.
    pub fn last_stage(&self) -> Option<&LastStage> {
        self.last_stage.as_ref()
    }

    /// The features this head's layers read for one backbone pass: the backbone's pooled
    /// `features`, or, for a head with its own last stage, that stage run on `stage_input`
    /// (written into `own`, reused from call to call). Fails when such a head is given no
    /// stage input, or one of another shape.
    pub fn features<'a>(
        &self,
        features: &'a [f32],
        stage_input: Option<&FeatureMap>,
        own: &'a mut Vec<f32>,
    ) -> Result<&'a [f32], ModelError> {
        let Some(stage) = &self.last_stage else {
            return Ok(features);
        };
        let error = |source| ModelError::Candle {
            context: "running the head's own layer4 (it needs the backbone's layer3 output)".into(),
            source,
        };
        let map = stage_input
            .filter(|m| m.channels == stage.input_channels())
            .ok_or_else(|| error(candle_core::Error::Msg("no layer3 output given".into())))?;
        stage.features(map, own).map_err(error)?;
        Ok(own)
    }

    /// Class names, in output order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Number of features the head's first dense layer reads (the backbone's pooled features,
    /// or its own last stage's).
    pub fn feature_len(&self) -> usize {
        self.hidden.as_ref().unwrap_or(&self.output).inputs()
    }

    /// The layers, first to last.
    pub fn layers(&self) -> impl Iterator<Item = &Dense> {
        self.hidden.iter().chain([&self.output])
    }

    /// The backbone the head was trained on.
    pub fn backbone(&self) -> &BackboneRef {
        &self.backbone
    }

    /// The temperature the logits are divided by (1 = none).
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// Sets the temperature (temperature scaling); it must be finite and positive.
    pub fn set_temperature(&mut self, temperature: f32) -> Result<(), String> {
        self.temperature = super::check_temperature(temperature)?;
        Ok(())
    }

    /// Recommended per-class thresholds, in class order, when known.
    pub fn thresholds(&self) -> Option<&[f32]> {
        self.thresholds.as_deref()
    }

    /// Sets the recommended per-class thresholds: one per class, each in `0..=1`.
    pub fn set_thresholds(&mut self, thresholds: Vec<f32>) -> Result<(), String> {
        if thresholds.len() != self.classes.len() {
            return Err(format!(
                "{} thresholds for {} classes",
                thresholds.len(),
                self.classes.len()
            ));
        }
        if let Some(bad) = thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(format!("threshold {bad} is outside 0..=1"));
        }
        self.thresholds = Some(thresholds);
        Ok(())
    }

    /// The training report (JSON), when the file carries one.
    pub fn report(&self) -> Option<&str> {
        self.report.as_deref()
    }

    /// Attaches the training report (JSON).
    pub fn set_report(&mut self, report: String) {
        self.report = Some(report);
    }

    /// Classifies one feature vector: writes `classes().len()` logits (already divided by the
    /// temperature) into `logits`, using `hidden` for the hidden layer; both keep their
    /// allocations from call to call.
    pub fn forward(&self, features: &[f32], hidden: &mut Vec<f32>, logits: &mut Vec<f32>) {
        match &self.hidden {
            Some(layer) => {
                layer.apply(features, hidden, true);
                self.output.apply(hidden, logits, false);
            }
            None => self.output.apply(features, logits, false),
        }
        if self.temperature != 1.0 {
            logits.iter_mut().for_each(|l| *l /= self.temperature);
        }
    }

    /// Writes the head to `path` (atomically). Returns the file size in bytes.
    pub fn save(&self, path: &Path) -> Result<u64, ModelError> {
        let candle_error = |source| ModelError::Candle {
            context: format!("encoding head tensors for {}", path.display()),
            source,
        };
        let mut names = Vec::new();
        let mut tensors = Vec::new();
        for (i, layer) in self.layers().enumerate() {
            names.push(format!("head.{i}.weight"));
            tensors.push(
                f32_tensor(layer.weight.clone(), &[layer.outputs(), layer.inputs()])
                    .map_err(candle_error)?,
            );
            names.push(format!("head.{i}.bias"));
            tensors.push(f32_tensor(layer.bias.clone(), &[layer.outputs()]).map_err(candle_error)?);
        }
        for (name, conv) in self.last_stage.iter().flat_map(LastStage::named) {
            for (suffix, tensor) in [("weight", &conv.weight), ("bias", &conv.bias)] {
                names.push(format!("{name}.{suffix}"));
                let values = tensor
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(candle_error)?;
                tensors.push(f32_tensor(values, tensor.dims()).map_err(candle_error)?);
            }
        }
        let strings = |items: &[String]| {
            Value::Array(items.iter().map(|s| Value::String(s.clone())).collect())
        };
        let mut metadata = vec![
            (
                "general.architecture",
                Value::String(HEAD_ARCHITECTURE.into()),
            ),
            ("general.name", Value::String("edgeclass head".into())),
            (CLASSES, strings(&self.classes)),
            (
                FINGERPRINT,
                Value::String(self.backbone.fingerprint.clone()),
            ),
            (
                BACKBONE_FILE,
                Value::String(self.backbone.file.display().to_string()),
            ),
            (TEMPERATURE, Value::F32(self.temperature)),
        ];
        if let Some(thresholds) = &self.thresholds {
            let values = thresholds.iter().map(|&t| Value::F32(t)).collect();
            metadata.push((THRESHOLDS, Value::Array(values)));
        }
        if let Some(report) = &self.report {
            metadata.push((REPORT, Value::String(report.clone())));
        }
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let tensors: Vec<_> = names.iter().map(String::as_str).zip(&tensors).collect();
        write_gguf_file(path, &metadata, &tensors)
    }

    /// Reads a head file; errors name the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Head, ModelError> {
        let malformed = |reason: String| ModelError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = std::fs::File::open(path).map_err(|source| ModelError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| malformed(format!("GGUF header: {e}")))?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let metadata = &content.metadata;
        match metadata.get("general.architecture") {
            Some(Value::String(a)) if a == HEAD_ARCHITECTURE => {}
            other => {
                return Err(malformed(format!(
                    "general.architecture is {other:?}, expected \"{HEAD_ARCHITECTURE}\""
                )))
            }
        }
        let classes = string_array(metadata, CLASSES).map_err(malformed)?;
        let backbone = BackboneRef {
            fingerprint: string(metadata, FINGERPRINT).map_err(malformed)?,
            file: PathBuf::from(string(metadata, BACKBONE_FILE).map_err(malformed)?),
        };
        let mut read = |name: &str| -> Result<(Vec<f32>, Vec<usize>), ModelError> {
            let bad = |problem: String| ModelError::BadTensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                problem,
            };
            // A corrupt header can claim more values than fit in memory or in the file.
            let info = content.tensor_infos.get(name);
            // Zero values is malformed too (and trips candle's aligned-slice check).
            let bytes = info.and_then(|info| {
                let count = checked_elem_count(info).filter(|&count| count > 0)?;
                let dtype = info.ggml_dtype;
                (count % dtype.block_size() == 0)
                    .then_some(count / dtype.block_size())?
                    .checked_mul(dtype.type_size())
            });
            if info.is_some() && bytes.is_none_or(|b| b as u64 > file_len) {
                return Err(bad(format!(
                    "its shape {:?} does not fit in the file",
                    info.map(|i| i.shape.dims().to_vec()).unwrap_or_default()
                )));
            }
            let tensor = content
                .tensor(&mut file, name, &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .map_err(|e| bad(e.to_string()))?;
            let dims = tensor.dims().to_vec();
            let values = tensor
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| bad(e.to_string()))?;
            Ok((values, dims))
        };
        let mut layers = Vec::new();
        for i in 0.. {
            let weight = format!("head.{i}.weight");
            if !content.tensor_infos.contains_key(&weight) {
                break;
            }
            let (weight, dims) = read(&weight)?;
            let (bias, _) = read(&format!("head.{i}.bias")).map_err(|e| match e {
                ModelError::BadTensor { problem, .. } if problem.contains("cannot find") => {
                    ModelError::MissingTensor {
                        path: path.to_path_buf(),
                        tensor: format!("head.{i}.bias"),
                    }
                }
                other => other,
            })?;
            if dims.len() != 2 || dims[0] != bias.len() {
                return Err(malformed(format!(
                    "head.{i}.weight has shape {dims:?} but head.{i}.bias has {} values",
                    bias.len()
                )));
            }
            layers.push(Dense { weight, bias });
        }
        let features = layers.first().map(Dense::inputs).unwrap_or(0);
        let mut head = Head::new(classes, layers, features, backbone).map_err(malformed)?;
        let stage_tensor = format!("{LAST_STAGE}.0.conv1.weight");
        if content.tensor_infos.contains_key(&stage_tensor) {
            let stage = LastStage::from_tensors(|name| {
                if !content.tensor_infos.contains_key(name) {
                    return Ok(None);
                }
                let (values, dims) = read(name).map_err(|e| e.to_string())?;
                Tensor::from_vec(values, dims, &Device::Cpu)
                    .map(Some)
                    .map_err(|e| e.to_string())
            })
            .map_err(malformed)?;
            head = head.with_last_stage(stage).map_err(malformed)?;
        }
        if let Some(value) = metadata.get(TEMPERATURE) {
            let t = value
                .to_f32()
                .map_err(|_| malformed(format!("{TEMPERATURE} is {value:?}, expected a number")))?;
            head.set_temperature(t)
                .map_err(|e| malformed(format!("{TEMPERATURE}: {e}")))?;
        }
        if let Some(value) = metadata.get(THRESHOLDS) {
            let thresholds = match value {
                Value::Array(items) => items.iter().map(|v| v.to_f32().ok()).collect(),
                _ => None,
            }
            .ok_or_else(|| malformed(format!("{THRESHOLDS} is not an array of numbers")))?;
            head.set_thresholds(thresholds)
                .map_err(|e| malformed(format!("{THRESHOLDS}: {e}")))?;
        }
        if metadata.contains_key(REPORT) {
            head.report = Some(string(metadata, REPORT).map_err(malformed)?);
        }
        Ok(head)
    }
}

/// Whether `path` is a head file rather than a whole network: it starts with the GGUF magic and
/// names [`HEAD_ARCHITECTURE`]. Unreadable files are not heads (loading them says why).
pub fn is_head_file(path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    matches!(
        gguf_file::Content::read(&mut file)
            .ok()
            .and_then(|c| c.metadata.get("general.architecture").cloned()),
        Some(Value::String(a)) if a == HEAD_ARCHITECTURE
    )
}

fn string(metadata: &HashMap<String, Value>, key: &str) -> Result<String, String> {
    match metadata.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{key} is {other:?}, expected a string")),
        None => Err(format!("{key} is missing")),
    }
}

fn string_array(metadata: &HashMap<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match metadata.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("{key} holds {other:?}, expected strings")),
            })
            .collect(),
        Some(other) => Err(format!("{key} is {other:?}, expected an array of strings")),
        None => Err(format!("{key} is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backbone() -> BackboneRef {
        BackboneRef {
            fingerprint: "abc".into(),
            file: PathBuf::from("/models/resnet18.gguf"),
        }
    }

    fn two_layer_head() -> Head {
        let hidden = Dense {
            weight: vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0],
            bias: vec![0.0, 0.5, 0.0],
        };
        let output = Dense {
            weight: vec![1.0, 0.0, 2.0, 0.0, 1.0, -1.0],
            bias: vec![0.1, -0.1],
        };
        Head::new(
            vec!["open".into(), "closed".into()],
            vec![hidden, output],
            2,
            backbone(),
        )
        .expect("valid head")
    }

    #[test]
    fn forward_is_relu_between_dense_layers_divided_by_temperature() {
        let mut head = two_layer_head();
        let (mut hidden, mut logits) = (Vec::new(), Vec::new());
        head.forward(&[2.0, -1.0], &mut hidden, &mut logits);
        // hidden = relu([2, -1+0.5, -1]) = [2, 0, 0]; logits = [2+0.1, 0-0.1]
        assert_eq!(hidden, vec![2.0, 0.0, 0.0]);
        assert_eq!(logits, vec![2.1, -0.1]);
        head.set_temperature(2.0).expect("positive");
        head.forward(&[2.0, -1.0], &mut hidden, &mut logits);
        assert_eq!(logits, vec![1.05, -0.05]);
    }

    #[test]
    fn save_then_load_round_trips_every_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("door.gguf");
        let mut head = two_layer_head();
        head.set_temperature(1.5).expect("positive");
        head.set_thresholds(vec![0.7, 0.55]).expect("valid");
        head.set_report("{\"best_epoch\":3}".into());
        head.save(&path).expect("save");
        assert!(is_head_file(&path));
        assert_eq!(Head::load(&path).expect("load"), head);
    }

    #[test]
    fn shapes_that_do_not_chain_are_rejected() {
        let output = Dense {
            weight: vec![1.0; 6],
            bias: vec![0.0; 2],
        };
        let err = Head::new(vec!["a".into(), "b".into()], vec![output], 4, backbone())
            .expect_err("6 weights are not 2 x 4");
        assert!(err.contains("head.0.weight has 6 values"), "{err}");
        let output = Dense {
            weight: vec![1.0; 4],
            bias: vec![0.0; 2],
        };
        let err = Head::new(vec!["a".into()], vec![output], 2, backbone())
            .expect_err("2 outputs, 1 class");
        assert!(err.contains("2 outputs but 1 class"), "{err}");
    }

    #[test]
    fn a_tensor_without_values_is_malformed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.gguf");
        let empty = f32_tensor(Vec::new(), &[0, 2]).expect("empty tensor");
        let bias = f32_tensor(vec![0.0; 2], &[2]).expect("bias");
        let classes = Value::Array(vec![Value::String("a".into()), Value::String("b".into())]);
        let text = |s: &str| Value::String(s.into());
        let metadata = [
            ("general.architecture", text(HEAD_ARCHITECTURE)),
            (CLASSES, classes),
            (FINGERPRINT, text("abc")),
            (BACKBONE_FILE, text("/b.gguf")),
        ];
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        write_gguf_file(
            &path,
            &metadata,
            &[("head.0.weight", &empty), ("head.0.bias", &bias)],
        )
        .expect("write");
        let err = Head::load(&path).expect_err("no values").to_string();
        assert!(
            err.contains("head.0.weight") && err.contains("does not fit"),
            "{err}"
        );
    }

    #[test]
    fn a_network_file_is_not_a_head_and_loading_it_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("net.gguf");
        crate::model::write_gguf(
            &crate::model::Network::synthetic(1),
            crate::model::StorageDtype::Q8_0,
            &path,
        )
        .expect("write");
        assert!(!is_head_file(&path));
        let err = Head::load(&path).expect_err("not a head").to_string();
        assert!(err.contains("expected \"edgeclass-head\""), "{err}");
    }
}
