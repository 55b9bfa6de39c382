use std::fmt;

use super::PixelFormat;

/// A V4L2 device as listed by `edgeclass list-cameras`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// N of `/dev/videoN`; usable as `source = "v4l2:N"`.
    pub index: u32,
    /// The device node, `/dev/videoN`.
    pub path: String,
    /// The name the driver reports, e.g. the webcam's product name.
    pub name: String,
    /// Every mode the device offers, sorted by format, size and rate.
    pub modes: Vec<CameraMode>,
    /// Why the device's modes could not be read (busy, or not a capture node).
    pub error: Option<String>,
}

/// One format/size/rate combination a camera offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraMode {
    /// The format's V4L2 four-character code: MJPG, YUYV, NV12, RGB3, BGR3, GREY.
    pub format: String,
    /// How edgeclass would hand the frames over; `None` if it cannot use this format.
    pub pixel_format: Option<PixelFormat>,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl fmt::Display for CameraMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{} @ {} fps",
            self.format, self.width, self.height, self.fps
        )
    }
}

/// Without the `camera` feature there is nothing to list.
#[cfg(not(feature = "camera"))]
pub fn list_cameras() -> Result<Vec<CameraInfo>, super::CaptureError> {
    Err(super::CaptureError::CameraSupportDisabled)
}
