//! The ResNet-18 forward pass, in f32 (candle, NCHW) or with the int8 kernels (NHWC).
//!
//! The quantized path runs [`QConv2d`] on plain slices, statically (calibrated ranges: `u8`
//! levels between layers, `f32` shortcuts) or dynamically (`f32` between layers, ranges
//! measured per frame). It is not wrapped in a candle `CustomOp`: a custom op must return
//! freshly allocated storage on every call and sees candle's NCHW layout, whereas the int8
//! kernels work in NHWC, pass `u8` levels and reuse their activation buffers from frame to
//! frame. The model's surface stays the same for every path.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::calibration::{Calibrator, INPUT};
use super::kernels::{
    global_avg_pool, max_pool_3x3_s2, reserve_gather_buffers, ActQuant, ForwardOptions,
    ForwardQuantizedOptions, Nhwc, QConv2d, Requant, Residual, Scratch,
};
use super::stage::{FeatureMap, LAST_STAGE};
use super::weights::{Block, Layer, Layers};
use super::{ModelError, Network, Precision, WeightBits};

/// Per-layer timings, filled only when profiling.
type Profile = Option<Vec<(String, Duration)>>;

/// Records the time since `*since` under `name` when profiling.
fn lap(profile: &mut Profile, since: &mut Instant, name: &str) {
    if let Some(p) = profile {
        let now = Instant::now();
        p.push((name.to_string(), now - *since));
        *since = now;
    }
}

pub(crate) enum Engine {
    F32(Layers<F32Layer>),
    Quantized(Box<QuantizedNet>),
}

impl Engine {
    /// Quantized precisions use static activation quantization when `network` carries
    /// calibrated ranges, dynamic otherwise.
    pub(crate) fn new(network: &Network, precision: Precision) -> Result<Engine, ModelError> {
        match precision.weight_bits() {
            None => Ok(Engine::F32(network.layers.try_map(F32Layer::new)?)),
            Some(bits) => Ok(Engine::Quantized(Box::new(QuantizedNet::new(
                network, bits,
            )?))),
        }
    }

    /// Readies `pool`'s threads for this engine (buffers sized once, not on some later frame).
    pub(crate) fn prepare(&self, pool: &rayon::ThreadPool) {
        if let Engine::Quantized(net) = self {
            reserve_gather_buffers(pool, net.layers.iter().map(|l| &l.conv));
        }
    }

    /// Whether activations use calibrated (static) quantization.
    pub(crate) fn is_calibrated(&self) -> bool {
        matches!(self, Engine::Quantized(net) if net.is_calibrated())
    }

    /// Runs `input` through the dynamic int8 path, showing `calibrator` every activation
    /// tensor. A no-op for f32.
    pub(crate) fn observe(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
        calibrator: &mut Calibrator,
    ) {
        if let Engine::Quantized(net) = self {
            net.forward(
                pool,
                input,
                size,
                logits,
                None,
                None,
                &mut None,
                Some(calibrator),
            );
        }
    }

    /// Writes the logits, the pooled backbone features (fc's input) into `features` when
    /// given, and the input of the last stage (layer3's output) into `stage_input` when given.
    pub(crate) fn forward(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
        features: Option<&mut Vec<f32>>,
        stage_input: Option<&mut FeatureMap>,
    ) -> Result<(), ModelError> {
        self.run(pool, input, size, logits, features, stage_input, &mut None)
    }

    pub(crate) fn forward_profiled(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
    ) -> Result<Vec<(String, Duration)>, ModelError> {
        let mut profile = Some(Vec::new());
        self.run(pool, input, size, logits, None, None, &mut profile)?;
        Ok(profile.unwrap_or_default())
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
        features: Option<&mut Vec<f32>>,
        stage_input: Option<&mut FeatureMap>,
        profile: &mut Profile,
    ) -> Result<(), ModelError> {
        match self {
            // candle parallelises with rayon: inside `install` it uses the model's pool.
            Engine::F32(layers) => pool
                .install(|| {
                    forward_f32(layers, input, size, logits, features, stage_input, profile)
                })
                .map_err(|source| ModelError::Candle {
                    context: "running the f32 network".into(),
                    source,
                }),
            Engine::Quantized(net) => {
                net.forward(
                    pool,
                    input,
                    size,
                    logits,
                    features,
                    stage_input,
                    profile,
                    None,
                );
                Ok(())
            }
        }
    }
}

