//! Int8 convolution for the quantized ResNet: u7 activations x s8 weights, i32 accumulation.
//!
//! Activations are quantized per tensor to 7 bits (`0..=127`, with a zero point for signed
//! inputs such as the normalized image). Keeping them at 7 bits means every instruction path
//! (AVX-512 VNNI `vpdpbusd`, AVX2 `vpmaddubsw`, NEON `sdot`/`smlal`, armv7 NEON `vmlal.s8`)
//! accumulates exactly, with no i16 saturation, so all paths give bit-identical integers.
//! Weights are s8 (`-127..=127`) with one scale per output channel.
//!
//! Tensors are NHWC. A convolution is a GEMM of im2col patches with weights packed at load
//! time, multiplied by a micro-kernel chosen at run time ([`Isa`]). The patches are not a
//! tensor: for a pixel whose receptive field lies inside the image, the micro-kernel reads
//! each kernel row of it (adjacent NHWC bytes) straight from the input (implicit GEMM); each
//! work item (a tile of output pixels x a block of output channels) gathers the other patches
//! of its tile (the border, and conv1's 3-channel rows) into a per-thread buffer right before
//! multiplying them. One epilogue, shared by every path (so the results are bit-identical
//! too), finishes each output:
//!
//! - static path ([`QConv2d::forward_quantized`], calibrated models): `u8` levels in, `u8`
//!   levels out, scale, bias, zero points, residual and ReLU folded into one multiply-add
//!   ([`Requant`]); one parallel pass per layer.
//! - dynamic path ([`QConv2d::forward`]): `f32` in and out; the input's range is measured and
//!   quantized per frame (two more parallel passes).
//!
//! Work is split over the rayon pool; buffers are reused from frame to frame.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "arm")]
mod arm;
mod pooling;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use pooling::{global_avg_pool, max_pool_3x3_s2, PoolValue};

use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Output channels per packed weight panel.
const PANEL: usize = 16;
/// The depth (`K`) is padded to this, so every micro-kernel walks whole steps (NEON `sdot`
/// consumes 16 activation bytes per load).
const K_ALIGN: usize = 16;
/// Most segments one activation row is split into (see [`Rows`]): the kernel rows of a 3x3
/// convolution.
const MAX_SEGMENTS: usize = 3;
/// Channels one micro-kernel call can produce (two panels).
const MAX_NR: usize = 2 * PANEL;
/// Most rows one micro-kernel call produces; packed activations are padded to a multiple of it.
const MAX_MR: usize = 8;
/// Patches inside the image copy kernel rows of up to this many bytes as one fixed-size block.
const SHORT_COPY: usize = 32;
/// Most output pixels per work item.
const TILE_ROWS: usize = 64;
/// Work items per thread to aim for, so a thread slowed by other load does not stall the layer.
const ITEMS_PER_THREAD: usize = 4;

