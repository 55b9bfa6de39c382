//! Camera threads end to end: real files and folders, a real HTTP server on 127.0.0.1, and a
//! V4L2 device that does not exist. Frames are read from the slot the way the daemon reads them.

mod common {
    pub mod wait;
}

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::wait::poll_until;
use edgeclass::capture::{spawn, CameraConfig, CameraEvent, Frame, FrameSlot, PixelFormat};
use edgeclass::heartbeat::Heartbeat;
use edgeclass::shutdown::Shutdown;

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// How long an offline camera is watched for a frame that must not come. Nothing signals "still
/// no frame", so this stays a window; it is many times the 10 ms capture interval.
const NO_FRAME_WINDOW: Duration = Duration::from_millis(100);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name)
}

fn camera(source: &str, extra: &str) -> CameraConfig {
    toml::from_str(&format!("id = \"test\"\nsource = {source:?}\n{extra}"))
        .unwrap_or_else(|e| panic!("test camera config: {e}"))
}

/// A camera thread plus what the daemon would hold: its slot, its events, its shutdown signal.
struct Running {
    slot: Arc<FrameSlot>,
    events: Receiver<CameraEvent>,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(config: CameraConfig) -> Self {
        let slot = Arc::new(FrameSlot::new());
        let (sender, events) = mpsc::channel();
        let shutdown = Shutdown::new();
        let heartbeat = Arc::new(Heartbeat::new());
        let thread = spawn(
            config,
            Arc::clone(&slot),
            sender,
            shutdown.clone(),
            heartbeat,
        )
        .unwrap();
        Running {
            slot,
            events,
            shutdown,
            thread: Some(thread),
        }
    }

    fn frame(&self) -> Frame {
        self.slot
            .take(PATIENCE)
            .expect("a frame within the patience window")
    }

    fn event(&self) -> CameraEvent {
        self.events
            .recv_timeout(PATIENCE)
            .expect("an event within the patience window")
    }

    fn offline_reason(&self) -> String {
        match self.event() {
            CameraEvent::Offline { camera, reason } => {
                assert_eq!(camera, "test");
                reason
            }
            other => panic!("expected Offline, got {other:?}"),
        }
    }

    fn expect_online(&self) {
        assert_eq!(self.event(), CameraEvent::Online("test".parse().unwrap()));
    }

    /// Stops the thread and checks it ended without panicking.
    fn stop(mut self) {
        self.shutdown.trigger();
        let thread = self.thread.take().unwrap();
        assert!(thread.join().is_ok(), "camera thread panicked");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

#[test]
fn single_image_is_delivered_repeatedly_as_encoded_bytes() {
    let path = fixture("chelsea.jpg");
    let bytes = std::fs::read(&path).unwrap();
    let running = Running::start(camera(
        &format!("file:{}", path.display()),
        "interval_ms = 10",
    ));
    running.expect_online();
    let mut last_seq = None;
    for _ in 0..3 {
        let frame = running.frame();
        assert_eq!(frame.format, PixelFormat::Encoded);
        assert_eq!(frame.data, bytes);
        assert_eq!(frame.origin, path.display().to_string());
        assert!(
            last_seq < Some(frame.seq),
            "seq grows: {last_seq:?} then {}",
            frame.seq
        );
        last_seq = Some(frame.seq);
    }
    running.stop();
}

#[test]
fn folder_loops_over_its_images_in_name_order_skipping_other_files() {
    let folder = tempfile::tempdir().unwrap();
    let names = ["a_chelsea.jpg", "b_coffee.JPG", "c_astronaut.jpeg"];
    let sources = ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"];
    for (name, source) in names.iter().zip(sources) {
        std::fs::copy(fixture(source), folder.path().join(name)).unwrap();
    }
    std::fs::write(folder.path().join("a_notes.txt"), "not an image").unwrap();
    std::fs::write(folder.path().join("README"), "not an image").unwrap();
    std::fs::copy(fixture("coffee.jpg"), folder.path().join(".a_hidden.jpg")).unwrap();
    std::fs::create_dir(folder.path().join("b_folder.jpg")).unwrap();
    let expected: Vec<Vec<u8>> = sources
        .iter()
        .map(|s| std::fs::read(fixture(s)).unwrap())
        .collect();

    let source = format!("file:{}", folder.path().display());
    let running = Running::start(camera(&source, "interval_ms = 20"));
    running.expect_online();
    // The slot may drop frames when this thread is slow; seq still tells which file each one is.
    let mut seen = [false; 3];
    let mut laps = 0;
    while laps < 2 || seen.iter().any(|s| !s) {
        let frame = running.frame();
        let position = (frame.seq % 3) as usize;
        assert!(
            frame.origin.ends_with(names[position]),
            "frame {} came from {}, expected {}",
            frame.seq,
            frame.origin,
            names[position]
        );
        assert_eq!(frame.data, expected[position], "frame {}", frame.seq);
        seen[position] = true;
        laps = (frame.seq / 3) as usize;
    }
    running.stop();
}

#[test]
fn missing_path_goes_offline_naming_it_and_recovers_when_it_appears() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("later.jpg");
    let running = Running::start(camera(
        &format!("file:{}", path.display()),
        "interval_ms = 10",
    ));
    let reason = running.offline_reason();
    assert!(reason.contains(&path.display().to_string()), "{reason}");
    assert!(reason.contains("No such file"), "{reason}");
    assert!(running.slot.take(NO_FRAME_WINDOW).is_none());

    std::fs::copy(fixture("coffee.jpg"), &path).unwrap();
    running.expect_online();
    assert_eq!(running.frame().data, std::fs::read(&path).unwrap());
    running.stop();
}

#[test]
fn folder_without_images_is_offline_with_a_clear_reason() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("notes.txt"), "no images here").unwrap();
    let running = Running::start(camera(&format!("file:{}", folder.path().display()), ""));
    let reason = running.offline_reason();
    assert!(reason.contains("no image files"), "{reason}");
    assert!(
        reason.contains(&folder.path().display().to_string()),
        "{reason}"
    );
    running.stop();
}

