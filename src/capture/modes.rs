use std::fmt;

use super::{CameraConfig, PixelFormat, PixelFormatPreference};

/// A V4L2 device as listed by `edgeclass list-cameras`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// N of `/dev/videoN`; usable as `source = "v4l2:N"`.
    pub index: u32,
    pub path: String,
    pub name: String,
    /// Every mode the device offers, sorted by format, size and rate.
    pub modes: Vec<CameraMode>,
    /// Why the device's modes could not be read (busy, or not a capture node).
    pub error: Option<String>,
}

/// One format/size/rate combination a camera offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraMode {
    /// The driver's format name: MJPEG, YUYV, NV12, RAWRGB, RAWBGR, GRAY.
    pub format: String,
    /// How edgeclass would hand the frames over; `None` if it cannot use this format.
    pub pixel_format: Option<PixelFormat>,
    pub width: u32,
    pub height: u32,
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

/// Resolution used when the config names none: plenty for a 224x224 model input, cheap to decode.
const DEFAULT_SIZE: (u32, u32) = (640, 480);
/// Without an `fps` key, the lowest rate at or above this is used: frames stay fresh (at most
/// 200 ms old) while the camera, USB bus and stream draining cost as little as possible.
const MIN_DEFAULT_FPS: u32 = 5;

/// What a camera's config asks for, to pick one of the modes the device offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ModeRequest {
    size: (u32, u32),
    fps: Option<u32>,
    preference: PixelFormatPreference,
}

impl ModeRequest {
    pub(super) fn from_config(config: &CameraConfig) -> Self {
        let size = match (config.width, config.height) {
            (Some(width), Some(height)) => (width, height),
            _ => DEFAULT_SIZE,
        };
        ModeRequest {
            size,
            fps: config.fps,
            preference: config.pixel_format,
        }
    }

    /// Index into `modes` of the best match: closest size first, then format preference, then
    /// frame rate. `None` if no mode has an acceptable format.
    pub(super) fn choose(&self, modes: &[CameraMode]) -> Option<usize> {
        modes
            .iter()
            .enumerate()
            .filter_map(|(index, mode)| {
                let format_rank = self.format_rank(mode.pixel_format?)?;
                let size_distance =
                    mode.width.abs_diff(self.size.0) + mode.height.abs_diff(self.size.1);
                let fps_rank = match self.fps {
                    Some(fps) => (false, mode.fps.abs_diff(fps)),
                    None if mode.fps >= MIN_DEFAULT_FPS => (false, mode.fps),
                    None => (true, u32::MAX - mode.fps),
                };
                Some(((size_distance, format_rank, fps_rank), index))
            })
            .min()
            .map(|(_, index)| index)
    }

    fn format_rank(&self, format: PixelFormat) -> Option<u8> {
        match (self.preference, format) {
            (PixelFormatPreference::Mjpeg, PixelFormat::Mjpeg)
            | (PixelFormatPreference::Yuyv, PixelFormat::Yuyv) => Some(0),
            (PixelFormatPreference::Auto, PixelFormat::Mjpeg) => Some(0),
            (PixelFormatPreference::Auto, PixelFormat::Yuyv) => Some(1),
            (PixelFormatPreference::Auto, PixelFormat::Nv12) => Some(2),
            (PixelFormatPreference::Auto, PixelFormat::Rgb24) => Some(3),
            _ => None,
        }
    }

    /// For errors: "MJPEG", "YUYV" or "usable".
    pub(super) fn describe(&self) -> &'static str {
        match self.preference {
            PixelFormatPreference::Auto => "usable (MJPEG, YUYV, NV12, RGB)",
            PixelFormatPreference::Mjpeg => "MJPEG",
            PixelFormatPreference::Yuyv => "YUYV",
        }
    }
}

/// Without the `camera` feature there is nothing to list.
#[cfg(not(feature = "camera"))]
pub fn list_cameras() -> Result<Vec<CameraInfo>, super::CaptureError> {
    Err(super::CaptureError::CameraSupportDisabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(format: PixelFormat, width: u32, height: u32, fps: u32) -> CameraMode {
        let name = match format {
            PixelFormat::Mjpeg => "MJPEG",
            PixelFormat::Yuyv => "YUYV",
            _ => "OTHER",
        };
        CameraMode {
            format: name.into(),
            pixel_format: Some(format),
            width,
            height,
            fps,
        }
    }

    fn request(
        size: Option<(u32, u32)>,
        fps: Option<u32>,
        preference: PixelFormatPreference,
    ) -> ModeRequest {
        ModeRequest {
            size: size.unwrap_or(DEFAULT_SIZE),
            fps,
            preference,
        }
    }

    fn webcam() -> Vec<CameraMode> {
        use PixelFormat::{Mjpeg, Yuyv};
        vec![
            mode(Yuyv, 640, 480, 30),
            mode(Yuyv, 640, 480, 5),
            mode(Yuyv, 1280, 720, 10),
            mode(Mjpeg, 640, 480, 30),
            mode(Mjpeg, 640, 480, 15),
            mode(Mjpeg, 1280, 720, 30),
            CameraMode {
                format: "GRAY".into(),
                pixel_format: None,
                width: 640,
                height: 480,
                fps: 1,
            },
        ]
    }

    #[test]
    fn auto_prefers_mjpeg_at_the_default_size_and_lowest_fps_from_five() {
        let modes = webcam();
        let chosen = request(None, None, PixelFormatPreference::Auto).choose(&modes);
        assert_eq!(
            chosen.map(|i| modes[i].to_string()),
            Some("MJPEG 640x480 @ 15 fps".into())
        );
    }

    #[test]
    fn size_beats_format_preference_and_fps_is_matched() {
        let modes = webcam();
        let chosen =
            request(Some((1280, 720)), Some(12), PixelFormatPreference::Yuyv).choose(&modes);
        assert_eq!(
            chosen.map(|i| modes[i].to_string()),
            Some("YUYV 1280x720 @ 10 fps".into())
        );
        let chosen = request(None, Some(4), PixelFormatPreference::Yuyv).choose(&modes);
        assert_eq!(
            chosen.map(|i| modes[i].to_string()),
            Some("YUYV 640x480 @ 5 fps".into())
        );
    }

    #[test]
    fn only_unusable_or_unwanted_formats_choose_nothing() {
        let gray_only = vec![webcam().pop().unwrap()];
        assert_eq!(
            request(None, None, PixelFormatPreference::Auto).choose(&gray_only),
            None
        );
        let mjpeg_only = vec![mode(PixelFormat::Mjpeg, 640, 480, 30)];
        assert_eq!(
            request(None, None, PixelFormatPreference::Yuyv).choose(&mjpeg_only),
            None
        );
    }
}
