//! Model weights acquisition: download the ImageNet weights from the Hugging Face hub (or a
//! mirror), verify their SHA-256 and keep them in the data directory.
//!
//! A download streams into a partial file next to the destination while hashing, and is
//! renamed into place only once the hash matches, so the destination path never holds a partial
//! or corrupt file, even after a power cut mid-download. The partial file's name is fixed by the
//! destination and the expected hash, so a process killed mid-download (systemd's start
//! timeout, a power cut) leaves it for the next start to resume with an HTTP Range request.

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
    /// The connection ended before the announced number of bytes arrived. The bytes received
    /// are kept in the partial file, and the next attempt resumes from there.
    #[error(
        "downloading {url} stopped after {got} of {expected_len} bytes: \
         the next attempt resumes the partial download"
    )]
    Truncated {
        /// The URL downloaded.
        url: String,
        /// Bytes announced by `Content-Length` (or [`WeightsSource::size`] without one).
        expected_len: u64,
        /// Bytes received.
        got: u64,
    },
    /// Another process holds the lock on the partial file: it is downloading the same file.
    #[error(
        "another process is downloading into {}: wait for it to finish, then try again",
        path.display()
    )]
    Busy {
        /// The locked partial file.
        path: PathBuf,
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
            Self::Busy { .. } => Sysexit::TempFail,
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
/// Other downloads' partial files untouched for this long belong to a dead process (a live one
/// writes at least every `READ_STALL_TIMEOUT`), so they are removed instead of filling the SD
/// card. The current download's own partial file is resumed, whatever its age.
const STALE_PARTIAL_AGE: Duration = Duration::from_secs(10 * 60);
const PARTIAL_SUFFIX: &str = ".part";
/// The partial file's sidecar: `.model.safetensors.<tag>.part.meta`.
const PARTIAL_META_SUFFIX: &str = ".part.meta";
/// Connections tried per download: one that drops after delivering bytes is resumed from
/// where it stopped (HTTP Range), up to this many times in all.
const DOWNLOAD_ATTEMPTS: u32 = 4;
const COPY_BUFFER_LEN: usize = 64 * 1024;

/// Downloads `source` to `dest` and returns `dest`.
///
/// The bytes go to a partial file next to `dest` (its directory is created if missing), named
/// after `dest` and the expected SHA-256 (`.model.safetensors.694f673d.part`), with a sidecar
/// (`….part.meta`) holding the URL and the server's validators (ETag, Last-Modified, length).
/// A partial file left by an earlier process (killed by systemd's start timeout, a power cut)
/// is resumed with an HTTP Range request guarded by `If-Range`, so a file that changed on the
/// server is downloaded from the start instead of being stitched onto an old prefix; a server
/// that answers with the whole file (200) starts it over. Within one process a connection that
/// drops after delivering bytes is resumed the same way. The SHA-256 covers the whole file
/// (the resumed prefix is hashed first); a resumed file that does not match is downloaded once
/// more from the start before a checksum error is reported. The verified file is fsynced and
/// renamed onto `dest`, so `dest` never holds a partial or corrupt file; the partial file is
/// kept after a network failure (for the next attempt) and removed on a checksum or local I/O
/// error. A second process downloading the same file at the same time fails with
/// [`FetchError::Busy`] (the partial file is locked while in use).
///
/// An existing `dest` whose hash already matches is reused without contacting the server.
/// Redirects (the hub's CDN) are followed. Progress is an indicatif bar on stderr when
/// `progress` is true and stderr is a terminal, otherwise `info` log lines at 25% steps.
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
    let mut partial = PartialDownload::open(dir, dest, &source.sha256)?;
    remove_stale_partials(dir, &partial_prefix(dest), &partial);

    let mut reporter = Progress::start(progress, &source.url(), &source.file, source.size);
    let fetched = fetch_verified(source, &mut partial, &mut reporter);
    reporter.finish();
    let got = match fetched {
        Ok(got) => got,
        Err(err) => {
            partial.after_error(&err);
            return Err(err);
        }
    };
    partial.persist(dir, dest)?;
    log::info!("downloaded and verified {} ({got} bytes)", dest.display());
    Ok(dest.to_path_buf())
}

