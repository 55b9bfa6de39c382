use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use image::RgbImage;

use super::motion::{Luma, Thumbnail};
use super::{CameraId, CollectConfig};

/// Saves a camera's frames into a folder for labelling (`[cameras.collect]`).
///
/// A frame is saved when `every_s` has passed since the last attempt, it differs from the last
/// saved frame by at least `min_change` (the mean absolute difference of 32x24 grayscale thumbnails) and the folder
/// stays within `max_files` and `max_bytes`. Files already in the folder count toward the caps,
/// so they hold across restarts; once a cap is reached nothing more is saved (logged once) and
/// nothing is deleted. Files are named `<camera>-<unix millis>.jpg`, so they sort by capture
/// time, and appear whole (written to a hidden temporary file, then renamed). A write error is
/// logged and retried at the next interval: collecting never stops classification.
///
/// Use: ask [`Collector::wants`] with each frame's decoded image (its crop region, if the camera
/// has one), and [`Collector::save`] the frame's JPEG when it says yes.
#[derive(Debug)]
pub struct Collector {
    camera: CameraId,
    dir: PathBuf,
    every: Duration,
    min_change: f32,
    max_files: u64,
    max_bytes: u64,
    /// What the folder holds: found at start, plus what was saved since.
    files: u64,
    bytes: u64,
    /// A cap was reached (and logged): nothing more is saved.
    full: bool,
    /// The last save failed (and the first failure of this run was logged as a warning): a
    /// full or read-only disk fails every `every_s`, which must not flood the journal.
    failing: bool,
    last_attempt: Option<Instant>,
    /// Milliseconds in the last saved name, so two frames of one millisecond get two names.
    last_stamp: u64,
    /// The thumbnail of the image [`Collector::wants`] last looked at; 32x24, the scale
    /// `min_change` is set on.
    thumbnail: Thumbnail<32, 24>,
    /// The last saved frame's thumbnail.
    reference: Option<Luma<32, 24>>,
}

impl Collector {
    /// A collector for `camera`, saving into [`CollectConfig::dir`] (created on the first save).
    /// Counts the files already there toward the caps; an unreadable folder is logged and
    /// counted as empty.
    pub fn new(camera: CameraId, config: &CollectConfig, data_dir: &Path) -> Self {
        let dir = config.dir(&camera, data_dir);
        let (files, bytes) = folder_usage(&dir).unwrap_or_else(|err| {
            log::warn!(
                "camera {camera}: cannot list {} to count collected frames: {err}",
                dir.display()
            );
            (0, 0)
        });
        log::info!(
            "camera {camera}: collecting frames for labelling into {} ({files} files, {bytes} bytes there)",
            dir.display()
        );
        let mut collector = Collector {
            camera,
            dir,
            every: Duration::from_secs(config.every_s),
            min_change: config.min_change,
            max_files: config.max_files,
            max_bytes: config.max_bytes,
            files,
            bytes,
            full: false,
            failing: false,
            last_attempt: None,
            last_stamp: 0,
            thumbnail: Thumbnail::new(),
            reference: None,
        };
        // A folder already at a cap stops collecting from the start.
        collector.fits(1);
        collector
    }

    /// Whether to save the frame whose decoded (cropped) image is `image`, seen at `now`. A yes
    /// starts the next interval; call [`Collector::save`] with the frame's JPEG then.
    ///
    /// Cheap while the interval runs or after a cap: no thumbnail, no allocation.
    pub fn wants(&mut self, image: &RgbImage, now: Instant) -> bool {
        let waiting = self
            .last_attempt
            .is_some_and(|last| now.saturating_duration_since(last) < self.every);
        if self.full || waiting || image.width() == 0 || image.height() == 0 {
            return false;
        }
        self.thumbnail.update(image);
        // A near-duplicate does not start the interval: the next frame that differs is saved.
        let duplicate = self
            .reference
            .as_ref()
            .is_some_and(|reference| self.thumbnail.difference(reference) < self.min_change);
        if duplicate {
            return false;
        }
        self.last_attempt = Some(now);
        true
    }

