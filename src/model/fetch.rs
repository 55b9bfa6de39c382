//! Model weights acquisition: download the ImageNet weights from the Hugging Face hub (or a
//! mirror), verify their SHA-256 and keep them in the data directory.
//!
//! A download streams into a temporary file next to the destination while hashing, and is
//! renamed into place only once the hash matches, so the destination path never holds a partial
//! or corrupt file, even after a power cut mid-download.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::sysexits::Sysexit;

/// Where a weights file comes from and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsSource {
    /// Hub root, e.g. `https://huggingface.co` or a mirror serving the same URL layout.
    pub base_url: String,
    /// Repository on the hub, `owner/name`.
    pub repo: String,
    /// Commit of the repository, pinned so the hash below stays valid.
    pub revision: String,
    /// File inside the repository.
    pub file: String,
    /// Expected SHA-256, lowercase or uppercase hex.
    pub sha256: String,
    /// Expected size in bytes, used for progress and truncation checks when the server does
    /// not send a `Content-Length`.
    pub size: Option<u64>,
}

impl Default for WeightsSource {
    /// torchvision's ImageNet-1k ResNet-18 weights as republished by timm, pinned to a commit.
    fn default() -> Self {
        Self {
            base_url: "https://huggingface.co".to_owned(),
            repo: "timm/resnet18.tv_in1k".to_owned(),
            revision: "a987fd6b60f845221bfff84b6f0191273ba56ead".to_owned(),
            file: "model.safetensors".to_owned(),
            sha256: "694f673df6520a3158624e8a89af086f59923ee4cd7436fe5bc3bc71d295ad81".to_owned(),
            size: Some(46_807_446),
        }
    }
}

impl WeightsSource {
    /// The hub URL of the file: `{base_url}/{repo}/resolve/{revision}/{file}`.
    pub fn url(&self) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.base_url.trim_end_matches('/'),
            self.repo,
            self.revision,
            self.file
        )
    }
}

/// Why fetching or verifying a weights file failed. Every variant names the URL or path.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered with a non-success status.
    #[error("downloading {url} failed: the server answered HTTP status {status}")]
    Http {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// Connecting, a timeout, TLS or a broken connection.
    #[error("downloading {url} failed")]
    Network {
        /// The URL requested.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: ureq::Error,
    },
    /// The downloaded bytes do not hash to the expected value.
    #[error(
        "the file downloaded from {url} has SHA-256 {actual}, expected {expected}: \
         the download was deleted"
    )]
    Checksum {
        /// The URL downloaded.
        url: String,
        /// The SHA-256 the [`WeightsSource`] expects, lowercase hex.
        expected: String,
        /// The SHA-256 of the bytes received, lowercase hex.
        actual: String,
    },
    /// The connection ended before the announced number of bytes arrived.
    #[error(
        "downloading {url} stopped after {got} of {expected_len} bytes: \
         the partial download was deleted"
    )]
    Truncated {
        /// The URL downloaded.
        url: String,
        /// Bytes announced by `Content-Length` (or [`WeightsSource::size`] without one).
        expected_len: u64,
        /// Bytes received.
        got: u64,
    },
    /// A local file operation failed; `action` says which ("writing", "reading", ...).
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, e.g. `creating the directory`.
        action: &'static str,
        /// The file or directory acted on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// The kind of failure, for the process exit status.
    pub fn sysexit(&self) -> Sysexit {
        match self {
            Self::Http { .. } | Self::Network { .. } => Sysexit::Unavailable,
            Self::Checksum { .. } | Self::Truncated { .. } => Sysexit::DataErr,
            Self::Io { .. } => Sysexit::IoErr,
        }
    }
}

/// Where edgeclass keeps its state (models, and frames collected for labelling under
/// `datasets/`): `$STATE_DIRECTORY` (its first entry if colon-separated) when
/// set (systemd's `StateDirectory=`), else `/var/lib/edgeclass` for root (so `sudo edgeclass
/// fetch-model` fills the service's state directory), else the XDG data dir
/// (`dirs::data_dir()/edgeclass`), else `/var/lib/edgeclass`.
pub fn data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let user_data_dir = if root { None } else { dirs::data_dir() };
    data_dir_from(std::env::var_os("STATE_DIRECTORY"), user_data_dir)
}

