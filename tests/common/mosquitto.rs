//! Test harness: a real mosquitto broker on a free 127.0.0.1 port, and a subscriber that collects
//! messages.
//!
//! ```ignore
//! mod common { pub mod mosquitto; }
//! use common::mosquitto::{Mosquitto, Subscriber};
//! let broker = Mosquitto::start();
//! let sub = Subscriber::connect(broker.port(), &["edgeclass/#"]);
//! let msg = sub.wait_for_topic("edgeclass/status", Duration::from_secs(10)).unwrap();
//! ```
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};

use super::wait::poll_until;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// A mosquitto process with a generated config in its own temp dir; killed on drop.
pub struct Mosquitto {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// Anonymous access, no persistence.
    pub fn start() -> Mosquitto {
        Self::start_with(|_| String::new())
    }

    /// `extra` gets the broker's temp dir (to write password files, certificates) and returns
    /// config lines appended after `listener <port> 127.0.0.1`, so they apply to that listener.
    /// Extra lines with `password_file` turn anonymous access off; with `persistence ` they
    /// replace the default `persistence false`.
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> Mosquitto {
        let dir = tempfile::tempdir().expect("create a temp dir for mosquitto");
        let port = free_port();
        let extra = extra(dir.path());
        let anonymous = if extra.contains("password_file") {
            "false"
        } else {
            "true"
        };
        let persistence = if extra.contains("persistence ") {
            String::new()
        } else {
            "persistence false\n".to_string()
        };
        let conf = format!(
            "per_listener_settings false\n\
             allow_anonymous {anonymous}\n\
             {persistence}\
             user root\n\
             log_dest file {log}\n\
             log_type all\n\
             listener {port} 127.0.0.1\n\
             {extra}\n",
            log = dir.path().join("mosquitto.log").display(),
        );
        fs::write(dir.path().join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        let mut broker = Mosquitto {
            port,
            dir,
            child: None,
        };
        broker.run();
        broker
    }

    fn run(&mut self) {
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn /usr/sbin/mosquitto");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listening = poll_until(READY_TIMEOUT, || {
            self.panic_if_exited();
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(
            listening,
            "mosquitto not listening on {addr}\n{}",
            self.log()
        );
    }

    /// A broker that died while starting (bad config, port taken) fails the test with its
    /// stderr and log rather than a bare timeout.
    fn panic_if_exited(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            panic!(
                "mosquitto exited ({status}) on port {}: {stderr}\n{}",
                self.port,
                self.log()
            );
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's temp dir (config, log, files written by the `extra` callback).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker with SIGTERM (so a configured persistence file is written), SIGKILL if
    /// it does not exit within 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        if poll_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        }) {
            return;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the broker again on the same port with the same config.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One message as received by [`Subscriber`].
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic,
                self.text()
            )
        })
    }
}

/// An MQTT subscriber (rumqttc, QoS 1) on its own thread. Returns from `connect` only after the
/// broker acknowledged the subscriptions, so nothing published afterwards is missed. Stops at the
/// first connection error (create a new one after a broker restart).
pub struct Subscriber {
    client: Client,
    messages: mpsc::Receiver<Received>,
    /// Where [`Subscriber::drain_pending`] sends its marker to itself; unique per client id.
    marker_topic: String,
}

impl Subscriber {
    /// Clean-session subscriber with a random client id.
    pub fn connect(port: u16, filters: &[&str]) -> Subscriber {
        let id = format!("test-sub-{}", rand_suffix());
        Self::connect_with(MqttOptions::new(id, "127.0.0.1", port), filters)
    }

    /// Persistent-session subscriber: the broker keeps its subscriptions and queues QoS 1
    /// messages while it is disconnected.
    pub fn persistent(port: u16, client_id: &str, filters: &[&str]) -> Subscriber {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_clean_session(false);
        Self::connect_with(options, filters)
    }

