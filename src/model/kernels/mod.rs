//! Int8 convolution for the quantized ResNet: u7 activations x s8 weights, i32 accumulation.
//!
//! Activations are quantized per tensor to 7 bits (`0..=127`, with a zero point for signed
//! inputs such as the normalized image). Keeping them at 7 bits means every instruction path
//! (AVX-512 VNNI `vpdpbusd`, AVX2 `vpmaddubsw`, NEON `sdot`/`smlal`) accumulates exactly, with no
//! i16 saturation, so all paths give bit-identical integers. Weights are s8 (`-127..=127`) with
//! one scale per output channel.
//!
//! Tensors are NHWC `f32` between layers; a convolution quantizes its input, runs the integer
//! GEMM and applies scale, bias, residual add and ReLU in the epilogue.

/// Shape of a 2-D convolution with square kernels (all ResNet-18 convolutions are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    /// Output height/width for an input of `size` pixels.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Length of one im2col row: `kernel * kernel * in_channels`.
    pub fn patch_len(&self) -> usize {
        self.kernel * self.kernel * self.in_channels
    }
}

/// How an activation tensor is mapped to 7-bit integers: `x ~ scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    pub scale: f32,
    pub zero_point: u8,
}

impl ActQuant {
    pub const MAX: u8 = 127;

    /// The parameters that cover `[min, max]` (always including 0, so padding is exact).
    pub fn for_range(min: f32, max: f32) -> Self {
        let (min, max) = (min.min(0.0), max.max(0.0));
        if max - min <= f32::EPSILON {
            return Self {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = (max - min) / Self::MAX as f32;
        let zero_point = (-min / scale).round().clamp(0.0, Self::MAX as f32) as u8;
        Self { scale, zero_point }
    }

    /// Dynamic quantization: the range of the tensor itself.
    pub fn for_tensor(values: &[f32]) -> Self {
        let (min, max) = values
            .iter()
            .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        Self::for_range(min, max)
    }

    #[inline]
    pub fn quantize(&self, x: f32) -> u8 {
        ((x / self.scale).round() + self.zero_point as f32).clamp(0.0, Self::MAX as f32) as u8
    }
}

/// Buffers a convolution reuses from frame to frame.
#[derive(Debug, Default)]
pub struct Scratch {
    quantized: Vec<u8>,
}

/// One int8 convolution (BatchNorm already folded into weights and bias).
#[derive(Debug, Clone)]
pub struct QConv2d {
    geometry: ConvGeometry,
    /// `[out][kh][kw][in]`, matching NHWC im2col rows.
    weights: Vec<i8>,
    /// Per output channel: sum of its weights, to remove the activation zero point.
    weight_sums: Vec<i32>,
    scales: Vec<f32>,
    bias: Vec<f32>,
}

impl QConv2d {
    /// `weights` in PyTorch order `[out][in][kh][kw]`, each channel `c` worth `weights * scales[c]`.
    ///
    /// Panics if the slice lengths do not match `geometry`: callers validate shapes when they
    /// load a model file.
    pub fn new(weights: &[i8], scales: &[f32], bias: &[f32], geometry: ConvGeometry) -> Self {
        let ConvGeometry {
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            ..
        } = geometry;
        assert_eq!(weights.len(), cout * cin * k * k, "weight count");
        assert_eq!(scales.len(), cout, "scale count");
        assert_eq!(bias.len(), cout, "bias count");
        let mut nhwc = vec![0i8; weights.len()];
        for o in 0..cout {
            for i in 0..cin {
                for y in 0..k {
                    for x in 0..k {
                        nhwc[((o * k + y) * k + x) * cin + i] =
                            weights[((o * cin + i) * k + y) * k + x];
                    }
                }
            }
        }
        let patch = geometry.patch_len();
        let weight_sums = nhwc
            .chunks(patch)
            .map(|w| w.iter().map(|&v| v as i32).sum())
            .collect();
        Self {
            geometry,
            weights: nhwc,
            weight_sums,
            scales: scales.to_vec(),
            bias: bias.to_vec(),
        }
    }

    pub fn geometry(&self) -> ConvGeometry {
        self.geometry
    }

    /// Convolves `input` (NHWC, `height x width x in_channels`) into `out` (NHWC), adding
    /// `residual` (same shape as the output) before the optional ReLU. Returns the output
    /// height and width. `quant` fixes the input's quantization; `None` measures it.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        pool: &rayon::ThreadPool,
        input: &[f32],
        height: usize,
        width: usize,
        quant: Option<ActQuant>,
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut Vec<f32>,
        scratch: &mut Scratch,
    ) -> (usize, usize) {
        use rayon::prelude::*;
        let g = self.geometry;
        assert_eq!(input.len(), height * width * g.in_channels, "input size");
        let (oh, ow) = (g.output_size(height), g.output_size(width));
        let cout = g.out_channels;
        out.resize(oh * ow * cout, 0.0);
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "residual size");
        }
        let quant = quant.unwrap_or_else(|| ActQuant::for_tensor(input));
        scratch.quantized.resize(input.len(), 0);
        for (q, &x) in scratch.quantized.iter_mut().zip(input) {
            *q = quant.quantize(x);
        }
        let qin = &scratch.quantized;
        let patch = g.patch_len();
        pool.install(|| {
            out.par_chunks_mut(ow * cout)
                .enumerate()
                .for_each(|(y, row)| {
                    let mut col = vec![quant.zero_point; patch];
                    for x in 0..ow {
                        im2col_pixel(qin, height, width, g, y, x, quant.zero_point, &mut col);
                        for c in 0..cout {
                            let w = &self.weights[c * patch..(c + 1) * patch];
                            let acc: i32 =
                                w.iter().zip(&col).map(|(&w, &a)| w as i32 * a as i32).sum();
                            let acc = acc - quant.zero_point as i32 * self.weight_sums[c];
                            let mut v = acc as f32 * (quant.scale * self.scales[c]) + self.bias[c];
                            if let Some(r) = residual {
                                v += r[(y * ow + x) * cout + c];
                            }
                            row[x * cout + c] = if relu { v.max(0.0) } else { v };
                        }
                    }
                });
        });
        (oh, ow)
    }
}

