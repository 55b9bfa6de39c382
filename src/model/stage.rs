//! The last stage of a ResNet-18 (`layer4`: two BasicBlocks, BatchNorm folded into the
//! convolutions) in f32, for heads trained with it unfrozen (`edgeclass train --unfreeze
//! layer4`).
//!
//! Such a head reads the backbone's feature map after layer3 ([`FeatureMap`], computed by the
//! int8 engine with [`super::Model::forward_with_stage_input`]) and runs its own copy of
//! layer4 and the global average pool before its dense layers. The same
//! [`LastStage::forward`] trains it (its tensors are then candle `Var`s) and runs it.
//! It computes in f32 through candle: the stage is not quantized or calibrated.

use candle_core::{Device, Tensor};

use super::weights::{Block, Layer, Network};

/// The stage a head may bring its own copy of: the only one `--unfreeze` accepts.
pub const LAST_STAGE: &str = "layer4";

/// One image's activations, `[channels][height][width]` (NCHW without the batch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureMap {
    /// `channels x height x width` values.
    pub values: Vec<f32>,
    /// Channels (256 after ResNet-18's layer3).
    pub channels: usize,
    /// Rows (14 for a 224-pixel input after layer3).
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// One folded convolution of the stage: weight `[out][in][k][k]`, bias `[out]`; the padding is
/// `k / 2`.
#[derive(Debug, Clone)]
pub struct StageConv {
    /// `[out][in][k][k]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
    /// 2 for the first block's conv1 and downsample, else 1.
    pub stride: usize,
}

impl StageConv {
    /// The convolution of an NHWC batch, as im2col and one matrix product: candle's own
    /// `conv2d` computes its gradients with a transposed convolution about ten times slower
    /// on the CPU than the product's (measured: 13 s against about 1 s for a batch of 32).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let (outputs, _, k, _) = self.weight.dims4()?;
        let (pad, stride) = (k / 2, self.stride);
        let (ho, wo) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let padded = x.pad_with_zeros(1, pad, pad)?.pad_with_zeros(2, pad, pad)?;
        let mut taps = Vec::with_capacity(k * k);
        for ky in 0..k {
            for kx in 0..k {
                let tap = padded
                    .narrow(1, ky, stride * ho)?
                    .narrow(2, kx, stride * wo)?;
                taps.push(if stride == 1 {
                    tap
                } else {
                    // Every stride-th row and column.
                    tap.reshape((n, ho, stride, wo, stride, c))?
                        .narrow(2, 0, 1)?
                        .narrow(4, 0, 1)?
                        .reshape((n, ho, wo, c))?
                });
            }
        }
        // Columns ordered [ky][kx][channel], as the weight once permuted.
        let columns = Tensor::stack(&taps, 3)?.reshape((n * ho * wo, k * k * c))?;
        let weight = self
            .weight
            .permute((0, 2, 3, 1))?
            .reshape((outputs, k * k * c))?;
        columns
            .matmul(&weight.t()?)?
            .broadcast_add(&self.bias)?
            .reshape((n, ho, wo, outputs))
    }
}

/// ResNet-18's layer4 as candle tensors: two BasicBlocks, the first with a strided 1x1
/// downsample on its shortcut.
#[derive(Debug, Clone)]
pub struct LastStage {
    blocks: Vec<Block<StageConv>>,
}

impl PartialEq for LastStage {
    fn eq(&self, other: &Self) -> bool {
        let values = |stage: &LastStage| -> Option<Vec<Vec<f32>>> {
            stage
                .named()
                .into_iter()
                .flat_map(|(_, conv)| [&conv.weight, &conv.bias])
                .map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).ok())
                .collect()
        };
        self.named().len() == other.named().len() && values(self) == values(other)
    }
}

