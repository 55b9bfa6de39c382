//! ResNet-18 weights: the layer list, loading torchvision safetensors (folding BatchNorm) and
//! edgeclass GGUF files, per-channel quantization, and seeded synthetic weights.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::quantized::GgmlDType;
use half::f16;
use safetensors::{Dtype, SafeTensors};

use super::calibration::{ActivationRanges, INPUT};
use super::kernels::ConvGeometry;
use super::{ModelError, WeightBits, DEFAULT_INPUT_SIZE, IMAGENET_CLASSES};

/// torchvision's BatchNorm epsilon.
const BN_EPS: f32 = 1e-5;
/// Channel widths of the four stages of the real ResNet-18.
pub(crate) const FULL_WIDTHS: [usize; 4] = [64, 128, 256, 512];
/// `general.architecture` of edgeclass GGUF files.
pub(crate) const GGUF_ARCHITECTURE: &str = "resnet18";
/// GGUF metadata key of the temperature the logits are divided by (absent: 1).
pub(crate) const TEMPERATURE_KEY: &str = "edgeclass.temperature";
/// GGML block length of Q8_0 and Q4_0.
pub(crate) const GGML_BLOCK: usize = 32;

/// Weights quantized symmetrically per output channel: channel `c` is `values[c] * scales[c]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PerChannel {
    pub(crate) values: Vec<i8>,
    pub(crate) scales: Vec<f32>,
    pub(crate) bits: WeightBits,
}

impl PerChannel {
    /// Quantizes `weights` (`rows` output channels) with scale `max|w_c| / max_level`,
    /// rounded to f16 first so the scale is exactly what a GGUF block stores.
    pub(crate) fn quantize(weights: &[f32], rows: usize, bits: WeightBits) -> PerChannel {
        let level = bits.max_level() as f32;
        let mut values = Vec::with_capacity(weights.len());
        let mut scales = Vec::with_capacity(rows);
        for row in weights.chunks(weights.len() / rows.max(1)) {
            let max = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = f16::from_f32(max / level).to_f32();
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            values.extend(
                row.iter()
                    .map(|w| (w * inverse).round().clamp(-level, level) as i8),
            );
            scales.push(scale);
        }
        PerChannel {
            values,
            scales,
            bits,
        }
    }

    pub(crate) fn dequantize(&self) -> Vec<f32> {
        let row = self.values.len() / self.scales.len().max(1);
        self.values
            .chunks(row)
            .zip(&self.scales)
            .flat_map(|(values, &s)| values.iter().map(move |&v| v as f32 * s))
            .collect()
    }
}

/// A layer's weights as stored: floats (PyTorch order `[out][in][kh][kw]`) or per-channel ints.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LayerWeights {
    Float(Vec<f32>),
    Quantized(PerChannel),
}

impl LayerWeights {
    /// The weights as floats (dequantized if needed).
    pub(crate) fn to_f32(&self) -> Vec<f32> {
        match self {
            LayerWeights::Float(w) => w.clone(),
            LayerWeights::Quantized(q) => q.dequantize(),
        }
    }

    /// The weights quantized per channel to `bits`, reusing stored ints of the same width.
    pub(crate) fn to_per_channel(&self, rows: usize, bits: WeightBits) -> PerChannel {
        match self {
            LayerWeights::Quantized(q) if q.bits == bits => q.clone(),
            other => PerChannel::quantize(&other.to_f32(), rows, bits),
        }
    }
}

/// One convolution, or the fc layer as a 1x1 convolution, with BatchNorm folded in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer {
    /// torchvision module name, e.g. `layer2.0.downsample.0` or `fc`.
    pub(crate) name: String,
    pub(crate) geometry: ConvGeometry,
    pub(crate) weights: LayerWeights,
    pub(crate) bias: Vec<f32>,
}

/// A BasicBlock: two 3x3 convolutions and, when the shape changes, a 1x1 downsample.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Block<L> {
    pub(crate) conv1: L,
    pub(crate) conv2: L,
    pub(crate) downsample: Option<L>,
}