/// Accumulators of one micro-kernel call: `[row][channel]`, `MAX_NR` channels per row.
type Acc = [i32; MAX_MR * MAX_NR];

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

    /// `patch_len` rounded up to the packed depth.
    fn padded_patch_len(&self) -> usize {
        self.patch_len().div_ceil(K_ALIGN) * K_ALIGN
    }

    /// Whether the micro-kernels can read patches straight from the input: one kernel row of
    /// taps is `kernel * in_channels` adjacent NHWC bytes, which must be whole `K_ALIGN` steps
    /// (every layer but conv1, whose 21 bytes are gathered), in at most `MAX_SEGMENTS` segments.
    fn reads_input_directly(&self) -> bool {
        (self.kernel * self.in_channels).is_multiple_of(K_ALIGN) && self.kernel <= MAX_SEGMENTS
    }

    /// [`Rows::segments`]: the kernel rows when patches are read from the input, otherwise
    /// one gathered patch.
    fn segments(&self) -> usize {
        if self.reads_input_directly() {
            self.kernel
        } else {
            1
        }
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
fn to_u7(v: f32, floor: f32) -> u8 {
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
fn quantize_slice(quant: ActQuant, input: &[f32], out: &mut [u8]) {
    for (q, &x) in out.iter_mut().zip(input) {
        *q = quant.quantize(x);
    }
}

/// `(min(0, values..), max(0, values..))`, NaN ignored. Eight independent lanes of selects, so
/// it vectorizes (a single `f32::min` chain does not).
fn range_with_zero(values: &[f32]) -> (f32, f32) {
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

/// The instruction paths of the integer GEMM. All give bit-identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust; the reference.
    Scalar,
    /// x86-64 AVX2: `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// x86-64 AVX-512 VNNI: `vpdpbusd`.
    Avx512Vnni,
    /// aarch64 NEON without dot product (Cortex-A72, Raspberry Pi 4): `smull`/`smlal`/`sadalp`.
    Neon,
    /// aarch64 NEON with the dot-product extension (Cortex-A76, Raspberry Pi 5): `sdot`.
    NeonDotprod,
    /// armv7 (32-bit) NEON: `vmull.s8`/`vmlal.s8`/`vpadal.s16`.
    Armv7Neon,
}

impl Isa {
    /// Every path, slowest first.
    const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Armv7Neon,
        Isa::Neon,
        Isa::NeonDotprod,
        Isa::Avx2,
        Isa::Avx512Vnni,
    ];

    /// Environment variable that forces a path (for debugging and benchmarks).
    pub const ENV: &'static str = "EDGECLASS_ISA";

    /// The name used by [`Isa::ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
            Isa::Armv7Neon => "armv7-neon",
        }
    }

    /// Parses a name as printed by [`Isa::name`].
    pub fn from_name(name: &str) -> Option<Isa> {
        Self::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => x86_has(Isa::Avx2),
            Isa::Avx512Vnni => x86_has(Isa::Avx512Vnni),
            Isa::Neon => aarch64_has(Isa::Neon),
            Isa::NeonDotprod => aarch64_has(Isa::NeonDotprod),
            #[cfg(target_arch = "arm")]
            Isa::Armv7Neon => arm::has_neon(),
            #[cfg(not(target_arch = "arm"))]
            Isa::Armv7Neon => false,
        }
    }

    /// The paths this CPU can run, slowest first.
    pub fn available() -> Vec<Isa> {
        Self::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The path [`QConv2d::forward`] uses: `EDGECLASS_ISA` if set to an available path,
    /// otherwise the fastest available one.
    pub fn detect() -> Isa {
        let best = *Self::available().last().unwrap_or(&Isa::Scalar);
        match std::env::var(Self::ENV) {
            Ok(name) => match Self::from_name(&name) {
                Some(isa) if isa.is_available() => isa,
                _ => {
                    log::warn!(
                        "{}={name:?} is not an available path ({}); using {}",
                        Self::ENV,
                        Self::available()
                            .iter()
                            .map(|isa| isa.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        best.name()
                    );
                    best
                }
            },
            Err(_) => best,
        }
    }

    /// [`Isa::detect`], evaluated once per process.
    fn cached() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(Isa::detect)
    }

    fn micro_kernel(self) -> MicroKernel {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86::AVX512_VNNI,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::AVX2,
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => aarch64::NEON_DOTPROD,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => aarch64::NEON,
            #[cfg(target_arch = "arm")]
            Isa::Armv7Neon => arm::ARMV7_NEON,
            // Paths of other architectures never pass `is_available`.
            _ => SCALAR,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn x86_has(isa: Isa) -> bool {
    match isa {
        Isa::Avx2 => is_x86_feature_detected!("avx2"),
        Isa::Avx512Vnni => {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        }
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn x86_has(_: Isa) -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn aarch64_has(isa: Isa) -> bool {
    match isa {
        Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        Isa::NeonDotprod => {
            std::arch::is_aarch64_feature_detected!("neon")
                && std::arch::is_aarch64_feature_detected!("dotprod")
        }
        _ => false,
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn aarch64_has(_: Isa) -> bool {
    false
}

/// Where a micro-kernel call reads its activation rows. The packed depth `kp` of row `r` is
/// `segments` segments of `segment_len` bytes; segment `s` starts at
/// `starts[r * segments + s]`. A segment is one kernel row of taps read straight from the input
/// tensor, or a whole patch gathered into a buffer (pixels at the border, and conv1).
#[derive(Clone, Copy)]
struct Rows {
    starts: *const *const u8,
    segments: usize,
    /// A multiple of `K_ALIGN`.
    segment_len: usize,
    /// Rows the caller keeps (at most the kernel's `rows`, fewer at the end of a tile): a
    /// kernel may skip the others.
    needed: usize,
}

impl Rows {
    /// Where segment `segment` of row `row` starts.
    ///
    /// # Safety
    /// `row` must be one of the rows the table was made for.
    #[inline(always)]
    unsafe fn start(&self, row: usize, segment: usize) -> *const u8 {
        *self.starts.add(row * self.segments + segment)
    }

    /// The packed depth: the length of a weight panel's column.
    #[inline(always)]
    fn depth(&self) -> usize {
        self.segments * self.segment_len
    }
}

/// A micro-kernel computes `rows x (panels * 16)` accumulators of `A * W` over the whole
/// packed depth `kp`.
///
/// `run(a, w, panels, acc)`: `a` locates `rows` activation rows of `kp` bytes each; `w` points
/// at `panels` (at most `max_panels`) consecutive weight panels of `kp * 16` bytes; results go
/// to `acc[row * MAX_NR + channel]`. Safety: the caller guarantees those ranges are readable
/// and that the CPU supports the kernel's instructions.
#[derive(Clone, Copy)]
struct MicroKernel {
    rows: usize,
    max_panels: usize,
    run: unsafe fn(Rows, *const i8, usize, &mut Acc),
    /// [`Epilogue::store`] compiled for the path's instruction set (wider vectors for the
    /// float arithmetic; the same IEEE operations, so the same results).
    store: StoreFn,
}

/// See [`Epilogue::store`].
type StoreFn = unsafe fn(&Epilogue, &QConv2d, usize, usize, Range<usize>, &Acc);

/// [`Epilogue::store`] for the baseline instruction set.
///
/// # Safety
/// See [`Epilogue::store`].
unsafe fn store_baseline(
    epilogue: &Epilogue,
    conv: &QConv2d,
    first_row: usize,
    rows: usize,
    channels: Range<usize>,
    acc: &Acc,
) {
    epilogue.store::<Portable>(conv, first_row, rows, channels, acc)
}

const SCALAR: MicroKernel = MicroKernel {
    rows: 4,
    max_panels: 1,
    run: kernel_scalar,
    store: store_baseline,
};

/// Portable micro-kernel, written as plainly as possible: it is the reference the SIMD paths
/// are tested against.
///
/// # Safety
/// See [`MicroKernel`].
unsafe fn kernel_scalar(a: Rows, w: *const i8, _panels: usize, acc: &mut Acc) {
    const ROWS: usize = SCALAR.rows;
    let w = std::slice::from_raw_parts(w, a.depth() * PANEL);
    let mut sums = [[0i32; PANEL]; ROWS];
    for (segment, w) in w.chunks_exact(a.segment_len * PANEL).enumerate() {
        for (r, row) in sums.iter_mut().enumerate().take(a.needed) {
            let a = std::slice::from_raw_parts(a.start(r, segment), a.segment_len);
            for (a4, w_step) in a.chunks_exact(4).zip(w.chunks_exact(4 * PANEL)) {
                for (sum, w4) in row.iter_mut().zip(w_step.chunks_exact(4)) {
                    *sum += (0..4).map(|j| a4[j] as i32 * w4[j] as i32).sum::<i32>();
                }
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        acc[r * MAX_NR..][..PANEL].copy_from_slice(row);
    }
}

/// Buffers the dynamic path reuses from frame to frame.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The input, quantized.
    quantized: Vec<u8>,
    /// Per output channel: activation scale times weight scale.
    scales: Vec<f32>,
}

/// How a convolution with fixed (calibrated) input and output quantization maps its integer
/// accumulators to output levels: `out = acc * scales[c] + offsets[c]` (plus the residual),
/// clamped and rounded to `0..=127`. Precomputed once per layer by [`QConv2d::requantization`].
#[derive(Debug, Clone)]
pub struct Requant {
    input: ActQuant,
    output: ActQuant,
    /// `input.scale * weight_scale[c] / output.scale`.
    scales: Vec<f32>,
    /// `(bias[c] - input.zero_point * weight_sum[c] * input.scale * weight_scale[c])
    /// / output.scale + output.zero_point`.
    offsets: Vec<f32>,
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
    fn len(&self) -> usize {
        match self {
            Residual::Levels(levels, _) => levels.len(),
            Residual::Float(values) => values.len(),
        }
    }

    /// `(factor, offset)` that put a shortcut value in `output` level units: `v * factor +
    /// offset` for levels, `v * factor` for real values (offset 0). Every path uses these same
    /// constants, so they round alike.
    fn output_units(self, output: ActQuant) -> (f32, f32) {
        match self {
            Residual::Levels(_, q) => {
                let factor = q.scale / output.scale;
                (factor, -(q.zero_point as f32) * factor)
            }
            Residual::Float(_) => (1.0 / output.scale, 0.0),
        }
    }
}

/// One int8 convolution (BatchNorm already folded into weights and bias).
#[derive(Debug, Clone)]
pub struct QConv2d {
    geometry: ConvGeometry,
    /// `[out / 16][k / 4][out % 16][k % 4]`, `k` running over `[kh][kw][in]` (the NHWC im2col
    /// order) padded with zero weights to `padded_patch_len`, output channels padded to 16.
    packed: Vec<i8>,
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

    /// Convolves `input` (NHWC, `height x width x in_channels`) into `out` (NHWC), adding
    /// `residual` (same shape as the output) before the optional ReLU. Returns the output
    /// height and width. `quant` fixes the input's quantization (its zero point must be at most
    /// [`ActQuant::MAX`], as [`ActQuant::for_range`] makes it); `None` measures it.
    /// Runs on the path of [`Isa::detect`].
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
        self.forward_with_isa(
            Isa::cached(),
            pool,
            input,
            height,
            width,
            quant,
            residual,
            relu,
            out,
            scratch,
        )
    }

    /// [`QConv2d::forward`] on a chosen path. Panics if `isa` is not available on this CPU.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with_isa(
        &self,
        isa: Isa,
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
        if let Some(q) = quant {
            // A larger zero point would reach the padding taps and break exactness.
            assert!(q.zero_point <= ActQuant::MAX, "zero point {}", q.zero_point);
        }
        let m = self.check_shapes(isa, input.len(), height, width);
        out.resize(m * self.geometry.out_channels, 0.0);
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "residual size");
        }
        let Scratch { quantized, scales } = scratch;
        quantized.resize(input.len(), 0);
        pool.install(|| {
            let quant = quant.unwrap_or_else(|| {
                let (min, max) = input
                    .par_chunks(1 << 14)
                    .map(range_with_zero)
                    .reduce(|| (0.0, 0.0), |a, b| (a.0.min(b.0), a.1.max(b.1)));
                ActQuant::for_range(min, max)
            });
            scales.clear();
            scales.extend(self.scales.iter().map(|&s| quant.scale * s));
            quantized
                .par_chunks_mut(1 << 14)
                .zip(input.par_chunks(1 << 14))
                .for_each(|(q, x)| quantize_slice(quant, x, q));
            let epilogue = Epilogue::Float {
                out: Shared(out.as_mut_ptr()),
                zero_point: quant.zero_point,
                scales,
                residual,
                relu,
            };
            self.gemm(
                isa.micro_kernel(),
                quantized,
                height,
                width,
                quant,
                epilogue,
            );
        });
        self.geometry.output_dims(height, width)
    }

    /// The static path: convolves quantized `input` (NHWC levels of the input quantization
    /// `requant` was made for) into `out` (levels of `requant.output()`) and, if given,
    /// `real_out` (the same outputs as f32, before rounding to levels), adding `residual`
    /// before the optional ReLU. No pass over the tensor besides the GEMM itself. The outputs
    /// are slices of the output's size ([`ConvGeometry::output_dims`]), so the caller can keep
    /// buffers at their largest size instead of refilling them whenever they grow.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_quantized(
        &self,
        pool: &rayon::ThreadPool,
        input: &[u8],
        height: usize,
        width: usize,
        requant: &Requant,
        residual: Option<Residual>,
        relu: bool,
        out: &mut [u8],
        real_out: Option<&mut [f32]>,
    ) -> (usize, usize) {
        self.forward_quantized_with_isa(
            Isa::cached(),
            pool,
            input,
            height,
            width,
            requant,
            residual,
            relu,
            out,
            real_out,
        )
    }

    /// [`QConv2d::forward_quantized`] on a chosen path. Panics if `isa` is not available.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_quantized_with_isa(
        &self,
        isa: Isa,
        pool: &rayon::ThreadPool,
        input: &[u8],
        height: usize,
        width: usize,
        requant: &Requant,
        residual: Option<Residual>,
        relu: bool,
        out: &mut [u8],
        real_out: Option<&mut [f32]>,
    ) -> (usize, usize) {
        assert_eq!(requant.scales.len(), self.geometry.out_channels, "requant");
        let m = self.check_shapes(isa, input.len(), height, width);
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
        pool.install(|| {
            self.gemm(
                isa.micro_kernel(),
                input,
                height,
                width,
                requant.input,
                epilogue,
            )
        });
        self.geometry.output_dims(height, width)
    }

    /// Checks the input size and the path; returns the number of output pixels.
    fn check_shapes(&self, isa: Isa, input_len: usize, height: usize, width: usize) -> usize {
        assert!(isa.is_available(), "{} is not available", isa.name());
        let g = self.geometry;
        assert_eq!(input_len, height * width * g.in_channels, "input size");
        let (oh, ow) = g.output_dims(height, width);
        oh * ow
    }

    /// `out[m][n] = epilogue(patches[m] . weights[n])`, split over output-pixel tiles and, when
    /// there are too few tiles to keep every thread busy, over output channels. The
    /// micro-kernels read the patches of pixels away from the border straight from the input
    /// (implicit GEMM); each work item gathers the others (im2col) of its own tile into a
    /// per-thread buffer, so the gather runs in parallel, lands in cache right before the
    /// micro-kernel reads it, and needs no tensor-sized buffer or extra pass.
    fn gemm(
        &self,
        kernel: MicroKernel,
        input: &[u8],
        height: usize,
        width: usize,
        quant: ActQuant,
        epilogue: Epilogue,
    ) {
        let g = self.geometry;
        let n = g.out_channels;
        let kp = g.padded_patch_len();
        let (oh, ow) = g.output_dims(height, width);
        let m = oh * ow;
        let panels = n.div_ceil(PANEL);
        let threads = rayon::current_num_threads();
        // Where the weights outweigh the patches (layer3 and layer4: few pixels, many
        // channels), threads split the output channels, so each core's cache holds only its
        // share of the weights (2 threads: layer4 0.34 -> 0.27 ms); elsewhere they split the
        // pixels.
        let split_channels = threads > 1 && n > m;
        let mut tiles = m.div_ceil(TILE_ROWS);
        if !split_channels {
            tiles = tiles.next_multiple_of(threads);
        }
        // Equal tiles, where the rounding to whole micro-kernel calls (MAX_MR, a multiple of
        // every kernel's rows) allows.
        let tile_rows = m.div_ceil(tiles.max(1)).next_multiple_of(MAX_MR);
        let m_tiles = m.div_ceil(tile_rows);
        let wanted = ITEMS_PER_THREAD * threads;
        let panel_groups = panels.div_ceil(kernel.max_panels);
        let mut n_blocks = wanted.div_ceil(m_tiles);
        if split_channels {
            n_blocks = n_blocks.max(threads);
        }
        let n_blocks = n_blocks.clamp(1, panel_groups);
        let panels_per_block = panel_groups.div_ceil(n_blocks) * kernel.max_panels;
        let n_blocks = panels.div_ceil(panels_per_block);
        let segments = g.segments();
        let segment_len = kp / segments;
        let call = GEMM_CALLS.fetch_add(1, Ordering::Relaxed);
        // Items that share weights (splitting channels) or patches (splitting pixels) are
        // adjacent, so a thread tends to take them in a row: its weights stay in cache, or
        // it finds its tile already located.
        (0..m_tiles * n_blocks).into_par_iter().for_each(|item| {
            let (tile, block) = match split_channels {
                true => (item % m_tiles, item / m_tiles),
                false => (item / n_blocks, item % n_blocks),
            };
            let rows = tile * tile_rows..((tile + 1) * tile_rows).min(m);
            let first_panel = block * panels_per_block;
            let last_panel = (first_panel + panels_per_block).min(panels);
            TILE.with_borrow_mut(|gathered| {
                if gathered.key != (call, tile) {
                    gathered.key = (call, tile);
                    gathered.locate(input, height, width, g, quant.zero_point, rows.clone());
                }
                let mut acc: Acc = [0; MAX_MR * MAX_NR];
                for p in (first_panel..last_panel).step_by(kernel.max_panels) {
                    let np = kernel.max_panels.min(last_panel - p);
                    let channels = p * PANEL..((p + np) * PANEL).min(n);
                    let weights = &self.packed[p * PANEL * kp..][..np * PANEL * kp];
                    for r0 in rows.clone().step_by(kernel.rows) {
                        let count = (r0 + kernel.rows).min(rows.end) - r0;
                        let a = Rows {
                            starts: gathered.starts[(r0 - rows.start) * segments..].as_ptr(),
                            segments,
                            segment_len,
                            needed: count,
                        };
                        // SAFETY: the tile's table locates `kernel.rows` readable rows from
                        // `r0` (it is padded to MAX_MR rows, a multiple of every kernel's
                        // rows), `weights` holds `np` panels, and `isa.is_available()` was
                        // checked.
                        unsafe { (kernel.run)(a, weights.as_ptr(), np, &mut acc) };
                        // SAFETY: work items own disjoint (row x channel) blocks of the
                        // output, which outlives the parallel loop.
                        unsafe {
                            (kernel.store)(&epilogue, self, r0, count, channels.clone(), &acc)
                        };
                    }
                }
            });
        });
    }
}

impl ConvGeometry {
    /// Output height and width for an input of `height x width`.
    pub fn output_dims(&self, height: usize, width: usize) -> (usize, usize) {
        (self.output_size(height), self.output_size(width))
    }
}

/// Numbers each GEMM call, so a thread can tell whether its gathered tile is current.
static GEMM_CALLS: AtomicU64 = AtomicU64::new(0);

/// Where the micro-kernels read the patches of one tile, located (and where needed gathered)
/// by the thread that multiplies them.
struct GatheredTile {
    /// `(GEMM call, tile)` the rows belong to.
    key: (u64, usize),
    /// The gathered patches, at their row's place in the tile.
    patches: Vec<u8>,
    /// [`Rows::starts`] of the tile's rows, padded to a multiple of MAX_MR rows.
    starts: Vec<*const u8>,
}

impl GatheredTile {
    /// Fills `starts` for output pixels `rows` of a convolution of `input`
    /// (`height x width`): pointers into `input` where the patch lies inside the image and the
    /// geometry allows it, otherwise into the patch gathered here.
    fn locate(
        &mut self,
        input: &[u8],
        height: usize,
        width: usize,
        g: ConvGeometry,
        zero_point: u8,
        rows: Range<usize>,
    ) {
        let (direct, kp, segments) = (g.reads_input_directly(), g.padded_patch_len(), g.segments());
        let segment_len = kp / segments;
        let padded_rows = rows.len().next_multiple_of(MAX_MR);
        if self.patches.len() < padded_rows * kp {
            self.patches.resize(padded_rows * kp, 0);
        }
        // Within the capacity reserved by `reserve_gather_buffers`: no allocation.
        self.starts.resize(padded_rows * segments, std::ptr::null());
        let (starts, padding) = self.starts.split_at_mut(rows.len() * segments);
        // Every pointer into the buffer comes from this one, so they stay valid together.
        let patches = self.patches.as_mut_ptr();
        let ow = g.output_size(width);
        let row_bytes = width * g.in_channels;
        let (mut y, mut x) = (rows.start / ow, rows.start % ow);
        for (i, starts) in starts.chunks_exact_mut(segments).enumerate() {
            let (y0, x0) = (y * g.stride, x * g.stride);
            let inside = y0 >= g.padding
                && x0 >= g.padding
                && y0 + g.kernel <= height + g.padding
                && x0 + g.kernel <= width + g.padding;
            let first = inside.then(|| ((y0 - g.padding) * width + x0 - g.padding) * g.in_channels);
            if let (true, Some(first)) = (direct, first) {
                for (s, start) in starts.iter_mut().enumerate() {
                    *start = input[first + s * row_bytes..].as_ptr();
                }
            } else {
                // SAFETY: row `i` of the buffer (resized above) is borrowed by no one else.
                let row = unsafe { std::slice::from_raw_parts_mut(patches.add(i * kp), kp) };
                match first {
                    Some(first) => gather_inside(input, first, row_bytes, g, row),
                    None => im2col_row(input, height, width, g, y, x, zero_point, row),
                }
                for (s, start) in starts.iter_mut().enumerate() {
                    // SAFETY: inside row `i`.
                    *start = unsafe { patches.add(i * kp + s * segment_len) };
                }
            }
            x += 1;
            if x == ow {
                (y, x) = (y + 1, 0);
            }
        }
        // Rows past the end of the output are computed and dropped: any readable row will do.
        for (s, start) in padding.iter_mut().enumerate() {
            *start = starts[s % segments];
        }
    }
}

/// Sizes every `pool` thread's gather buffer for the largest tile of `convs`, so that no
/// frame allocates one later, whichever thread ends up gathering which tile.
pub fn reserve_gather_buffers<'a>(
    pool: &rayon::ThreadPool,
    convs: impl IntoIterator<Item = &'a QConv2d>,
) {
    // A tile has at most TILE_ROWS rows (see `QConv2d::gemm`), a multiple of MAX_MR.
    let bytes = convs
        .into_iter()
        .map(|conv| TILE_ROWS.next_multiple_of(MAX_MR) * conv.geometry.padded_patch_len())
        .max()
        .unwrap_or(0);
    pool.broadcast(|_| {
        TILE.with_borrow_mut(|gathered| {
            if gathered.patches.len() < bytes {
                gathered.patches.resize(bytes, 0);
            }
            let starts = TILE_ROWS.next_multiple_of(MAX_MR) * MAX_SEGMENTS;
            if gathered.starts.capacity() < starts {
                gathered.starts.reserve(starts - gathered.starts.len());
            }
        })
    });
}