impl LastStage {
    /// The backbone's own layer4, as the starting point of training; `None` when `network`
    /// has no such stage.
    pub fn from_network(network: &Network) -> Option<LastStage> {
        let prefix = format!("{LAST_STAGE}.");
        let convert = |layer: &Layer, stride: usize| -> Option<StageConv> {
            let g = layer.geometry;
            let shape = (g.out_channels, g.in_channels, g.kernel, g.kernel);
            let weight = Tensor::from_vec(layer.weights.to_f32(), shape, &Device::Cpu).ok()?;
            let bias = Tensor::new(layer.bias.as_slice(), &Device::Cpu).ok()?;
            Some(StageConv {
                weight,
                bias,
                stride,
            })
        };
        let blocks: Option<Vec<Block<StageConv>>> = network
            .layers
            .blocks
            .iter()
            .filter(|b| b.conv1.name.starts_with(&prefix))
            .map(|b| {
                Some(Block {
                    conv1: convert(&b.conv1, b.conv1.geometry.stride)?,
                    conv2: convert(&b.conv2, b.conv2.geometry.stride)?,
                    downsample: match &b.downsample {
                        Some(ds) => Some(convert(ds, ds.geometry.stride)?),
                        None => None,
                    },
                })
            })
            .collect();
        blocks
            .filter(|b| b.len() == 2)
            .map(|blocks| LastStage { blocks })
    }

    /// Builds the stage from its tensors by name ([`LastStage::tensor_names`]), checking that
    /// the shapes chain: `get` returns `None` for a missing tensor. Fails with a reason.
    pub fn from_tensors(
        mut get: impl FnMut(&str) -> Result<Option<Tensor>, String>,
    ) -> Result<LastStage, String> {
        let mut blocks = Vec::new();
        let mut channels = None;
        for block in 0..2 {
            let mut conv = |name: &str, stride: usize, kernel: usize, inputs: Option<usize>| {
                let prefix = format!("{LAST_STAGE}.{block}.{name}");
                let weight = get(&format!("{prefix}.weight"))?
                    .ok_or_else(|| format!("{prefix}.weight is missing"))?;
                let bias = get(&format!("{prefix}.bias"))?
                    .ok_or_else(|| format!("{prefix}.bias is missing"))?;
                let dims = weight.dims().to_vec();
                let fits = dims.len() == 4
                    && dims[2] == kernel
                    && dims[3] == kernel
                    && inputs.is_none_or(|i| dims[1] == i)
                    && bias.dims() == [dims[0]];
                if !fits {
                    return Err(format!(
                        "{prefix}.weight has shape {dims:?} and its bias {:?}: expected \
                         [out, {}, {kernel}, {kernel}] and [out]",
                        bias.dims(),
                        inputs.map_or("in".to_string(), |i| i.to_string())
                    ));
                }
                Ok(StageConv {
                    weight,
                    bias,
                    stride,
                })
            };
            let stride = if block == 0 { 2 } else { 1 };
            let conv1 = conv("conv1", stride, 3, channels)?;
            let width = conv1.weight.dim(0).map_err(|e| e.to_string())?;
            let inputs = conv1.weight.dim(1).map_err(|e| e.to_string())?;
            let conv2 = conv("conv2", 1, 3, Some(width))?;
            let downsample = (block == 0)
                .then(|| conv("downsample.0", 2, 1, Some(inputs)))
                .transpose()?;
            if conv2.weight.dim(0).ok() != Some(width)
                || downsample
                    .as_ref()
                    .is_some_and(|d| d.weight.dim(0).ok() != Some(width))
            {
                return Err(format!(
                    "{LAST_STAGE}.{block}: conv2 and downsample must have conv1's {width} outputs"
                ));
            }
            channels = Some(width);
            blocks.push(Block {
                conv1,
                conv2,
                downsample,
            });
        }
        let stage = LastStage { blocks };
        for (name, conv) in stage.named() {
            let finite = [&conv.weight, &conv.bias].into_iter().all(|t| {
                t.flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .is_ok_and(|v| v.iter().all(|x| x.is_finite()))
            });
            if !finite {
                return Err(format!("{name} holds a value that is not finite"));
            }
        }
        Ok(stage)
    }

