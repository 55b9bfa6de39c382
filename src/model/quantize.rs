//! Writing a (BatchNorm-folded) network as GGUF with per-channel quantized weights.
//!
//! The weight blocks are standard GGML Q8_0/Q4_0, so any GGUF reader can dequantize them, but
//! every block of one output channel carries the same scale (`max|w_c| / 127` or `/ 7`, rounded
//! to f16). The loader then takes per-channel ints straight out of the file, exactly the values
//! quantize-at-load would compute from the float weights.

use std::borrow::Cow;
use std::fmt;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::str::FromStr;

use candle_core::quantized::{gguf_file, GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};

use super::weights::{
    Layer, LayerWeights, PerChannel, GGML_BLOCK, GGUF_ARCHITECTURE, TEMPERATURE_KEY,
};
use super::{ModelError, Network, WeightBits};

/// How `quantize` stores weight matrices (biases are always F32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StorageDtype {
    /// Half-precision floats: weights rounded to f16, not quantized.
    #[serde(rename = "f16")]
    F16,
    /// GGML Q8_0 blocks with one scale per output channel (`max|w| / 127`); a layer whose rows
    /// are not whole 32-value blocks (the stem) is stored as f32.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// GGML Q4_0 blocks with one scale per output channel (`max|w| / 7`); a layer whose rows
    /// are not whole 32-value blocks (the stem) is stored as f32.
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl StorageDtype {
    /// Every storage dtype; parsing a name matches against this list.
    pub const ALL: [StorageDtype; 3] = [StorageDtype::F16, StorageDtype::Q8_0, StorageDtype::Q4_0];

    /// The name used on the command line (`--dtype`): `f16`, `q8_0` or `q4_0`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageDtype::F16 => "f16",
            StorageDtype::Q8_0 => "q8_0",
            StorageDtype::Q4_0 => "q4_0",
        }
    }
}

impl fmt::Display for StorageDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a storage dtype name that is not `f16`, `q8_0` or `q4_0`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown weight dtype `{0}` (expected f16, q8_0 or q4_0)")]
pub struct UnknownStorageDtype(pub String);

impl FromStr for StorageDtype {
    type Err = UnknownStorageDtype;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorageDtype::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownStorageDtype(s.to_string()))
    }
}

/// Loads `input` (safetensors or GGUF) and writes it to `output` as GGUF with `dtype` weights.
/// Returns the size of the written file in bytes.
pub fn quantize_file(input: &Path, output: &Path, dtype: StorageDtype) -> Result<u64, ModelError> {
    write_gguf(&Network::load(input)?, dtype, output)
}

/// Writes `network` to `output` as GGUF (atomically: a temporary file renamed into place).
/// Returns the size of the written file in bytes.
pub fn write_gguf(
    network: &Network,
    dtype: StorageDtype,
    output: &Path,
) -> Result<u64, ModelError> {
    let candle_error = |source| ModelError::Candle {
        context: format!("encoding GGUF tensors for {}", output.display()),
        source,
    };
    let mut names = Vec::new();
    let mut tensors = Vec::new();
    for layer in network.layers.iter() {
        names.push(format!("{}.weight", layer.name));
        tensors.push(weight_tensor(layer, dtype).map_err(candle_error)?);
        names.push(format!("{}.bias", layer.name));
        tensors.push(f32_tensor(layer.bias.clone(), &[layer.bias.len()]).map_err(candle_error)?);
    }
    let widths = gguf_file::Value::Array(
        network
            .widths
            .iter()
            .map(|&w| gguf_file::Value::U32(w as u32))
            .collect(),
    );
    let metadata = [
        (
            "general.architecture",
            gguf_file::Value::String(GGUF_ARCHITECTURE.into()),
        ),
        (
            "general.name",
            gguf_file::Value::String(format!("edgeclass resnet18 {dtype}")),
        ),
        ("resnet18.widths", widths),
        (
            "resnet18.num_classes",
            gguf_file::Value::U32(network.num_classes() as u32),
        ),
        (
            "resnet18.input_size",
            gguf_file::Value::U32(network.input_size as u32),
        ),
        (
            "edgeclass.weight_dtype",
            gguf_file::Value::String(dtype.to_string()),
        ),
        ("edgeclass.batchnorm_folded", gguf_file::Value::Bool(true)),
        (
            "edgeclass.quantization",
            gguf_file::Value::String(
                "symmetric per output channel: a row's blocks share one scale".into(),
            ),
        ),
    ];
    let mut metadata = metadata.to_vec();
    if network.temperature != 1.0 {
        metadata.push((TEMPERATURE_KEY, gguf_file::Value::F32(network.temperature)));
    }
    let calibration = network
        .activations
        .as_ref()
        .map(|ranges| ranges.to_metadata())
        .unwrap_or_default();
    let metadata: Vec<(&str, &gguf_file::Value)> = metadata
        .iter()
        .map(|(k, v)| (*k, v))
        .chain(calibration.iter().map(|(k, v)| (k.as_str(), v)))
        .collect();
    let tensors: Vec<(&str, &QTensor)> = names.iter().map(String::as_str).zip(&tensors).collect();
    write_gguf_file(output, &metadata, &tensors)
}

