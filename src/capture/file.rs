use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::runner::{Cancel, FrameSource};
use super::{CaptureError, Frame};

/// `file:PATH`: one image delivered over and over, or a folder's images looped in name order.
/// The folder is re-listed at the start of every pass, so images can be added while running.
pub(super) struct FileSource {
    path: PathBuf,
    /// The current pass over a folder, and the index of the next image in it.
    playlist: Vec<PathBuf>,
    next: usize,
}

impl FileSource {
    pub(super) fn new(path: PathBuf) -> Self {
        FileSource {
            path,
            playlist: Vec::new(),
            next: 0,
        }
    }

    fn next_path(&mut self) -> Result<PathBuf, CaptureError> {
        let metadata = fs::metadata(&self.path).map_err(|source| CaptureError::Read {
            path: self.path.clone(),
            source,
        })?;
        if !metadata.is_dir() {
            return Ok(self.path.clone());
        }
        if self.next >= self.playlist.len() {
            self.playlist = list_images(&self.path)?;
            self.next = 0;
        }
        let path = self.playlist[self.next].clone();
        self.next += 1;
        Ok(path)
    }
}

impl FrameSource for FileSource {
    fn next_frame(&mut self, due: Instant, cancel: &Cancel) -> Result<Option<Frame>, CaptureError> {
        if cancel.sleep_until(due) {
            return Ok(None);
        }
        let path = self.next_path()?;
        let data = fs::read(&path).map_err(|source| CaptureError::Read {
            path: path.clone(),
            source,
        })?;
        let origin = path.display().to_string();
        if data.is_empty() {
            return Err(CaptureError::Empty { origin });
        }
        Ok(Some(Frame::encoded(data, origin)))
    }
}

/// The folder's image files (by extension, skipping dotfiles such as macOS `._x.jpg`), sorted.
fn list_images(folder: &Path) -> Result<Vec<PathBuf>, CaptureError> {
    let read_error = |source| CaptureError::Read {
        path: folder.to_owned(),
        source,
    };
    let mut images = Vec::new();
    for entry in fs::read_dir(folder).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
        let is_image = image::ImageFormat::from_path(&path).is_ok_and(|f| f.reading_enabled());
        if is_image && !hidden && path.is_file() {
            images.push(path);
        }
    }
    if images.is_empty() {
        return Err(CaptureError::NoImages {
            path: folder.to_owned(),
        });
    }
    images.sort();
    Ok(images)
}
