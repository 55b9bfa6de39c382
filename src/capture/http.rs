use std::time::{Duration, Instant};

use super::config::redact_url;
use super::runner::{Cancel, FrameSource};
use super::{CaptureError, Frame};

/// Snapshots larger than this are refused rather than buffered (a 4K JPEG is ~2 MB).
const MAX_SNAPSHOT_BYTES: u64 = 16 * 1024 * 1024;

/// `http(s)://...`: an IP camera's JPEG snapshot URL, fetched once per interval.
pub(super) struct HttpSource {
    url: String,
    /// `url` with any password masked, for origins and errors.
    shown_url: String,
    timeout: Duration,
    /// Keeps the connection alive between polls.
    agent: ureq::Agent,
}

impl HttpSource {
    pub(super) fn new(url: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(timeout))
            .timeout_global(Some(timeout))
            // Statuses are checked here so the error can say which one came back.
            .http_status_as_error(false)
            .user_agent(concat!("edgeclass/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        HttpSource {
            url: url.to_owned(),
            shown_url: redact_url(url),
            timeout,
            agent,
        }
    }

    fn error(&self, reason: impl Into<String>) -> CaptureError {
        CaptureError::Http {
            url: self.shown_url.clone(),
            reason: reason.into(),
        }
    }

    fn transport_error(&self, error: ureq::Error) -> CaptureError {
        match error {
            ureq::Error::Timeout(_) => CaptureError::HttpTimeout {
                url: self.shown_url.clone(),
                timeout_ms: self.timeout.as_millis() as u64,
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                CaptureError::HttpTimeout {
                    url: self.shown_url.clone(),
                    timeout_ms: self.timeout.as_millis() as u64,
                }
            }
            other => self.error(other.to_string()),
        }
    }

    fn fetch(&self) -> Result<Frame, CaptureError> {
        let mut response = self
            .agent
            .get(&self.url)
            .header("Accept", "image/jpeg, image/*")
            .call()
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.error(format!("HTTP status {status}")));
        }
        let content_type = response.body().mime_type().map(str::to_ascii_lowercase);
        let data = response
            .body_mut()
            .with_config()
            .limit(MAX_SNAPSHOT_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport_error(e))?;
        if data.is_empty() {
            return Err(CaptureError::Empty {
                origin: self.shown_url.clone(),
            });
        }
        check_content_type(content_type.as_deref(), &data).map_err(|reason| self.error(reason))?;
        Ok(Frame::encoded(data, self.shown_url.clone()))
    }
}

/// Fetches one snapshot from `url` as an HTTP camera does every interval (status, Content-Type,
/// size limit, empty body checked): for tools and the fuzz target of HTTP responses
/// (`fuzz/fuzz_targets/http_snapshot.rs`).
pub fn fetch_snapshot(url: &str, timeout: Duration) -> Result<Frame, CaptureError> {
    HttpSource::new(url, timeout).fetch()
}

/// Accepts `image/*`; for a missing or generic type, accepts bytes that look like an image.
/// Anything else (an HTML login page, an MJPEG stream) is an error that says what came back.
fn check_content_type(content_type: Option<&str>, data: &[u8]) -> Result<(), String> {
    match content_type {
        Some(image) if image.starts_with("image/") => Ok(()),
        None | Some("application/octet-stream") if image::guess_format(data).is_ok() => Ok(()),
        Some(stream) if stream.starts_with("multipart/") => Err(format!(
            "Content-Type {stream} is a video stream; use the camera's single-JPEG snapshot URL"
        )),
        Some(other) => Err(format!("expected an image, got Content-Type {other}")),
        None => Err("no Content-Type and the body is not a known image format".into()),
    }
}

impl FrameSource for HttpSource {
    fn next_frame(&mut self, due: Instant, cancel: &Cancel) -> Result<Option<Frame>, CaptureError> {
        if cancel.sleep_until(due) {
            return Ok(None);
        }
        self.fetch().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG_START: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];

    #[test]
    fn content_type_rules() {
        assert!(check_content_type(Some("image/jpeg"), b"anything").is_ok());
        assert!(check_content_type(None, JPEG_START).is_ok());
        assert!(check_content_type(Some("application/octet-stream"), JPEG_START).is_ok());
        let html = check_content_type(Some("text/html"), b"<html>").unwrap_err();
        assert!(html.contains("text/html"), "{html}");
        let stream = check_content_type(Some("multipart/x-mixed-replace"), JPEG_START).unwrap_err();
        assert!(stream.contains("snapshot"), "{stream}");
        assert!(check_content_type(None, b"plain text").is_err());
    }
}
