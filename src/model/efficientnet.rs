//! EfficientNet-Lite0 in f32 through candle: the edge variant of EfficientNet (MobileNetV2-style
//! inverted residual blocks with depthwise 3x3/5x5 convolutions, ReLU6, no squeeze-excitation).
//!
//! Reads the PyTorch state dict of `efficientnet-lite-pytorch` (`_conv_stem`, `_bn0`,
//! `_blocks.N._expand_conv/_depthwise_conv/_project_conv/_bn0/_bn1/_bn2`, `_conv_head`, `_bn1`,
//! `_fc`) from the `.pth` file (either PyTorch layout, [`super::pth`]) or from safetensors with
//! the same names; BatchNorm is folded into the convolutions at load. Convolutions pad like
//! TensorFlow's `SAME` (the weights were converted from TensorFlow): a stride-2 layer pads one
//! more pixel at the bottom/right than at the top/left.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::{pth, ModelError};

/// The architecture's name in configs, on the command line and in [`super::Model::description`].
pub(crate) const ARCHITECTURE: &str = "efficientnet-lite0";
/// Per-channel normalization the weights were trained with (`(x - 127) / 128` on 0..255 pixels,
/// as converted from TensorFlow), the same for the three channels.
pub(crate) const MEAN: f32 = 0.498;
/// See [`MEAN`].
pub(crate) const STD: f32 = 0.502;
/// The TensorFlow BatchNorm epsilon the weights were trained with.
const BN_EPS: f32 = 1e-3;
/// Channels of the head convolution, i.e. of the pooled features fc classifies.
pub(crate) const FEATURES: usize = 1280;

/// One stage of EfficientNet-Lite0: `repeats` blocks, the first with `stride` and `in -> out`
/// channels, the others stride 1 and `out -> out`.
struct Stage {
    repeats: usize,
    kernel: usize,
    stride: usize,
    expand: usize,
    input: usize,
    output: usize,
}

/// EfficientNet-Lite0's stages (`efficientnet_lite_builder.py`: r1_k3_s11_e1_i32_o16, ...):
/// 16 blocks.
const STAGES: [Stage; 7] = [
    stage(1, 3, 1, 1, 32, 16),
    stage(2, 3, 2, 6, 16, 24),
    stage(2, 5, 2, 6, 24, 40),
    stage(3, 3, 2, 6, 40, 80),
    stage(3, 5, 1, 6, 80, 112),
    stage(4, 5, 2, 6, 112, 192),
    stage(1, 3, 1, 6, 192, 320),
];

const fn stage(
    repeats: usize,
    kernel: usize,
    stride: usize,
    expand: usize,
    input: usize,
    output: usize,
) -> Stage {
    Stage {
        repeats,
        kernel,
        stride,
        expand,
        input,
        output,
    }
}

/// Whether a weights file holds an EfficientNet-Lite0: a PyTorch `.pth`, or safetensors
/// whose header names `_conv_stem.weight`. Reads only the file's start.
pub(crate) fn is_efficientnet(bytes: &[u8]) -> bool {
    if pth::is_pth(bytes) {
        return true;
    }
    let Some(header_len) = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
    else {
        return false;
    };
    let end = usize::try_from(header_len)
        .ok()
        .and_then(|len| len.checked_add(8))
        .map_or(bytes.len(), |end| end.min(bytes.len()));
    let header = &bytes[8.min(end)..end];
    header.starts_with(b"{")
        && header
            .windows(b"\"_conv_stem.weight\"".len())
            .any(|w| w == b"\"_conv_stem.weight\"")
}

/// A convolution with BatchNorm folded in, padded like TensorFlow's `SAME`. Depthwise ones
/// run as [`Depthwise`].
struct Conv {
    name: String,
    /// `[out][in / groups][k][k]`.
    weight: Tensor,
    /// `[1][out][1][1]`.
    bias: Tensor,
    kernel: usize,
    stride: usize,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (top, bottom) = same_padding(h, self.kernel, self.stride);
        let (left, right) = same_padding(w, self.kernel, self.stride);
        let x = x
            .pad_with_zeros(2, top, bottom)?
            .pad_with_zeros(3, left, right)?;
        x.conv2d(&self.weight, 0, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }

    /// The convolution followed by ReLU6.
    fn forward_relu6(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward(x)?.clamp(0f32, 6f32)
    }
}