thread_local! {
    // Sized by `reserve_gather_buffers` (or grown on first use), then reused.
    static TILE: RefCell<GatheredTile> = const {
        RefCell::new(GatheredTile {
            key: (u64::MAX, 0),
            patches: Vec::new(),
            starts: Vec::new(),
        })
    };
}

/// An output buffer shared by work items that write disjoint blocks of it.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: see the disjointness argument in `QConv2d::gemm`.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// `len` elements from `offset`.
    ///
    /// # Safety
    /// The range must be inside the buffer and not accessed by anyone else meanwhile.
    unsafe fn slice<'b>(self, offset: usize, len: usize) -> &'b mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(offset), len)
    }
}

/// What the GEMM does with its accumulators.
enum Epilogue<'a> {
    /// Dynamic path: dequantize to f32 (see [`epilogue`]).
    Float {
        out: Shared<f32>,
        zero_point: u8,
        /// Per channel: input scale times weight scale.
        scales: &'a [f32],
        residual: Option<&'a [f32]>,
        relu: bool,
    },
    /// Static path: requantize to the output's levels (see [`requantize_fixed`]).
    Quantized {
        out: Shared<u8>,
        real_out: Option<Shared<f32>>,
        requant: &'a Requant,
        residual: Option<Residual<'a>>,
        floor: f32,
    },
}

