//! Frame sources: V4L2 cameras (nokhwa), image files and folders, HTTP snapshot URLs.
//!
//! Each camera runs on its own OS thread and hands frames to the daemon through a
//! latest-frame-wins slot.

mod frame;

pub use frame::{Frame, PixelFormat};
