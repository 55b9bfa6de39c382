//! What the fuzz targets share.

use std::path::PathBuf;

/// Writes `data` to `name` in a directory of this process and returns the path: under
/// `$EDGECLASS_FUZZ_SCRATCH` (run.sh makes one on /dev/shm, so the loaders that take a path cost
/// no disk I/O, and removes it at the end), else under the temp directory.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let base = std::env::var_os("EDGECLASS_FUZZ_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("edgeclass-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}