// SAFETY: the raw output pointers are only written in disjoint blocks (see `QConv2d::gemm`).
unsafe impl Sync for Epilogue<'_> {}

impl Epilogue<'_> {
    /// Finishes `rows` output pixels from `first_row` on for `channels`, from the
    /// accumulators of one micro-kernel call.
    ///
    /// # Safety
    /// Those outputs must be inside the output and written by no one else meanwhile.
    #[inline(always)]
    unsafe fn store<B: Block16>(
        &self,
        conv: &QConv2d,
        first_row: usize,
        rows: usize,
        channels: Range<usize>,
        acc: &Acc,
    ) {
        let (n, len, c) = (conv.geometry.out_channels, channels.len(), channels.clone());
        let pixels = (first_row..first_row + rows).zip(acc.chunks_exact(MAX_NR));
        match self {
            Epilogue::Float {
                out,
                zero_point,
                scales,
                residual,
                relu,
            } => {
                let (sums, scales, bias) = (
                    &conv.weight_sums[c.clone()],
                    &scales[c.clone()],
                    &conv.bias[c],
                );
                for (row, acc) in pixels {
                    let at = row * n + channels.start;
                    let residual = residual.map(|res| &res[at..at + len]);
                    let out = out.slice(at, len);
                    epilogue(
                        &acc[..len],
                        *zero_point,
                        sums,
                        scales,
                        bias,
                        residual,
                        *relu,
                        out,
                    );
                }
            }
            Epilogue::Quantized {
                out,
                real_out,
                requant,
                residual,
                floor,
            } => {
                let (scales, offsets) = (&requant.scales[c.clone()], &requant.offsets[c]);
                let at = first_row * n + channels.start;
                let finish = Finish {
                    residual: *residual,
                    output: requant.output,
                    floor: *floor,
                    out: *out,
                    real_out: *real_out,
                };
                // Whole columns of 16 channels as vectors; the rest (fc's last 8 of 1000)
                // one by one.
                let whole = len - len % COLUMN;
                for c in (0..whole).step_by(COLUMN) {
                    let column = Column {
                        acc: &acc[c..],
                        rows,
                        scales: &scales[c..c + COLUMN],
                        offsets: &offsets[c..c + COLUMN],
                        at: at + c,
                        stride: n,
                    };
                    B::requantize(column, &finish);
                }
                for (r, acc) in acc.chunks_exact(MAX_NR).take(rows).enumerate() {
                    for c in whole..len {
                        let at = at + r * n + c;
                        requantize_fixed::<1>(&acc[c..], &scales[c..], &offsets[c..], &finish, at);
                    }
                }
            }
        }
    }
}

