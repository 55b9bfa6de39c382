//! V4L2 cameras through the `v4l` crate. Frames are handed over in the camera's own pixel
//! format; decoding is the preprocess stage's job.

use std::time::{Duration, Instant, SystemTime};

use v4l::buffer::{Flags as BufferFlags, Type as BufferType};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::traits::CaptureStream;
use v4l::prelude::MmapStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::runner::{Cancel, FrameSource};
use super::{
    CameraConfig, CameraInfo, CameraMode, CaptureError, Frame, PixelFormat, PixelFormatPreference,
    V4l2Device,
};

/// The formats edgeclass decodes, by V4L2 four-character code (`JPEG` is how some webcams name
/// their MJPEG stream). Other formats are not listed.
const KNOWN_FORMATS: [(&[u8; 4], PixelFormat); 7] = [
    (b"MJPG", PixelFormat::Mjpeg),
    (b"JPEG", PixelFormat::Mjpeg),
    (b"YUYV", PixelFormat::Yuyv),
    (b"NV12", PixelFormat::Nv12),
    (b"RGB3", PixelFormat::Rgb24),
    (b"BGR3", PixelFormat::Bgr24),
    (b"GREY", PixelFormat::Gray),
];

fn pixel_format(fourcc: FourCC) -> Option<PixelFormat> {
    KNOWN_FORMATS
        .iter()
        .find(|(code, _)| **code == fourcc.repr)
        .map(|&(_, format)| format)
}

/// `/dev/video3` (or a symlink to it) -> 3: devices are opened by index.
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

/// Lists V4L2 devices and the modes each offers. A device whose modes cannot be read (busy, or a
/// metadata node rather than a capture node) is listed with its error instead of failing the list.
pub fn list_cameras() -> Result<Vec<CameraInfo>, CaptureError> {
    let mut cameras: Vec<CameraInfo> = v4l::context::enum_devices()
        .into_iter()
        .filter_map(|node| {
            let index = u32::try_from(node.index()).ok()?;
            let modes = query_modes(index);
            Some(CameraInfo {
                index,
                path: node.path().display().to_string(),
                name: node.name().unwrap_or_default(),
                modes: modes.as_ref().map_or_else(|_| Vec::new(), Clone::clone),
                error: modes.err(),
            })
        })
        .collect();
    cameras.sort_by_key(|camera| camera.index);
    Ok(cameras)
}

/// Every mode of a known format `/dev/video<index>` offers, sorted by format, size and rate.
/// Stepwise sizes and rates (rare in webcams) contribute their smallest and largest values.
fn query_modes(index: u32) -> Result<Vec<CameraMode>, String> {
    let device = Device::new(index as usize).map_err(|e| e.to_string())?;
    let formats = device
        .enum_formats()
        .map_err(|e| format!("cannot list formats: {e}"))?;
    if formats.is_empty() {
        return Err("offers no capture formats (not a capture node)".into());
    }
    let mut modes = Vec::new();
    for description in formats {
        let fourcc = description.fourcc;
        let Some(format) = pixel_format(fourcc) else {
            continue;
        };
        let sizes = device
            .enum_framesizes(fourcc)
            .map_err(|e| format!("cannot list {fourcc} sizes: {e}"))?;
        for size in sizes {
            let extremes = match size.size {
                FrameSizeEnum::Discrete(size) => vec![(size.width, size.height)],
                FrameSizeEnum::Stepwise(steps) => vec![
                    (steps.min_width, steps.min_height),
                    (steps.max_width, steps.max_height),
                ],
            };
            for (width, height) in extremes {
                let intervals = device
                    .enum_frameintervals(fourcc, width, height)
                    .map_err(|e| format!("cannot list {fourcc} {width}x{height} rates: {e}"))?;
                for interval in intervals {
                    let fractions = match interval.interval {
                        FrameIntervalEnum::Discrete(fraction) => vec![fraction],
                        FrameIntervalEnum::Stepwise(steps) => vec![steps.min, steps.max],
                    };
                    modes.extend(fractions.into_iter().map(|fraction| CameraMode {
                        format: fourcc.to_string(),
                        pixel_format: Some(format),
                        width,
                        height,
                        fps: fps_of(fraction.numerator, fraction.denominator),
                    }));
                }
            }
        }
    }
    modes.sort_by(|a, b| {
        (&a.format, a.width, a.height, a.fps).cmp(&(&b.format, b.width, b.height, b.fps))
    });
    modes.dedup();
    Ok(modes)
}