fn data_dir_from(state_directory: Option<OsString>, user_data_dir: Option<PathBuf>) -> PathBuf {
    state_directory
        .and_then(|dirs| std::env::split_paths(&dirs).find(|dir| !dir.as_os_str().is_empty()))
        .or_else(|| user_data_dir.map(|dir| dir.join("edgeclass")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/edgeclass"))
}

/// Connecting includes DNS; a hub or mirror that takes longer is as good as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the server (and the hub's redirect to its CDN) to start answering.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// A stalled transfer: no byte for this long. There is deliberately no total budget, since
/// 47 MB over a slow edge uplink can legitimately take many minutes.
const READ_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Partial downloads untouched for this long belong to a dead process (a live one writes at
/// least every `READ_STALL_TIMEOUT`), so they are removed instead of filling the SD card.
const STALE_PARTIAL_AGE: Duration = Duration::from_secs(10 * 60);
const PARTIAL_SUFFIX: &str = ".part";
/// Connections tried per download: one that drops after delivering bytes is resumed from
/// where it stopped (HTTP Range), up to this many times in all.
const DOWNLOAD_ATTEMPTS: u32 = 4;
const COPY_BUFFER_LEN: usize = 64 * 1024;

/// Downloads `source` to `dest` and returns `dest`.
///
/// The bytes go to a temporary file in `dest`'s directory (created if missing), are hashed on
/// the way, fsynced, and renamed onto `dest` only after the SHA-256 matches; on every error the
/// temporary file is removed. An existing `dest` whose hash already matches is reused without
/// contacting the server. Redirects (the hub's CDN) are followed. Progress is an indicatif bar on
/// stderr when `progress` is true and stderr is a terminal, otherwise `info` log lines at 25%
/// steps. A connection that drops after delivering bytes is resumed with an HTTP Range request
/// (a server that answers with the whole file again starts it over); the SHA-256 covers every
/// byte either way.
pub fn download(
    source: &WeightsSource,
    dest: &Path,
    progress: bool,
) -> Result<PathBuf, FetchError> {
    if existing_matches(source, dest)? {
        log::info!(
            "{} is already present and verified; not downloading",
            dest.display()
        );
        return Ok(dest.to_path_buf());
    }
    let dir = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io_error("creating the directory", dir))?;
    let partial_prefix = partial_prefix(dest);
    remove_stale_partials(dir, &partial_prefix);

    let url = source.url();
    let mut partial = partial_file_builder(&partial_prefix)
        .tempfile_in(dir)
        .map_err(io_error("creating a temporary file in", dir))?;
    let partial_path = partial.path().to_path_buf();
    let mut reporter = Progress::start(progress, &url, &source.file, source.size);
    let mut hasher = Sha256::new();
    let mut announced_len: Option<u64>;
    let mut attempt = 0;
    loop {
        attempt += 1;
        // After a dropped connection, ask only for the rest (HTTP Range).
        let offset = reporter.done;
        let mut request = http_agent().get(&url);
        if offset > 0 {
            request = request.header("Range", &format!("bytes={offset}-"));
        }
        let response = request.call().map_err(|source| FetchError::Network {
            url: url.clone(),
            source,
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Http {
                url,
                status: status.as_u16(),
            });
        }
        let resumed = offset > 0 && status.as_u16() == 206;
        if offset > 0 && !resumed {
            // The server sent the whole file again: start over.
            let file = partial.as_file_mut();
            file.set_len(0)
                .and_then(|()| file.seek(io::SeekFrom::Start(0)).map(drop))
                .map_err(io_error("truncating", &partial_path))?;
            hasher = Sha256::new();
            reporter.rewind();
        }
        let base = if resumed { offset } else { 0 };
        announced_len = response.body().content_length().map(|len| base + len);
        reporter.set_total(announced_len.or(source.size));
        let copied = copy_hashing(
            response.into_body().into_reader(),
            partial.as_file_mut(),
            &mut hasher,
            &mut reporter,
        );
        // A connection that delivered bytes and then dropped is worth resuming.
        let resumable = attempt < DOWNLOAD_ATTEMPTS && reporter.done > offset;
        match copied {
            Ok(()) => match announced_len.or(source.size) {
                // The body ended early without an error (the peer closed the connection).
                Some(expected) if reporter.done < expected && resumable => {
                    log::warn!(
                        "downloading {url} stopped after {} of {expected} bytes; resuming",
                        reporter.done
                    );
                }
                _ => break,
            },
            Err(CopyError::Read(err)) => {
                let err = ureq::Error::from(err);
                if resumable {
                    log::warn!(
                        "downloading {url} stopped after {} bytes ({err}); resuming",
                        reporter.done
                    );
                    continue;
                }
                reporter.finish();
                // ureq reports a connection closed before `Content-Length` bytes as an EOF.
                let closed_early =
                    matches!(&err, ureq::Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof);
                return Err(match (closed_early, announced_len) {
                    (true, Some(expected_len)) => FetchError::Truncated {
                        url,
                        expected_len,
                        got: reporter.done,
                    },
                    _ => FetchError::Network { url, source: err },
                });
            }
            Err(CopyError::Write(source)) => {
                return Err(FetchError::Io {
                    action: "writing",
                    path: partial_path,
                    source,
                })
            }
        }
    }
    reporter.finish();
    let (actual, got) = (format!("{:x}", hasher.finalize()), reporter.done);
    if let Some(expected_len) = announced_len.or(source.size) {
        if got < expected_len {
            return Err(FetchError::Truncated {
                url,
                expected_len,
                got,
            });
        }
    }
    if !actual.eq_ignore_ascii_case(&source.sha256) {
        if let Err(err) = partial.close() {
            log::warn!(
                "could not delete the corrupt download {}: {err}",
                partial_path.display()
            );
        }
        return Err(FetchError::Checksum {
            url,
            expected: source.sha256.to_ascii_lowercase(),
            actual,
        });
    }

    partial
        .as_file()
        .sync_all()
        .map_err(io_error("flushing", &partial_path))?;
    partial.persist(dest).map_err(|err| FetchError::Io {
        action: "renaming the verified download onto",
        path: dest.to_path_buf(),
        source: err.error,
    })?;
    // The rename itself is durable only once the directory is synced; losing it would merely
    // mean downloading again, so a failure here is not worth failing the whole fetch.
    if let Err(err) = File::open(dir).and_then(|d| d.sync_all()) {
        log::warn!("could not sync the directory {}: {err}", dir.display());
    }
    log::info!("downloaded and verified {} ({got} bytes)", dest.display());
    Ok(dest.to_path_buf())
}

/// The SHA-256 of a file as lowercase hex, read in chunks (never the whole file in memory).
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(io_error("opening", path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_error("reading", path))?;
    Ok(format!("{:x}", hasher.finalize()))
}

fn existing_matches(source: &WeightsSource, dest: &Path) -> Result<bool, FetchError> {
    match fs::metadata(dest) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io_error("checking", dest)(err)),
        Ok(_) => {
            let actual = sha256_file(dest)?;
            let matches = actual.eq_ignore_ascii_case(&source.sha256);
            if !matches {
                log::warn!(
                    "{} has SHA-256 {actual}, expected {}; downloading it again",
                    dest.display(),
                    source.sha256
                );
            }
            Ok(matches)
        }
    }
}