/// Gathers the receptive field of output pixel `(y, x)` as one `[kh][kw][in]` row; taps that
/// fall in the padding read `zero_point` (the value 0).
#[allow(clippy::too_many_arguments)]
fn im2col_pixel(
    input: &[u8],
    height: usize,
    width: usize,
    g: ConvGeometry,
    y: usize,
    x: usize,
    zero_point: u8,
    col: &mut [u8],
) {
    let cin = g.in_channels;
    for ky in 0..g.kernel {
        for kx in 0..g.kernel {
            let dst = &mut col[(ky * g.kernel + kx) * cin..][..cin];
            let iy = (y * g.stride + ky) as isize - g.padding as isize;
            let ix = (x * g.stride + kx) as isize - g.padding as isize;
            if iy < 0 || ix < 0 || iy >= height as isize || ix >= width as isize {
                dst.fill(zero_point);
            } else {
                let src = (iy as usize * width + ix as usize) * cin;
                dst.copy_from_slice(&input[src..src + cin]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 reference convolution on dequantized values.
    fn reference(conv: &QConv2d, input: &[f32], h: usize, w: usize, q: ActQuant) -> Vec<f32> {
        let g = conv.geometry;
        let (oh, ow) = (g.output_size(h), g.output_size(w));
        let deq: Vec<f32> = input
            .iter()
            .map(|&x| (q.quantize(x) as f32 - q.zero_point as f32) * q.scale)
            .collect();
        let mut out = vec![0f32; oh * ow * g.out_channels];
        for y in 0..oh {
            for x in 0..ow {
                for c in 0..g.out_channels {
                    let mut acc = 0f64;
                    for ky in 0..g.kernel {
                        for kx in 0..g.kernel {
                            let iy = (y * g.stride + ky) as isize - g.padding as isize;
                            let ix = (x * g.stride + kx) as isize - g.padding as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            for i in 0..g.in_channels {
                                let wv = conv.weights
                                    [((c * g.kernel + ky) * g.kernel + kx) * g.in_channels + i];
                                acc += wv as f64
                                    * conv.scales[c] as f64
                                    * deq[(iy as usize * w + ix as usize) * g.in_channels + i]
                                        as f64;
                            }
                        }
                    }
                    out[(y * ow + x) * g.out_channels + c] = acc as f32 + conv.bias[c];
                }
            }
        }
        out
    }

    #[test]
    fn matches_dequantized_reference_with_padding_and_signed_input() {
        let g = ConvGeometry {
            in_channels: 5,
            out_channels: 7,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        let n = g.out_channels * g.patch_len();
        let weights: Vec<i8> = (0..n)
            .map(|i| ((i * 37 + 11) % 255) as i8)
            .map(|v| v.max(-127))
            .collect();
        let scales: Vec<f32> = (0..7).map(|c| 0.01 + c as f32 * 0.002).collect();
        let bias: Vec<f32> = (0..7).map(|c| c as f32 * 0.1 - 0.3).collect();
        let conv = QConv2d::new(&weights, &scales, &bias, g);
        let (h, w) = (9, 6);
        let input: Vec<f32> = (0..h * w * 5)
            .map(|i| ((i * 7919) % 200) as f32 / 50.0 - 2.0)
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut out = Vec::new();
        let dims = conv.forward(
            &pool,
            &input,
            h,
            w,
            None,
            None,
            false,
            &mut out,
            &mut Scratch::default(),
        );
        assert_eq!(dims, (5, 3));
        let expect = reference(&conv, &input, h, w, ActQuant::for_tensor(&input));
        for (a, b) in out.iter().zip(&expect) {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