/// `v4l2:...`: streams continuously and hands over the newest frame once `due`.
///
/// The device is polled in short slices, so a camera that stops delivering without an error is a
/// capture timeout (`timeout_ms`) rather than a read blocked forever, and shutdown is noticed
/// within a slice.
///
/// The stream is drained at the camera's frame rate even between deliveries: otherwise the
/// driver's queued buffers would go stale and a delivery would show the scene from seconds ago.
/// Draining only dequeues and re-queues buffers; bytes are copied only for delivered frames.
pub(super) struct V4l2Source {
    device: V4l2Device,
    shown_device: String,
    request: ModeRequest,
    timeout: Duration,
    camera: Option<OpenCamera>,
    faults: FaultCounts,
    fallback_logged: bool,
}

/// Buffers the driver fills while one is being read.
const BUFFER_COUNT: u32 = 4;
/// How long one wait for a frame blocks before checking for shutdown and the capture timeout.
const POLL_SLICE: Duration = Duration::from_millis(100);

struct OpenCamera {
    stream: MmapStream<'static>,
    format: PixelFormat,
    width: u32,
    height: u32,
    /// Bytes of one raw frame; `None` for MJPEG, whose frames vary.
    frame_bytes: Option<usize>,
    /// Whether `stream` holds a dequeued buffer, which its next read re-queues.
    holds_buffer: bool,
    started: bool,
    last_sequence: Option<u32>,
}

impl V4l2Source {
    pub(super) fn new(device: V4l2Device, config: &CameraConfig) -> Self {
        V4l2Source {
            shown_device: device_name(&device),
            device,
            request: ModeRequest::from_config(config),
            timeout: Duration::from_millis(config.timeout_ms),
            camera: None,
            faults: FaultCounts::default(),
            fallback_logged: false,
        }
    }

    fn error(&self, reason: impl std::fmt::Display) -> CaptureError {
        CaptureError::Camera {
            device: self.shown_device.clone(),
            reason: reason.to_string(),
        }
    }

    fn open(&mut self) -> Result<OpenCamera, CaptureError> {
        let index = device_index(&self.device)?;
        let modes = query_modes(index).map_err(|e| self.error(format!("cannot open: {e}")))?;
        let chosen = self.request.choose(&modes).ok_or_else(|| {
            self.error(format!(
                "offers no usable mode (MJPEG, YUYV, NV12, RGB24, BGR24, GREY); it has: {}",
                describe_modes(&modes)
            ))
        })?;
        let mode = &modes[chosen];
        let pixel_format = mode
            .pixel_format
            .ok_or_else(|| self.error(format!("{mode} is not usable")))?;
        if let Some(preferred) = self.request.preferred() {
            if preferred != pixel_format && !self.fallback_logged {
                self.fallback_logged = true;
                log::info!(
                    "camera {}: no {} mode fits the request; streaming {mode} instead",
                    self.shown_device,
                    self.request.describe()
                );
            }
        }
        let device =
            Device::new(index as usize).map_err(|e| self.error(format!("cannot open: {e}")))?;
        let code: [u8; 4] = mode
            .format
            .as_bytes()
            .try_into()
            .map_err(|_| self.error(format!("{mode} has no four-character code")))?;
        let fourcc = FourCC::new(&code);
        let wanted = Format::new(mode.width, mode.height, fourcc);
        let active = device
            .set_format(&wanted)
            .map_err(|e| self.error(format!("cannot set {mode}: {e}")))?;
        if (active.width, active.height, active.fourcc) != (mode.width, mode.height, fourcc) {
            return Err(self.error(format!(
                "asked for {mode}, the driver set {} {}x{}",
                active.fourcc, active.width, active.height
            )));
        }
        if let Some(stride) = packed_stride(pixel_format, active.width) {
            if active.stride != stride {
                return Err(self.error(format!(
                    "{mode} has {} bytes per line, not {stride}: padded rows are not supported",
                    active.stride
                )));
            }
        }
        let frame_bytes = raw_frame_bytes(pixel_format, active.width, active.height);
        let params = device
            .set_params(&Parameters::with_fps(mode.fps))
            .map_err(|e| self.error(format!("cannot set {} fps: {e}", mode.fps)))?;
        let fps = fps_of(params.interval.numerator, params.interval.denominator);
        let mut stream = MmapStream::with_buffers(&device, BufferType::VideoCapture, BUFFER_COUNT)
            .map_err(|e| self.error(format!("cannot map buffers: {e}")))?;
        stream.set_timeout(POLL_SLICE);
        log::info!(
            "camera {}: streaming {} {}x{} at {fps} fps",
            self.shown_device,
            active.fourcc,
            active.width,
            active.height
        );
        Ok(OpenCamera {
            stream,
            format: pixel_format,
            width: active.width,
            height: active.height,
            frame_bytes,
            holds_buffer: false,
            started: false,
            last_sequence: None,
        })
    }