/// A folded convolution as candle tensors: weight `[out][in][kh][kw]`, bias `[1][out][1][1]`.
pub(crate) struct F32Layer {
    name: String,
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl F32Layer {
    fn new(layer: &Layer) -> Result<F32Layer, ModelError> {
        let g = layer.geometry;
        let to_tensor = |values: Vec<f32>, shape: &[usize]| {
            Tensor::from_vec(values, shape, &Device::Cpu).map_err(|source| ModelError::Candle {
                context: format!("building tensor for layer {}", layer.name),
                source,
            })
        };
        Ok(F32Layer {
            name: layer.name.clone(),
            weight: to_tensor(
                layer.weights.to_f32(),
                &[g.out_channels, g.in_channels, g.kernel, g.kernel],
            )?,
            bias: to_tensor(layer.bias.clone(), &[1, g.out_channels, 1, 1])?,
            stride: g.stride,
            padding: g.padding,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

fn forward_f32(
    layers: &Layers<F32Layer>,
    input: &[f32],
    size: usize,
    logits: &mut Vec<f32>,
    features: Option<&mut Vec<f32>>,
    mut stage_input: Option<&mut FeatureMap>,
    profile: &mut Profile,
) -> candle_core::Result<()> {
    let mut since = Instant::now();
    let stage_start = stage_start(&layers.blocks, |l| &l.name);
    let mut x = Tensor::from_slice(input, (1, 3, size, size), &Device::Cpu)?;
    x = layers.stem.forward(&x)?.relu()?;
    lap(profile, &mut since, &layers.stem.name);
    // Max pool 3x3/2 with padding 1: the input is post-ReLU (>= 0), so zero padding gives the
    // same maxima as PyTorch's -inf padding.
    x = x
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .max_pool2d_with_stride(3, 2)?;
    lap(profile, &mut since, "maxpool");
    for (i, block) in layers.blocks.iter().enumerate() {
        if i == stage_start {
            if let Some(map) = stage_input.as_deref_mut() {
                let (_, channels, height, width) = x.dims4()?;
                *map = FeatureMap {
                    values: x.flatten_all()?.to_vec1::<f32>()?,
                    channels,
                    height,
                    width,
                };
            }
        }
        let y = block.conv1.forward(&x)?.relu()?;
        lap(profile, &mut since, &block.conv1.name);
        let identity = match &block.downsample {
            Some(ds) => {
                let r = ds.forward(&x)?;
                lap(profile, &mut since, &ds.name);
                r
            }
            None => x,
        };
        x = (block.conv2.forward(&y)? + identity)?.relu()?;
        lap(profile, &mut since, &block.conv2.name);
    }
    x = x.mean_keepdim(3)?.mean_keepdim(2)?;
    lap(profile, &mut since, "avgpool");
    if let Some(features) = features {
        features.clear();
        features.extend(x.flatten_all()?.to_vec1::<f32>()?);
    }
    // fc is a 1x1 convolution on the 1x1 pooled map.
    let out = layers.fc.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
    logits.clear();
    logits.extend_from_slice(&out);
    lap(profile, &mut since, &layers.fc.name);
    Ok(())
}

/// An int8 convolution, its torchvision name (for profiles and calibration) and, once the
/// network is calibrated, its fixed requantization.
pub(crate) struct QLayer {
    name: String,
    conv: QConv2d,
    requant: Option<Requant>,
}

/// Activation buffers (NHWC) of the dynamic path, reused from frame to frame.
#[derive(Default)]
struct Floats {
    /// The block input, then its output (swapped with `out`).
    x: Vec<f32>,
    /// A block's first convolution.
    t: Vec<f32>,
    /// The downsampled shortcut.
    r: Vec<f32>,
    out: Vec<f32>,
}

/// Activation buffers of the static path: levels between convolutions, real values on the
/// skip connections.
#[derive(Default)]
struct Levels {
    /// The block input as levels, then its output (swapped with `out`).
    x: Vec<u8>,
    /// The block input as real values (what the shortcut adds), then its output.
    x_real: Vec<f32>,
    /// A block's first convolution.
    t: Vec<u8>,
    /// The downsampled shortcut (real values; its levels go unused).
    r: Vec<u8>,
    r_real: Vec<f32>,
    out: Vec<u8>,
    out_real: Vec<f32>,
}

#[derive(Default)]
struct Buffers {
    floats: Floats,
    levels: Levels,
    /// The pooled features, fc's input.
    pooled: Vec<f32>,
    kernel: Scratch,
}

pub(crate) struct QuantizedNet {
    layers: Layers<QLayer>,
    /// Index of the last stage's first block: its input is what a head with its own last
    /// stage reads.
    stage_start: usize,
    /// The input's quantization when the network is calibrated (static path).
    input_quant: Option<ActQuant>,
    /// One frame at a time per model; cameras share the model and take turns.
    buffers: Mutex<Buffers>,
}

impl QuantizedNet {
    fn new(network: &Network, bits: WeightBits) -> Result<QuantizedNet, ModelError> {
        let ranges = network.activations.as_ref();
        let quant = |name: &str| ranges.and_then(|r| r.quant(name));
        let mut layers = network.layers.try_map(|l| {
            let q = l.weights.to_per_channel(l.geometry.out_channels, bits);
            Ok::<_, ModelError>(QLayer {
                name: l.name.clone(),
                conv: QConv2d::new(&q.values, &q.scales, &l.bias, l.geometry),
                requant: None,
            })
        })?;
        // Each layer maps its input's levels (its producer's output) to its own. The loader
        // checked that the ranges cover every layer; should they not, the dynamic path runs.
        let mut link = || -> Option<ActQuant> {
            let input = quant(INPUT)?;
            let link = |layer: &mut QLayer, input: ActQuant| -> Option<ActQuant> {
                let output = quant(&layer.name)?;
                layer.requant = Some(layer.conv.requantization(input, output));
                Some(output)
            };
            let mut x = link(&mut layers.stem, input)?;
            for block in &mut layers.blocks {
                let t = link(&mut block.conv1, x)?;
                if let Some(ds) = &mut block.downsample {
                    link(ds, x)?;
                }
                x = link(&mut block.conv2, t)?;
            }
            Some(input)
        };
        let input_quant = link();
        Ok(QuantizedNet {
            stage_start: stage_start(&layers.blocks, |l| &l.name),
            layers,
            input_quant,
            buffers: Mutex::new(Buffers::default()),
        })
    }

    fn is_calibrated(&self) -> bool {
        self.input_quant.is_some()
    }

    /// Runs one frame: static when calibrated, else dynamic; with `observe`, always dynamic,
    /// showing `observe` every tensor it computes (calibration).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
        features: Option<&mut Vec<f32>>,
        stage_input: Option<&mut FeatureMap>,
        profile: &mut Profile,
        observe: Option<&mut Calibrator>,
    ) {
        // Locked outside the pool on purpose: a pool thread waiting inside a parallel loop may
        // pick up another caller's work, which must not then wait for this same lock.
        // The buffers hold no invariant a panicking frame could break: reuse them regardless.
        let mut guard = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let Buffers {
            floats,
            levels,
            pooled,
            kernel,
        } = &mut *guard;
        let fc = &self.layers.fc;
        // One entry into the pool per frame: the layers' own `install`s then run inline, and
        // rayon's injector queue (which allocates a block per 63 entries) is touched once.
        pool.install(|| {
            let mut since = Instant::now();
            match self.input_quant.filter(|_| observe.is_none()) {
                Some(quant) => self.forward_static(
                    pool,
                    levels,
                    input,
                    size,
                    quant,
                    (pooled, stage_input),
                    profile,
                    &mut since,
                ),
                None => self.forward_dynamic(
                    pool,
                    floats,
                    kernel,
                    input,
                    size,
                    observe,
                    (pooled, stage_input),
                    profile,
                    &mut since,
                ),
            }
            lap(profile, &mut since, "avgpool");
            if let Some(features) = features {
                features.clear();
                features.extend_from_slice(pooled);
            }
            // fc's 512 inputs are quantized per frame on both paths: it costs nothing.
            let features = Nhwc {
                values: &pooled[..],
                height: 1,
                width: 1,
            };
            fc.conv
                .forward(pool, features, logits, kernel, ForwardOptions::default());
            lap(profile, &mut since, &fc.name);
        });
    }

    /// The static path up to the pooled features: levels between convolutions (quantization
    /// fixed by calibration), real values on the skip connections.
    #[allow(clippy::too_many_arguments)]
    fn forward_static(
        &self,
        pool: &rayon::ThreadPool,
        acts: &mut Levels,
        input: &[f32],
        size: usize,
        input_quant: ActQuant,
        (pooled, mut stage_input): (&mut Vec<f32>, Option<&mut FeatureMap>),
        profile: &mut Profile,
        since: &mut Instant,
    ) {
        let Levels {
            x,
            x_real,
            t,
            r,
            r_real,
            out,
            out_real,
        } = acts;
        nchw_to_nhwc(input, size, size, x, |v| input_quant.quantize(v));
        lap(profile, since, "input");
        let stem = &self.layers.stem;
        let (h1, w1, stem_len) = output_shape(stem, size, size);
        let stem_out = grown(t, stem_len);
        let image = Nhwc {
            values: &x[..],
            height: size,
            width: size,
        };
        let relu = || ForwardQuantizedOptions {
            relu: true,
            ..Default::default()
        };
        stem.conv
            .forward_quantized(pool, image, requant(stem), stem_out, relu());
        lap(profile, since, &stem.name);
        let mut channels = stem.conv.geometry().out_channels;
        let (mut h, mut w) = max_pool_3x3_s2(stem_out, h1, w1, channels, x);
        lap(profile, since, "maxpool");
        // The first block adds the pooled stem output (levels); later ones the real values
        // of the previous block's output.
        let mut x_quant = requant(stem).output();
        let mut x_is_real = false;
        let blocks = &self.layers.blocks;
        for (i, block) in blocks.iter().enumerate() {
            // Real values of this block's output are needed only as the next block's
            // shortcut (none when it downsamples), for the pooling after the last block, or as
            // the last stage's input when asked for.
            let capture = i + 1 == self.stage_start && stage_input.is_some();
            let output_real = capture
                || blocks
                    .get(i + 1)
                    .is_none_or(|next| next.downsample.is_none());
            let x_len = h * w * channels;
            let conv1 = &block.conv1;
            let (h1, w1, len) = output_shape(conv1, h, w);
            let input = Nhwc {
                values: &x[..x_len],
                height: h,
                width: w,
            };
            conv1
                .conv
                .forward_quantized(pool, input, requant(conv1), grown(t, len), relu());
            lap(profile, since, &conv1.name);
            let residual = match &block.downsample {
                Some(ds) => {
                    let len = output_shape(ds, h, w).2;
                    let also_real = ForwardQuantizedOptions {
                        real_out: Some(grown(r_real, len)),
                        ..Default::default()
                    };
                    ds.conv
                        .forward_quantized(pool, input, requant(ds), grown(r, len), also_real);
                    lap(profile, since, &ds.name);
                    Residual::Float(&r_real[..len])
                }
                None if x_is_real => Residual::Float(&x_real[..x_len]),
                None => Residual::Levels(input.values, x_quant),
            };
            let conv2 = &block.conv2;
            let out_len = output_shape(conv2, h1, w1).2;
            let block_input = Nhwc {
                values: &t[..len],
                height: h1,
                width: w1,
            };
            let options = ForwardQuantizedOptions {
                residual: Some(residual),
                relu: true,
                real_out: output_real.then(|| grown(out_real, out_len)),
                isa: None,
            };
            conv2.conv.forward_quantized(
                pool,
                block_input,
                requant(conv2),
                grown(out, out_len),
                options,
            );
            lap(profile, since, &conv2.name);
            std::mem::swap(x, out);
            std::mem::swap(x_real, out_real);
            channels = conv2.conv.geometry().out_channels;
            (h, w, x_quant, x_is_real) = (h1, w1, requant(conv2).output(), output_real);
            if let (true, Some(map)) = (capture, stage_input.as_deref_mut()) {
                nhwc_to_map(&x_real[..h * w * channels], h, w, channels, map);
            }
        }
        // Pooled from the real values: pooling the levels lowers the reference network's
        // calibrated cosine vs f32 from 0.99907 to 0.99896, below the 0.999 bar.
        global_avg_pool(&x_real[..h * w * channels], h, w, channels, pooled);
    }

    /// The dynamic path up to the pooled features: f32 between layers, each convolution
    /// measuring its input's range. With `observe`, shows it every tensor.
    #[allow(clippy::too_many_arguments)]
    fn forward_dynamic(
        &self,
        pool: &rayon::ThreadPool,
        acts: &mut Floats,
        kernel: &mut Scratch,
        input: &[f32],
        size: usize,
        mut observe: Option<&mut Calibrator>,
        (pooled, mut stage_input): (&mut Vec<f32>, Option<&mut FeatureMap>),
        profile: &mut Profile,
        since: &mut Instant,
    ) {
        let Floats { x, t, r, out } = acts;
        nchw_to_nhwc(input, size, size, x, |v| v);
        lap(profile, since, "input");
        if let Some(calibrator) = observe.as_deref_mut() {
            calibrator.observe(INPUT, x);
        }
        let mut conv = |layer: &QLayer,
                        values: &[f32],
                        (height, width): (usize, usize),
                        out: &mut Vec<f32>,
                        options: ForwardOptions| {
            let input = Nhwc {
                values,
                height,
                width,
            };
            let dims = layer.conv.forward(pool, input, out, kernel, options);
            if let Some(calibrator) = observe.as_deref_mut() {
                calibrator.observe(&layer.name, out);
            }
            dims
        };
        let stem = &self.layers.stem;
        let relu = ForwardOptions {
            relu: true,
            ..Default::default()
        };
        let (mut h, mut w) = conv(stem, x, (size, size), t, relu);
        lap(profile, since, &stem.name);
        let channels = stem.conv.geometry().out_channels;
        (h, w) = max_pool_3x3_s2(t, h, w, channels, x);
        lap(profile, since, "maxpool");
        let mut channels = channels;
        for (i, block) in self.layers.blocks.iter().enumerate() {
            if let (true, Some(map)) = (i == self.stage_start, stage_input.as_deref_mut()) {
                nhwc_to_map(&x[..h * w * channels], h, w, channels, map);
            }
            let (h1, w1) = conv(&block.conv1, x, (h, w), t, relu);
            lap(profile, since, &block.conv1.name);
            let residual = match &block.downsample {
                Some(ds) => {
                    conv(ds, x, (h, w), r, ForwardOptions::default());
                    lap(profile, since, &ds.name);
                    &*r
                }
                None => &*x,
            };
            let shortcut_relu = ForwardOptions {
                residual: Some(residual),
                ..relu
            };
            conv(&block.conv2, t, (h1, w1), out, shortcut_relu);
            lap(profile, since, &block.conv2.name);
            std::mem::swap(x, out);
            (h, w) = (h1, w1);
            channels = block.conv2.conv.geometry().out_channels;
        }
        let channels = self.layers.fc.conv.geometry().in_channels;
        global_avg_pool(x, h, w, channels, pooled);
    }
}

/// Index of the first block of the last stage (`layer4.0`); past the end when there is none.
fn stage_start<L>(blocks: &[Block<L>], name: impl Fn(&L) -> &str) -> usize {
    let prefix = format!("{LAST_STAGE}.");
    blocks
        .iter()
        .position(|b| name(&b.conv1).starts_with(&prefix))
        .unwrap_or(blocks.len())
}

/// Copies an NHWC activation into `map` as NCHW (one image), reusing its allocation.
fn nhwc_to_map(values: &[f32], height: usize, width: usize, channels: usize, map: &mut FeatureMap) {
    map.values.clear();
    map.values.extend(
        (0..channels).flat_map(|c| values.iter().skip(c).step_by(channels.max(1)).copied()),
    );
    (map.channels, map.height, map.width) = (channels, height, width);
}

/// A calibrated layer's requantization: `QuantizedNet::new` gives every layer one when it
/// sets `input_quant`, the only case in which the static path runs.
fn requant(layer: &QLayer) -> &Requant {
    let requant = layer.requant.as_ref();
    requant.expect("a calibrated network has a requantization for every layer")
}

/// Output height, width and element count of `layer` on an `height x width` input.
fn output_shape(layer: &QLayer, height: usize, width: usize) -> (usize, usize, usize) {
    let g = layer.conv.geometry();
    let (h, w) = g.output_dims(height, width);
    (h, w, h * w * g.out_channels)
}

/// The first `len` elements of `buf`, grown if needed but never shrunk: the static path's
/// buffers keep their largest size from frame to frame, so no frame refills them (each layer
/// writes its whole output before anything reads it).
fn grown<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    &mut buf[..len]
}

/// Reorders the NCHW RGB input to NHWC, mapping each value (to levels on the static path);
/// image rows are split over the current rayon pool.
fn nchw_to_nhwc<T: Copy + Default + Send>(
    input: &[f32],
    h: usize,
    w: usize,
    out: &mut Vec<T>,
    map: impl Fn(f32) -> T + Sync,
) {
    let plane = h * w;
    // `Model::forward` checked the input size.
    assert_eq!(input.len(), 3 * plane, "input size");
    out.resize(input.len(), T::default());
    if plane == 0 {
        return;
    }
    let (red, rest) = input.split_at(plane);
    let (green, blue) = rest.split_at(plane);
    out.par_chunks_mut(w * 3)
        .zip(red.par_chunks(w))
        .zip(green.par_chunks(w).zip(blue.par_chunks(w)))
        .for_each(|((row, r), (g, b))| {
            let pixels = row.as_chunks_mut::<3>().0.iter_mut();
            for (pixel, ((&r, &g), &b)) in pixels.zip(r.iter().zip(g).zip(b)) {
                *pixel = [map(r), map(g), map(b)];
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_conversion_and_average_pool() {
        let nchw = [
            1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0, 100.0, 200.0, 300.0, 400.0,
        ];
        let mut nhwc = Vec::new();
        nchw_to_nhwc(&nchw, 2, 2, &mut nhwc, |v| v);
        let expect = [
            1.0, 10.0, 100.0, 2.0, 20.0, 200.0, 3.0, 30.0, 300.0, 4.0, 40.0, 400.0,
        ];
        assert_eq!(nhwc, expect);
        let mut pooled = Vec::new();
        global_avg_pool(&nhwc, 2, 2, 3, &mut pooled);
        assert_eq!(pooled, vec![2.5, 25.0, 250.0]);
    }
}
