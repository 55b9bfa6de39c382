use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::CaptureError;
use crate::preprocess::CropRegion;

/// One `[[cameras]]` entry of the daemon's config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Stable identifier used in MQTT topics and Home Assistant unique ids.
    pub id: CameraId,
    /// Display name for Home Assistant; defaults to `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where frames come from: `v4l2:/dev/video0`, `v4l2:0`, `file:PATH`, `http(s)://...`.
    pub source: SourceSpec,
    /// Deliver at most one frame per this many milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// V4L2 only: wanted frame width; the closest mode the camera offers is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// V4L2 only: wanted frame height (set together with `width`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// V4L2 only: wanted camera frame rate; default is the lowest rate at or above 5 fps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
    /// V4L2 only: which pixel format to prefer; a camera without it streams the automatic
    /// choice instead (logged once).
    #[serde(default)]
    pub pixel_format: PixelFormatPreference,
    /// HTTP: connect + whole-request timeout in milliseconds. V4L2: the longest wait for a
    /// frame before the camera counts as stalled (offline, reopened).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The part of the frame that is classified, as fractions `[x, y, w, h]`; unset means the
    /// whole frame. Collected frames and snapshots show the same region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<CropRegion>,
    /// Skip inference while the scene does not change.
    #[serde(default)]
    pub motion: MotionConfig,
    /// Save frames for labelling.
    #[serde(default)]
    pub collect: CollectConfig,
    /// Names of the `[[heads]]` this camera runs besides the ImageNet classifier (checked
    /// against them by the config loader).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<String>,
}

/// A camera's stable identifier: one MQTT topic level and part of Home Assistant ids, so
/// non-empty ASCII letters, digits, `_` and `-`. Checked when parsed or deserialized, so every
/// `CameraId` in the program is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CameraId(String);

/// Why a string is not a [`CameraId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} must be non-empty ASCII letters, digits, '_' or '-' (it goes into MQTT topics)")]
pub struct InvalidCameraId(String);

impl CameraId {
    /// The id as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `id` can be one MQTT topic level and part of Home Assistant ids: non-empty ASCII
/// letters, digits, `_` and `-`. Camera ids and head names follow this rule.
pub fn is_topic_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl TryFrom<String> for CameraId {
    type Error = InvalidCameraId;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        if is_topic_id(&id) {
            Ok(CameraId(id))
        } else {
            Err(InvalidCameraId(id))
        }
    }
}

impl FromStr for CameraId {
    type Err = InvalidCameraId;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        id.to_owned().try_into()
    }
}

impl From<CameraId> for String {
    fn from(id: CameraId) -> Self {
        id.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for CameraId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CameraId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// The lowest non-zero `[cameras.motion] idle_fps`: one look every 10 s.
const MIN_IDLE_FPS: f32 = 0.1;
/// The highest `idle_fps`; more than any camera delivers.
const MAX_IDLE_FPS: f32 = 1000.0;

/// `[cameras.motion]`: skip inference while no part of the watched image (the crop region, if
/// the camera has one) changed since the last classified frame. See [`super::MotionGate`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Off means every frame is classified.
    pub enabled: bool,
    /// How much a cell of the 64x48 grayscale grid must change, in [0, 1] of the luma range
    /// and beyond the frame's global brightness change, to count as changed.
    pub cell_threshold: f32,
    /// Fraction of the watched cells, in (0, 1], that must change for the frame to be
    /// classified.
    pub min_area: f32,
    /// Rectangles `[x, y, w, h]`, fractions of the watched image, whose cells are ignored
    /// (a tree, a road).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<CropRegion>,
    /// Classify anyway when nothing changed for this many seconds; 0 never forces.
    pub max_skip_s: u64,
    /// Frames per second the gate looks at while the scene is settled (unchanged for a second):
    /// the frames in between are neither judged nor, where the source allows, captured. Noticing
    /// motion is then delayed by up to `1 / idle_fps` s; once the gate opens it looks at every
    /// frame until the scene settles again. 0 looks at every frame; otherwise 0.1 (one look
    /// every 10 s) to 1000.
    pub idle_fps: f32,
    /// Deprecated and ignored: the whole-frame mean difference the gate used to compare, which
    /// misses small objects. Accepted so older configs still load; see
    /// [`MotionConfig::deprecation`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            enabled: true,
            cell_threshold: 0.06,
            min_area: 0.003,
            mask: Vec::new(),
            max_skip_s: 60,
            idle_fps: 5.0,
            threshold: None,
        }
    }
}

impl MotionConfig {
    /// What to tell the user about deprecated keys that are set, if any.
    pub fn deprecation(&self) -> Option<&'static str> {
        self.threshold.is_some().then_some(
            "motion.threshold is ignored: the gate no longer compares whole-frame means, which \
             miss small objects; remove it and tune motion.cell_threshold and motion.min_area",
        )
    }
}

