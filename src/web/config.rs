//! `[web]`: where the web page listens, who may use it, how large an upload may be.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::WebError;

/// `[web]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the web page and its API.
    pub enabled: bool,
    /// Address and port; loopback unless told otherwise.
    pub listen: SocketAddr,
    /// A shared secret: sent as `Authorization: Bearer TOKEN`, or as the password of HTTP Basic
    /// authentication (any user name), which browsers ask for.
    pub token: Option<String>,
    /// A file of `user:password` lines (HTTP Basic authentication); `#` starts a comment.
    pub password_file: Option<PathBuf>,
    /// Listening beyond loopback without a token or password file needs this set, to say that
    /// anyone on the network may see the cameras and change thresholds.
    pub allow_unauthenticated: bool,
    /// Largest request body (an uploaded image) in bytes; larger ones get 413.
    pub max_upload_bytes: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            password_file: None,
            allow_unauthenticated: false,
            max_upload_bytes: 10 * 1024 * 1024,
        }
    }
}

impl WebConfig {
    /// Checks the keys: credentials when listening beyond loopback, a non-empty token, a
    /// sensible upload limit.
    pub fn validate(&self) -> Result<(), WebError> {
        let invalid = |key: &'static str, message: &str| WebError::Config {
            key,
            message: message.to_string(),
        };
        if self.token.as_deref() == Some("") {
            return Err(invalid("web.token", "must not be empty"));
        }
        if self.max_upload_bytes < 1024 {
            return Err(invalid(
                "web.max_upload_bytes",
                "must be at least 1024 (an image needs room)",
            ));
        }
        if self.enabled
            && !self.listen.ip().is_loopback()
            && !self.has_credentials()
            && !self.allow_unauthenticated
        {
            return Err(invalid(
                "web.listen",
                "listening beyond loopback needs web.token or web.password_file \
                 (or web.allow_unauthenticated = true to let anyone on the network in)",
            ));
        }
        Ok(())
    }

    /// Whether a token or a password file is configured.
    pub fn has_credentials(&self) -> bool {
        self.token.is_some() || self.password_file.is_some()
    }
}

/// The users of a password file: `user:password` per line.
pub(super) fn read_password_file(file: &Path) -> Result<Vec<(String, String)>, WebError> {
    let malformed = |message: String| WebError::PasswordFile {
        file: file.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| malformed(e.to_string()))?;
    let mut users = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                users.push((user.to_string(), password.to_string()))
            }
            _ => {
                return Err(malformed(format!(
                    "line {}: expected user:password",
                    number + 1
                )))
            }
        }
    }
    if users.is_empty() {
        return Err(malformed("no user:password line".into()));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_needs_credentials_or_consent() {
        let lan = WebConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..WebConfig::default()
        };
        let err = lan.validate().unwrap_err();
        assert!(
            matches!(
                err,
                WebError::Config {
                    key: "web.listen",
                    ..
                }
            ),
            "{err}"
        );
        for ok in [
            WebConfig {
                token: Some("secret".into()),
                ..lan.clone()
            },
            WebConfig {
                password_file: Some("/etc/edgeclass/web.passwd".into()),
                ..lan.clone()
            },
            WebConfig {
                allow_unauthenticated: true,
                ..lan.clone()
            },
            WebConfig {
                enabled: false,
                ..lan.clone()
            },
            WebConfig::default(),
        ] {
            ok.validate().unwrap();
        }
    }

    #[test]
    fn password_files_are_read_and_malformed_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, "# users\nana:s3cret\n\nbob:pa:ss\n").unwrap();
        assert_eq!(
            read_password_file(&file).unwrap(),
            [
                ("ana".to_string(), "s3cret".to_string()),
                ("bob".to_string(), "pa:ss".to_string())
            ]
        );
        std::fs::write(&file, "ana:s3cret\nbob\n").unwrap();
        let err = read_password_file(&file).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("passwd"), "{err}");
    }
}
