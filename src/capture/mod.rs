//! Frame sources: V4L2 cameras (the `v4l` crate), image files and folders, HTTP snapshot URLs.
//!
//! Each camera runs on its own OS thread ([`spawn`]), paced to at most one frame per
//! `interval_ms`, and hands frames to the daemon through a latest-frame-wins [`FrameSlot`]. A
//! failing camera reports [`CameraEvent::Offline`] once, is retried with backoff, and reports
//! [`CameraEvent::Online`] when it delivers again. Frames are handed over undecoded; the daemon
//! decodes them (preprocess, which also cuts out a camera's `crop` region), asks a
//! [`MotionGate`] whether any part of the scene changed enough to classify, and a [`Collector`]
//! whether to save the frame for labelling (both compare downscaled grayscale thumbnails). While
//! the gate finds the scene settled it wants only `idle_fps` frames a second
//! ([`MotionGate::idle_until`], [`FrameSlot::want_from`]): the slot drops the others and the
//! camera thread does not capture them.

mod collect;
mod config;
mod error;
mod file;
mod frame;
mod http;
mod modes;
mod motion;
mod runner;
mod slot;
#[cfg(feature = "camera")]
mod v4l2;

pub use collect::Collector;
pub use config::{
    is_topic_id, validate_cameras, CameraConfig, CameraId, CollectConfig, InvalidCameraId,
    MotionConfig, PixelFormatPreference, SourceSpec, SourceSpecError, V4l2Device,
};
pub use error::CaptureError;
pub use frame::{Frame, PixelFormat};
pub use http::fetch_snapshot;
#[cfg(not(feature = "camera"))]
pub use modes::list_cameras;
pub use modes::{CameraInfo, CameraMode};
pub use motion::{GateStats, LumaPlane, MotionGate};
pub use runner::{spawn, CameraEvent};
pub use slot::{FrameSlot, SlotStats};
#[cfg(feature = "camera")]
pub use v4l2::list_cameras;
