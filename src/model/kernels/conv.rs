//! The int8 convolution layer ([`QConv2d`]): weight packing at load time, and the two forward
//! passes with their options ([`ForwardOptions`], [`ForwardQuantizedOptions`]).

use rayon::prelude::*;

use super::epilogue::{Epilogue, Shared};
use super::gemm::gemm;
use super::geometry::ConvGeometry;
use super::isa::Isa;
use super::micro_kernel::PANEL;
use super::quantization::{quantize_slice, range_with_zero, ActQuant, Requant, Residual};

/// The activations of one image in NHWC order: `height x width x channels` values.
#[derive(Debug, Clone, Copy)]
pub struct Nhwc<'a, T> {
    /// `[y][x][channel]`.
    pub values: &'a [T],
    /// Pixels per column.
    pub height: usize,
    /// Pixels per row.
    pub width: usize,
}

/// What [`QConv2d::forward`] does besides the convolution. The default measures the input's
/// range, adds nothing, applies no ReLU and runs on the path of [`Isa::detect`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardOptions<'a> {
    /// Fixes the input's quantization (its zero point must be at most [`ActQuant::MAX`], as
    /// [`ActQuant::for_range`] makes it); `None` measures it.
    pub input_quant: Option<ActQuant>,
    /// Added before the ReLU; the same shape as the output.
    pub residual: Option<&'a [f32]>,
    /// Whether negative outputs become 0.
    pub relu: bool,
    /// The instruction path; `None` is [`Isa::detect`]'s (evaluated once per process). Panics
    /// if the path is not available on this CPU.
    pub isa: Option<Isa>,
}

/// What [`QConv2d::forward_quantized`] does besides the convolution. The default adds nothing,
/// applies no ReLU, writes only levels and runs on the path of [`Isa::detect`].
#[derive(Debug, Default)]
pub struct ForwardQuantizedOptions<'a> {
    /// Added before the ReLU; the same shape as the output.
    pub residual: Option<Residual<'a>>,
    /// Whether outputs below the real value 0 become 0.
    pub relu: bool,
    /// Also receives the outputs as real values (before rounding to levels); the same size
    /// as the output.
    pub real_out: Option<&'a mut [f32]>,
    /// The instruction path; `None` is [`Isa::detect`]'s (evaluated once per process). Panics
    /// if the path is not available on this CPU.
    pub isa: Option<Isa>,
}

/// Buffers the dynamic path reuses from frame to frame.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The input, quantized.
    quantized: Vec<u8>,
    /// Per output channel: activation scale times weight scale.
    scales: Vec<f32>,
}