fn http_agent() -> ureq::Agent {
    ureq::config::Config::builder()
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(RESPONSE_TIMEOUT))
        .timeout_per_read(Some(READ_STALL_TIMEOUT))
        // Statuses are turned into `FetchError::Http` here, with the URL attached.
        .http_status_as_error(false)
        .user_agent(concat!("edgeclass/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// Temporary files are hidden siblings of the destination: `.model.safetensors.XXXXXX.part`.
fn partial_prefix(dest: &Path) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(dest.file_name().unwrap_or(dest.as_os_str()));
    prefix.push(".");
    prefix
}

fn partial_file_builder(prefix: &OsString) -> tempfile::Builder<'_, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(PARTIAL_SUFFIX);
    // tempfile defaults to 0600; the model must stay readable by the daemon's own user when
    // `fetch-model` runs as root.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o644));
    }
    builder
}

/// Best effort: a leftover that cannot be removed must not stop a fresh download.
fn remove_stale_partials(dir: &Path, prefix: &OsString) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = prefix.as_encoded_bytes();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if !(name.starts_with(prefix) && name.ends_with(PARTIAL_SUFFIX.as_bytes())) {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok());
        if age.is_some_and(|age| age >= STALE_PARTIAL_AGE) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => log::info!("removed the stale partial download {}", path.display()),
                Err(err) => log::warn!("could not remove {}: {err}", path.display()),
            }
        }
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Appends `reader` to `file`, hashing and counting what it writes.
fn copy_hashing(
    mut reader: impl Read,
    file: &mut File,
    hasher: &mut Sha256,
    progress: &mut Progress,
) -> Result<(), CopyError> {
    let mut buffer = vec![0u8; COPY_BUFFER_LEN];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(CopyError::Read(err)),
        };
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n]).map_err(CopyError::Write)?;
        progress.advance(n as u64);
    }
}

