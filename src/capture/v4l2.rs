//! V4L2 cameras through nokhwa. Frames are handed over in the camera's own pixel format; decoding
//! is the preprocess stage's job.

use std::time::{Instant, SystemTime};

use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use nokhwa::Camera;

use super::runner::{Cancel, FrameSource};
use super::{
    CameraConfig, CameraInfo, CameraMode, CaptureError, Frame, ModeRequest, PixelFormat, V4l2Device,
};

/// Pixel formats a frame can be handed over in, in `auto` preference order.
const USABLE_FORMATS: [FrameFormat; 4] = [
    FrameFormat::MJPEG,
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::RAWRGB,
];

/// Every format nokhwa knows, so that opening for a listing never fails on format choice.
const ALL_FORMATS: [FrameFormat; 6] = [
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
    let request = RequestedFormat::with_formats(RequestedFormatType::None, &ALL_FORMATS);
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
        let request = RequestedFormat::with_formats(RequestedFormatType::None, &USABLE_FORMATS);
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
        if self.camera.is_none() {
            self.camera = Some(self.open()?);
        }
        loop {
            if cancel.is_set() {
                return Ok(None);
            }
            let Some(open) = self.camera.as_mut() else {
                return Ok(None);
            };
            // Blocks for at most one frame period while the camera streams.
            let frame = match open.camera.frame_raw() {
                Ok(bytes) if Instant::now() >= due => Ok(Some(bytes.into_owned())),
                Ok(_) => Ok(None),
                Err(e) => Err(e.to_string()),
            };
            match frame {
                Ok(Some(data)) => {
                    return Ok(Some(Frame {
                        format: open.format,
                        width: open.width,
                        height: open.height,
                        data,
                        captured_at: SystemTime::now(),
                        seq: 0,
                        origin: self.shown_device.clone(),
                    }))
                }
                Ok(None) => continue,
                Err(reason) => {
                    // Dropping the camera closes the device; the next call reopens it, which
                    // is how an unplugged and re-plugged camera recovers.
                    self.camera = None;
                    return Err(self.error(format!("cannot read frame: {reason}")));
                }
            }
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
}