/// TensorFlow `SAME` padding of one side of length `size`: the output is `ceil(size / stride)`
/// and the odd pixel of padding goes after (bottom/right).
fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// A depthwise convolution (one kxk filter per channel) run directly on the values: candle
/// runs a grouped convolution as one convolution per channel, 80% of the network's time.
struct Depthwise {
    /// The same layer as candle tensors (fingerprint).
    conv: Conv,
    /// `[channel][k][k]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl Depthwise {
    fn new(conv: Conv) -> candle_core::Result<Depthwise> {
        Ok(Depthwise {
            weights: conv.weight.flatten_all()?.to_vec1()?,
            bias: conv.bias.flatten_all()?.to_vec1()?,
            conv,
        })
    }

    /// The convolution followed by ReLU6, one channel per rayon task.
    fn forward_relu6(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use rayon::prelude::*;
        let (batch, channels, h, w) = x.dims4()?;
        let (k, stride) = (self.conv.kernel, self.conv.stride);
        let (top, _) = same_padding(h, k, stride);
        let (left, _) = same_padding(w, k, stride);
        let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        let mut output = vec![0f32; batch * channels * oh * ow];
        output
            .par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(plane, out)| {
                let c = plane % channels;
                let src = &input[plane * h * w..][..h * w];
                let filter = &self.weights[c * k * k..][..k * k];
                for oy in 0..oh {
                    // The filter rows inside the image (the zero padding adds nothing).
                    let (y0, above) = (oy * stride).overflowing_sub(top);
                    let ky_start = if above { top - oy * stride } else { 0 };
                    let ky_end = k.min((h + top).saturating_sub(oy * stride));
                    for ox in 0..ow {
                        let kx_start = left.saturating_sub(ox * stride);
                        let kx_end = k.min((w + left).saturating_sub(ox * stride));
                        let x0 = (ox * stride + kx_start) - left;
                        let mut acc = self.bias[c];
                        for ky in ky_start..ky_end {
                            let iy = y0.wrapping_add(ky);
                            let row = &src[iy * w + x0..][..kx_end - kx_start];
                            let taps = &filter[ky * k + kx_start..ky * k + kx_end];
                            acc += row.iter().zip(taps).map(|(a, b)| a * b).sum::<f32>();
                        }
                        out[oy * ow + ox] = acc.clamp(0.0, 6.0);
                    }
                }
            });
        Tensor::from_vec(output, (batch, channels, oh, ow), x.device())
    }
}

/// An inverted residual block with a linear bottleneck: expand 1x1 (ReLU6), depthwise kxk
/// (ReLU6), project 1x1, plus the input when shapes allow.
struct MbConv {
    expand: Option<Conv>,
    depthwise: Depthwise,
    project: Conv,
    residual: bool,
}

/// EfficientNet-Lite0 with folded f32 weights as candle tensors.
pub(crate) struct EfficientNet {
    stem: Conv,
    blocks: Vec<MbConv>,
    head: Conv,
    /// `[classes][FEATURES]`.
    fc_weight: Tensor,
    /// `[1][classes]`.
    fc_bias: Tensor,
    num_classes: usize,
    fingerprint: String,
}

impl EfficientNet {
    /// Loads a `.pth` (PyTorch zip pickle) or safetensors file and folds its BatchNorms.
    pub(crate) fn load(path: &Path) -> Result<EfficientNet, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let tensors: HashMap<String, Tensor> = if pth::is_pth(&bytes) {
            pth::read(path, &bytes).map_err(|e| ModelError::Malformed {
                path: path.to_path_buf(),
                reason: format!("PyTorch state dict: {e}"),
            })?
        } else {
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
                ModelError::Malformed {
                    path: path.to_path_buf(),
                    reason: format!("safetensors: {e}"),
                }
            })?
        };
        Reader {
            path: path.to_path_buf(),
            tensors,
            used: RefCell::default(),
        }
        .network()
    }

    /// Classes of the fc layer.
    pub(crate) fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// A hex SHA-256 of the folded backbone (every layer but fc): what a trained head records.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Writes the logits of one `1x3xSxS` normalized image, and fc's input into `features`
    /// when given; times each layer into `profile` when given.
    pub(crate) fn forward(
        &self,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
        features: Option<&mut Vec<f32>>,
        mut profile: Option<&mut Vec<(String, std::time::Duration)>>,
    ) -> candle_core::Result<()> {
        let mut since = Instant::now();
        let mut lap = |name: &str| {
            if let Some(p) = profile.as_deref_mut() {
                let now = Instant::now();
                p.push((name.to_string(), now - since));
                since = now;
            }
        };
        let mut x = Tensor::from_slice(input, (1, 3, size, size), &Device::Cpu)?;
        x = self.stem.forward_relu6(&x)?;
        lap(&self.stem.name);
        for block in &self.blocks {
            let mut y = x.clone();
            if let Some(expand) = &block.expand {
                y = expand.forward_relu6(&y)?;
                lap(&expand.name);
            }
            y = block.depthwise.forward_relu6(&y)?;
            lap(&block.depthwise.conv.name);
            y = block.project.forward(&y)?;
            if block.residual {
                y = (y + x)?;
            }
            lap(&block.project.name);
            x = y;
        }
        x = self.head.forward_relu6(&x)?;
        lap(&self.head.name);
        let pooled = x.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1)?;
        lap("avgpool");
        if let Some(features) = features {
            features.clear();
            features.extend(pooled.flatten_all()?.to_vec1::<f32>()?);
        }
        let out = pooled
            .matmul(&self.fc_weight.t()?)?
            .broadcast_add(&self.fc_bias)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        logits.clear();
        logits.extend_from_slice(&out);
        lap("_fc");
        Ok(())
    }
}

