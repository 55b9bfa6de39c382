//! What the fuzz targets share.

use std::path::PathBuf;

/// Writes `data` to `name` in a directory of this process (on /dev/shm when there is one, so
/// the loaders that take a path cost no disk I/O) and returns the path.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("edgeclass-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}