/// Fills `partial` with the whole file and checks its SHA-256; returns its length. A file put
/// together from a resumed prefix that fails the check is downloaded once more from the start.
fn fetch_verified(
    source: &WeightsSource,
    partial: &mut PartialDownload,
    reporter: &mut Progress,
) -> Result<u64, FetchError> {
    let url = source.url();
    let mut from_start = false;
    loop {
        let fetched = fetch_rest(source, &url, partial, reporter, from_start)?;
        if fetched.sha256.eq_ignore_ascii_case(&source.sha256) {
            return Ok(fetched.len);
        }
        if fetched.resumed && !from_start {
            log::warn!(
                "the resumed download of {url} has SHA-256 {}, expected {}: \
                 downloading it once more from the start",
                fetched.sha256,
                source.sha256
            );
            from_start = true;
            continue;
        }
        return Err(FetchError::Checksum {
            url,
            expected: source.sha256.to_ascii_lowercase(),
            actual: fetched.sha256,
        });
    }
}

/// What [`fetch_rest`] put in the partial file.
struct Fetched {
    sha256: String,
    len: u64,
    /// Some of the bytes were appended to an earlier prefix (HTTP Range).
    resumed: bool,
}

/// Completes `partial` from the server: from the bytes already there (unless `from_start`),
/// then resuming after each dropped connection, up to [`DOWNLOAD_ATTEMPTS`] requests.
fn fetch_rest(
    source: &WeightsSource,
    url: &str,
    partial: &mut PartialDownload,
    reporter: &mut Progress,
    from_start: bool,
) -> Result<Fetched, FetchError> {
    let mut validators = if from_start {
        partial.restart(url, &Validators::default())?;
        Validators::default()
    } else {
        partial.resume_point(url)?
    };
    let mut hasher = Sha256::new();
    let prefix_len = partial.hash_prefix(&mut hasher)?;
    if prefix_len > 0 {
        log::info!(
            "resuming the partial download {} at {prefix_len} bytes",
            partial.path.display()
        );
    }
    reporter.rewind_to(prefix_len);
    let mut resumed = false;
    let mut attempt = 0;
    loop {
        let expected_len = validators.length.or(source.size);
        let offset = reporter.done;
        if offset > 0 && expected_len == Some(offset) {
            // Killed after the last byte but before the rename: nothing left to ask for.
            resumed = true;
            break;
        }
        attempt += 1;
        let mut request = http_agent().get(url);
        if offset > 0 {
            // The prefix came from this server's answer with these validators: ask for the rest
            // only if the file is still that one.
            request = request.header("Range", &format!("bytes={offset}-"));
            if let Some(if_range) = validators.if_range() {
                request = request.header("If-Range", if_range);
            }
        }
        let response = request.call().map_err(|source| FetchError::Network {
            url: url.to_owned(),
            source,
        })?;
        let status = response.status().as_u16();
        if status == 416 && offset > 0 && attempt < DOWNLOAD_ATTEMPTS {
            log::warn!(
                "{url} cannot continue the partial download at {offset} bytes (HTTP 416); \
                 starting it over"
            );
            validators = start_over(partial, url, Validators::default(), &mut hasher, reporter)?;
            continue;
        }
        if !response.status().is_success() {
            return Err(FetchError::Http {
                url: url.to_owned(),
                status,
            });
        }
        let answered = Validators::of(&response);
        let continues = offset > 0
            && status == 206
            && content_range(&response).map(|(start, _)| start) == Some(offset)
            && answered.same_file_as(&validators);
        if continues {
            resumed = true;
            validators.length = validators.length.or(answered.length);
        } else {
            if offset > 0 && status == 206 {
                // A 206 we did not ask for (another range, or another ETag): its body does not
                // continue the prefix, and the next request starts over.
                log::warn!("{url} answered the Range request with another part; starting over");
                validators =
                    start_over(partial, url, Validators::default(), &mut hasher, reporter)?;
                if attempt < DOWNLOAD_ATTEMPTS {
                    continue;
                }
                return Err(FetchError::Http {
                    url: url.to_owned(),
                    status,
                });
            }
            if offset > 0 {
                log::info!("{url} sent the whole file again (HTTP {status}); starting over");
            }
            // A fresh start: the prefix on disk, if any, is from another answer.
            validators = start_over(partial, url, answered, &mut hasher, reporter)?;
        }
        let offset = reporter.done;
        let expected_len = validators.length.or(source.size);
        reporter.set_total(expected_len);
        let copied = copy_hashing(
            response.into_body().into_reader(),
            &mut partial.file,
            &mut hasher,
            reporter,
        );
        // A connection that delivered bytes and then dropped is worth resuming.
        let resumable = attempt < DOWNLOAD_ATTEMPTS && reporter.done > offset;
        match copied {
            Ok(()) => match expected_len {
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
                // ureq reports a connection closed before `Content-Length` bytes as an EOF.
                let closed_early =
                    matches!(&err, ureq::Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof);
                return Err(match (closed_early, expected_len) {
                    (true, Some(expected_len)) => FetchError::Truncated {
                        url: url.to_owned(),
                        expected_len,
                        got: reporter.done,
                    },
                    _ => FetchError::Network {
                        url: url.to_owned(),
                        source: err,
                    },
                });
            }
            Err(CopyError::Write(source)) => {
                return Err(FetchError::Io {
                    action: "writing",
                    path: partial.path.clone(),
                    source,
                })
            }
        }
    }
    let got = reporter.done;
    if let Some(expected_len) = validators.length.or(source.size) {
        if got < expected_len {
            return Err(FetchError::Truncated {
                url: url.to_owned(),
                expected_len,
                got,
            });
        }
    }
    Ok(Fetched {
        sha256: format!("{:x}", hasher.finalize()),
        len: got,
        resumed,
    })
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

/// Empties `partial` for a download from byte 0 recorded with `validators`, and returns them.
fn start_over(
    partial: &mut PartialDownload,
    url: &str,
    validators: Validators,
    hasher: &mut Sha256,
    reporter: &mut Progress,
) -> Result<Validators, FetchError> {
    partial.restart(url, &validators)?;
    *hasher = Sha256::new();
    reporter.rewind_to(0);
    Ok(validators)
}

/// Partial files are hidden siblings of the destination: `.model.safetensors.<tag>.part`.
fn partial_prefix(dest: &Path) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(dest.file_name().unwrap_or(dest.as_os_str()));
    prefix.push(".");
    prefix
}