/// The tensors of one file, by name, and the checks that name the file and tensor.
struct Reader {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    /// Names read so far: a tensor left over means another architecture (more blocks, SE).
    used: RefCell<HashSet<String>>,
}

impl Reader {
    fn network(&self) -> Result<EfficientNet, ModelError> {
        let stem = self.conv("_conv_stem", "_bn0", 3, 32, 3, 2, 1)?;
        let mut blocks = Vec::with_capacity(16);
        for stage in &STAGES {
            for repeat in 0..stage.repeats {
                let (input, stride) = match repeat {
                    0 => (stage.input, stage.stride),
                    _ => (stage.output, 1),
                };
                let prefix = format!("_blocks.{}", blocks.len());
                let hidden = input * stage.expand;
                let expand = match stage.expand {
                    1 => None,
                    _ => Some(self.conv(
                        &format!("{prefix}._expand_conv"),
                        &format!("{prefix}._bn0"),
                        input,
                        hidden,
                        1,
                        1,
                        1,
                    )?),
                };
                let depthwise = self.conv(
                    &format!("{prefix}._depthwise_conv"),
                    &format!("{prefix}._bn1"),
                    hidden,
                    hidden,
                    stage.kernel,
                    stride,
                    hidden,
                )?;
                blocks.push(MbConv {
                    expand,
                    depthwise: Depthwise::new(depthwise)
                        .map_err(|e| self.candle("building the f32 network", e))?,
                    project: self.conv(
                        &format!("{prefix}._project_conv"),
                        &format!("{prefix}._bn2"),
                        hidden,
                        stage.output,
                        1,
                        1,
                        1,
                    )?,
                    residual: stride == 1 && input == stage.output,
                });
            }
        }
        let head = self.conv("_conv_head", "_bn1", 320, FEATURES, 1, 1, 1)?;
        let fc_shape = self.shape("_fc.weight")?;
        let num_classes = match fc_shape.as_slice() {
            [classes, FEATURES] if *classes > 0 => *classes,
            _ => {
                return Err(self.bad(
                    "_fc.weight",
                    format!("shape {fc_shape:?}, expected [classes, {FEATURES}]"),
                ))
            }
        };
        let fc_weight = self.floats("_fc.weight", &[num_classes, FEATURES])?;
        let fc_bias = self.floats("_fc.bias", &[num_classes])?;
        let fingerprint = fingerprint(
            std::iter::once(&stem)
                .chain(
                    blocks
                        .iter()
                        .flat_map(|b| b.expand.iter().chain([&b.depthwise.conv, &b.project])),
                )
                .chain([&head]),
        )
        .map_err(|e| self.candle("fingerprinting the backbone", e))?;
        self.check_all_used()?;
        Ok(EfficientNet {
            stem,
            blocks,
            head,
            fc_weight: self.tensor(fc_weight, &[num_classes, FEATURES])?,
            fc_bias: self.tensor(fc_bias, &[1, num_classes])?,
            num_classes,
            fingerprint,
        })
    }