/// `[cameras.collect]`: save frames into a folder for labelling your own classes, at most one
/// every `every_s`, skipping near-duplicates, until `max_files` or `max_bytes` is reached.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectConfig {
    /// Off means nothing is saved.
    pub enabled: bool,
    /// Where frames are saved; unset means `<data dir>/datasets/<camera>/unlabelled`, where the
    /// daemon's data dir is [`crate::model::fetch::data_dir`] (`$STATE_DIRECTORY` under
    /// systemd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// At least this many seconds between two saved frames; 0 considers every frame.
    pub every_s: u64,
    /// Stop once the folder holds this many files.
    pub max_files: u64,
    /// Stop before the folder's files would exceed this many bytes in total.
    pub max_bytes: u64,
    /// Mean absolute difference of a 32x24 grayscale thumbnail, in [0, 1], from the last saved
    /// frame's, below which a frame is a near-duplicate and not saved.
    pub min_change: f32,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            enabled: false,
            dir: None,
            every_s: 10,
            max_files: 1000,
            max_bytes: 256 * 1024 * 1024,
            min_change: 0.02,
        }
    }
}

impl CollectConfig {
    /// The folder `camera`'s frames are saved in: `dir`, else
    /// `<data_dir>/datasets/<camera>/unlabelled`.
    pub fn dir(&self, camera: &CameraId, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| {
            data_dir
                .join("datasets")
                .join(camera.as_str())
                .join("unlabelled")
        })
    }
}

/// V4L2 pixel format to ask the camera for. Frames are handed over undecoded either way. A
/// camera that does not offer the preferred format streams the [`PixelFormatPreference::Auto`]
/// choice instead, and says so once in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormatPreference {
    /// MJPEG if offered (least USB bandwidth), else YUYV, NV12, RGB24, BGR24, GREY.
    #[default]
    Auto,
    /// MJPEG (compressed, least USB bandwidth).
    Mjpeg,
    /// YUYV (uncompressed 4:2:2, more USB bandwidth).
    Yuyv,
    /// NV12 (uncompressed 4:2:0).
    Nv12,
    /// Packed RGB (V4L2 `RGB3`).
    Rgb24,
    /// Packed BGR (V4L2 `BGR3`).
    Bgr24,
    /// 8-bit grey (V4L2 `GREY`); classified as an RGB image with equal channels.
    #[serde(alias = "grey")]
    Gray,
}

/// One day: longer intervals are almost certainly a typo, and bounded values keep deadline
/// arithmetic far from overflow.
const MAX_INTERVAL_MS: u64 = 86_400_000;
/// Ten minutes.
const MAX_TIMEOUT_MS: u64 = 600_000;

fn default_interval_ms() -> u64 {
    1000
}

fn default_timeout_ms() -> u64 {
    5000
}

/// A V4L2 device as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V4l2Device {
    /// `v4l2:0`: `/dev/video0`.
    Index(u32),
    /// `v4l2:/dev/video0` or a stable symlink such as `/dev/v4l/by-id/...-video-index0`.
    Path(PathBuf),
}

/// Where a camera's frames come from; parsed from the `source` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A V4L2 camera: `v4l2:N` or `v4l2:/dev/...`.
    V4l2(V4l2Device),
    /// One image, or a folder whose images are looped in name order.
    File(PathBuf),
    /// A JPEG snapshot URL, polled; may carry `user:password@` for basic auth.
    Http(String),
}

const EXPECTED_FORMS: &str = "expected v4l2:/dev/videoN, v4l2:N, file:PATH or http(s)://HOST/PATH";

/// Why a `source` string is not a valid [`SourceSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid camera source {input:?}: {reason}; {EXPECTED_FORMS}")]
pub struct SourceSpecError {
    input: String,
    reason: String,
}

impl FromStr for SourceSpec {
    type Err = SourceSpecError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| SourceSpecError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = input.split_once(':').ok_or_else(|| invalid("no scheme"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "v4l2" => {
                if rest.is_empty() {
                    Err(invalid("no device"))
                } else if let Ok(index) = rest.parse::<u32>() {
                    Ok(SourceSpec::V4l2(V4l2Device::Index(index)))
                } else if rest.starts_with('/') {
                    Ok(SourceSpec::V4l2(V4l2Device::Path(PathBuf::from(rest))))
                } else {
                    Err(invalid("device must be an index or an absolute path"))
                }
            }
            "file" => {
                if rest.is_empty() {
                    Err(invalid("no path"))
                } else {
                    Ok(SourceSpec::File(PathBuf::from(rest)))
                }
            }
            "http" | "https" => {
                let uri: ureq::http::Uri = input.parse().map_err(|_| invalid("malformed URL"))?;
                match uri.host() {
                    Some(host) if !host.is_empty() => Ok(SourceSpec::Http(input.to_owned())),
                    _ => Err(invalid("URL has no host")),
                }
            }
            "rtsp" | "rtsps" => Err(invalid(
                "RTSP streams are not supported, use the camera's JPEG snapshot URL",
            )),
            _ => Err(invalid("unknown scheme")),
        }
    }
}