/// `(acc - zero_point * weight_sum) * scale + bias (+ residual)`, then ReLU. Every path runs
/// this same code in the same order, so equal integers give bit-identical floats.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn epilogue(
    acc: &[i32],
    zero_point: u8,
    weight_sums: &[i32],
    scales: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    let zp = zero_point as i32;
    // Zipped iterators rather than indexing: no bounds checks, so the loop vectorizes.
    let scaled = acc
        .iter()
        .zip(weight_sums)
        .zip(scales.iter().zip(bias))
        .map(|((&a, &ws), (&s, &b))| (a - zp * ws) as f32 * s + b);
    let relu = |v: f32| if relu { v.max(0.0) } else { v };
    match residual {
        Some(res) => {
            for ((o, v), &r) in out.iter_mut().zip(scaled).zip(res) {
                *o = relu(v + r);
            }
        }
        None => {
            for (o, v) in out.iter_mut().zip(scaled) {
                *o = relu(v);
            }
        }
    }
}

/// Channels per [`Column`].
const COLUMN: usize = 16;

/// The static path's per-layer constants of [`requantize_fixed`], and the tensors it writes.
struct Finish<'a> {
    residual: Option<Residual<'a>>,
    output: ActQuant,
    /// Nothing below this (the ReLU, in levels).
    floor: f32,
    out: Shared<u8>,
    real_out: Option<Shared<f32>>,
}

