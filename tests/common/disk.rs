//! A small disk for disk-fault tests: a tmpfs of a given size mounted on a temp dir (needs root,
//! as CI runs the tests), which can be made read-only; unmounted on drop.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::Path;
use std::process::Command;

pub struct SmallDisk {
    dir: tempfile::TempDir,
}

fn mount(args: &[&str], dir: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {args:?} {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SmallDisk {
    /// A tmpfs of `bytes` (rounded up to whole pages by the kernel).
    pub fn mount(bytes: usize) -> SmallDisk {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "disk-fault tests mount a small tmpfs and need root (CI runs them as root: \
             `sudo cargo test --locked --test NAME`)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0755"),
                "tmpfs",
            ],
            dir.path(),
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts it read-only (what is on it stays readable).
    pub fn make_read_only(&self) {
        mount(&["-o", "remount,ro"], self.dir.path());
    }

    /// Every name in it, hidden ones too, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("read the small disk")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