/// The file a download is written into before it is verified, and its sidecar. Its name is
/// fixed by the destination and the expected SHA-256, so a later process finds and resumes it;
/// it is locked (`flock`) while open, so two processes never write into it at once.
struct PartialDownload {
    file: File,
    path: PathBuf,
    /// The sidecar ([`PARTIAL_META_SUFFIX`]): the URL and the server's validators.
    meta_path: PathBuf,
}

impl PartialDownload {
    /// Opens (or creates, mode 0644 like the model it becomes, so the daemon's own user can
    /// read what `sudo edgeclass fetch-model` wrote) and locks the partial file for `dest`.
    fn open(dir: &Path, dest: &Path, sha256: &str) -> Result<Self, FetchError> {
        use std::os::unix::fs::OpenOptionsExt;
        // Only hex digits reach the file name, whatever the configured hash holds.
        let tag: String = sha256
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(8)
            .collect();
        let named = |suffix: &str| {
            let mut name = partial_prefix(dest);
            name.push(tag.to_ascii_lowercase());
            name.push(suffix);
            dir.join(name)
        };
        let (path, meta_path) = (named(PARTIAL_SUFFIX), named(PARTIAL_META_SUFFIX));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // The bytes of an earlier attempt are what gets resumed.
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(io_error("opening the partial download", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(FetchError::Busy { path }),
            Err(fs::TryLockError::Error(source)) => {
                return Err(FetchError::Io {
                    action: "locking",
                    path,
                    source,
                })
            }
        }
        Ok(Self {
            file,
            path,
            meta_path,
        })
    }

    /// The validators of the bytes already in the file when they came from `url`; otherwise the
    /// file is emptied (another URL, or no readable sidecar) and the validators are empty.
    fn resume_point(&mut self, url: &str) -> Result<Validators, FetchError> {
        let len = self
            .file
            .metadata()
            .map_err(io_error("checking", &self.path))?
            .len();
        if len == 0 {
            return Ok(Validators::default());
        }
        match fs::read_to_string(&self.meta_path)
            .ok()
            .and_then(|text| Validators::parse_sidecar(&text, url))
        {
            Some(validators) => Ok(validators),
            None => {
                log::info!(
                    "the partial download {} has no record of coming from {url}; starting over",
                    self.path.display()
                );
                self.restart(url, &Validators::default())?;
                Ok(Validators::default())
            }
        }
    }

    /// Feeds the bytes already in the file to `hasher`; returns how many. Appending continues
    /// after them.
    fn hash_prefix(&mut self, hasher: &mut Sha256) -> Result<u64, FetchError> {
        self.file
            .seek(io::SeekFrom::Start(0))
            .and_then(|_| io::copy(&mut self.file, hasher))
            .map_err(io_error("reading", &self.path))
    }

    /// Empties the file and records that what follows is `url`'s answer with `validators`.
    fn restart(&mut self, url: &str, validators: &Validators) -> Result<(), FetchError> {
        use std::os::unix::fs::OpenOptionsExt;
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(io::SeekFrom::Start(0)))
            .map_err(io_error("truncating", &self.path))?;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&self.meta_path)
            .and_then(|mut meta| meta.write_all(validators.sidecar(url).as_bytes()))
            .map_err(io_error("writing", &self.meta_path))
    }

    /// Renames the verified file onto `dest` and removes the sidecar.
    fn persist(self, dir: &Path, dest: &Path) -> Result<(), FetchError> {
        self.file
            .sync_all()
            .map_err(io_error("flushing", &self.path))?;
        fs::rename(&self.path, dest)
            .map_err(io_error("renaming the verified download onto", dest))?;
        remove_best_effort(&self.meta_path);
        // The rename itself is durable only once the directory is synced; losing it would
        // merely mean downloading again, so a failure here is not worth failing the whole fetch.
        if let Err(err) = File::open(dir).and_then(|d| d.sync_all()) {
            log::warn!("could not sync the directory {}: {err}", dir.display());
        }
        Ok(())
    }

    /// After a network failure the bytes are kept for the next attempt; after a checksum or
    /// local I/O error (a full disk) they are removed.
    fn after_error(self, err: &FetchError) {
        let keep = matches!(
            err,
            FetchError::Network { .. } | FetchError::Http { .. } | FetchError::Truncated { .. }
        ) && self.file.metadata().is_ok_and(|meta| meta.len() > 0);
        if keep {
            log::info!(
                "kept the partial download {}: the next attempt resumes it",
                self.path.display()
            );
        } else {
            remove_best_effort(&self.path);
            remove_best_effort(&self.meta_path);
        }
    }
}