    /// Writes `jpeg`, the frame [`Collector::wants`] accepted, as `<camera>-<millis>.jpg` named
    /// after `captured_at`. Logs a write error and carries on.
    pub fn save(&mut self, jpeg: &[u8], captured_at: SystemTime) {
        let len = jpeg.len() as u64;
        if !self.fits(len) {
            return;
        }
        let millis = captured_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let stamp = millis.max(self.last_stamp + 1);
        // 13 digits last until the year 2286; the padding keeps names sorting by time after that.
        let path = self.dir.join(format!("{}-{stamp:013}.jpg", self.camera));
        match write_whole(&self.dir, &path, jpeg) {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    log::info!("camera {}: saving frames for labelling again", self.camera);
                }
                log::debug!("camera {}: saved {}", self.camera, path.display());
                self.files += 1;
                self.bytes += len;
                self.last_stamp = stamp;
                self.reference = Some(*self.thumbnail.luma());
                self.fits(1);
            }
            Err(err) if self.failing => log::debug!(
                "camera {}: cannot save a frame for labelling as {}: {err}",
                self.camera,
                path.display()
            ),
            Err(err) => {
                self.failing = true;
                log::warn!(
                    "camera {}: cannot save a frame for labelling as {}: {err} (retried every \
                     collect.every_s, logged again once saving works; classification goes on)",
                    self.camera,
                    path.display()
                );
            }
        }
    }

    /// Whether one more file of `len` bytes stays within the caps; if not, stops collecting and
    /// says so (once).
    fn fits(&mut self, len: u64) -> bool {
        let cap = if self.files >= self.max_files {
            format!("max_files = {}", self.max_files)
        } else if self.bytes.saturating_add(len) > self.max_bytes {
            format!("max_bytes = {}", self.max_bytes)
        } else {
            return true;
        };
        if !self.full {
            self.full = true;
            log::info!(
                "camera {}: collecting stopped at {cap}: {} holds {} files, {} bytes; \
                 move them out (label them) and restart edgeclass to collect more",
                self.camera,
                self.dir.display(),
                self.files,
                self.bytes
            );
        }
        false
    }
}

/// Files and bytes in `dir`, not counting hidden files (such as interrupted temporary files); a
/// missing folder holds nothing.
fn folder_usage(dir: &Path) -> io::Result<(u64, u64)> {
    let entries = match fs::read_dir(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        entries => entries?,
    };
    let (mut files, mut bytes) = (0, 0);
    for entry in entries {
        let entry = entry?;
        let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
        let metadata = entry.metadata()?;
        if metadata.is_file() && !hidden {
            files += 1;
            bytes += metadata.len();
        }
    }
    Ok((files, bytes))
}

