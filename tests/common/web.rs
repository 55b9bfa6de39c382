//! The daemon with its web page on a free 127.0.0.1 port, a real mosquitto, `file:` cameras
//! and the synthetic model, for the HTTP and browser tests.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::mosquitto::{free_port, Mosquitto};
use super::wait::poll_until;

/// How long the daemon may take to start serving (loads the synthetic model first).
pub const START: Duration = Duration::from_secs(60);

/// A sample photo of tests/fixtures/images.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name)
}

/// A running daemon with its web page.
pub struct WebDaemon {
    pub port: u16,
    pub broker: Mosquitto,
    pub dir: tempfile::TempDir,
    child: Child,
    agent: ureq::Agent,
}

/// A config for `cameras` (`(id, source)`) with synthetic weights, publishing every frame
/// every `interval_ms`; `web` are the `[web]` table's lines (listen is added when absent) and
/// `extra` is appended.
pub fn config(
    broker: &Mosquitto,
    port: u16,
    cameras: &[(&str, &str)],
    web: &str,
    extra: &str,
) -> String {
    let mut text = format!(
        "[model]\nsynthetic_seed = 7\nprecision = \"q8_0\"\nthreads = 1\n\n\
         [mqtt]\nurl = \"{}\"\n\n[publish_policy]\nmode = \"every\"\n\n[postprocess]\nthreshold = 0.0\n\n",
        broker.url()
    );
    let listen = if web.contains("listen") {
        String::new()
    } else {
        format!("listen = \"127.0.0.1:{port}\"\n")
    };
    text += &format!("[web]\n{listen}{web}\n");
    for (id, source) in cameras {
        text += &format!(
            "[[cameras]]\nid = \"{id}\"\nsource = \"{source}\"\ninterval_ms = 100\n\
             [cameras.motion]\nenabled = false\n\n"
        );
    }
    text + extra
}

impl WebDaemon {
    /// Starts mosquitto and the daemon; `make_config(broker, web port, temp dir)` writes its
    /// config. Waits until `/healthz` answers.
    pub fn start(make_config: impl FnOnce(&Mosquitto, u16, &Path) -> String) -> WebDaemon {
        let daemon = Self::spawn(make_config);
        let healthy = poll_until(START, || {
            daemon.get("/healthz").is_ok_and(|r| r.status() == 200)
        });
        assert!(healthy, "the web page did not come up\n{}", daemon.stderr());
        daemon
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(make_config: impl FnOnce(&Mosquitto, u16, &Path) -> String) -> WebDaemon {
        let broker = Mosquitto::start();
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("edgeclass.toml");
        fs::write(&file, make_config(&broker, port, dir.path())).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_edgeclass"))
            .args(["run", "--config"])
            .arg(&file)
            .env("RUST_LOG", "info")
            // Collected frames and other state stay in the temp dir.
            .env("STATE_DIRECTORY", dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout")).expect("stdout file"))
            .stderr(fs::File::create(dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .expect("spawn the daemon");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        WebDaemon {
            port,
            broker,
            dir,
            child,
            agent,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// An HTTP client that returns error statuses as responses.
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    pub fn get(&self, path: &str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        self.agent.get(self.url(path)).call()
    }

    /// GET `path` as JSON, asserting 200.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let mut response = self.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let text = response.body_mut().read_to_string().expect("body");
        assert_eq!(response.status(), 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        poll_until(timeout, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status.unwrap_or_else(|| panic!("daemon did not exit\n{}", self.stderr()))
    }
}

impl Drop for WebDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