/// ResNet-18's layers in execution order, generic over what a layer is (a spec, loaded
/// weights, a candle convolution, an int8 convolution).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layers<L> {
    pub(crate) stem: L,
    pub(crate) blocks: Vec<Block<L>>,
    pub(crate) fc: L,
}

impl<L> Layers<L> {
    pub(crate) fn try_map<M, E>(
        &self,
        mut f: impl FnMut(&L) -> Result<M, E>,
    ) -> Result<Layers<M>, E> {
        let stem = f(&self.stem)?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            blocks.push(Block {
                conv1: f(&b.conv1)?,
                conv2: f(&b.conv2)?,
                downsample: b.downsample.as_ref().map(&mut f).transpose()?,
            });
        }
        Ok(Layers {
            stem,
            blocks,
            fc: f(&self.fc)?,
        })
    }

    /// Every layer in execution order (a block's downsample before its conv2, as computed).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &L> {
        std::iter::once(&self.stem)
            .chain(self.blocks.iter().flat_map(|b| {
                std::iter::once(&b.conv1)
                    .chain(b.downsample.as_ref())
                    .chain(std::iter::once(&b.conv2))
            }))
            .chain(std::iter::once(&self.fc))
    }
}

/// Where a layer's parameters live in a torchvision state dict.
#[derive(Debug, Clone)]
pub(crate) struct LayerSpec {
    pub(crate) name: String,
    /// The BatchNorm that follows the convolution; `None` for fc.
    pub(crate) batch_norm: Option<String>,
    pub(crate) geometry: ConvGeometry,
}

/// The torchvision ResNet-18 layer list for stage widths `widths` and `classes` outputs.
pub(crate) fn architecture(widths: [usize; 4], classes: usize) -> Layers<LayerSpec> {
    let conv = |name: String, bn: String, cin, cout, kernel, stride, padding| LayerSpec {
        name,
        batch_norm: Some(bn),
        geometry: ConvGeometry {
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            padding,
        },
    };
    let stem = conv("conv1".into(), "bn1".into(), 3, widths[0], 7, 2, 3);
    let mut blocks = Vec::new();
    let mut cin = widths[0];
    for (stage, &width) in widths.iter().enumerate() {
        for index in 0..2 {
            let p = format!("layer{}.{index}", stage + 1);
            let stride = if stage > 0 && index == 0 { 2 } else { 1 };
            let downsample = (stride != 1 || cin != width).then(|| {
                let (c, b) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                conv(c, b, cin, width, 1, stride, 0)
            });
            blocks.push(Block {
                conv1: conv(
                    format!("{p}.conv1"),
                    format!("{p}.bn1"),
                    cin,
                    width,
                    3,
                    stride,
                    1,
                ),
                conv2: conv(
                    format!("{p}.conv2"),
                    format!("{p}.bn2"),
                    width,
                    width,
                    3,
                    1,
                    1,
                ),
                downsample,
            });
            cin = width;
        }
    }
    let fc = LayerSpec {
        name: "fc".into(),
        batch_norm: None,
        geometry: ConvGeometry {
            in_channels: cin,
            out_channels: classes,
            kernel: 1,
            stride: 1,
            padding: 0,
        },
    };
    Layers { stem, blocks, fc }
}

/// A ResNet-18's weights with BatchNorm folded in, loaded from a file or synthetic.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub(crate) layers: Layers<Layer>,
    pub(crate) widths: [usize; 4],
    pub(crate) input_size: usize,
    /// Calibrated activation ranges (GGUF files written with `--calibrate`).
    pub(crate) activations: Option<ActivationRanges>,
    /// The logits are divided by it (temperature scaling fitted by `eval --update-model`).
    pub(crate) temperature: f32,
}

impl Network {
    /// Number of classes, the output channels of the final `fc` layer.
    pub fn num_classes(&self) -> usize {
        self.layers.fc.geometry.out_channels
    }

    /// Side of the square input image.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// What the logits are divided by: 1 unless `eval --update-model` fitted a temperature.
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// Sets the temperature the logits are divided by; it must be finite and positive.
    pub fn set_temperature(&mut self, temperature: f32) -> Result<(), String> {
        self.temperature = super::check_temperature(temperature)?;
        Ok(())
    }

