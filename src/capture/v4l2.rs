//! V4L2 cameras through nokhwa. Frames are handed over in the camera's own pixel format; decoding
//! is the preprocess stage's job.

use std::time::{Instant, SystemTime};

use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use nokhwa::Camera;

use super::runner::{Cancel, FrameSource};
use super::{
    CameraConfig, CameraInfo, CameraMode, CaptureError, Frame, PixelFormat, PixelFormatPreference,
    V4l2Device,
};

/// Every format nokhwa knows: opening accepts any of them, so a camera without a usable format
/// gets an error listing what it does offer rather than nokhwa's "Failed to Fufill".
const KNOWN_FORMATS: [FrameFormat; 6] = [
    FrameFormat::MJPEG,
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::RAWRGB,
    FrameFormat::RAWBGR,
    FrameFormat::GRAY,
];

fn pixel_format(format: FrameFormat) -> Option<PixelFormat> {
    match format {
        FrameFormat::MJPEG => Some(PixelFormat::Mjpeg),
        FrameFormat::YUYV => Some(PixelFormat::Yuyv),
        FrameFormat::NV12 => Some(PixelFormat::Nv12),
        FrameFormat::RAWRGB => Some(PixelFormat::Rgb24),
        FrameFormat::RAWBGR | FrameFormat::GRAY => None,
    }
}

fn camera_mode(format: &CameraFormat) -> CameraMode {
    CameraMode {
        format: format.format().to_string(),
        pixel_format: pixel_format(format.format()),
        width: format.width(),
        height: format.height(),
        fps: format.frame_rate(),
    }
}

/// `/dev/video3` (or a symlink to it) -> 3; nokhwa's V4L2 backend addresses devices by index.
fn device_index(device: &V4l2Device) -> Result<u32, CaptureError> {
    let path = match device {
        V4l2Device::Index(index) => return Ok(*index),
        V4l2Device::Path(path) => path,
    };
    let failed = |reason: String| CaptureError::Camera {
        device: path.display().to_string(),
        reason,
    };
    let resolved = std::fs::canonicalize(path).map_err(|e| failed(format!("cannot open: {e}")))?;
    resolved
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_prefix("video"))
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| {
            failed(format!(
                "resolves to {}, which is not a /dev/videoN device",
                resolved.display()
            ))
        })
}

fn device_name(device: &V4l2Device) -> String {
    match device {
        V4l2Device::Index(index) => format!("/dev/video{index}"),
        V4l2Device::Path(path) => path.display().to_string(),
    }
}

/// Lists V4L2 devices and the modes each offers. A device that cannot be opened (busy, or a
/// metadata node rather than a capture node) is listed with its error instead of failing the list.
pub fn list_cameras() -> Result<Vec<CameraInfo>, CaptureError> {
    let devices = nokhwa::query(ApiBackend::Video4Linux).map_err(|e| CaptureError::Camera {
        device: "/dev/video*".into(),
        reason: format!("cannot list devices: {e}"),
    })?;
    let mut cameras: Vec<CameraInfo> = devices
        .into_iter()
        .filter_map(|info| {
            let index = info.index().as_index().ok()?;
            let modes = query_modes(info.index().clone());
            Some(CameraInfo {
                index,
                path: format!("/dev/video{index}"),
                name: info.human_name(),
                modes: modes.as_ref().map_or_else(|_| Vec::new(), Clone::clone),
                error: modes.err(),
            })
        })
        .collect();
    cameras.sort_by_key(|camera| camera.index);
    Ok(cameras)
}

fn query_modes(index: CameraIndex) -> Result<Vec<CameraMode>, String> {
    let request = RequestedFormat::with_formats(RequestedFormatType::None, &KNOWN_FORMATS);
    let mut camera =
        Camera::with_backend(index, request, ApiBackend::Video4Linux).map_err(|e| e.to_string())?;
    let mut modes: Vec<CameraMode> = camera
        .compatible_camera_formats()
        .map_err(|e| e.to_string())?
        .iter()
        .map(camera_mode)
        .collect();
    modes.sort_by(|a, b| {
        (&a.format, a.width, a.height, a.fps).cmp(&(&b.format, b.width, b.height, b.fps))
    });
    modes.dedup();
    Ok(modes)
}

/// `v4l2:...`: streams continuously and hands over the newest frame once `due`.
///
/// The stream is drained at the camera's frame rate even between deliveries: otherwise the
/// driver's queued buffers would go stale and a delivery would show the scene from seconds ago.
/// Draining only dequeues and re-queues buffers; bytes are copied only for delivered frames.
pub(super) struct V4l2Source {
    device: V4l2Device,
    shown_device: String,
    request: ModeRequest,
    camera: Option<OpenCamera>,
}

struct OpenCamera {
    camera: Camera,
    format: PixelFormat,
    width: u32,
    height: u32,
}

impl V4l2Source {
    pub(super) fn new(device: V4l2Device, config: &CameraConfig) -> Self {
        V4l2Source {
            shown_device: device_name(&device),
            device,
            request: ModeRequest::from_config(config),
            camera: None,
        }
    }

    fn error(&self, reason: impl std::fmt::Display) -> CaptureError {
        CaptureError::Camera {
            device: self.shown_device.clone(),
            reason: reason.to_string(),
        }
    }