fn remove_best_effort(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => log::warn!("could not remove {}: {err}", path.display()),
    }
}

/// What identifies the server's copy of a file, so a partial download is continued only from
/// the same copy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
    /// The whole file's length.
    length: Option<u64>,
}

impl Validators {
    /// From a 200 (`Content-Length`) or 206 (`Content-Range`'s total) answer.
    fn of(response: &ureq::http::Response<ureq::Body>) -> Self {
        let length = if response.status().as_u16() == 206 {
            content_range(response).and_then(|(_, total)| total)
        } else {
            response.body().content_length()
        };
        Self {
            etag: header(response, "etag"),
            last_modified: header(response, "last-modified"),
            length,
        }
    }

    /// The `If-Range` value: a strong ETag, else the Last-Modified date (a weak ETag cannot be
    /// used there, RFC 9110 13.1.5).
    fn if_range(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|etag| !etag.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }

    /// False when a validator both sides know differs: a server that ignores `If-Range` but
    /// answers a Range request for a changed file.
    fn same_file_as(&self, earlier: &Self) -> bool {
        let differs = |now: &Option<String>, then: &Option<String>| matches!((now, then), (Some(now), Some(then)) if now != then);
        !differs(&self.etag, &earlier.etag) && !differs(&self.last_modified, &earlier.last_modified)
    }