    /// Any options (credentials, ...); the packet limit is raised for snapshots.
    pub fn connect_with(mut options: MqttOptions, filters: &[&str]) -> Subscriber {
        let marker_topic = format!("edgeclass-test/marker/{}", options.client_id());
        options
            .set_max_packet_size(64 * 1024 * 1024, 64 * 1024)
            .set_keep_alive(Duration::from_secs(30));
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let (message_tx, messages) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let (client_tx, client_rx) = mpsc::channel();
        thread::spawn(move || {
            // Built on this thread: rumqttc's sync connection owns a runtime that must not be
            // dropped inside the test's async context.
            let (client, mut connection) = Client::new(options, 16);
            for filter in &filters {
                client
                    .subscribe(filter.as_str(), QoS::AtLeastOnce)
                    .expect("queue SUBSCRIBE");
            }
            let _ = client_tx.send(client);
            let mut acks = 0;
            for notification in connection.iter() {
                match notification {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        acks += 1;
                        if acks == filters.len() {
                            let _ = ready_tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let received = Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        if message_tx.send(received).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let client = client_rx
            .recv_timeout(READY_TIMEOUT)
            .expect("subscriber thread started");
        match ready.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("subscriber failed to connect: {e}"),
            Err(_) => panic!("subscriber got no SUBACK within {READY_TIMEOUT:?}"),
        }
        Subscriber {
            client,
            messages,
            marker_topic,
        }
    }

    /// The next message, or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Received> {
        self.messages.recv_timeout(timeout).ok()
    }

    /// The first message for which `accept` is true, skipping others; None after `timeout`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut accept: impl FnMut(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let message = self.recv(left)?;
            if accept(&message) {
                return Some(message);
            }
        }
    }

    /// The first message on `topic`.
    pub fn wait_for_topic(&self, topic: &str, timeout: Duration) -> Option<Received> {
        self.wait_until(timeout, |m| m.topic == topic)
    }

    /// Up to `count` messages on `topic`, stopping early after `timeout`.
    pub fn collect_on(&self, topic: &str, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_until(left, |m| m.topic == topic) {
                Some(m) => out.push(m),
                None => break,
            }
        }
        out
    }

    /// Everything received within `window` (for "nothing else arrives" checks).
    pub fn drain_for(&self, window: Duration) -> Vec<Received> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(m) => out.push(m),
                None => break,
            }
        }
        out
    }

    /// Everything the broker had sent or queued for this subscriber when called (for a new
    /// subscriber: exactly its retained messages, plus any live ones). Subscribes to a topic of
    /// its own and publishes a marker there: the broker handles one client's packets in order and
    /// delivers to it in order, so the marker comes back after every message queued before it.
    pub fn drain_pending(&self) -> Vec<Received> {
        let marker = format!("marker-{}", rand_suffix());
        self.client
            .subscribe(self.marker_topic.as_str(), QoS::AtLeastOnce)
            .expect("queue SUBSCRIBE");
        self.client
            .publish(
                self.marker_topic.as_str(),
                QoS::AtLeastOnce,
                false,
                marker.as_bytes().to_vec(),
            )
            .expect("queue PUBLISH");
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self
                .recv(left)
                .unwrap_or_else(|| panic!("marker not back within {READY_TIMEOUT:?}"));
            if message.topic == self.marker_topic && message.payload == marker.as_bytes() {
                return out;
            }
            out.push(message);
        }
    }

    /// Disconnects and returns every message received before the connection ended (nothing
    /// received is lost to the test, unlike dropping the subscriber after a guessed window).
    /// Works the same after the broker went away.
    pub fn close(self) -> Vec<Received> {
        let _ = self.client.try_disconnect();
        // The connection thread ends once the connection does and then drops its sender.
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(message) => out.push(message),
                Err(mpsc::RecvTimeoutError::Disconnected) => return out,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("subscriber connection still open {READY_TIMEOUT:?} after DISCONNECT")
                }
            }
        }
    }

    /// Publishes from the subscriber's connection (e.g. Home Assistant's birth message).
    pub fn publish(&self, topic: &str, payload: &str, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
            .expect("queue PUBLISH");
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
    }
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Writes `user:password` into a mosquitto password file with `mosquitto_passwd`.
pub fn write_password_file(path: &Path, user: &str, password: &str) -> PathBuf {
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(path)
        .args([user, password])
        .status()
        .expect("run mosquitto_passwd");
    assert!(status.success(), "mosquitto_passwd failed: {status}");
    path.to_path_buf()
}