#[test]
fn pacing_delivers_at_most_one_frame_per_interval() {
    let interval_ms = 100;
    let source = format!("file:{}", fixture("coffee.jpg").display());
    let started = Instant::now();
    let running = Running::start(camera(&source, &format!("interval_ms = {interval_ms}")));
    let mut last = running.frame();
    for _ in 0..5 {
        last = running.frame();
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let produced = last.seq + 1;
    // A slow machine only lowers the count, so the bound holds however noisy the timing is.
    let allowed = elapsed_ms / interval_ms + 1;
    println!("produced {produced} frames in {elapsed_ms} ms at interval {interval_ms} ms (bound {allowed})");
    assert!(produced <= allowed, "{produced} frames > {allowed} allowed");
    assert!(produced >= 6);
    running.stop();
}

#[test]
fn closing_the_slot_stops_the_camera_thread() {
    let source = format!("file:{}", fixture("coffee.jpg").display());
    let mut running = Running::start(camera(&source, "interval_ms = 10"));
    running.frame();
    running.slot.close();
    let thread = running.thread.take().unwrap();
    assert!(thread.join().is_ok());
}

/// What the test server answers to every request.
#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 server on 127.0.0.1: one reply for every request (changeable while
/// running), one connection at a time, `Connection: close`. Keeps request heads for assertions.
struct Server {
    url: String,
    reply: Arc<Mutex<Reply>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/snapshot.jpg", listener.local_addr().unwrap());
        let reply = Arc::new(Mutex::new(reply));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (shared_reply, shared_requests) = (Arc::clone(&reply), Arc::clone(&requests));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let reply = shared_reply.lock().unwrap().clone();
                if let Some(head) = answer(stream, &reply) {
                    shared_requests.lock().unwrap().push(head);
                }
            }
        });
        Server {
            url,
            reply,
            requests,
        }
    }

    fn set_reply(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }
}

fn answer(mut stream: TcpStream, reply: &Reply) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let reason = if reply.status == 200 { "OK" } else { "Error" };
    let mut response = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    if let Some(content_type) = reply.content_type {
        response += &format!("Content-Type: {content_type}\r\n");
    }
    response += &format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    );
    stream.write_all(response.as_bytes()).ok()?;
    stream.write_all(&reply.body).ok()?;
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn jpeg_reply() -> Reply {
    Reply {
        status: 200,
        content_type: Some("image/jpeg"),
        body: std::fs::read(fixture("astronaut.jpg")).unwrap(),
    }
}

#[test]
fn http_snapshot_bytes_are_delivered_with_the_url_as_origin() {
    let server = Server::start(jpeg_reply());
    let running = Running::start(camera(&server.url, "interval_ms = 10"));
    running.expect_online();
    let frame = running.frame();
    assert_eq!(frame.format, PixelFormat::Encoded);
    assert_eq!(frame.data, std::fs::read(fixture("astronaut.jpg")).unwrap());
    assert_eq!(frame.origin, server.url);
    running.stop();
    let requests = server.requests.lock().unwrap();
    assert!(
        requests[0].starts_with("GET /snapshot.jpg HTTP/1.1"),
        "{}",
        requests[0]
    );
}