    /// The calibrated activation ranges, if any.
    pub fn activation_ranges(&self) -> Option<&ActivationRanges> {
        self.activations.as_ref()
    }

    /// Channel widths of the four stages (64/128/256/512 for the real network).
    pub fn widths(&self) -> [usize; 4] {
        self.widths
    }

    /// The classifier as floats: weights `[classes][features]` and one bias per class.
    pub fn fc(&self) -> (Vec<f32>, &[f32]) {
        (self.layers.fc.weights.to_f32(), &self.layers.fc.bias)
    }

    /// Identifies the backbone (every layer but fc) independently of how the file stores it:
    /// a hex SHA-256 of the weights as 8-bit per-channel levels and scales, and the biases.
    /// A torchvision safetensors file and its `q8_0` GGUF share a fingerprint; calibration
    /// and the classifier do not change it. A trained [`super::Head`] records the fingerprint
    /// of the backbone its features came from.
    pub fn backbone_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let fc: *const Layer = &self.layers.fc;
        for layer in self.layers.iter().filter(|l| !std::ptr::eq(*l, fc)) {
            let g = layer.geometry;
            hasher.update(layer.name.as_bytes());
            for dim in [g.in_channels, g.out_channels, g.kernel, g.stride, g.padding] {
                hasher.update((dim as u64).to_le_bytes());
            }
            let q = layer
                .weights
                .to_per_channel(g.out_channels, WeightBits::Eight);
            hasher.update(q.values.iter().map(|&v| v as u8).collect::<Vec<u8>>());
            for value in q.scales.iter().chain(&layer.bias) {
                hasher.update(value.to_le_bytes());
            }
        }
        format!("{:x}", hasher.finalize())
    }

    /// Loads a safetensors or GGUF file; see [`super::Model::load`].
    pub fn load(path: &Path) -> Result<Network, ModelError> {
        load(path)
    }

    /// Full-size ResNet-18 with seeded He-initialized weights and small random biases (as if
    /// BatchNorm had been folded), so logits are finite and varied.
    pub fn synthetic(seed: u64) -> Network {
        let mut rng = SplitMix::new(seed);
        let specs = architecture(FULL_WIDTHS, IMAGENET_CLASSES);
        let layers = specs
            .try_map(|spec| {
                let g = spec.geometry;
                let fan_in = g.patch_len() as f32;
                // Uniform with He variance 2/fan_in; fc gets 1/fan_in (no ReLU after it).
                let gain = if spec.batch_norm.is_some() { 2.0 } else { 1.0 };
                let bound = (3.0 * gain / fan_in).sqrt();
                let weights = (0..g.out_channels * g.patch_len())
                    .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                    .collect();
                let bias = (0..g.out_channels)
                    .map(|_| (rng.next_f32() - 0.5) * 0.2)
                    .collect();
                Ok::<_, std::convert::Infallible>(Layer {
                    name: spec.name.clone(),
                    geometry: g,
                    weights: LayerWeights::Float(weights),
                    bias,
                })
            })
            .unwrap_or_else(|never| match never {});
        Network {
            layers,
            widths: FULL_WIDTHS,
            input_size: DEFAULT_INPUT_SIZE,
            activations: None,
            temperature: 1.0,
        }
    }
}

/// The number of values of a GGUF tensor, `None` when its dimensions overflow (a corrupt
/// header): candle's own count would overflow (a panic, or a wrapped size in release).
pub(crate) fn checked_elem_count(info: &gguf_file::TensorInfo) -> Option<usize> {
    info.shape
        .dims()
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim))
}

/// SplitMix64: a tiny seeded generator, so synthetic weights are the same everywhere.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is negligible for the small `n` used).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Loads `path`, detecting GGUF or safetensors from its first bytes.
pub(crate) fn load(path: &Path) -> Result<Network, ModelError> {
    let open_error = |source| ModelError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(open_error)?;
    // SAFETY: the mapping is read-only and lives only during this load; a file truncated
    // underneath us by another process is outside what edgeclass defends against.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(open_error)?;
    let bytes: &[u8] = &map;
    if bytes.starts_with(b"GGUF") {
        load_layers(&GgufReader::new(path, bytes)?)
    } else if looks_like_safetensors(bytes) {
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Malformed {
            path: path.to_path_buf(),
            reason: format!("safetensors: {e}"),
        })?;
        load_layers(&SafetensorsReader {
            path: path.to_path_buf(),
            tensors,
        })
    } else {
        Err(ModelError::UnknownFormat {
            path: path.to_path_buf(),
            magic: bytes.iter().take(8).copied().collect(),
        })
    }
}