    /// Dequeues frames until one arrives at or after `due` and returns a copy of its bytes;
    /// `None` once cancelled. Fails when the device fails or sends no frame for `timeout`.
    fn first_frame_after(
        &mut self,
        open: &mut OpenCamera,
        due: Instant,
        cancel: &Cancel,
    ) -> Result<Option<Vec<u8>>, String> {
        let mut waiting_since = Instant::now();
        while !cancel.is_set() {
            if waiting_since.elapsed() >= self.timeout {
                return Err(format!(
                    "no frame for {} ms (capture timeout)",
                    self.timeout.as_millis()
                ));
            }
            let read = if open.started && open.holds_buffer {
                // Wait without giving the held buffer back: `next` re-queues it only when a
                // frame is ready, so a timed-out wait leaves the queue as it was.
                let ready = open
                    .stream
                    .handle()
                    .poll(libc::POLLIN, POLL_SLICE.as_millis() as i32)
                    .map_err(|e| format!("cannot wait for a frame: {e}"))?;
                if ready == 0 {
                    continue;
                }
                CaptureStream::next(&mut open.stream)
            } else if open.started {
                // An earlier read timed out after re-queueing its buffer: take one back first.
                match CaptureStream::dequeue(&mut open.stream) {
                    Ok(_) => {
                        open.holds_buffer = true;
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                    Err(e) => return Err(format!("cannot read frame: {e}")),
                }
            } else {
                // The first read queues every buffer and starts streaming.
                open.started = true;
                CaptureStream::next(&mut open.stream)
            };
            let (data, meta) = match read {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    open.holds_buffer = false;
                    continue;
                }
                Err(e) => return Err(format!("cannot read frame: {e}")),
            };
            open.holds_buffer = true;
            waiting_since = Instant::now();
            if let Some(last) = open.last_sequence {
                self.faults.dropped +=
                    u64::from(meta.sequence.wrapping_sub(last).saturating_sub(1));
            }
            open.last_sequence = Some(meta.sequence);
            let used = (meta.bytesused as usize).min(data.len());
            let complete = open.frame_bytes.is_none_or(|bytes| used >= bytes);
            if meta.flags.contains(BufferFlags::ERROR) || !complete {
                self.faults.buffer_errors += 1;
            } else if Instant::now() >= due {
                let bytes = open.frame_bytes.unwrap_or(used);
                let frame = data[..bytes].to_vec();
                self.faults.log_if_due(&self.shown_device);
                return Ok(Some(frame));
            }
            self.faults.log_if_due(&self.shown_device);
        }
        Ok(None)
    }
}

