//! The sysexits(3) vocabulary: what kind of failure an error is, so that systemd and scripts
//! can act on the exit status (78 = configuration: do not restart in a loop).
//!
//! Every stage's error type says which [`Sysexit`] it deserves (a `sysexit()` method); the
//! process exit code itself is decided once, in `main`, by walking the error chain. This module
//! depends on nothing, so any stage may use it without reaching into the command line.

/// A sysexits(3) exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sysexit {
    /// Command line usage error (EX_USAGE).
    Usage = 64,
    /// Input data was incorrect: a corrupt image, a malformed model file (EX_DATAERR).
    DataErr = 65,
    /// An input file did not exist or was not readable (EX_NOINPUT).
    NoInput = 66,
    /// A service is unavailable: download failed, broker or camera unreachable (EX_UNAVAILABLE).
    Unavailable = 69,
    /// Internal software error (EX_SOFTWARE).
    Software = 70,
    /// An error occurred while doing I/O on some file (EX_IOERR).
    IoErr = 74,
    /// Temporary failure, try again later: another process holds a lock (EX_TEMPFAIL).
    TempFail = 75,
    /// Configuration error (EX_CONFIG): systemd's and scripts' cue not to restart in a loop.
    Config = 78,
}

impl Sysexit {
    /// The numeric process exit status.
    pub const fn code(self) -> i32 {
        self as i32
    }
}

#[cfg(test)]
mod tests {
    use super::Sysexit;

    #[test]
    fn codes_are_the_sysexits_numbers() {
        let codes = [
            (Sysexit::Usage, 64),
            (Sysexit::DataErr, 65),
            (Sysexit::NoInput, 66),
            (Sysexit::Unavailable, 69),
            (Sysexit::Software, 70),
            (Sysexit::IoErr, 74),
            (Sysexit::TempFail, 75),
            (Sysexit::Config, 78),
        ];
        for (sysexit, code) in codes {
            assert_eq!(sysexit.code(), code, "{sysexit:?}");
        }
    }
}