/// 16 output channels of the pixels of one micro-kernel call.
struct Column<'a> {
    /// Row `r`'s accumulators start at `acc[r * MAX_NR]`.
    acc: &'a [i32],
    rows: usize,
    scales: &'a [f32],
    offsets: &'a [f32],
    /// Where row 0's first channel is in the output and shortcut tensors; rows are `stride`
    /// apart.
    at: usize,
    stride: usize,
}

/// Finishes a [`Column`]: [`requantize_fixed`] on each row, or the same IEEE operations in
/// the same order written with one instruction set's intrinsics (tested bit-identical).
trait Block16 {
    /// # Safety
    /// The CPU must support the implementation's instructions; the column's outputs must be
    /// inside the tensors and written by no one else meanwhile.
    unsafe fn requantize(column: Column, finish: &Finish);
}

/// [`Block16`] in portable Rust.
struct Portable;

impl Block16 for Portable {
    #[inline(always)]
    unsafe fn requantize(c: Column, finish: &Finish) {
        for (r, acc) in c.acc.chunks(MAX_NR).take(c.rows).enumerate() {
            requantize_fixed::<COLUMN>(acc, c.scales, c.offsets, finish, c.at + r * c.stride);
        }
    }
}

/// `acc * scale + offset (+ residual)` in units of `output` levels, nothing below `floor`
/// (the ReLU), rounded to levels in `out` and, if given, converted to real values in
/// `real_out`, for the `N` channels from `at` of the tensors. Shared by every path like
/// [`epilogue`].
///
/// # Safety
/// Those outputs must be inside the tensors and written by no one else meanwhile.
#[inline(always)]
unsafe fn requantize_fixed<const N: usize>(
    acc: &[i32],
    scales: &[f32],
    offsets: &[f32],
    finish: &Finish,
    at: usize,
) {
    let Finish {
        residual,
        output,
        floor,
        out,
        real_out,
    } = *finish;
    let args = (&acc[..N], &scales[..N], &offsets[..N], output, floor);
    let (out, real_out) = (out.slice(at, N), real_out.map(|r| r.slice(at, N)));
    // One loop per kind of shortcut, over zipped fixed-length slices: that vectorizes.
    let (factor, offset) = residual.map_or((0.0, 0.0), |r| r.output_units(output));
    match residual {
        None => finish_values(args, std::iter::repeat(0.0), out, real_out),
        Some(Residual::Levels(levels, _)) => {
            let shortcut = levels[at..at + N]
                .iter()
                .map(|&r| r as f32 * factor + offset);
            finish_values(args, shortcut, out, real_out)
        }
        Some(Residual::Float(values)) => {
            let shortcut = values[at..at + N].iter().map(|&r| r * factor);
            finish_values(args, shortcut, out, real_out)
        }
    }
}

