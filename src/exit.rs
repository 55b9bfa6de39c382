//! Process exit codes, following sysexits(3) where a caller (systemd, scripts) can act on them.

/// Command line usage error.
pub const USAGE: i32 = 64;
/// Input data was incorrect (corrupt image, malformed model file).
pub const DATA_ERR: i32 = 65;
/// An input file did not exist or was not readable.
pub const NO_INPUT: i32 = 66;
/// A service is unavailable (download failed, broker unreachable at start).
pub const UNAVAILABLE: i32 = 69;
/// Internal software error.
pub const SOFTWARE: i32 = 70;
/// An error occurred while doing I/O on some file.
pub const IO_ERR: i32 = 74;
/// Configuration error: systemd's and scripts' cue not to restart in a loop.
pub const CONFIG: i32 = 78;

/// Errors that know which sysexits code they deserve.
pub trait ExitCode {
    fn exit_code(&self) -> i32;
}

/// One line naming each cause of `err` once. Many errors already quote their source in their
/// own message, so anyhow's `{:#}` would repeat it ("...: os error 2: os error 2").
pub fn message_of(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The exit code for an error: the first error in the chain that knows its code decides.
pub fn code_of(err: &anyhow::Error) -> i32 {
    err.chain().find_map(known_code).unwrap_or(1)
}

/// Each stage's error type registers here, one line each, so `main` stays free of stage
/// knowledge.
fn known_code(cause: &(dyn std::error::Error + 'static)) -> Option<i32> {
    fn code<E: ExitCode + std::error::Error + 'static>(
        cause: &(dyn std::error::Error + 'static),
    ) -> Option<i32> {
        cause.downcast_ref::<E>().map(ExitCode::exit_code)
    }
    code::<crate::config::ConfigError>(cause)
        .or_else(|| code::<crate::model::fetch::FetchError>(cause))
        .or_else(|| code::<crate::postprocess::PostprocessError>(cause))
        .or_else(|| code::<crate::capture::CaptureError>(cause))
        .or_else(|| code::<crate::publish::PublishError>(cause))
        .or_else(|| code::<crate::preprocess::PreprocessError>(cause))
        .or_else(|| code::<crate::model::ModelError>(cause))
        .or_else(|| cause.downcast_ref::<std::io::Error>().map(|_| IO_ERR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Quoting {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn message_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::from(Quoting {
            path: "/x".into(),
            source: io,
        })
        .context("loading labels");
        assert_eq!(message_of(&err), "loading labels: reading /x: no such file");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(message_of(&plain), "outer: inner");
    }
}
