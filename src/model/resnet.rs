//! The ResNet-18 forward pass, in f32 (candle, NCHW) or with the int8 kernels (NHWC).
//!
//! The quantized path runs [`QConv2d`] on plain slices rather than wrapping it in a candle
//! `CustomOp`: a custom op must return freshly allocated storage on every call and sees
//! candle's NCHW layout, whereas the int8 kernels work in NHWC and reuse four activation
//! buffers from frame to frame. The model's surface stays the same for both paths.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::kernels::{global_avg_pool, max_pool_3x3_s2, QConv2d, Scratch};
use super::weights::{Layer, Layers};
use super::{ModelError, Network, Precision};

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
    pub(crate) fn new(network: Network, precision: Precision) -> Result<Engine, ModelError> {
        match precision.weight_bits() {
            None => Ok(Engine::F32(network.layers.try_map(F32Layer::new)?)),
            Some(bits) => {
                let layers = network.layers.try_map(|l| {
                    let q = l.weights.to_per_channel(l.geometry.out_channels, bits);
                    Ok::<_, ModelError>(QLayer {
                        name: l.name.clone(),
                        conv: QConv2d::new(&q.values, &q.scales, &l.bias, l.geometry),
                    })
                })?;
                Ok(Engine::Quantized(Box::new(QuantizedNet {
                    layers,
                    buffers: Mutex::new(Buffers::default()),
                })))
            }
        }
    }

    pub(crate) fn forward(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.run(pool, input, size, logits, &mut None)
    }

    pub(crate) fn forward_profiled(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
    ) -> Result<Vec<(String, Duration)>, ModelError> {
        let mut profile = Some(Vec::new());
        self.run(pool, input, size, logits, &mut profile)?;
        Ok(profile.unwrap_or_default())
    }

    fn run(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
        profile: &mut Profile,
    ) -> Result<(), ModelError> {
        match self {
            // candle parallelises with rayon: inside `install` it uses the model's pool.
            Engine::F32(layers) => pool
                .install(|| forward_f32(layers, input, size, logits, profile))
                .map_err(|source| ModelError::Candle {
                    context: "running the f32 network".into(),
                    source,
                }),
            Engine::Quantized(net) => {
                net.forward(pool, input, size, logits, profile);
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
    profile: &mut Profile,
) -> candle_core::Result<()> {
    let mut since = Instant::now();
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
    for block in &layers.blocks {
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
    // fc is a 1x1 convolution on the 1x1 pooled map.
    let out = layers.fc.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
    logits.clear();
    logits.extend_from_slice(&out);
    lap(profile, &mut since, &layers.fc.name);
    Ok(())
}

/// An int8 convolution and its torchvision name (for profiles).
pub(crate) struct QLayer {
    name: String,
    conv: QConv2d,
}

/// Activation buffers (NHWC f32) reused from frame to frame.
#[derive(Default)]
struct Buffers {
    /// The block input, then its output (swapped with `out`).
    x: Vec<f32>,
    /// A block's first convolution.
    t: Vec<f32>,
    /// The downsampled shortcut.
    r: Vec<f32>,
    out: Vec<f32>,
    kernel: Scratch,
}

pub(crate) struct QuantizedNet {
    layers: Layers<QLayer>,
    /// One frame at a time per model; cameras share the model and take turns.
    buffers: Mutex<Buffers>,
}

impl QuantizedNet {
    fn forward(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        size: usize,
        logits: &mut Vec<f32>,
        profile: &mut Profile,
    ) {
        // Locked outside the pool on purpose: a pool thread waiting inside a parallel loop may
        // pick up another caller's work, which must not then wait for this same lock.
        // The buffers hold no invariant a panicking frame could break: reuse them regardless.
        let mut guard = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let Buffers {
            x,
            t,
            r,
            out,
            kernel,
        } = &mut *guard;
        // One entry into the pool per frame: the layers' own `install`s then run inline, and
        // rayon's injector queue (which allocates a block per 63 entries) is touched once.
        pool.install(|| {
            let mut since = Instant::now();
            nchw_to_nhwc(input, 3, size, size, x);
            let stem = &self.layers.stem;
            let (mut h, mut w) = stem
                .conv
                .forward(pool, x, size, size, None, None, true, t, kernel);
            lap(profile, &mut since, &stem.name);
            let channels = stem.conv.geometry().out_channels;
            (h, w) = max_pool_3x3_s2(t, h, w, channels, x);
            lap(profile, &mut since, "maxpool");
            for block in &self.layers.blocks {
                let (h1, w1) = block
                    .conv1
                    .conv
                    .forward(pool, x, h, w, None, None, true, t, kernel);
                lap(profile, &mut since, &block.conv1.name);
                let residual = match &block.downsample {
                    Some(ds) => {
                        ds.conv.forward(pool, x, h, w, None, None, false, r, kernel);
                        lap(profile, &mut since, &ds.name);
                        &*r
                    }
                    None => &*x,
                };
                block
                    .conv2
                    .conv
                    .forward(pool, t, h1, w1, None, Some(residual), true, out, kernel);
                lap(profile, &mut since, &block.conv2.name);
                std::mem::swap(x, out);
                (h, w) = (h1, w1);
            }
            let fc = &self.layers.fc;
            global_avg_pool(x, h, w, fc.conv.geometry().in_channels, t);
            lap(profile, &mut since, "avgpool");
            fc.conv
                .forward(pool, t, 1, 1, None, None, false, logits, kernel);
            lap(profile, &mut since, &fc.name);
        });
    }
}

fn nchw_to_nhwc(input: &[f32], channels: usize, h: usize, w: usize, out: &mut Vec<f32>) {
    out.resize(input.len(), 0.0);
    let plane = h * w;
    for (c, src) in input.chunks_exact(plane).enumerate().take(channels) {
        for (p, &v) in src.iter().enumerate() {
            out[p * channels + c] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_conversion_and_average_pool() {
        let nchw = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0];
        let mut nhwc = Vec::new();
        nchw_to_nhwc(&nchw, 2, 2, 2, &mut nhwc);
        assert_eq!(nhwc, vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
        let mut pooled = Vec::new();
        global_avg_pool(&nhwc, 2, 2, 2, &mut pooled);
        assert_eq!(pooled, vec![2.5, 25.0]);
    }
}
