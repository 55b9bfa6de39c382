//! The `edgeclass run` daemon as a child process, with its config file and output in a temp dir.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::wait::poll_until;

/// A daemon process with its own config file in a temp dir.
pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(config: &str) -> Daemon {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::spawn(config, |file| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_edgeclass"));
            command
                .args(["run", "--config"])
                .arg(file)
                .envs(env.iter().copied());
            command
        })
    }

    /// Starts the daemon as if on another machine named `host`, as the shipped unit runs it:
    /// in its own UTS, mount and pid namespaces (a user namespace, so no root is needed) with
    /// `/proc` mounted `subset=pid` (`ProcSubset=pid`: no `/proc/sys`).
    pub fn start_on_host(config: &str, host: &str) -> Daemon {
        Self::spawn(config, |file| {
            let mut command = Command::new("unshare");
            command
                .args([
                    "--user",
                    "--map-root-user",
                    "--uts",
                    "--mount",
                    "--pid",
                    "--fork",
                ])
                .arg("--kill-child")
                .args(["sh", "-c"])
                .arg(
                    "hostname \"$2\" && mount -t proc -o subset=pid proc /proc && \
                     exec \"$0\" run --config \"$1\"",
                )
                .arg(env!("CARGO_BIN_EXE_edgeclass"))
                .arg(file)
                .arg(host);
            command
        })
    }

    /// Writes `config` into a temp dir and runs `command(config file)` with its output kept
    /// there.
    pub fn spawn(config: &str, command: impl FnOnce(&Path) -> Command) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("edgeclass.toml");
        fs::write(&file, config).expect("write config");
        let mut command = command(&file);
        // State (the overrides file, collected frames) stays in the temp dir unless the test
        // chose a state directory: a real /var/lib/edgeclass/overrides.toml must not leak in.
        if !command.get_envs().any(|(key, _)| key == "STATE_DIRECTORY") {
            command.env("STATE_DIRECTORY", dir.path().join("state"));
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout")).expect("stdout file"))
            .stderr(fs::File::create(dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .expect("spawn the daemon");
        Daemon { child, dir }
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("edgeclass.toml")
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        poll_until(timeout, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status
            .unwrap_or_else(|| panic!("daemon did not exit within {timeout:?}\n{}", self.stderr()))
    }

    /// The highest `seq` among the events printed on stdout (`[log] print_events = true`): how
    /// many events the daemon has handed to its publisher so far, broker up or not.
    pub fn last_printed_seq(&self) -> u64 {
        fs::read_to_string(self.dir.path().join("stdout"))
            .unwrap_or_default()
            .lines()
            // The line being written may be incomplete.
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|event| event["seq"].as_u64())
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
