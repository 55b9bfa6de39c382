use std::time::SystemTime;

/// How the bytes of a [`Frame`] are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 8-bit R, G, B; `width * height * 3` bytes.
    Rgb24,
    /// Packed 8-bit B, G, R; `width * height * 3` bytes.
    Bgr24,
    /// 8-bit luma only (V4L2 `GREY`); `width * height` bytes.
    Gray,
    /// Packed 4:2:2 Y0 U Y1 V; `width * height * 2` bytes.
    Yuyv,
    /// Planar Y then interleaved UV at half resolution; `width * height * 3 / 2` bytes.
    Nv12,
    /// One JPEG image per frame (camera MJPEG stream).
    Mjpeg,
    /// A whole image file in any format the `image` crate decodes (JPEG, PNG, ...).
    /// `width` and `height` are 0 until decoded.
    Encoded,
}

/// One captured frame, handed from `capture` to `preprocess`.
#[derive(Debug, Clone)]
pub struct Frame {
    /// How `data` is laid out.
    pub format: PixelFormat,
    /// Width in pixels; 0 for [`PixelFormat::Encoded`] until decoded.
    pub width: u32,
    /// Height in pixels; 0 for [`PixelFormat::Encoded`] until decoded.
    pub height: u32,
    /// The frame's bytes, in `format`.
    pub data: Vec<u8>,
    /// Wall-clock time of capture (event timestamps).
    pub captured_at: SystemTime,
    /// Per-source frame counter, starting at 0; gaps mean dropped frames.
    pub seq: u64,
    /// Where the frame came from (file path, URL, device), for error messages and events.
    pub origin: String,
}

impl Frame {
    /// A whole image file's bytes (JPEG, PNG, ...), captured now; size known after decoding.
    pub fn encoded(data: Vec<u8>, origin: String) -> Self {
        Self {
            format: PixelFormat::Encoded,
            width: 0,
            height: 0,
            data,
            captured_at: SystemTime::now(),
            seq: 0,
            origin,
        }
    }

    /// Whether the bytes are a JPEG as captured (an MJPEG frame or a JPEG file), which can be
    /// passed on byte for byte as a snapshot.
    pub fn is_jpeg(&self) -> bool {
        matches!(self.format, PixelFormat::Mjpeg | PixelFormat::Encoded)
            && self.data.starts_with(&[0xFF, 0xD8])
    }
}