    /// Loads convolution `name` (no bias) and folds BatchNorm `bn` into it.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        name: &str,
        bn: &str,
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
    ) -> Result<Conv, ModelError> {
        let weight_name = format!("{name}.weight");
        let mut weight = self.floats(&weight_name, &[output, input / groups, kernel, kernel])?;
        let gamma = self.floats(&format!("{bn}.weight"), &[output])?;
        let beta = self.floats(&format!("{bn}.bias"), &[output])?;
        let mean = self.floats(&format!("{bn}.running_mean"), &[output])?;
        let var_name = format!("{bn}.running_var");
        let var = self.floats(&var_name, &[output])?;
        if let Some(v) = var.iter().find(|v| **v < 0.0) {
            return Err(self.bad(&var_name, format!("negative variance {v}")));
        }
        let per_channel = weight.len() / output;
        let mut bias = Vec::with_capacity(output);
        for (c, row) in weight.chunks_mut(per_channel).enumerate() {
            let scale = gamma[c] / (var[c] + BN_EPS).sqrt();
            row.iter_mut().for_each(|w| *w *= scale);
            bias.push(beta[c] - mean[c] * scale);
        }
        Ok(Conv {
            name: name.to_string(),
            weight: self.tensor(weight, &[output, input / groups, kernel, kernel])?,
            bias: self.tensor(bias, &[1, output, 1, 1])?,
            kernel,
            stride,
        })
    }

    /// Fails on a tensor no layer read (BatchNorm's `num_batches_tracked` aside), as PyTorch's
    /// strict loading does: such a file is another network.
    fn check_all_used(&self) -> Result<(), ModelError> {
        let used = self.used.borrow();
        let mut extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|name| !used.contains(*name) && !name.ends_with(".num_batches_tracked"))
            .collect();
        extra.sort();
        match extra.first() {
            None => Ok(()),
            Some(first) => Err(ModelError::Malformed {
                path: self.path.clone(),
                reason: format!(
                    "{} tensors that EfficientNet-Lite0 does not have, e.g. `{first}`",
                    extra.len()
                ),
            }),
        }
    }

    fn get(&self, name: &str) -> Result<&Tensor, ModelError> {
        self.used.borrow_mut().insert(name.to_string());
        self.tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, ModelError> {
        Ok(self.get(name)?.dims().to_vec())
    }

    /// The tensor's values as f32, checked to have `expected` shape and to be finite.
    fn floats(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
        let tensor = self.get(name)?;
        if tensor.dims() != expected {
            return Err(self.bad(
                name,
                format!("shape {:?}, expected {expected:?}", tensor.dims()),
            ));
        }
        let values = tensor
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| self.bad(name, format!("cannot read as f32: {e}")))?;
        match values.iter().find(|v| !v.is_finite()) {
            Some(v) => Err(self.bad(name, format!("non-finite value {v}"))),
            None => Ok(values),
        }
    }

    fn tensor(&self, values: Vec<f32>, shape: &[usize]) -> Result<Tensor, ModelError> {
        Tensor::from_vec(values, shape, &Device::Cpu)
            .map_err(|e| self.candle("building the f32 network", e))
    }

    fn bad(&self, tensor: &str, problem: String) -> ModelError {
        ModelError::BadTensor {
            path: self.path.clone(),
            tensor: tensor.to_string(),
            problem,
        }
    }

    fn candle(&self, context: &str, source: candle_core::Error) -> ModelError {
        ModelError::Candle {
            context: format!("{context} of {}", self.path.display()),
            source,
        }
    }
}

/// A hex SHA-256 of the layers' names, folded weights and biases.
fn fingerprint<'a>(layers: impl Iterator<Item = &'a Conv>) -> candle_core::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for layer in layers {
        hasher.update(layer.name.as_bytes());
        for tensor in [&layer.weight, &layer.bias] {
            for value in tensor.flatten_all()?.to_vec1::<f32>()? {
                hasher.update(value.to_le_bytes());
            }
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 -> 112 with a 3x3 stride-2 kernel: one pixel of padding, after.
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        // 56 -> 28 with 5x5 stride 2: three pixels, one before and two after.
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
    }

    #[test]
    fn detects_pytorch_zips_and_efficientnet_safetensors_only() {
        assert!(is_efficientnet(b"PK\x03\x04rest"));
        assert!(is_efficientnet(
            b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e\x80\x02"
        ));
        let header = br#"{"_conv_stem.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        assert!(is_efficientnet(&file));
        let resnet = br#"{"conv1.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut file = (resnet.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(resnet);
        assert!(!is_efficientnet(&file));
        assert!(!is_efficientnet(b"GGUF\x03\0\0\0"));
        assert!(!is_efficientnet(b"PK"));
    }
}