/// The arithmetic of [`requantize_fixed`], with the shortcut in output-level units.
#[inline(always)]
fn finish_values(
    (acc, scales, offsets, output, floor): (&[i32], &[f32], &[f32], ActQuant, f32),
    shortcut: impl Iterator<Item = f32>,
    out: &mut [u8],
    real_out: Option<&mut [f32]>,
) {
    let values = acc
        .iter()
        .zip(scales.iter().zip(offsets))
        .zip(shortcut)
        .map(|((&a, (&s, &o)), r)| a as f32 * s + o + r);
    match real_out {
        None => {
            for (q, v) in out.iter_mut().zip(values) {
                *q = to_u7(v, floor);
            }
        }
        Some(real) => {
            let zp = output.zero_point as f32;
            for ((q, r), v) in out.iter_mut().zip(real.iter_mut()).zip(values) {
                *q = to_u7(v, floor);
                *r = ((if v > floor { v } else { floor }) - zp) * output.scale;
            }
        }
    }
}

/// Gathers a receptive field that lies inside the image, starting at byte `first` of `input`
/// (rows of `row_bytes`), as one `[kh][kw][in]` row of the packed depth: one copy per kernel
/// row, without [`im2col_row`]'s border cases.
fn gather_inside(input: &[u8], first: usize, row_bytes: usize, g: ConvGeometry, row: &mut [u8]) {
    let (k, span) = (g.kernel, g.kernel * g.in_channels);
    let last = first + (k - 1) * row_bytes;
    if span <= SHORT_COPY
        && (k - 1) * span + SHORT_COPY <= row.len()
        && last + SHORT_COPY <= input.len()
    {
        // Few input channels (conv1: 21 bytes per kernel row): one fixed-size copy instead of
        // a memcpy call. It runs over into the next kernel row (written next) or the depth
        // padding (which meets zero weights).
        for ky in 0..k {
            let src = &input[first + ky * row_bytes..][..SHORT_COPY];
            row[ky * span..][..SHORT_COPY].copy_from_slice(src);
        }
    } else {
        for ky in 0..k {
            row[ky * span..][..span].copy_from_slice(&input[first + ky * row_bytes..][..span]);
        }
    }
    // The depth padding `row[k * span..]` meets zero weights: whatever it holds adds nothing.
}