    /// Every convolution with its name (`layer4.0.conv1`, ...), in a fixed order.
    pub fn named(&self) -> Vec<(String, &StageConv)> {
        let mut named = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            named.push((format!("{LAST_STAGE}.{i}.conv1"), &block.conv1));
            named.push((format!("{LAST_STAGE}.{i}.conv2"), &block.conv2));
            if let Some(ds) = &block.downsample {
                named.push((format!("{LAST_STAGE}.{i}.downsample.0"), ds));
            }
        }
        named
    }

    /// The same stage with every tensor replaced by `replace(name, tensor)` (training swaps in
    /// `Var`s).
    pub fn map_tensors(
        &self,
        mut replace: impl FnMut(&str, &Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<LastStage> {
        let mut blocks = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let mut conv = |name: &str, conv: &StageConv| -> candle_core::Result<StageConv> {
                let prefix = format!("{LAST_STAGE}.{i}.{name}");
                Ok(StageConv {
                    weight: replace(&format!("{prefix}.weight"), &conv.weight)?,
                    bias: replace(&format!("{prefix}.bias"), &conv.bias)?,
                    stride: conv.stride,
                })
            };
            blocks.push(Block {
                conv1: conv("conv1", &block.conv1)?,
                conv2: conv("conv2", &block.conv2)?,
                downsample: block
                    .downsample
                    .as_ref()
                    .map(|ds| conv("downsample.0", ds))
                    .transpose()?,
            });
        }
        Ok(LastStage { blocks })
    }

    /// A copy cut from any autograd graph: the trained weights of one epoch.
    pub fn snapshot(&self) -> candle_core::Result<LastStage> {
        self.map_tensors(|_, t| t.detach().copy())
    }

    /// Channels of the feature map the stage reads (256 for ResNet-18).
    pub fn input_channels(&self) -> usize {
        self.blocks[0].conv1.weight.dim(1).unwrap_or(0)
    }

    /// Channels it outputs, i.e. pooled features (512 for ResNet-18).
    pub fn output_channels(&self) -> usize {
        self.blocks[0].conv1.weight.dim(0).unwrap_or(0)
    }

    /// Runs the stage and the global average pool on a batch `[n][c][h][w]`: `[n][features]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.permute((0, 2, 3, 1))?.contiguous()?;
        for block in &self.blocks {
            let y = block.conv1.forward(&x)?.relu()?;
            let shortcut = match &block.downsample {
                Some(ds) => ds.forward(&x)?,
                None => x,
            };
            x = (block.conv2.forward(&y)? + shortcut)?.relu()?;
        }
        x.mean(2)?.mean(1)
    }

    /// Pooled features of one feature map, written into `pooled`.
    pub fn features(&self, map: &FeatureMap, pooled: &mut Vec<f32>) -> candle_core::Result<()> {
        let shape = (1, map.channels, map.height, map.width);
        let x = Tensor::from_slice(&map.values, shape, &Device::Cpu)?;
        let out = self.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        pooled.clear();
        pooled.extend_from_slice(&out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{synthetic_input, Model, Precision};

    /// The backbone's own layer4, run by this module on the captured layer3 output, gives the
    /// backbone's pooled features: the capture (f32 and int8 paths) and the im2col
    /// convolutions agree with the engine.
    #[test]
    fn the_backbones_layer4_on_its_layer3_output_gives_its_features() {
        let network = Network::synthetic(5);
        let stage = LastStage::from_network(&network).expect("layer4");
        assert_eq!(
            (stage.input_channels(), stage.output_channels()),
            (256, 512)
        );
        let input = synthetic_input(6, 224);
        for precision in [Precision::F32, Precision::Q8_0] {
            let model = Model::synthetic(5, precision, 1).expect("model");
            let (mut logits, mut features, mut map) = Default::default();
            model
                .forward_with_stage_input(&input, &mut logits, &mut features, &mut map)
                .expect("forward");
            let map: FeatureMap = map;
            assert_eq!((map.channels, map.height, map.width), (256, 14, 14));
            assert_eq!(model.stage_input_shape(), Some((256, 14, 14)));
            let mut pooled = Vec::new();
            stage.features(&map, &mut pooled).expect("stage");
            let features: Vec<f32> = features;
            let dot: f32 = pooled.iter().zip(&features).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let cosine = dot / (norm(&pooled) * norm(&features));
            // f32: the same arithmetic in another order; q8_0: the int8 layer4 against f32.
            let bar = if precision == Precision::F32 {
                0.99999
            } else {
                0.99
            };
            assert!(cosine > bar, "{precision}: cosine {cosine}");
        }
    }
}