impl SourceSpec {
    /// The source as written in the config, secrets included (for serialization only).
    fn to_config_string(&self) -> String {
        match self {
            SourceSpec::V4l2(V4l2Device::Index(index)) => format!("v4l2:{index}"),
            SourceSpec::V4l2(V4l2Device::Path(path)) => format!("v4l2:{}", path.display()),
            SourceSpec::File(path) => format!("file:{}", path.display()),
            SourceSpec::Http(url) => url.clone(),
        }
    }
}

/// Shows the source for logs and events: an HTTP password is replaced by `***`.
impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Http(url) => f.write_str(&redact_url(url)),
            other => f.write_str(&other.to_config_string()),
        }
    }
}

/// `http://user:secret@host/x` -> `http://user:***@host/x`, so URLs can go into logs and events.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

impl<'de> Deserialize<'de> for SourceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for SourceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_config_string())
    }
}

impl CameraConfig {
    /// The name shown in Home Assistant: `name`, or `id` when unset.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.id.as_str())
    }
}

/// Checks what serde cannot: id uniqueness, value ranges, and keys that do not apply
/// to the camera's kind of source. Errors name the key, e.g. `cameras[1].width`.
pub fn validate_cameras(cameras: &[CameraConfig]) -> Result<(), CaptureError> {
    let mut seen = HashSet::new();
    for (index, camera) in cameras.iter().enumerate() {
        let error = |key: &str, message: String| CaptureError::Config {
            key: format!("cameras[{index}].{key}"),
            message,
        };
        if !seen.insert(&camera.id) {
            return Err(error(
                "id",
                format!("{:?} is used by an earlier camera", camera.id.as_str()),
            ));
        }
        for (key, value, max) in [
            ("interval_ms", camera.interval_ms, MAX_INTERVAL_MS),
            ("timeout_ms", camera.timeout_ms, MAX_TIMEOUT_MS),
        ] {
            if !(1..=max).contains(&value) {
                return Err(error(key, format!("{value} is outside 1..={max}")));
            }
        }
        if !(0.0..=1.0).contains(&camera.collect.min_change) {
            let value = camera.collect.min_change;
            return Err(error(
                "collect.min_change",
                format!("{value} is outside [0, 1]"),
            ));
        }
        for (key, value) in [
            ("motion.cell_threshold", camera.motion.cell_threshold),
            ("motion.min_area", camera.motion.min_area),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return Err(error(key, format!("{value} is outside (0, 1]")));
            }
        }
        let idle_fps = camera.motion.idle_fps;
        if !(idle_fps == 0.0 || (MIN_IDLE_FPS..=MAX_IDLE_FPS).contains(&idle_fps)) {
            return Err(error(
                "motion.idle_fps",
                format!(
                    "{idle_fps} is neither 0 (look at every frame) nor within \
                     {MIN_IDLE_FPS}..={MAX_IDLE_FPS} frames per second"
                ),
            ));
        }
        if super::motion::watched_cell_count(&camera.motion.mask) == 0 {
            return Err(error(
                "motion.mask",
                "masks out the whole watched image: nothing could open the motion gate".into(),
            ));
        }
        for (key, value) in [
            ("collect.max_files", camera.collect.max_files),
            ("collect.max_bytes", camera.collect.max_bytes),
        ] {
            if value == 0 {
                return Err(error(key, "must be at least 1".into()));
            }
        }
        let is_v4l2 = matches!(camera.source, SourceSpec::V4l2(_));
        let v4l2_only = [
            ("width", camera.width.is_some()),
            ("height", camera.height.is_some()),
            ("fps", camera.fps.is_some()),
            (
                "pixel_format",
                camera.pixel_format != PixelFormatPreference::Auto,
            ),
        ];
        for (key, is_set) in v4l2_only {
            if is_set && !is_v4l2 {
                return Err(error(key, "applies only to v4l2: sources".into()));
            }
        }
        if camera.width.is_some() != camera.height.is_some() {
            return Err(error("width", "set width and height together".into()));
        }
        for (key, value) in [
            ("width", camera.width),
            ("height", camera.height),
            ("fps", camera.fps),
        ] {
            if value == Some(0) {
                return Err(error(key, "must be at least 1".into()));
            }
        }
    }
    Ok(())
}
