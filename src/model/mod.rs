//! ResNet-18 (torchvision layout) in candle: f32, and int8/4-bit quantized kernels.

pub mod fetch;
pub mod kernels;