/// safetensors starts with a little-endian u64 header length, then a JSON object.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[8] == b'{'
}

/// Access to the tensors of one model file.
trait TensorReader {
    fn path(&self) -> &Path;
    /// Shape in PyTorch order.
    fn shape(&self, name: &str) -> Result<Vec<usize>, ModelError>;
    /// One layer with BatchNorm folded in.
    fn layer(&self, spec: &LayerSpec) -> Result<Layer, ModelError>;

    fn missing(&self, tensor: &str) -> ModelError {
        ModelError::MissingTensor {
            path: self.path().to_path_buf(),
            tensor: tensor.to_string(),
        }
    }

    fn bad(&self, tensor: &str, problem: String) -> ModelError {
        ModelError::BadTensor {
            path: self.path().to_path_buf(),
            tensor: tensor.to_string(),
            problem,
        }
    }

    fn input_size(&self) -> Result<usize, ModelError> {
        Ok(DEFAULT_INPUT_SIZE)
    }

    /// The temperature the logits are divided by (only GGUF stores one).
    fn temperature(&self) -> Result<f32, ModelError> {
        Ok(1.0)
    }

    /// Calibrated activation ranges, if the file has them (only GGUF can).
    fn activation_ranges(
        &self,
        _layers: &Layers<Layer>,
    ) -> Result<Option<ActivationRanges>, ModelError> {
        Ok(None)
    }
}

/// Reads widths and class count from the tensors' shapes, then every layer.
fn load_layers(reader: &dyn TensorReader) -> Result<Network, ModelError> {
    let out_channels = |name: &str| -> Result<usize, ModelError> {
        match reader.shape(name)?.first() {
            Some(&n) if n > 0 => Ok(n),
            _ => Err(reader.bad(name, "has no output channels".into())),
        }
    };
    let mut widths = [0; 4];
    widths[0] = out_channels("conv1.weight")?;
    for (stage, width) in widths.iter_mut().enumerate().skip(1) {
        *width = out_channels(&format!("layer{}.0.conv1.weight", stage + 1))?;
    }
    let classes = out_channels("fc.weight")?;
    let layers = architecture(widths, classes).try_map(|spec| reader.layer(spec))?;
    let activations = reader.activation_ranges(&layers)?;
    Ok(Network {
        layers,
        widths,
        input_size: reader.input_size()?,
        activations,
        temperature: reader.temperature()?,
    })
}

fn check_finite(reader: &dyn TensorReader, name: &str, values: &[f32]) -> Result<(), ModelError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(reader.bad(name, format!("value {i} is {}", values[i]))),
    }
}

fn check_shape(
    reader: &dyn TensorReader,
    name: &str,
    expected: &[usize],
) -> Result<(), ModelError> {
    let found = reader.shape(name)?;
    if found == expected {
        Ok(())
    } else {
        Err(reader.bad(name, format!("shape {found:?}, expected {expected:?}")))
    }
}

/// A torchvision/timm state dict in safetensors: unfolded convolutions and BatchNorms.
struct SafetensorsReader<'a> {
    path: PathBuf,
    tensors: SafeTensors<'a>,
}

impl SafetensorsReader<'_> {
    fn floats(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
        check_shape(self, name, expected)?;
        let view = self.tensors.tensor(name).map_err(|_| self.missing(name))?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => return Err(self.bad(name, format!("dtype {other:?}, expected a float"))),
        };
        check_finite(self, name, &values)?;
        Ok(values)
    }
}