    fn open(&self) -> Result<OpenCamera, CaptureError> {
        let index = device_index(&self.device)?;
        let request = RequestedFormat::with_formats(RequestedFormatType::None, &KNOWN_FORMATS);
        let mut camera =
            Camera::with_backend(CameraIndex::Index(index), request, ApiBackend::Video4Linux)
                .map_err(|e| self.error(format!("cannot open: {e}")))?;
        let formats = camera
            .compatible_camera_formats()
            .map_err(|e| self.error(format!("cannot list formats: {e}")))?;
        let modes: Vec<CameraMode> = formats.iter().map(camera_mode).collect();
        let chosen = self.request.choose(&modes).ok_or_else(|| {
            self.error(format!(
                "offers no {} mode; it has: {}",
                self.request.describe(),
                describe_modes(&modes)
            ))
        })?;
        let wanted = formats[chosen];
        if camera.camera_format() != wanted {
            let exact = [wanted.format()];
            camera
                .set_camera_requset(RequestedFormat::with_formats(
                    RequestedFormatType::Exact(wanted),
                    &exact,
                ))
                .map_err(|e| self.error(format!("cannot set {wanted}: {e}")))?;
        }
        camera
            .open_stream()
            .map_err(|e| self.error(format!("cannot start streaming: {e}")))?;
        let active = camera.camera_format();
        let format = pixel_format(active.format())
            .ok_or_else(|| self.error(format!("streams unusable format {}", active.format())))?;
        log::info!("camera {}: streaming {active}", self.shown_device);
        Ok(OpenCamera {
            camera,
            format,
            width: active.width(),
            height: active.height(),
        })
    }
}

fn describe_modes(modes: &[CameraMode]) -> String {
    if modes.is_empty() {
        return "no modes".into();
    }
    let shown: Vec<String> = modes.iter().take(12).map(CameraMode::to_string).collect();
    let more = modes.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self, due: Instant, cancel: &Cancel) -> Result<Option<Frame>, CaptureError> {
        let mut open = match self.camera.take() {
            Some(open) => open,
            None => self.open()?,
        };
        match first_frame_after(&mut open.camera, due, cancel) {
            Ok(data) => {
                let frame = data.map(|data| Frame {
                    format: open.format,
                    width: open.width,
                    height: open.height,
                    data,
                    captured_at: SystemTime::now(),
                    seq: 0,
                    origin: self.shown_device.clone(),
                });
                self.camera = Some(open);
                Ok(frame)
            }
            // `open` is dropped here, closing the device; the next call reopens it, which is
            // how an unplugged and re-plugged camera recovers.
            Err(e) => Err(self.error(format!("cannot read frame: {e}"))),
        }
    }
}

/// Dequeues frames until one arrives at or after `due` and returns a copy of its bytes; `None`
/// once cancelled. Each dequeue blocks for at most one frame period while the camera streams.
fn first_frame_after(
    camera: &mut Camera,
    due: Instant,
    cancel: &Cancel,
) -> Result<Option<Vec<u8>>, nokhwa::NokhwaError> {
    while !cancel.is_set() {
        let bytes = camera.frame_raw()?;
        if Instant::now() >= due {
            return Ok(Some(bytes.into_owned()));
        }
    }
    Ok(None)
}

/// Resolution used when the config names none: plenty for a 224x224 model input, cheap to decode.
const DEFAULT_SIZE: (u32, u32) = (640, 480);
/// Without an `fps` key, the lowest rate at or above this is used: frames stay fresh (at most
/// 200 ms old) while the camera, USB bus and stream draining cost as little as possible.
const MIN_DEFAULT_FPS: u32 = 5;

/// What a camera's config asks for, to pick one of the modes the device offers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModeRequest {
    size: (u32, u32),
    fps: Option<u32>,
    preference: PixelFormatPreference,
}

impl ModeRequest {
    fn from_config(config: &CameraConfig) -> Self {
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
    fn choose(&self, modes: &[CameraMode]) -> Option<usize> {
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
    fn describe(&self) -> &'static str {
        match self.preference {
            PixelFormatPreference::Auto => "usable (MJPEG, YUYV, NV12, RGB)",
            PixelFormatPreference::Mjpeg => "MJPEG",
            PixelFormatPreference::Yuyv => "YUYV",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn device_paths_resolve_to_indices() {
        assert_eq!(device_index(&V4l2Device::Index(4)).unwrap(), 4);
        let missing = device_index(&V4l2Device::Path(PathBuf::from("/dev/video99")));
        let message = missing.unwrap_err().to_string();
        assert!(message.contains("/dev/video99"), "{message}");
        let not_video = device_index(&V4l2Device::Path(PathBuf::from("/dev/null")));
        let message = not_video.unwrap_err().to_string();
        assert!(message.contains("not a /dev/videoN"), "{message}");
    }

    #[test]
    fn frame_formats_map_to_pixel_formats() {
        assert_eq!(pixel_format(FrameFormat::MJPEG), Some(PixelFormat::Mjpeg));
        assert_eq!(pixel_format(FrameFormat::YUYV), Some(PixelFormat::Yuyv));
        assert_eq!(pixel_format(FrameFormat::GRAY), None);
    }

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
