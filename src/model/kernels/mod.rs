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
//!
//! Where things are, in the order a convolution runs:
//!
//! - `conv.rs`: [`QConv2d`] (weight packing, the two forward passes and their options).
//! - `geometry.rs`: [`ConvGeometry`] (output sizes, packed depth, direct reads or gathering).
//! - `quantization.rs`: [`ActQuant`], [`Requant`], [`Residual`] and the float-to-level
//!   conversions.
//! - `isa.rs`: [`Isa`], which instruction path runs.
//! - `gemm.rs`: the driver that splits a convolution into work items over the pool.
//! - `gather.rs`: locating each tile's patches, gathering those not read in place (im2col).
//! - `micro_kernel.rs`: the micro-kernel contract and packed layout, and the portable kernel;
//!   `x86.rs`, `aarch64.rs` and `arm.rs` hold each architecture's kernels.
//! - `epilogue.rs`: dequantization or requantization of the accumulators.
//! - `pooling.rs`: the max and average pooling layers.
//!
//! Every `unsafe` operation is in its own `unsafe` block with the reason it is sound, also
//! inside `unsafe fn`s (`unsafe_op_in_unsafe_fn` is denied for the whole crate).

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "arm")]
mod arm;
mod conv;
mod epilogue;
mod gather;
mod gemm;
mod geometry;
mod isa;
mod micro_kernel;
mod pooling;
mod quantization;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use conv::{ForwardOptions, ForwardQuantizedOptions, Nhwc, QConv2d, Scratch};
pub use gather::reserve_gather_buffers;
pub use geometry::ConvGeometry;
pub use isa::Isa;
pub use pooling::{global_avg_pool, max_pool_3x3_s2, PoolValue};
pub use quantization::{ActQuant, Requant, Residual};

#[cfg(test)]
mod tests;
