//! Running the `edgeclass` binary on the repository's fixtures.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A file of `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs the `edgeclass` binary built for these tests with `args` and waits for it.
pub fn edgeclass(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeclass"))
        .args(args)
        .output()
        .expect("the edgeclass binary runs")
}

/// Output bytes as text, for assertions and failure messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
