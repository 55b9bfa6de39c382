//! Quantization parameters: how activations map to 7-bit levels ([`ActQuant`]), the static
//! path's folded per-layer constants ([`Requant`]) and the shortcut it adds ([`Residual`]),
//! and the float-to-level conversions every path shares.

/// How an activation tensor is mapped to 7-bit integers: `x ~ scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    /// Real value of one level.
    pub scale: f32,
    /// The level of the real value 0.
    pub zero_point: u8,
}

impl ActQuant {
    /// The highest level.
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
        let (min, max) = range_with_zero(values);
        Self::for_range(min, max)
    }

    /// `x / scale + zero_point`, clamped to `0..=127` (NaN to 0) and rounded half up.
    #[inline]
    pub fn quantize(&self, x: f32) -> u8 {
        to_u7(x * (1.0 / self.scale) + self.zero_point as f32, 0.0)
    }

    /// The real value of level `q`.
    pub fn dequantize(&self, q: u8) -> f32 {
        (q as f32 - self.zero_point as f32) * self.scale
    }
}

/// `v` clamped to `floor..=127` (NaN to `floor`) and rounded half up. Written with selects and
/// an unchecked truncation rather than `f32::round`/`clamp` so that it vectorizes on every
/// target: it runs over every activation of every layer.
#[inline(always)]
pub(super) fn to_u7(v: f32, floor: f32) -> u8 {
    let v = if v > floor { v } else { floor };
    let v = if v < ActQuant::MAX as f32 {
        v
    } else {
        ActQuant::MAX as f32
    };
    // SAFETY: the selects above map NaN and infinities into `floor..=127` (`floor` is 0 or a
    // zero point), so `v + 0.5` is finite and fits an i32 (a saturating `as` cast would not
    // vectorize).
    unsafe { (v + 0.5).to_int_unchecked::<i32>() as u8 }
}

/// `out[i] = quant.quantize(input[i])`.
pub(super) fn quantize_slice(quant: ActQuant, input: &[f32], out: &mut [u8]) {
    for (q, &x) in out.iter_mut().zip(input) {
        *q = quant.quantize(x);
    }
}

/// `(min(0, values..), max(0, values..))`, NaN ignored. Eight independent lanes of selects, so
/// it vectorizes (a single `f32::min` chain does not).
pub(super) fn range_with_zero(values: &[f32]) -> (f32, f32) {
    const LANES: usize = 8;
    let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            lo[i] = if chunk[i] < lo[i] { chunk[i] } else { lo[i] };
            hi[i] = if chunk[i] > hi[i] { chunk[i] } else { hi[i] };
        }
    }
    let lo = lo.iter().chain(rest).fold(0f32, |l, &v| l.min(v));
    let hi = hi.iter().chain(rest).fold(0f32, |h, &v| h.max(v));
    (lo, hi)
}

/// How a convolution with fixed (calibrated) input and output quantization maps its integer
/// accumulators to output levels: `out = acc * scales[c] + offsets[c]` (plus the residual),
/// clamped and rounded to `0..=127`. Precomputed once per layer by
/// [`QConv2d::requantization`](super::QConv2d::requantization).
#[derive(Debug, Clone)]
pub struct Requant {
    pub(super) input: ActQuant,
    pub(super) output: ActQuant,
    /// `input.scale * weight_scale[c] / output.scale`.
    pub(super) scales: Vec<f32>,
    /// `(bias[c] - input.zero_point * weight_sum[c] * input.scale * weight_scale[c])
    /// / output.scale + output.zero_point`.
    pub(super) offsets: Vec<f32>,
}

impl Requant {
    /// The quantization of the convolution's output levels.
    pub fn output(&self) -> ActQuant {
        self.output
    }
}

/// The shortcut a static-path convolution adds before its ReLU.
#[derive(Debug, Clone, Copy)]
pub enum Residual<'a> {
    /// Levels of a quantized tensor.
    Levels(&'a [u8], ActQuant),
    /// Real values: the skip connections carry f32 on the static path, since requantizing
    /// the sum of every block compounds rounding errors block after block (reference
    /// network, calibrated: logits cosine vs f32 0.99907 with f32 shortcuts, 0.99883 without).
    Float(&'a [f32]),
}

impl Residual<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Residual::Levels(levels, _) => levels.len(),
            Residual::Float(values) => values.len(),
        }
    }

    /// `(factor, offset)` that put a shortcut value in `output` level units: `v * factor +
    /// offset` for levels, `v * factor` for real values (offset 0). Every path uses these same
    /// constants, so they round alike.
    pub(super) fn output_units(self, output: ActQuant) -> (f32, f32) {
        match self {
            Residual::Levels(_, q) => {
                let factor = q.scale / output.scale;
                (factor, -(q.zero_point as f32) * factor)
            }
            Residual::Float(_) => (1.0 / output.scale, 0.0),
        }
    }
}