/// Frames the driver marked as failed (`V4L2_BUF_FLAG_ERROR`) or delivered short, and frames it
/// dropped (gaps in its sequence numbers), over the source's lifetime. Logged when they change,
/// at most every [`FaultCounts::LOG_EVERY`].
#[derive(Debug, Default)]
struct FaultCounts {
    buffer_errors: u64,
    dropped: u64,
    logged: (u64, u64),
    logged_at: Option<Instant>,
}

impl FaultCounts {
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// Whether the counts changed since the last log line and that line is old enough.
    fn due(&self, now: Instant) -> bool {
        (self.buffer_errors, self.dropped) != self.logged
            && self
                .logged_at
                .is_none_or(|at| now.duration_since(at) >= Self::LOG_EVERY)
    }

    fn log_if_due(&mut self, device: &str) {
        let now = Instant::now();
        if self.due(now) {
            self.logged = (self.buffer_errors, self.dropped);
            self.logged_at = Some(now);
            log::warn!(
                "camera {device}: {} buffer errors and {} dropped frames so far",
                self.buffer_errors,
                self.dropped
            );
        }
    }
}

/// Bytes per line of an unpadded raw frame (of the luma plane for NV12); `None` for compressed
/// formats. The decoders read rows without padding.
fn packed_stride(format: PixelFormat, width: u32) -> Option<u32> {
    match format {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => Some(width * 3),
        PixelFormat::Yuyv => Some(width * 2),
        PixelFormat::Nv12 | PixelFormat::Gray => Some(width),
        PixelFormat::Mjpeg | PixelFormat::Encoded => None,
    }
}

/// Bytes of one unpadded raw frame; `None` for compressed formats.
fn raw_frame_bytes(format: PixelFormat, width: u32, height: u32) -> Option<usize> {
    let plane = packed_stride(format, width)? as usize * height as usize;
    Some(if format == PixelFormat::Nv12 {
        plane * 3 / 2
    } else {
        plane
    })
}