#[test]
fn http_basic_auth_is_sent_and_the_password_kept_out_of_origins() {
    let server = Server::start(jpeg_reply());
    let url = server.url.replace("http://", "http://viewer:s3cret@");
    let running = Running::start(camera(&url, "interval_ms = 10"));
    let frame = running.frame();
    assert!(
        frame.origin.starts_with("http://viewer:***@127.0.0.1:"),
        "{}",
        frame.origin
    );
    assert!(!frame.origin.contains("s3cret"));
    running.stop();
    let head = server.requests.lock().unwrap()[0].clone();
    let authorization = head
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("authorization:"))
        .unwrap_or_else(|| panic!("no Authorization header in {head}"));
    // base64("viewer:s3cret")
    assert!(
        authorization.ends_with("Basic dmlld2VyOnMzY3JldA=="),
        "{authorization}"
    );
}

#[test]
fn http_corrupt_image_bytes_are_passed_on_for_preprocess_to_judge() {
    let garbage = b"\xFF\xD8\xFF this is not really a JPEG".to_vec();
    let server = Server::start(Reply {
        status: 200,
        content_type: Some("image/jpeg"),
        body: garbage.clone(),
    });
    let running = Running::start(camera(&server.url, "interval_ms = 10"));
    let frame = running.frame();
    assert_eq!(frame.data, garbage);
    assert_eq!(frame.origin, server.url);
    running.stop();
}

#[test]
fn http_non_image_or_empty_responses_are_errors_naming_the_url() {
    let server = Server::start(Reply {
        status: 200,
        content_type: Some("text/html; charset=utf-8"),
        body: b"<html>please log in</html>".to_vec(),
    });
    let running = Running::start(camera(&server.url, "interval_ms = 10"));
    let reason = running.offline_reason();
    assert!(
        reason.contains(&server.url) && reason.contains("text/html"),
        "{reason}"
    );
    running.stop();

    let server = Server::start(Reply {
        status: 200,
        content_type: Some("image/jpeg"),
        body: Vec::new(),
    });
    let running = Running::start(camera(&server.url, "interval_ms = 10"));
    let reason = running.offline_reason();
    assert!(
        reason.contains(&server.url) && reason.contains("empty"),
        "{reason}"
    );
    running.stop();
}

#[test]
fn http_server_error_goes_offline_once_then_recovers() {
    let server = Server::start(Reply {
        status: 500,
        content_type: Some("text/plain"),
        body: b"camera busy".to_vec(),
    });
    let running = Running::start(camera(&server.url, "interval_ms = 10"));
    let reason = running.offline_reason();
    assert!(
        reason.contains(&server.url) && reason.contains("500"),
        "{reason}"
    );
    // Retries (1 s, then 2 s later) must not repeat the event while the outage lasts. The
    // camera thread sends a failure's event before it sleeps and retries, so once the third
    // request was answered, the first retry's failure has been fully handled.
    let requests = || server.requests.lock().unwrap().len();
    assert!(
        poll_until(PATIENCE, || requests() >= 3),
        "retried twice: {} requests",
        requests()
    );
    assert!(
        running.events.try_recv().is_err(),
        "one Offline event per outage"
    );

    // The second retry failed too; the next event must be Online, not a repeated Offline.
    server.set_reply(jpeg_reply());
    running.expect_online();
    assert_eq!(running.frame().data, jpeg_reply().body);
    running.stop();
}

#[test]
fn http_timeout_is_reported_within_timeout_ms() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/snap.jpg", listener.local_addr().unwrap());
    thread::spawn(move || {
        let held: Vec<TcpStream> = listener.incoming().flatten().collect();
        drop(held);
    });
    let started = Instant::now();
    let running = Running::start(camera(&url, "timeout_ms = 300"));
    let reason = running.offline_reason();
    println!(
        "timeout reported after {:.2}x timeout_ms",
        started.elapsed().as_secs_f64() / 0.3
    );
    assert!(reason.contains(&url), "{reason}");
    assert!(reason.contains("timed out after 300 ms"), "{reason}");
    running.stop();
}

#[test]
fn missing_v4l2_device_goes_offline_with_a_clear_error_without_panicking() {
    for (source, device) in [
        ("v4l2:/dev/video99", "/dev/video99"),
        ("v4l2:99", "/dev/video99"),
    ] {
        let running = Running::start(camera(source, "interval_ms = 10"));
        let reason = running.offline_reason();
        assert!(reason.contains(device), "{source}: {reason}");
        assert!(running.slot.take(NO_FRAME_WINDOW).is_none());
        running.stop();
    }
}

#[test]
fn spawn_refuses_an_invalid_config_instead_of_panicking() {
    let mut config = camera("file:x.jpg", "");
    config.interval_ms = 0;
    let (sender, _events) = mpsc::channel();
    let result = spawn(
        config,
        Arc::new(FrameSlot::new()),
        sender,
        Shutdown::new(),
        Arc::new(Heartbeat::new()),
    );
    let error = result.expect_err("a zero interval is refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        error.to_string().contains("cameras[0].interval_ms"),
        "{error}"
    );
}
