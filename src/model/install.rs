//! Putting a model file in place: the ImageNet weights downloaded (or a local safetensors file),
//! quantized to GGUF and, given a folder of sample images, calibrated for the static int8 path.
//!
//! `edgeclass quantize`, `edgeclass fetch-model` and the daemon's first start
//! ([`load_configured`]) all end here.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::fetch::{self, FetchError, WeightsSource};
use super::{
    calibrate, write_gguf, Architecture, Model, ModelConfig, ModelError, Network, Precision,
    StorageDtype,
};
use crate::preprocess::{read_image_file, PreprocessConfig, Preprocessor};

/// What [`write_model`] (or [`install`]) wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenModel {
    /// Size of the written file in bytes.
    pub bytes: u64,
    /// The calibration images, when activation ranges were measured.
    pub calibration: Option<CalibrationImages>,
}

/// Which images of a calibration folder were measured and which were skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationImages {
    /// The folder.
    pub dir: PathBuf,
    /// How many images the ranges were measured on.
    pub used: usize,
    /// Files that are not readable images, each with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// The model named by the config, fetched and quantized on first start when missing.
pub fn load_configured(config: &ModelConfig) -> anyhow::Result<Model> {
    if let Some(seed) = config.synthetic_seed {
        log::warn!("using synthetic weights (seed {seed}): classifications are meaningless");
        return Ok(Model::synthetic(seed, config.precision, config.threads)?);
    }
    let weights = config.weights_path();
    if !weights.exists() {
        anyhow::ensure!(
            config.fetch,
            "model file {} does not exist and [model] fetch is false",
            weights.display()
        );
        let source = WeightsSource {
            base_url: config.base_url.clone(),
            sha256: config.sha256.clone(),
            ..WeightsSource::default()
        };
        log::info!("model {} is missing: fetching it", weights.display());
        install(&weights, config.precision, &source, None, None)?;
    }
    if let Some(arch) = config.arch {
        let found = Architecture::detect(&weights)?;
        anyhow::ensure!(
            found == arch,
            "[model] arch is {arch}, but the model file {} holds {found}",
            weights.display()
        );
    }
    Ok(Model::load(&weights, config.precision, config.threads)?)
}

/// Puts a model of `precision` at `output`: from `local` weights if given, else downloaded
/// (and checksum-verified) next to `output`. GGUF outputs are quantized, and calibrated on
/// the images in `calibrate` if given; a `.safetensors` output is the verified download itself.
pub fn install(
    output: &Path,
    precision: Precision,
    source: &WeightsSource,
    local: Option<&Path>,
    calibrate: Option<&Path>,
) -> anyhow::Result<WrittenModel> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| FetchError::Io {
        action: "creating model directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let safetensors = match local {
        Some(path) => path.to_path_buf(),
        None => {
            let dest = if is_safetensors_path(output) {
                output.to_path_buf()
            } else {
                dir.join(&source.file)
            };
            log::info!("downloading {}", source.url());
            fetch::download(source, &dest, true)?
        }
    };
    if is_safetensors_path(output) {
        if safetensors != output {
            std::fs::copy(&safetensors, output).map_err(|source| FetchError::Io {
                action: "copying the weights to",
                path: output.to_path_buf(),
                source,
            })?;
        }
        let bytes = std::fs::metadata(output)
            .map_err(|source| FetchError::Io {
                action: "reading",
                path: output.to_path_buf(),
                source,
            })?
            .len();
        return Ok(WrittenModel {
            bytes,
            calibration: None,
        });
    }
    // f32 is stored as f16: half the size, and the f32 path computes in f32 after loading.
    let dtype = match precision {
        Precision::F32 => StorageDtype::F16,
        Precision::Q8_0 => StorageDtype::Q8_0,
        Precision::Q4_0 => StorageDtype::Q4_0,
    };
    write_model(Network::load(&safetensors)?, dtype, output, calibrate, 0)
}

/// Writes `network` to `output` as GGUF with `dtype` weights, with activation ranges measured
/// on the images in `calibrate` if given (on `threads` threads, 0 = every core).
pub fn write_model(
    network: Network,
    dtype: StorageDtype,
    output: &Path,
    calibrate: Option<&Path>,
    threads: usize,
) -> anyhow::Result<WrittenModel> {
    let (network, calibration) = match calibrate {
        Some(dir) => {
            let (network, images) = calibrate_on_folder(network, dtype, dir, threads)?;
            (network, Some(images))
        }
        None => (network, None),
    };
    let bytes = write_gguf(&network, dtype, output)?;
    Ok(WrittenModel { bytes, calibration })
}

/// Calibrates `network` for weights stored as `dtype` on the images in `dir`.
fn calibrate_on_folder(
    network: Network,
    dtype: StorageDtype,
    dir: &Path,
    threads: usize,
) -> anyhow::Result<(Network, CalibrationImages)> {
    let (inputs, images) = calibration_inputs(dir, network.input_size())?;
    let precision = match dtype {
        StorageDtype::Q4_0 => Precision::Q4_0,
        StorageDtype::Q8_0 | StorageDtype::F16 => Precision::Q8_0,
    };
    let network = calibrate(
        network,
        precision,
        threads,
        inputs.iter().map(Vec::as_slice),
    )
    .context("calibrating activation ranges")?;
    Ok((network, images))
}

/// The preprocessed images of `dir` (name order). Files that are not images are skipped and
/// listed; a folder without a single image is an error.
fn calibration_inputs(
    dir: &Path,
    size: usize,
) -> Result<(Vec<Vec<f32>>, CalibrationImages), ModelError> {
    let unreadable = |source| ModelError::CalibrationImages {
        dir: dir.to_path_buf(),
        reason: format!("cannot list it: {source}"),
    };
    let mut paths = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    paths.retain(|p| p.is_file());
    paths.sort();
    let mut preprocessor = Preprocessor::new(PreprocessConfig::for_input_size(size as u32));
    let mut inputs = Vec::with_capacity(paths.len());
    let mut skipped = Vec::new();
    for path in paths {
        let tensor =
            read_image_file(&path).and_then(|frame| preprocessor.run(&frame).map(<[f32]>::to_vec));
        match tensor {
            Ok(tensor) => inputs.push(tensor),
            Err(err) => skipped.push((path, format!("{:#}", anyhow::Error::from(err)))),
        }
    }
    if inputs.is_empty() {
        return Err(ModelError::CalibrationImages {
            dir: dir.to_path_buf(),
            reason: format!("none of its {} files is a readable image", skipped.len()),
        });
    }
    let images = CalibrationImages {
        dir: dir.to_path_buf(),
        used: inputs.len(),
        skipped,
    };
    Ok((inputs, images))
}

fn is_safetensors_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}