/// Writes `data` to `path` so that no reader sees part of it: into a hidden temporary file in
/// `dir`, flushed to disk (a power cut must not leave a truncated image under the final name),
/// then renamed. Never replaces an existing file.
fn write_whole(dir: &Path, path: &Path, data: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".collect-").suffix(".part");
    // tempfile defaults to 0600; a labelling tool may run as another user (the umask still
    // applies, e.g. the service's 0077).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o644));
    }
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(data)?;
    file.as_file().sync_all()?;
    file.persist_noclobber(path).map_err(|err| err.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn collector_in(dir: &Path, every_s: u64, max_files: u64, max_bytes: u64) -> Collector {
        let config = CollectConfig {
            enabled: true,
            dir: Some(dir.to_path_buf()),
            every_s,
            max_files,
            max_bytes,
            min_change: 0.02,
        };
        Collector::new(
            "cam".parse().expect("camera id"),
            &config,
            Path::new("/unused"),
        )
    }

    fn gray(level: u8) -> RgbImage {
        RgbImage::from_pixel(64, 48, image::Rgb([level; 3]))
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list the collect dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// Offers `image` at `now` and saves `jpeg` if wanted; whether it was wanted. Each save has
    /// its own capture millisecond, as frames of a real camera do.
    fn offer(collector: &mut Collector, image: &RgbImage, now: Instant, jpeg: &[u8]) -> bool {
        static CAPTURED_MS: AtomicU64 = AtomicU64::new(1_700_000_000_000);
        let wanted = collector.wants(image, now);
        if wanted {
            let millis = CAPTURED_MS.fetch_add(1, Ordering::Relaxed);
            collector.save(jpeg, UNIX_EPOCH + Duration::from_millis(millis));
        }
        wanted
    }

    #[test]
    fn at_most_one_frame_per_interval() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut collector = collector_in(dir.path(), 10, 100, 1 << 20);
        let start = Instant::now();
        let (a, b, c) = (gray(0), gray(100), gray(200));
        assert!(offer(&mut collector, &a, start, b"a"));
        assert!(!offer(
            &mut collector,
            &b,
            start + Duration::from_secs(9),
            b"b"
        ));
        assert!(offer(
            &mut collector,
            &b,
            start + Duration::from_secs(10),
            b"b"
        ));
        assert!(!offer(
            &mut collector,
            &c,
            start + Duration::from_secs(15),
            b"c"
        ));
        assert_eq!(names(dir.path()).len(), 2);
    }

    #[test]
    fn near_duplicates_of_the_last_saved_frame_are_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut collector = collector_in(dir.path(), 10, 100, 1 << 20);
        let start = Instant::now();
        assert!(offer(&mut collector, &gray(100), start, b"first"));
        // Interval over, but the scene is the same (1/255 is below min_change 0.02).
        let later = start + Duration::from_secs(10);
        assert!(!offer(&mut collector, &gray(100), later, b"same"));
        assert!(!offer(&mut collector, &gray(101), later, b"almost"));
        // A duplicate did not restart the interval: the first changed frame is taken at once.
        let changed = later + Duration::from_millis(100);
        assert!(offer(&mut collector, &gray(160), changed, b"changed"));
        let contents: Vec<Vec<u8>> = names(dir.path())
            .iter()
            .map(|name| fs::read(dir.path().join(name)).expect("read a saved file"))
            .collect();
        assert_eq!(contents, [b"first".to_vec(), b"changed".to_vec()]);
    }

    #[test]
    fn the_file_count_cap_stops_collecting_and_holds_across_restarts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut collector = collector_in(dir.path(), 0, 2, 1 << 20);
        let now = Instant::now();
        assert!(offer(&mut collector, &gray(0), now, b"0"));
        assert!(offer(&mut collector, &gray(100), now, b"1"));
        assert!(!offer(&mut collector, &gray(200), now, b"2"));
        assert_eq!(names(dir.path()).len(), 2);

        let mut restarted = collector_in(dir.path(), 0, 2, 1 << 20);
        assert!(!offer(&mut restarted, &gray(50), now, b"3"));
        let mut raised = collector_in(dir.path(), 0, 3, 1 << 20);
        assert!(offer(&mut raised, &gray(50), now, b"3"));
        assert_eq!(names(dir.path()).len(), 3);
    }

    #[test]
    fn the_byte_cap_refuses_a_file_that_would_exceed_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut collector = collector_in(dir.path(), 0, 100, 150);
        let now = Instant::now();
        assert!(offer(&mut collector, &gray(0), now, &[1; 100]));
        // 100 + 60 > 150: not written, and collecting stops, smaller frames included.
        assert!(offer(&mut collector, &gray(100), now, &[2; 60]));
        assert!(!offer(&mut collector, &gray(200), now, &[3; 10]));
        let names = names(dir.path());
        assert_eq!(names.len(), 1);
        assert_eq!(
            fs::read(dir.path().join(&names[0])).expect("read"),
            [1; 100]
        );
    }

    #[test]
    fn files_are_named_by_camera_and_capture_time_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut collector = collector_in(dir.path(), 0, 100, 1 << 20);
        let captured_at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let now = Instant::now();
        for (level, data) in [(0, b"a"), (100, b"b")] {
            assert!(collector.wants(&gray(level), now));
            collector.save(data, captured_at);
        }
        // Same millisecond: the second name is one millisecond later; no temporary file is left.
        assert_eq!(
            names(dir.path()),
            ["cam-1700000000123.jpg", "cam-1700000000124.jpg"]
        );
        assert_eq!(
            fs::read(dir.path().join("cam-1700000000124.jpg")).expect("read"),
            b"b"
        );
    }

    #[test]
    fn a_write_error_is_retried_at_the_next_interval() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The folder cannot be created: a file is in its way.
        let blocked = dir.path().join("blocked");
        fs::write(&blocked, b"not a folder").expect("write a file");
        let mut collector = collector_in(&blocked.join("unlabelled"), 10, 100, 1 << 20);
        let start = Instant::now();
        assert!(offer(&mut collector, &gray(0), start, b"a"));
        assert!(!collector.wants(&gray(100), start + Duration::from_secs(1)));
        fs::remove_file(&blocked).expect("clear the way");
        // Nothing was saved, so the same scene is not a duplicate.
        assert!(offer(
            &mut collector,
            &gray(0),
            start + Duration::from_secs(10),
            b"a"
        ));
        assert_eq!(names(&blocked.join("unlabelled")).len(), 1);
    }

    #[test]
    fn empty_images_are_never_wanted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut collector = collector_in(dir.path(), 0, 100, 1 << 20);
        assert!(!collector.wants(&RgbImage::new(0, 0), Instant::now()));
    }

    #[test]
    fn the_default_folder_is_per_camera_in_the_data_dir() {
        let camera: CameraId = "porch".parse().expect("camera id");
        assert_eq!(
            CollectConfig::default().dir(&camera, Path::new("/var/lib/edgeclass")),
            Path::new("/var/lib/edgeclass/datasets/porch/unlabelled")
        );
    }
}