impl TensorReader for SafetensorsReader<'_> {
    fn path(&self) -> &Path {
        &self.path
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, ModelError> {
        let view = self.tensors.tensor(name).map_err(|_| self.missing(name))?;
        Ok(view.shape().to_vec())
    }

    fn layer(&self, spec: &LayerSpec) -> Result<Layer, ModelError> {
        let g = spec.geometry;
        let (cout, cin, k) = (g.out_channels, g.in_channels, g.kernel);
        let weight_name = format!("{}.weight", spec.name);
        let Some(bn) = &spec.batch_norm else {
            // fc: a Linear layer, [classes][in] plus bias.
            let weights = self.floats(&weight_name, &[cout, cin])?;
            let bias = self.floats(&format!("{}.bias", spec.name), &[cout])?;
            return Ok(Layer {
                name: spec.name.clone(),
                geometry: g,
                weights: LayerWeights::Float(weights),
                bias,
            });
        };
        let mut weights = self.floats(&weight_name, &[cout, cin, k, k])?;
        let param = |p: &str| self.floats(&format!("{bn}.{p}"), &[cout]);
        let (gamma, beta) = (param("weight")?, param("bias")?);
        let (mean, var) = (param("running_mean")?, param("running_var")?);
        let mut bias = Vec::with_capacity(cout);
        let patch = weights.len() / cout;
        for (c, row) in weights.chunks_mut(patch).enumerate() {
            if var[c] < 0.0 {
                let name = format!("{bn}.running_var");
                return Err(self.bad(&name, format!("channel {c} is negative ({})", var[c])));
            }
            // y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta, folded into conv + bias.
            let scale = gamma[c] / (var[c] + BN_EPS).sqrt();
            row.iter_mut().for_each(|w| *w *= scale);
            bias.push(beta[c] - mean[c] * scale);
        }
        Ok(Layer {
            name: spec.name.clone(),
            geometry: g,
            weights: LayerWeights::Float(weights),
            bias,
        })
    }
}

/// An edgeclass GGUF: folded weights as `[out][in*kh*kw]` matrices (Q8_0, Q4_0, F16 or F32)
/// and folded biases as F32, read straight from the memory map.
struct GgufReader<'a> {
    path: PathBuf,
    bytes: &'a [u8],
    content: gguf_file::Content,
}

impl<'a> GgufReader<'a> {
    fn new(path: &Path, bytes: &'a [u8]) -> Result<Self, ModelError> {
        let malformed = |reason: String| ModelError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let content = gguf_file::Content::read(&mut Cursor::new(bytes))
            .map_err(|e| malformed(format!("GGUF header: {e}")))?;
        match content.metadata.get("general.architecture") {
            Some(gguf_file::Value::String(a)) if a == GGUF_ARCHITECTURE => {}
            Some(other) => {
                return Err(malformed(format!(
                    "general.architecture is {other:?}, expected \"{GGUF_ARCHITECTURE}\""
                )))
            }
            None => return Err(malformed("GGUF has no general.architecture".into())),
        }
        Ok(GgufReader {
            path: path.to_path_buf(),
            bytes,
            content,
        })
    }

    /// The raw bytes and dtype of tensor `name`, bounds-checked against the file.
    fn raw(&self, name: &str) -> Result<(&'a [u8], GgmlDType, usize), ModelError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.missing(name))?;
        let elems = checked_elem_count(info)
            .ok_or_else(|| self.bad(name, format!("shape {:?} is too large", info.shape.dims())))?;
        let block = info.ggml_dtype.block_size();
        if elems % block != 0 {
            return Err(self.bad(name, format!("{elems} values is not a multiple of {block}")));
        }
        let len = elems / block * info.ggml_dtype.type_size();
        let start = (self.content.tensor_data_offset as usize).saturating_add(info.offset as usize);
        match self.bytes.get(start..start.saturating_add(len)) {
            Some(data) => Ok((data, info.ggml_dtype, elems)),
            None => Err(self.bad(
                name,
                format!(
                    "data at bytes {start}..{} is past the end of the {}-byte file (truncated?)",
                    start.saturating_add(len),
                    self.bytes.len()
                ),
            )),
        }
    }

    fn floats(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
        check_shape(self, name, expected)?;
        let values = match self.stored(name, expected[0])? {
            LayerWeights::Float(v) => v,
            LayerWeights::Quantized(q) => q.dequantize(),
        };
        check_finite(self, name, &values)?;
        Ok(values)
    }