/// Gathers the receptive field of output pixel `(y, x)` as one `[kh][kw][in]` row (of the
/// packed depth; the rest is left as is); taps that fall in the image padding read
/// `zero_point` (the value 0). For one kernel row the taps are adjacent pixels, so each is one
/// copy. Used at the border; [`gather_inside`] is the fast path elsewhere.
#[allow(clippy::too_many_arguments)]
fn im2col_row(
    input: &[u8],
    height: usize,
    width: usize,
    g: ConvGeometry,
    y: usize,
    x: usize,
    zero_point: u8,
    row: &mut [u8],
) {
    let (cin, k) = (g.in_channels, g.kernel);
    let span = k * cin;
    let x0 = (x * g.stride) as isize - g.padding as isize;
    // Taps `first..last` of each kernel row are inside the image horizontally.
    let first = (-x0).clamp(0, k as isize) as usize;
    let last = (width as isize - x0).clamp(0, k as isize) as usize;
    for ky in 0..k {
        let iy = (y * g.stride + ky) as isize - g.padding as isize;
        if iy < 0 || iy >= height as isize || first >= last {
            row[ky * span..][..span].fill(zero_point);
            continue;
        }
        let src = (iy as usize * width + (x0 + first as isize) as usize) * cin;
        let dst = &mut row[ky * span..][..span];
        dst[..first * cin].fill(zero_point);
        dst[first * cin..last * cin].copy_from_slice(&input[src..][..(last - first) * cin]);
        dst[last * cin..].fill(zero_point);
    }
    // The depth padding `row[k * span..]` meets zero weights: whatever it holds adds nothing.
}

#[cfg(test)]
mod tests;