/// Download progress: an interactive bar, or log lines at each quarter for journals and pipes.
struct Progress {
    done: u64,
    total: Option<u64>,
    display: ProgressDisplay,
}

enum ProgressDisplay {
    Bar(ProgressBar),
    Log { url: String, next_quarter: u64 },
}

impl Progress {
    fn start(want_bar: bool, url: &str, name: &str, total: Option<u64>) -> Self {
        use std::io::IsTerminal;
        let display = if want_bar && io::stderr().is_terminal() {
            let bar = match total {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner(),
            };
            ProgressDisplay::Bar(bar.with_message(format!("downloading {name}")))
        } else {
            match total {
                Some(total) => log::info!("downloading {url} ({})", HumanBytes(total)),
                None => log::info!("downloading {url}"),
            }
            ProgressDisplay::Log {
                url: url.to_owned(),
                next_quarter: 1,
            }
        };
        Self {
            done: 0,
            total,
            display,
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        match &mut self.display {
            ProgressDisplay::Bar(bar) => bar.set_position(self.done),
            ProgressDisplay::Log { url, next_quarter } => {
                let Some(total) = self.total.filter(|&total| total > 0) else {
                    return;
                };
                while *next_quarter <= 4 && self.done * 4 >= total * *next_quarter {
                    log::info!(
                        "{url}: {}% ({} of {})",
                        *next_quarter * 25,
                        HumanBytes(self.done),
                        HumanBytes(total)
                    );
                    *next_quarter += 1;
                }
            }
        }
    }

    /// The size to report progress against, once the server announced it.
    fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
        if let (ProgressDisplay::Bar(bar), Some(total)) = (&self.display, total) {
            bar.set_length(total);
        }
    }

    /// Back to zero: the server restarted the file.
    fn rewind(&mut self) {
        self.done = 0;
        if let ProgressDisplay::Bar(bar) = &self.display {
            bar.set_position(0);
        }
    }

    fn finish(&self) {
        if let ProgressDisplay::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_follows_the_hub_layout_and_ignores_a_trailing_slash() {
        let source = WeightsSource::default();
        assert_eq!(
            source.url(),
            "https://huggingface.co/timm/resnet18.tv_in1k/resolve/\
             a987fd6b60f845221bfff84b6f0191273ba56ead/model.safetensors"
        );
        let mirror = WeightsSource {
            base_url: "http://mirror.lan:8080/hf/".to_owned(),
            ..WeightsSource::default()
        };
        assert!(mirror
            .url()
            .starts_with("http://mirror.lan:8080/hf/timm/resnet18.tv_in1k/resolve/"));
    }

    #[test]
    fn data_dir_prefers_state_directory_then_xdg_then_var_lib() {
        let xdg = Some(PathBuf::from("/home/pi/.local/share"));
        assert_eq!(
            data_dir_from(
                Some("/var/lib/edgeclass:/var/lib/other".into()),
                xdg.clone()
            ),
            PathBuf::from("/var/lib/edgeclass")
        );
        assert_eq!(
            data_dir_from(Some("".into()), xdg.clone()),
            PathBuf::from("/home/pi/.local/share/edgeclass")
        );
        assert_eq!(
            data_dir_from(None, xdg),
            PathBuf::from("/home/pi/.local/share/edgeclass")
        );
        assert_eq!(
            data_dir_from(None, None),
            PathBuf::from("/var/lib/edgeclass")
        );
    }

    #[test]
    fn sha256_hex_is_lowercase_and_zero_padded() {
        // FIPS 180-2's "abc" vector: its digest has bytes below 0x10 (01, 03, 00) and above 0x9f.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
