//! Writes a model's raw logits for image files, for comparisons outside Rust
//! (`tests/bench/int8_fidelity.py`): `cargo run --release --example logits -- WEIGHTS
//! PRECISION OUT.f32 IMAGE...` writes, per image in order, `num_classes` little-endian f32
//! (before softmax and temperature), preprocessed exactly as `edgeclass classify` does.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use edgeclass::model::{Model, Precision};
use edgeclass::preprocess::{read_image_file, PreprocessConfig, Preprocessor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, precision, out, images @ ..] = args.as_slice() else {
        anyhow::bail!("usage: logits WEIGHTS PRECISION OUT.f32 IMAGE...");
    };
    let precision: Precision = precision.parse()?;
    let model = Model::load(Path::new(weights), precision, 1)?;
    let size = model.input_size() as u32;
    let mut preprocessor = Preprocessor::new(PreprocessConfig::for_input_size(size));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {out}"))?,
    );
    let mut logits = Vec::new();
    for image in images.iter().map(PathBuf::from) {
        let input = preprocessor
            .run(&read_image_file(&image)?)
            .with_context(|| format!("preprocessing {}", image.display()))?;
        model.forward(input, &mut logits)?;
        // Undo the file's temperature: the comparison wants the network's own logits.
        let temperature = model.temperature();
        for &v in &logits {
            file.write_all(&(v * temperature).to_le_bytes())?;
        }
    }
    file.flush()?;
    eprintln!(
        "{}: {} ({})",
        weights,
        model.description(),
        model.activation_scales()
    );
    Ok(())
}