    /// The sidecar: `key value` lines, the URL first.
    fn sidecar(&self, url: &str) -> String {
        let mut text = format!("url {url}\n");
        if let Some(etag) = &self.etag {
            text.push_str(&format!("etag {etag}\n"));
        }
        if let Some(date) = &self.last_modified {
            text.push_str(&format!("last-modified {date}\n"));
        }
        if let Some(length) = self.length {
            text.push_str(&format!("length {length}\n"));
        }
        text
    }

    /// The validators of a sidecar written for `url`; `None` for another URL or a damaged file.
    fn parse_sidecar(text: &str, url: &str) -> Option<Self> {
        let mut validators = Self::default();
        let mut same_url = false;
        for line in text.lines() {
            let (key, value) = line.split_once(' ')?;
            match key {
                "url" => same_url = value == url,
                "etag" => validators.etag = Some(value.to_owned()),
                "last-modified" => validators.last_modified = Some(value.to_owned()),
                "length" => validators.length = Some(value.parse().ok()?),
                _ => return None,
            }
        }
        same_url.then_some(validators)
    }
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// `Content-Range: bytes START-END/TOTAL` as (START, TOTAL), TOTAL `None` for `*`.
fn content_range(response: &ureq::http::Response<ureq::Body>) -> Option<(u64, Option<u64>)> {
    let value = header(response, "content-range")?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Best effort: a leftover that cannot be removed must not stop a fresh download. Partial
/// files of other downloads into the same name (older versions' random names, another expected
/// SHA-256) are removed once untouched for [`STALE_PARTIAL_AGE`]; `current` is kept to resume.
fn remove_stale_partials(dir: &Path, prefix: &OsString, current: &PartialDownload) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = prefix.as_encoded_bytes();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        let partial = [PARTIAL_SUFFIX, PARTIAL_META_SUFFIX]
            .iter()
            .any(|suffix| name.ends_with(suffix.as_bytes()));
        if !name.starts_with(prefix)
            || !partial
            || path == current.path
            || path == current.meta_path
        {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok());
        if age.is_some_and(|age| age >= STALE_PARTIAL_AGE) {
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

    /// Back to `done` bytes: resuming a partial file, or the server restarted the file.
    fn rewind_to(&mut self, done: u64) {
        self.done = done;
        if let ProgressDisplay::Bar(bar) = &self.display {
            bar.set_position(done);
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
    fn sidecar_round_trips_and_rejects_another_url_or_damage() {
        let url = "http://127.0.0.1:8080/timm/r/resolve/abc/model.safetensors";
        let validators = Validators {
            etag: Some("\"v1\"".to_owned()),
            last_modified: Some("Wed, 02 Dec 2026 10:00:00 GMT".to_owned()),
            length: Some(46_807_446),
        };
        let text = validators.sidecar(url);
        assert_eq!(
            Validators::parse_sidecar(&text, url),
            Some(validators.clone())
        );
        assert_eq!(Validators::parse_sidecar(&text, "http://other/x"), None);
        assert_eq!(
            Validators::parse_sidecar(&text.replace("length 46807446", "length 46x"), url),
            None
        );
        assert_eq!(Validators::parse_sidecar("", url), None);
        let bare = Validators::default();
        assert_eq!(
            Validators::parse_sidecar(&bare.sidecar(url), url),
            Some(bare)
        );
    }

    #[test]
    fn if_range_uses_a_strong_etag_else_last_modified() {
        let date = "Wed, 02 Dec 2026 10:00:00 GMT";
        let strong = Validators {
            etag: Some("\"v1\"".to_owned()),
            last_modified: Some(date.to_owned()),
            length: None,
        };
        assert_eq!(strong.if_range(), Some("\"v1\""));
        let weak = Validators {
            etag: Some("W/\"v1\"".to_owned()),
            ..strong.clone()
        };
        assert_eq!(weak.if_range(), Some(date));
        assert_eq!(Validators::default().if_range(), None);
        // Validators only one side knows do not count as a change.
        assert!(strong.same_file_as(&Validators::default()));
        let changed = Validators {
            etag: Some("\"v2\"".to_owned()),
            ..strong.clone()
        };
        assert!(!changed.same_file_as(&strong));
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