/// One int8 convolution (BatchNorm already folded into weights and bias).
#[derive(Debug, Clone)]
pub struct QConv2d {
    pub(super) geometry: ConvGeometry,
    /// `[out / 16][k / 4][out % 16][k % 4]`, `k` running over `[kh][kw][in]` (the NHWC im2col
    /// order) padded with zero weights to `padded_patch_len`, output channels padded to 16.
    pub(super) packed: Vec<i8>,
    /// Per output channel: sum of its weights, to remove the activation zero point.
    pub(super) weight_sums: Vec<i32>,
    pub(super) scales: Vec<f32>,
    pub(super) bias: Vec<f32>,
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
        let kp = geometry.padded_patch_len();
        let mut packed = vec![0i8; cout.div_ceil(PANEL) * PANEL * kp];
        let mut weight_sums = vec![0i32; cout];
        for o in 0..cout {
            let panel = &mut packed[o / PANEL * PANEL * kp..][..PANEL * kp];
            for i in 0..cin {
                for y in 0..k {
                    for x in 0..k {
                        let v = weights[((o * cin + i) * k + y) * k + x];
                        let d = (y * k + x) * cin + i;
                        panel[d / 4 * 4 * PANEL + o % PANEL * 4 + d % 4] = v;
                        weight_sums[o] += v as i32;
                    }
                }
            }
        }
        Self {
            geometry,
            packed,
            weight_sums,
            scales: scales.to_vec(),
            bias: bias.to_vec(),
        }
    }

    /// The shape of the convolution.
    pub fn geometry(&self) -> ConvGeometry {
        self.geometry
    }

    /// The requantization from `input` levels to `output` levels (computed in f64, so the
    /// folded constants are as exact as f32 allows).
    pub fn requantization(&self, input: ActQuant, output: ActQuant) -> Requant {
        let (si, so) = (input.scale as f64, output.scale as f64);
        let zi = input.zero_point as f64;
        let scales = self.scales.iter().map(|&sw| si * sw as f64 / so);
        let offsets = (self.bias.iter().zip(&self.weight_sums))
            .zip(scales.clone())
            .map(|((&b, &ws), s)| (b as f64 / so - zi * ws as f64 * s) + output.zero_point as f64);
        Requant {
            input,
            output,
            offsets: offsets.map(|v| v as f32).collect(),
            scales: scales.map(|v| v as f32).collect(),
        }
    }

    /// The dynamic path: convolves `input` into `out` (NHWC, resized to the output), adding
    /// the residual before the optional ReLU ([`ForwardOptions`]). Returns the output height
    /// and width.
    pub fn forward(
        &self,
        pool: &rayon::ThreadPool,
        input: Nhwc<f32>,
        out: &mut Vec<f32>,
        scratch: &mut Scratch,
        options: ForwardOptions,
    ) -> (usize, usize) {
        let ForwardOptions {
            input_quant,
            residual,
            relu,
            isa,
        } = options;
        let isa = isa.unwrap_or_else(Isa::cached);
        if let Some(q) = input_quant {
            // A larger zero point would reach the padding taps and break exactness.
            assert!(q.zero_point <= ActQuant::MAX, "zero point {}", q.zero_point);
        }
        let m = self.check_shapes(isa, input);
        out.resize(m * self.geometry.out_channels, 0.0);
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "residual size");
        }
        let Nhwc {
            values,
            height,
            width,
        } = input;
        let Scratch { quantized, scales } = scratch;
        quantized.resize(values.len(), 0);
        pool.install(|| {
            let quant = input_quant.unwrap_or_else(|| {
                let (min, max) = values
                    .par_chunks(1 << 14)
                    .map(range_with_zero)
                    .reduce(|| (0.0, 0.0), |a, b| (a.0.min(b.0), a.1.max(b.1)));
                ActQuant::for_range(min, max)
            });
            scales.clear();
            scales.extend(self.scales.iter().map(|&s| quant.scale * s));
            quantized
                .par_chunks_mut(1 << 14)
                .zip(values.par_chunks(1 << 14))
                .for_each(|(q, x)| quantize_slice(quant, x, q));
            let epilogue = Epilogue::Float {
                out: Shared(out.as_mut_ptr()),
                zero_point: quant.zero_point,
                scales,
                residual,
                relu,
            };
            let levels = Nhwc {
                values: &quantized[..],
                height,
                width,
            };
            gemm(self, isa.micro_kernel(), levels, quant.zero_point, epilogue);
        });
        self.geometry.output_dims(height, width)
    }

    /// The static path: convolves quantized `input` (levels of the input quantization
    /// `requant` was made for) into `out` (levels of `requant.output()`), adding the residual
    /// before the optional ReLU ([`ForwardQuantizedOptions`]). No pass over the tensor besides
    /// the GEMM itself. The outputs are slices of the output's size
    /// ([`ConvGeometry::output_dims`]), so the caller can keep buffers at their largest size
    /// instead of refilling them whenever they grow. Returns the output height and width.
    pub fn forward_quantized(
        &self,
        pool: &rayon::ThreadPool,
        input: Nhwc<u8>,
        requant: &Requant,
        out: &mut [u8],
        options: ForwardQuantizedOptions,
    ) -> (usize, usize) {
        let ForwardQuantizedOptions {
            residual,
            relu,
            real_out,
            isa,
        } = options;
        let isa = isa.unwrap_or_else(Isa::cached);
        assert_eq!(requant.scales.len(), self.geometry.out_channels, "requant");
        let m = self.check_shapes(isa, input);
        assert_eq!(out.len(), m * self.geometry.out_channels, "output size");
        if let Some(r) = &residual {
            assert_eq!(r.len(), out.len(), "residual size");
        }
        let real_out = real_out.map(|real| {
            assert_eq!(real.len(), out.len(), "real output size");
            Shared(real.as_mut_ptr())
        });
        let epilogue = Epilogue::Quantized {
            out: Shared(out.as_mut_ptr()),
            real_out,
            requant,
            residual,
            // ReLU on levels: nothing below the output's zero point.
            floor: if relu {
                requant.output.zero_point as f32
            } else {
                0.0
            },
        };
        let zero_point = requant.input.zero_point;
        pool.install(|| gemm(self, isa.micro_kernel(), input, zero_point, epilogue));
        self.geometry.output_dims(input.height, input.width)
    }

    /// Checks the input size and the path; returns the number of output pixels.
    fn check_shapes<T>(&self, isa: Isa, input: Nhwc<T>) -> usize {
        assert!(isa.is_available(), "{} is not available", isa.name());
        let g = self.geometry;
        let Nhwc {
            values,
            height,
            width,
        } = input;
        assert_eq!(values.len(), height * width * g.in_channels, "input size");
        let (oh, ow) = g.output_dims(height, width);
        oh * ow
    }
}