    /// Tensor `name` as stored: Q8_0/Q4_0 whose blocks share one scale per row come out as
    /// per-channel ints without any arithmetic; anything else as floats.
    fn stored(&self, name: &str, rows: usize) -> Result<LayerWeights, ModelError> {
        let (data, dtype, elems) = self.raw(name)?;
        let row_len = elems / rows.max(1);
        let weights = match dtype {
            GgmlDType::F32 => LayerWeights::Float(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            GgmlDType::F16 => LayerWeights::Float(
                data.chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            GgmlDType::Q8_0 | GgmlDType::Q4_0 if row_len.is_multiple_of(GGML_BLOCK) => {
                per_channel_from_blocks(data, rows, dtype)
            }
            _ => {
                // Any other GGML type (or rows that straddle blocks): let candle dequantize.
                let qtensor = self
                    .content
                    .tensor(
                        &mut Cursor::new(self.bytes),
                        name,
                        &candle_core::Device::Cpu,
                    )
                    .and_then(|t| t.dequantize(&candle_core::Device::Cpu))
                    .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
                    .map_err(|e| self.bad(name, format!("cannot decode {dtype:?}: {e}")))?;
                LayerWeights::Float(qtensor)
            }
        };
        Ok(weights)
    }
}

/// Decodes Q8_0/Q4_0 blocks (`rows` whole rows of them). When every block of a row has the
/// same scale (as edgeclass writes them) the result is per-channel ints, used as they are;
/// otherwise the dequantized floats, which the model requantizes per channel.
fn per_channel_from_blocks(data: &[u8], rows: usize, dtype: GgmlDType) -> LayerWeights {
    let size = dtype.type_size();
    let blocks_per_row = (data.len() / size / rows.max(1)).max(1);
    let scale_of = |block: usize| f16::from_le_bytes([data[block * size], data[block * size + 1]]);
    let mut values = Vec::with_capacity(data.len() / size * GGML_BLOCK);
    for block in data.chunks_exact(size) {
        let levels = &block[2..];
        if dtype == GgmlDType::Q8_0 {
            values.extend(levels.iter().map(|&q| q as i8));
        } else {
            // Q4_0: byte j holds value j in its low nibble and value j + 16 in its high one.
            values.extend(levels.iter().map(|&q| (q & 0x0F) as i8 - 8));
            values.extend(levels.iter().map(|&q| (q >> 4) as i8 - 8));
        }
    }
    let uniform = (0..rows).all(|r| {
        let first = scale_of(r * blocks_per_row);
        (1..blocks_per_row).all(|i| scale_of(r * blocks_per_row + i) == first)
    });
    if uniform {
        let bits = if dtype == GgmlDType::Q8_0 {
            WeightBits::Eight
        } else {
            WeightBits::Four
        };
        let scales = (0..rows)
            .map(|r| scale_of(r * blocks_per_row).to_f32())
            .collect();
        LayerWeights::Quantized(PerChannel {
            values,
            scales,
            bits,
        })
    } else {
        LayerWeights::Float(
            values
                .iter()
                .enumerate()
                .map(|(i, &l)| l as f32 * scale_of(i / GGML_BLOCK).to_f32())
                .collect(),
        )
    }
}

impl TensorReader for GgufReader<'_> {
    fn path(&self) -> &Path {
        &self.path
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, ModelError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.missing(name))?;
        Ok(info.shape.dims().to_vec())
    }

    fn layer(&self, spec: &LayerSpec) -> Result<Layer, ModelError> {
        let g = spec.geometry;
        let weight_name = format!("{}.weight", spec.name);
        check_shape(self, &weight_name, &[g.out_channels, g.patch_len()])?;
        let weights = self.stored(&weight_name, g.out_channels)?;
        let floats = match &weights {
            LayerWeights::Float(v) => v.as_slice(),
            LayerWeights::Quantized(q) => q.scales.as_slice(),
        };
        check_finite(self, &weight_name, floats)?;
        let bias = self.floats(&format!("{}.bias", spec.name), &[g.out_channels])?;
        Ok(Layer {
            name: spec.name.clone(),
            geometry: g,
            weights,
            bias,
        })
    }

