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
