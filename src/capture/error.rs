use std::path::PathBuf;

use crate::sysexits::Sysexit;

/// What went wrong while configuring or reading a frame source.
///
/// Every variant names the thing it failed on (config key, file, URL, device) so one line in the
/// log is enough to act on it.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A `[[cameras]]` entry is invalid; `key` is its path, e.g. `cameras[0].source`.
    #[error("config {key}: {message}")]
    Config {
        /// Path of the key, e.g. `cameras[0].source`.
        key: String,
        /// What is wrong and, where it helps, the expected form.
        message: String,
    },

    /// An image file or folder could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },

    /// A folder source holds no image files (by extension; dotfiles are ignored).
    #[error("no image files (jpg, png, ...) in folder {}", path.display())]
    NoImages {
        /// The folder.
        path: PathBuf,
    },

    /// A file or HTTP response had no bytes.
    #[error("{origin}: empty image (0 bytes)")]
    Empty {
        /// The file path, or the URL with any password hidden.
        origin: String,
    },

    /// An HTTP snapshot request failed: connection, status, content type or body.
    #[error("GET {url}: {reason}")]
    Http {
        /// The snapshot URL, with any password hidden.
        url: String,
        /// What failed.
        reason: String,
    },

    /// An HTTP snapshot request took longer than the camera's `timeout_ms`.
    #[error("GET {url}: timed out after {timeout_ms} ms")]
    HttpTimeout {
        /// The snapshot URL, with any password hidden.
        url: String,
        /// The camera's `timeout_ms`, in milliseconds.
        timeout_ms: u64,
    },

    /// A V4L2 device could not be opened, configured or read.
    #[error("camera {device}: {reason}")]
    Camera {
        /// The device as configured: `/dev/videoN` or the given path (`/dev/video*` when listing
        /// devices failed).
        device: String,
        /// What failed.
        reason: String,
    },

    /// This binary was built without the `camera` feature (no V4L2).
    #[error("edgeclass was built without V4L2 camera support (cargo feature `camera`)")]
    CameraSupportDisabled,
}

impl CaptureError {
    /// The kind of failure, for the process exit status.
    pub fn sysexit(&self) -> Sysexit {
        match self {
            CaptureError::Config { .. } => Sysexit::Config,
            CaptureError::Read { .. } | CaptureError::NoImages { .. } => Sysexit::NoInput,
            CaptureError::Empty { .. } => Sysexit::DataErr,
            CaptureError::Http { .. }
            | CaptureError::HttpTimeout { .. }
            | CaptureError::Camera { .. }
            | CaptureError::CameraSupportDisabled => Sysexit::Unavailable,
        }
    }
}