    fn input_size(&self) -> Result<usize, ModelError> {
        let Some(value) = self.content.metadata.get("resnet18.input_size") else {
            return Ok(DEFAULT_INPUT_SIZE);
        };
        match value.to_u32() {
            Ok(size @ 32..=4096) => Ok(size as usize),
            _ => Err(ModelError::Malformed {
                path: self.path.clone(),
                reason: format!("resnet18.input_size is {value:?}, expected 32..=4096 pixels"),
            }),
        }
    }

    fn temperature(&self) -> Result<f32, ModelError> {
        let Some(value) = self.content.metadata.get(TEMPERATURE_KEY) else {
            return Ok(1.0);
        };
        match value.to_f32() {
            Ok(t) if super::check_temperature(t).is_ok() => Ok(t),
            _ => Err(ModelError::Malformed {
                path: self.path.clone(),
                reason: format!("{TEMPERATURE_KEY} is {value:?}, expected a positive number"),
            }),
        }
    }

    fn activation_ranges(
        &self,
        layers: &Layers<Layer>,
    ) -> Result<Option<ActivationRanges>, ModelError> {
        // Every layer but fc (whose 512 inputs are quantized per frame at no cost).
        let names = layers.iter().map(|l| l.name.as_str());
        let names = std::iter::once(INPUT).chain(names.filter(|&n| n != layers.fc.name));
        ActivationRanges::from_metadata(&self.content.metadata, names).map_err(|reason| {
            ModelError::Malformed {
                path: self.path.clone(),
                reason,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_quantization_uses_f16_scales_and_symmetric_levels() {
        let weights = [
            0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, -0.1, 1.5, 0.0,
        ];
        for bits in [WeightBits::Eight, WeightBits::Four] {
            let q = PerChannel::quantize(&weights, 3, bits);
            let level = bits.max_level();
            assert_eq!(q.scales.len(), 3);
            assert_eq!(q.scales[1], 0.0, "an all-zero channel");
            for &s in &q.scales {
                assert_eq!(f16::from_f32(s).to_f32(), s, "scale {s} is not an f16");
            }
            assert_eq!(
                q.values[1], -level,
                "the largest weight maps to the extreme level"
            );
            assert!(q.values.iter().all(|v| v.abs() <= level));
            let back = q.dequantize();
            for (w, b) in weights.iter().zip(&back) {
                assert!(
                    (w - b).abs() <= 3.0 / level as f32 / 2.0 + 1e-3,
                    "{w} vs {b}"
                );
            }
        }
    }

    fn q8_block(scale: f32, levels: impl Fn(usize) -> i8) -> Vec<u8> {
        let mut b = f16::from_f32(scale).to_le_bytes().to_vec();
        b.extend((0..GGML_BLOCK).map(|i| levels(i) as u8));
        b
    }

    #[test]
    fn blocks_sharing_a_row_scale_come_out_as_ints() {
        // 2 rows of 2 blocks; each row's blocks share a scale.
        let mut data = q8_block(0.5, |i| i as i8);
        data.extend(q8_block(0.5, |i| -(i as i8)));
        data.extend(q8_block(0.25, |_| 3));
        data.extend(q8_block(0.25, |_| -3));
        let LayerWeights::Quantized(q) = per_channel_from_blocks(&data, 2, GgmlDType::Q8_0) else {
            panic!("uniform rows were dequantized");
        };
        assert_eq!(q.scales, vec![0.5, 0.25]);
        assert_eq!(q.values[33], -1);
        assert_eq!(q.values[64], 3);
        assert_eq!(q.bits, WeightBits::Eight);
    }

    #[test]
    fn blocks_with_differing_scales_come_out_as_floats() {
        let mut data = q8_block(0.5, |_| 2);
        data.extend(q8_block(0.25, |_| 2));
        let LayerWeights::Float(w) = per_channel_from_blocks(&data, 1, GgmlDType::Q8_0) else {
            panic!("a row with two scales passed as per-channel");
        };
        assert_eq!((w[0], w[32]), (1.0, 0.5));
    }
}