/// Frames per second of a frame interval (seconds per frame as a fraction), rounded.
fn fps_of(numerator: u32, denominator: u32) -> u32 {
    if numerator == 0 {
        return 0;
    }
    (denominator + numerator / 2) / numerator
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
        match self.first_frame_after(&mut open, due, cancel) {
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
            // how an unplugged and re-plugged (or stalled) camera recovers.
            Err(reason) => Err(self.error(reason)),
        }
    }
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

    /// 0 for the preferred format, then the automatic order: MJPEG (least USB bandwidth), YUYV,
    /// NV12, RGB24, BGR24, GREY.
    fn format_rank(&self, format: PixelFormat) -> Option<u8> {
        let automatic = match format {
            PixelFormat::Mjpeg => 0,
            PixelFormat::Yuyv => 1,
            PixelFormat::Nv12 => 2,
            PixelFormat::Rgb24 => 3,
            PixelFormat::Bgr24 => 4,
            PixelFormat::Gray => 5,
            PixelFormat::Encoded => return None,
        };
        Some(if self.preferred() == Some(format) {
            0
        } else {
            automatic + 1
        })
    }

    /// The format the config asks for; `None` for `auto`.
    fn preferred(&self) -> Option<PixelFormat> {
        match self.preference {
            PixelFormatPreference::Auto => None,
            PixelFormatPreference::Mjpeg => Some(PixelFormat::Mjpeg),
            PixelFormatPreference::Yuyv => Some(PixelFormat::Yuyv),
            PixelFormatPreference::Nv12 => Some(PixelFormat::Nv12),
            PixelFormatPreference::Rgb24 => Some(PixelFormat::Rgb24),
            PixelFormatPreference::Bgr24 => Some(PixelFormat::Bgr24),
            PixelFormatPreference::Gray => Some(PixelFormat::Gray),
        }
    }

    /// For the fallback log line: "MJPEG", "YUYV", ...
    fn describe(&self) -> &'static str {
        match self.preference {
            PixelFormatPreference::Auto => "usable",
            PixelFormatPreference::Mjpeg => "MJPEG",
            PixelFormatPreference::Yuyv => "YUYV",
            PixelFormatPreference::Nv12 => "NV12",
            PixelFormatPreference::Rgb24 => "RGB24",
            PixelFormatPreference::Bgr24 => "BGR24",
            PixelFormatPreference::Gray => "GREY",
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
    fn fourccs_map_to_pixel_formats() {
        let format = |code: &[u8; 4]| pixel_format(FourCC::new(code));
        assert_eq!(format(b"MJPG"), Some(PixelFormat::Mjpeg));
        assert_eq!(format(b"JPEG"), Some(PixelFormat::Mjpeg));
        assert_eq!(format(b"YUYV"), Some(PixelFormat::Yuyv));
        assert_eq!(format(b"GREY"), Some(PixelFormat::Gray));
        assert_eq!(format(b"BGR3"), Some(PixelFormat::Bgr24));
        assert_eq!(format(b"H264"), None);
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
    fn only_unusable_formats_choose_nothing() {
        let unusable = CameraMode {
            format: "H264".into(),
            pixel_format: None,
            width: 640,
            height: 480,
            fps: 30,
        };
        assert_eq!(
            request(None, None, PixelFormatPreference::Auto).choose(&[unusable]),
            None
        );
    }

    #[test]
    fn a_missing_preferred_format_falls_back_to_the_automatic_order() {
        use PixelFormat::{Gray, Nv12, Rgb24, Yuyv};
        let vivid = vec![
            mode(Gray, 640, 360, 25),
            mode(Rgb24, 640, 360, 25),
            mode(Nv12, 640, 360, 25),
            mode(Yuyv, 640, 360, 25),
        ];
        let choose = |preference| {
            request(Some((640, 360)), Some(25), preference)
                .choose(&vivid)
                .map(|i| vivid[i].pixel_format)
        };
        assert_eq!(choose(PixelFormatPreference::Mjpeg), Some(Some(Yuyv)));
        assert_eq!(choose(PixelFormatPreference::Auto), Some(Some(Yuyv)));
        assert_eq!(choose(PixelFormatPreference::Gray), Some(Some(Gray)));
        assert_eq!(choose(PixelFormatPreference::Rgb24), Some(Some(Rgb24)));
        assert_eq!(choose(PixelFormatPreference::Nv12), Some(Some(Nv12)));
        let request = request(None, None, PixelFormatPreference::Mjpeg);
        assert_eq!(request.preferred(), Some(PixelFormat::Mjpeg));
        assert_eq!(request.describe(), "MJPEG");
    }

    #[test]
    fn raw_frames_are_unpadded_rows() {
        assert_eq!(packed_stride(PixelFormat::Yuyv, 640), Some(1280));
        assert_eq!(packed_stride(PixelFormat::Nv12, 640), Some(640));
        assert_eq!(packed_stride(PixelFormat::Mjpeg, 640), None);
        assert_eq!(raw_frame_bytes(PixelFormat::Nv12, 640, 360), Some(345_600));
        assert_eq!(raw_frame_bytes(PixelFormat::Gray, 640, 360), Some(230_400));
        assert_eq!(raw_frame_bytes(PixelFormat::Rgb24, 4, 2), Some(24));
        assert_eq!(raw_frame_bytes(PixelFormat::Bgr24, 4, 2), Some(24));
    }

    #[test]
    fn frame_intervals_round_to_whole_fps() {
        assert_eq!(fps_of(1, 25), 25);
        assert_eq!(fps_of(1001, 30000), 30);
        assert_eq!(fps_of(2, 25), 13);
        assert_eq!(fps_of(0, 0), 0);
    }

    #[test]
    fn faults_are_logged_when_they_change_at_most_every_ten_seconds() {
        let start = Instant::now();
        let mut faults = FaultCounts::default();
        assert!(!faults.due(start), "nothing to report");
        faults.buffer_errors = 1;
        assert!(faults.due(start));
        faults.logged = (1, 0);
        faults.logged_at = Some(start);
        faults.dropped = 5;
        assert!(!faults.due(start + Duration::from_secs(9)), "too soon");
        assert!(faults.due(start + FaultCounts::LOG_EVERY));
        faults.logged = (1, 5);
        assert!(!faults.due(start + Duration::from_secs(60)), "unchanged");
    }
}
