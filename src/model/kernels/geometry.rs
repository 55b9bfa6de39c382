//! Convolution geometry: output sizes, the im2col depth and how the micro-kernels read it.

use super::micro_kernel::{K_ALIGN, MAX_SEGMENTS};

/// Shape of a 2-D convolution with square kernels (all ResNet-18 convolutions are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Channels of the input tensor.
    pub in_channels: usize,
    /// Channels of the output tensor.
    pub out_channels: usize,
    /// Height and width of the kernel.
    pub kernel: usize,
    /// Step between output pixels, in input pixels.
    pub stride: usize,
    /// Zero pixels around each side of the input.
    pub padding: usize,
}

impl ConvGeometry {
    /// Output height/width for an input of `size` pixels.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output height and width for an input of `height x width`.
    pub fn output_dims(&self, height: usize, width: usize) -> (usize, usize) {
        (self.output_size(height), self.output_size(width))
    }

    /// Length of one im2col row: `kernel * kernel * in_channels`.
    pub fn patch_len(&self) -> usize {
        self.kernel * self.kernel * self.in_channels
    }

    /// `patch_len` rounded up to the packed depth.
    pub(super) fn padded_patch_len(&self) -> usize {
        self.patch_len().div_ceil(K_ALIGN) * K_ALIGN
    }

    /// Whether the micro-kernels can read patches straight from the input: one kernel row of
    /// taps is `kernel * in_channels` adjacent NHWC bytes, which must be whole `K_ALIGN` steps
    /// (every layer but conv1, whose 21 bytes are gathered), in at most `MAX_SEGMENTS` segments.
    pub(super) fn reads_input_directly(&self) -> bool {
        (self.kernel * self.in_channels).is_multiple_of(K_ALIGN) && self.kernel <= MAX_SEGMENTS
    }

    /// [`Rows::segments`](super::micro_kernel::Rows::segments): the kernel rows when patches
    /// are read from the input, otherwise one gathered patch.
    pub(super) fn segments(&self) -> usize {
        if self.reads_input_directly() {
            self.kernel
        } else {
            1
        }
    }
}