/// Writes a GGUF file atomically (a temporary file in the same folder, renamed into place)
/// and readable by the service user. Returns its size in bytes.
pub(crate) fn write_gguf_file(
    output: &Path,
    metadata: &[(&str, &gguf_file::Value)],
    tensors: &[(&str, &QTensor)],
) -> Result<u64, ModelError> {
    let write_error = |source| ModelError::Write {
        path: output.to_path_buf(),
        source,
    };
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    {
        let mut writer = BufWriter::new(file.as_file_mut());
        gguf_file::write(&mut writer, metadata, tensors).map_err(|e| match e {
            candle_core::Error::Io(io) => write_error(io),
            other => ModelError::Candle {
                context: format!("encoding GGUF tensors for {}", output.display()),
                source: other,
            },
        })?;
        writer.flush().map_err(write_error)?;
    }
    let size = file.as_file().metadata().map_err(write_error)?.len();
    // Temporary files are private (0600); a model file is read by the service user too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let readable = std::fs::Permissions::from_mode(0o644);
        file.as_file()
            .set_permissions(readable)
            .map_err(write_error)?;
    }
    file.persist(output).map_err(|e| write_error(e.error))?;
    Ok(size)
}

pub(crate) fn f32_tensor(values: Vec<f32>, shape: &[usize]) -> candle_core::Result<QTensor> {
    QTensor::quantize(
        &Tensor::from_vec(values, shape, &Device::Cpu)?,
        GgmlDType::F32,
    )
}

/// A layer's weights as a `[out][in*kh*kw]` GGUF matrix. Rows that are not a whole number of
/// 32-value blocks (the stem's 147, narrow test networks) stay F32, like llama.cpp does for
/// such tensors: the loader quantizes them per channel exactly as from safetensors.
fn weight_tensor(layer: &Layer, dtype: StorageDtype) -> candle_core::Result<QTensor> {
    let rows = layer.geometry.out_channels;
    let cols = layer.geometry.patch_len();
    let bits = match dtype {
        StorageDtype::F16 => {
            let t = Tensor::from_vec(layer.weights.to_f32(), (rows, cols), &Device::Cpu)?;
            return QTensor::quantize(&t, GgmlDType::F16);
        }
        StorageDtype::Q8_0 => WeightBits::Eight,
        StorageDtype::Q4_0 => WeightBits::Four,
    };
    if !cols.is_multiple_of(GGML_BLOCK) {
        return f32_tensor(layer.weights.to_f32(), &[rows, cols]);
    }
    let q = layer.weights.to_per_channel(rows, bits);
    let (ggml, bytes) = encode_blocks(&q, cols);
    QTensor::new(
        QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, ggml)?,
        (rows, cols),
    )
}

/// Encodes per-channel ints as GGML blocks, each block carrying its row's f16 scale.
fn encode_blocks(q: &PerChannel, cols: usize) -> (GgmlDType, Vec<u8>) {
    let ggml = match q.bits {
        WeightBits::Eight => GgmlDType::Q8_0,
        WeightBits::Four => GgmlDType::Q4_0,
    };
    let mut bytes = Vec::with_capacity(q.values.len() / GGML_BLOCK * ggml.type_size());
    for (row, &scale) in q.values.chunks(cols).zip(&q.scales) {
        // The scale was rounded to f16 when quantizing, so this conversion is exact.
        let scale = half::f16::from_f32(scale).to_le_bytes();
        for block in row.chunks(GGML_BLOCK) {
            bytes.extend_from_slice(&scale);
            match q.bits {
                WeightBits::Eight => bytes.extend(block.iter().map(|&v| v as u8)),
                WeightBits::Four => {
                    let (low, high) = block.split_at(GGML_BLOCK / 2);
                    bytes.extend(
                        low.iter()
                            .zip(high)
                            .map(|(&l, &h)| ((l + 8) as u8) | (((h + 8) as u8) << 4)),
                    );
                }
            }
        }
    }
    (ggml, bytes)
}

/// Multiplies the temperature stored in the GGUF network at `path` by `factor` (temperature
/// scaling fitted by `eval --update-model`) and rewrites the file atomically, its weights
/// stored as before. Returns the new temperature. A safetensors file has nowhere to keep it.
pub fn scale_temperature(path: &Path, factor: f32) -> Result<f32, ModelError> {
    let malformed = |reason: String| ModelError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .map_err(|source| ModelError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if &magic != b"GGUF" {
        return Err(malformed(
            "only a GGUF file can store a temperature: write one with `edgeclass quantize`".into(),
        ));
    }
    let mut network = Network::load(path)?;
    // The first block's weights tell how the file stores them (the stem is always F32 rows).
    let dtype = match &network.layers.blocks.first().map(|b| &b.conv1.weights) {
        Some(LayerWeights::Quantized(q)) if q.bits == WeightBits::Four => StorageDtype::Q4_0,
        Some(LayerWeights::Quantized(_)) => StorageDtype::Q8_0,
        _ => StorageDtype::F16,
    };
    let temperature = network.temperature * factor;
    network.set_temperature(temperature).map_err(malformed)?;
    write_gguf(&network, dtype, path)?;
    Ok(temperature)
}
