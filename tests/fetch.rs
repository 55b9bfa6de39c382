//! `model::fetch` against a real HTTP server on 127.0.0.1 serving a generated fixture.

mod common {
    pub mod disk;
}

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use edgeclass::model::fetch::{data_dir, download, sha256_file, FetchError, WeightsSource};
use sha2::{Digest, Sha256};

const FIXTURE_LEN: usize = 300_000;
const FILE_PATH: &str = "/timm/resnet18.tv_in1k/resolve/0123abcd/model.safetensors";

/// Deterministic pseudo-random bytes (xorshift64), so a flipped byte cannot hide in a pattern.
fn fixture() -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..FIXTURE_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn source_for(server: &FixtureServer) -> WeightsSource {
    let fixture = fixture();
    WeightsSource {
        base_url: server.base_url(),
        repo: "timm/resnet18.tv_in1k".to_owned(),
        revision: "0123abcd".to_owned(),
        file: "model.safetensors".to_owned(),
        sha256: sha256_hex(&fixture),
        size: Some(fixture.len() as u64),
    }
}

/// What the server answers for one path.
#[derive(Clone)]
struct Reply {
    status: &'static str,
    headers: Vec<String>,
    body: Vec<u8>,
    /// `Content-Length` to announce; `None` announces none (the body ends at connection close).
    content_length: Option<usize>,
    /// Sent as `ETag` when set.
    etag: Option<&'static str>,
    /// Honour `Range: bytes=N-` (206 with the rest) unless an `If-Range` names another ETag.
    honour_range: bool,
    /// Drop the connection after this many bytes of a whole-file answer (a flaky link).
    cut_at: Option<usize>,
    /// Send this many bytes of a whole-file answer, then nothing until the client goes away (a
    /// link too slow to finish before the client is killed).
    stall_at: Option<usize>,
}

impl Reply {
    fn ok(body: Vec<u8>) -> Self {
        Self {
            status: "200 OK",
            headers: Vec::new(),
            content_length: Some(body.len()),
            body,
            etag: None,
            honour_range: false,
            cut_at: None,
            stall_at: None,
        }
    }

    fn redirect(location: String) -> Self {
        Self {
            status: "302 Found",
            headers: vec![format!("Location: {location}")],
            body: Vec::new(),
            content_length: Some(0),
            ..Self::ok(Vec::new())
        }
    }
}

/// The headers of one request that matter for resuming.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    /// N of `Range: bytes=N-`.
    range: Option<usize>,
    if_range: Option<String>,
}

type Routes = Arc<Mutex<HashMap<String, Reply>>>;

/// A one-request-per-connection HTTP/1.1 server on 127.0.0.1 that records requests and counts
/// the body bytes it sends.
struct FixtureServer {
    addr: SocketAddr,
    routes: Routes,
    seen: Arc<Mutex<Vec<Seen>>>,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FixtureServer {
    /// `routes` gets the server's base URL, for absolute redirects.
    fn start(routes: impl FnOnce(&str) -> HashMap<String, Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let routes = Arc::new(Mutex::new(routes(&format!("http://{addr}"))));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, seen, served, stop) =
                (routes.clone(), seen.clone(), served.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve_one(stream, &routes, &seen, &served);
                    }
                }
            })
        };
        Self {
            addr,
            routes,
            seen,
            served,
            stop,
            thread: Some(thread),
        }
    }

    /// What the server answers for `path` from now on (the file changed on the server).
    fn set_route(&self, path: &str, reply: Reply) {
        self.routes
            .lock()
            .expect("routes lock")
            .insert(path.to_owned(), reply);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Body bytes sent so far, over all requests.
    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.seen.lock().expect("seen lock").len()
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(stream: TcpStream, routes: &Routes, seen: &Mutex<Vec<Seen>>, served: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return; // the wake-up connection from Drop
    }
    // Consume the headers so closing the socket sends FIN, not RST.
    let mut line = String::new();
    let mut request = Seen {
        range: None,
        if_range: None,
    };
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        if let Some((name, value)) = line.trim().split_once(':') {
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "range" => {
                    request.range = value
                        .strip_prefix("bytes=")
                        .and_then(|spec| spec.trim_end_matches('-').parse::<usize>().ok());
                }
                "if-range" => request.if_range = Some(value.to_owned()),
                _ => {}
            }
        }
        line.clear();
    }
    seen.lock().expect("seen lock").push(request.clone());
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let not_found = Reply {
        status: "404 Not Found",
        body: b"Entry not found".to_vec(),
        content_length: Some(15),
        ..Reply::ok(Vec::new())
    };
    let mut reply = routes
        .lock()
        .expect("routes lock")
        .get(path)
        .unwrap_or(&not_found)
        .clone();
    let range = request.range.filter(|_| {
        reply.honour_range
            && request
                .if_range
                .as_deref()
                .is_none_or(|validator| Some(validator) == reply.etag)
    });
    let full = reply.body.len();
    let mut stall = false;
    match range {
        Some(start) if start < full => {
            reply.status = "206 Partial Content";
            reply
                .headers
                .push(format!("Content-Range: bytes {start}-{}/{full}", full - 1));
            reply.body = reply.body[start..].to_vec();
            reply.content_length = Some(reply.body.len());
        }
        Some(_) => {
            reply.status = "416 Range Not Satisfiable";
            reply.headers.push(format!("Content-Range: bytes */{full}"));
            reply.body.clear();
            reply.content_length = Some(0);
        }
        None => {
            if let Some(cut_at) = reply.cut_at {
                reply.body.truncate(cut_at);
            }
            if let Some(stall_at) = reply.stall_at {
                reply.body.truncate(stall_at);
                stall = true;
            }
        }
    }
    if let Some(etag) = reply.etag {
        reply.headers.push(format!("ETag: {etag}"));
    }
    let mut head = format!("HTTP/1.1 {}\r\nConnection: close\r\n", reply.status);
    for header in &reply.headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if let Some(len) = reply.content_length {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = &stream;
    let _ = stream.write_all(head.as_bytes());
    if stream.write_all(&reply.body).is_ok() {
        served.fetch_add(reply.body.len(), Ordering::SeqCst);
    }
    let _ = stream.flush();
    if stall {
        // Nothing more until the client goes away (it sends nothing, so this read ends when its
        // socket closes, or at the read timeout).
        let _ = (&mut stream).read(&mut [0u8; 1]);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn routes(pairs: Vec<(&str, Reply)>) -> HashMap<String, Reply> {
    pairs
        .into_iter()
        .map(|(path, reply)| (path.to_owned(), reply))
        .collect()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read test dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn exit_code(err: FetchError) -> i32 {
    err.sysexit().code()
}

#[test]
fn good_file_is_downloaded_verified_and_no_temp_file_is_left() {
    let server = FixtureServer::start(|_| routes(vec![(FILE_PATH, Reply::ok(fixture()))]));
    let dir = tempfile::tempdir().expect("tempdir");
    // A missing directory is created, as on the daemon's first start.
    let dest = dir.path().join("models").join("model.safetensors");

    let path = download(&source_for(&server), &dest, true).expect("download");

    assert_eq!(path, dest);
    assert_eq!(std::fs::read(&dest).expect("read dest"), fixture());
    assert_eq!(
        sha256_file(&dest).expect("hash"),
        sha256_hex(&fixture()),
        "sha256_file agrees with sha2 on the whole buffer"
    );
    assert_eq!(
        dir_entries(&dir.path().join("models")),
        ["model.safetensors"]
    );
    assert_eq!(server.requests(), 1);
}

#[test]
fn corrupted_file_is_deleted_and_reported_as_a_checksum_error() {
    let mut corrupted = fixture();
    corrupted[FIXTURE_LEN / 2] ^= 0x01;
    let actual_hash = sha256_hex(&corrupted);
    let server = FixtureServer::start(|_| routes(vec![(FILE_PATH, Reply::ok(corrupted))]));
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");
    let source = source_for(&server);

    let err = download(&source, &dest, false).expect_err("a corrupted file must fail");

    let message = err.to_string();
    match &err {
        FetchError::Checksum {
            url,
            expected,
            actual,
        } => {
            assert_eq!(url, &source.url());
            assert_eq!(expected, &source.sha256);
            assert_eq!(actual, &actual_hash);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(message.contains("deleted"), "{message}");
    assert!(message.contains(&source.url()), "{message}");
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
    assert_eq!(exit_code(err), 65);
}

/// The hidden partial file a download of `model.safetensors` expecting `sha256` writes into.
fn partial_name(sha256: &str) -> String {
    format!(".model.safetensors.{}.part", &sha256[..8])
}

/// A truncated answer fails, the bytes received stay in the partial file (with its sidecar), and
/// the next call asks only for the rest.
#[test]
fn truncated_body_fails_keeps_the_partial_file_and_the_next_call_resumes_it() {
    let full = fixture();
    let truncated = Reply {
        content_length: Some(full.len()),
        body: full[..FIXTURE_LEN / 3].to_vec(),
        etag: Some("\"v1\""),
        ..Reply::ok(Vec::new())
    };
    let server = FixtureServer::start(|_| routes(vec![(FILE_PATH, truncated)]));
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");
    let source = source_for(&server);
    let partial = partial_name(&source.sha256);

    let err = download(&source, &dest, false).expect_err("truncated must fail");

    match &err {
        FetchError::Truncated {
            expected_len, got, ..
        } => assert_eq!(
            (*expected_len, *got),
            (FIXTURE_LEN as u64, FIXTURE_LEN as u64 / 3)
        ),
        other => panic!("expected a truncation error, got {other:?}"),
    }
    assert!(err.to_string().contains("resumes"), "{err}");
    assert_eq!(exit_code(err), 65);
    assert_eq!(
        dir_entries(dir.path()),
        [partial.clone(), format!("{partial}.meta")]
    );
    assert_eq!(
        std::fs::read(dir.path().join(&partial)).expect("partial file"),
        full[..FIXTURE_LEN / 3]
    );

    server.set_route(
        FILE_PATH,
        Reply {
            etag: Some("\"v1\""),
            honour_range: true,
            ..Reply::ok(full.clone())
        },
    );
    let served_before = server.served();
    download(&source, &dest, false).expect("resumed download");

    let last = server.seen().pop().expect("a request");
    assert_eq!(
        last,
        Seen {
            range: Some(FIXTURE_LEN / 3),
            if_range: Some("\"v1\"".to_owned()),
        }
    );
    assert_eq!(
        server.served() - served_before,
        FIXTURE_LEN - FIXTURE_LEN / 3
    );
    assert_eq!(std::fs::read(&dest).expect("read dest"), full);
    assert_eq!(dir_entries(dir.path()), ["model.safetensors"]);
}

#[test]
fn body_shorter_than_the_expected_size_without_content_length_is_truncated() {
    let full = fixture();
    let short = Reply {
        content_length: None,
        body: full[..FIXTURE_LEN - 1000].to_vec(),
        ..Reply::ok(Vec::new())
    };
    let server = FixtureServer::start(|_| routes(vec![(FILE_PATH, short)]));
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");
    let source = source_for(&server);

    let err = download(&source, &dest, false).expect_err("short must fail");

    match err {
        FetchError::Truncated {
            expected_len, got, ..
        } => assert_eq!(
            (expected_len, got),
            (FIXTURE_LEN as u64, FIXTURE_LEN as u64 - 1000)
        ),
        other => panic!("expected a truncation error, got {other:?}"),
    }
    let partial = partial_name(&source.sha256);
    assert_eq!(
        dir_entries(dir.path()),
        [partial.clone(), format!("{partial}.meta")]
    );
}

/// A link that drops the connection part-way: the download resumes where it stopped with an
/// HTTP Range request, and the SHA-256 over both parts verifies the file.
#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let flaky = Reply {
        honour_range: true,
        cut_at: Some(FIXTURE_LEN / 3),
        ..Reply::ok(fixture())
    };
    let server = FixtureServer::start(|_| routes(vec![(FILE_PATH, flaky)]));
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");

    download(&source_for(&server), &dest, false).expect("resumed download");

    // Without Range the server would cut every answer at a third: two requests prove resuming.
    assert_eq!(server.requests(), 2);
    assert_eq!(std::fs::read(&dest).expect("read dest"), fixture());
    assert_eq!(dir_entries(dir.path()), ["model.safetensors"]);
}

#[test]
fn not_found_is_an_http_error_naming_url_and_status() {
    let server = FixtureServer::start(|_| HashMap::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");
    let source = source_for(&server);

    let err = download(&source, &dest, false).expect_err("404 must fail");

    let message = err.to_string();
    match &err {
        FetchError::Http { url, status } => {
            assert_eq!(url, &source.url());
            assert_eq!(*status, 404);
        }
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    assert!(
        message.contains(&source.url()) && message.contains("404"),
        "{message}"
    );
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
    assert_eq!(exit_code(err), 69);
}

#[test]
fn unreachable_server_is_a_network_error() {
    // A port that was just free: nothing listens there any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");
    let source = WeightsSource {
        base_url: format!("http://127.0.0.1:{port}"),
        ..WeightsSource::default()
    };

    let err = download(&source, &dest, false).expect_err("connection refused must fail");

    assert!(
        matches!(&err, FetchError::Network { url, .. } if url == &source.url()),
        "{err:?}"
    );
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
    assert_eq!(exit_code(err), 69);
}

#[test]
fn redirects_to_the_cdn_are_followed() {
    let server = FixtureServer::start(|base| {
        routes(vec![
            // The hub answers with an absolute URL on its CDN; the CDN hop here is relative.
            (FILE_PATH, Reply::redirect(format!("{base}/cdn/first"))),
            ("/cdn/first", Reply::redirect("/cdn/blob".to_owned())),
            ("/cdn/blob", Reply::ok(fixture())),
        ])
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");

    download(&source_for(&server), &dest, false).expect("download through redirects");

    assert_eq!(std::fs::read(&dest).expect("read dest"), fixture());
    assert_eq!(server.requests(), 3);
    assert_eq!(dir_entries(dir.path()), ["model.safetensors"]);
}

#[test]
fn existing_valid_file_is_reused_without_a_request() {
    let server = FixtureServer::start(|_| routes(vec![(FILE_PATH, Reply::ok(fixture()))]));
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");
    std::fs::write(&dest, fixture()).expect("write dest");

    let path = download(&source_for(&server), &dest, false).expect("reuse");

    assert_eq!(path, dest);
    assert_eq!(server.requests(), 0);
}

#[test]
fn existing_corrupt_file_is_replaced() {
    let server = FixtureServer::start(|_| routes(vec![(FILE_PATH, Reply::ok(fixture()))]));
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");
    std::fs::write(&dest, b"not the weights").expect("write dest");

    download(&source_for(&server), &dest, false).expect("download");

    assert_eq!(server.requests(), 1);
    assert_eq!(std::fs::read(&dest).expect("read dest"), fixture());
    assert_eq!(dir_entries(dir.path()), ["model.safetensors"]);
}

#[test]
fn stale_partial_downloads_are_removed_and_live_ones_kept() {
    let server = FixtureServer::start(|_| routes(vec![(FILE_PATH, Reply::ok(fixture()))]));
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("model.safetensors");
    let stale = dir.path().join(".model.safetensors.dead01.part");
    let live = dir.path().join(".model.safetensors.live01.part");
    let unrelated = dir.path().join(".other.bin.old001.part");
    for path in [&stale, &live, &unrelated] {
        std::fs::write(path, b"partial").expect("write partial");
    }
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for path in [&stale, &unrelated] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|file| file.set_modified(an_hour_ago))
            .expect("age the partial");
    }

    download(&source_for(&server), &dest, false).expect("download");

    assert_eq!(
        dir_entries(dir.path()),
        [
            ".model.safetensors.live01.part",
            ".other.bin.old001.part",
            "model.safetensors"
        ]
    );
}

#[test]
fn sha256_file_of_a_missing_file_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent.safetensors");

    let err = sha256_file(&missing).expect_err("missing file");

    assert!(
        matches!(&err, FetchError::Io { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("absent.safetensors"), "{err}");
    assert_eq!(exit_code(err), 74);
}

/// Runs `data_dir_in_child` in a child process of this test binary with `envs` set.
fn data_dir_in_child(envs: &[(&str, &str)], remove: &[&str]) -> PathBuf {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command.args([
        "--exact",
        "print_data_dir",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (key, value) in envs {
        command.env(key, value);
    }
    for key in remove {
        command.env_remove(key);
    }
    let output = command.output().expect("run child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    let line = stdout
        .lines()
        // libtest prints `test print_data_dir ... ` on the same line as the output.
        .find_map(|line| line.split_once("DATA_DIR=").map(|(_, dir)| dir))
        .unwrap_or_else(|| panic!("no DATA_DIR line in child output: {stdout}"));
    PathBuf::from(line)
}

/// Env vars are process-global and tests run on parallel threads: each case runs in a child.
#[test]
fn data_dir_honours_state_directory_then_root_then_xdg() {
    assert_eq!(
        data_dir_in_child(
            &[("STATE_DIRECTORY", "/var/lib/edgeclass:/var/lib/extra")],
            &[]
        ),
        PathBuf::from("/var/lib/edgeclass")
    );
    // root (`sudo edgeclass fetch-model`) fills the service's state directory; users their own.
    // SAFETY: geteuid has no preconditions.
    let expected = if unsafe { libc::geteuid() } == 0 {
        "/var/lib/edgeclass"
    } else {
        "/tmp/xdg-data/edgeclass"
    };
    assert_eq!(
        data_dir_in_child(&[("XDG_DATA_HOME", "/tmp/xdg-data")], &["STATE_DIRECTORY"]),
        PathBuf::from(expected)
    );
}

#[test]
#[ignore = "run in a child process by data_dir_honours_state_directory_then_root_then_xdg"]
fn print_data_dir() {
    println!("DATA_DIR={}", data_dir().display());
}

/// The path `edgeclass fetch-model` requests: the pinned repo, revision and file.
fn pinned_path() -> String {
    let pinned = WeightsSource::default();
    format!(
        "/{}/resolve/{}/{}",
        pinned.repo, pinned.revision, pinned.file
    )
}

#[test]
fn fetch_model_command_downloads_verifies_and_quantizes_a_usable_model() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let weights = std::fs::read(fixtures.join("model_tiny_resnet18.safetensors")).expect("fixture");
    let hash = sha256_hex(&weights);
    let path = pinned_path();
    let server = FixtureServer::start(|_| routes(vec![(path.as_str(), Reply::ok(weights))]));
    let dir = tempfile::tempdir().expect("tempdir");
    let fetch = |output: &Path, sha256: &str| {
        Command::new(env!("CARGO_BIN_EXE_edgeclass"))
            .args([
                "fetch-model",
                "--base-url",
                &server.base_url(),
                "--sha256",
                sha256,
            ])
            .arg("--output")
            .arg(output)
            .output()
            .expect("run fetch-model")
    };

    let model = dir.path().join("models/resnet18-q8_0.gguf");
    let out = fetch(&model, &hash);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read(&model).expect("the quantized model");
    assert_eq!(&written[..4], b"GGUF");
    assert_eq!(
        dir_entries(&dir.path().join("models")),
        ["model.safetensors", "resnet18-q8_0.gguf"]
    );
    // The cached model is the real thing: it classifies the reference photo as a tabby cat.
    let out = Command::new(env!("CARGO_BIN_EXE_edgeclass"))
        .args(["classify", "--json", "--weights"])
        .arg(&model)
        .arg(fixtures.join("model_chelsea.jpg"))
        .output()
        .expect("run classify");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains(r#""top3":[{"index":281,"#), "{line}");

    // A download that does not match the expected hash is deleted and nothing is cached.
    let other = dir.path().join("other/resnet18-q8_0.gguf");
    let out = fetch(&other, &"0".repeat(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("deleted"), "{stderr}");
    assert!(dir_entries(&dir.path().join("other")).is_empty());
}

#[test]
fn fetch_model_onto_a_full_or_read_only_disk_names_the_path_and_leaves_no_file() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let weights = std::fs::read(fixtures.join("model_tiny_resnet18.safetensors")).expect("fixture");
    let hash = sha256_hex(&weights);
    let path = pinned_path();
    let server = FixtureServer::start(|_| routes(vec![(path.as_str(), Reply::ok(weights))]));
    // 64 KiB: the download (982 KB) does not fit; 2 MiB read-only: nothing can be written.
    for read_only in [false, true] {
        let disk = common::disk::SmallDisk::mount(if read_only { 2 << 20 } else { 64 << 10 });
        if read_only {
            disk.make_read_only();
        }
        let model = disk.path().join("resnet18-q8_0.gguf");
        let out = Command::new(env!("CARGO_BIN_EXE_edgeclass"))
            .args([
                "fetch-model",
                "--base-url",
                &server.base_url(),
                "--sha256",
                &hash,
            ])
            .arg("--output")
            .arg(&model)
            .output()
            .expect("run fetch-model");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(74),
            "read-only {read_only}: I/O error\n{stderr}"
        );
        assert!(
            stderr.contains(&disk.path().display().to_string()),
            "read-only {read_only}: the error names the path\n{stderr}"
        );
        assert_eq!(
            disk.entries(),
            Vec::<String>::new(),
            "read-only {read_only}: no partial file is left"
        );
    }
}

/// Where the first, killed `fetch-model` stalls: well inside the file.
const STALL_AT: usize = FIXTURE_LEN * 2 / 5;

/// `edgeclass fetch-model` writing the fixture's download to `model` (a `.safetensors` output
/// is the verified download itself, so nothing but the download runs).
fn fetch_model_command(server: &FixtureServer, model: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeclass"));
    command
        .args(["fetch-model", "--base-url", &server.base_url(), "--sha256"])
        .arg(sha256_hex(&fixture()))
        .arg("--output")
        .arg(model);
    command
}

/// A `fetch-model` run in a temp dir whose download of the pinned file stalled after
/// [`STALL_AT`] bytes: the server answers with `etag` and honours Range, the partial file holds
/// those bytes, and the process still runs (it is killed when this is dropped).
struct StalledDownload {
    path: String,
    server: FixtureServer,
    model: PathBuf,
    partial: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl StalledDownload {
    fn start(etag: &'static str, body: Vec<u8>) -> Self {
        let path = pinned_path();
        let server = FixtureServer::start(|_| routes(vec![(path.as_str(), stalling(etag, body))]));
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("model.safetensors");
        let partial = model.with_file_name(partial_name(&sha256_hex(&fixture())));
        let mut child = fetch_model_command(&server, &model)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run fetch-model");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&partial).map_or(0, |meta| meta.len()) < STALL_AT as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "no {STALL_AT} bytes in {} within 60 s",
                partial.display()
            );
            assert!(
                child.try_wait().expect("poll fetch-model").is_none(),
                "fetch-model ended before it stalled"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        StalledDownload {
            path,
            server,
            model,
            partial,
            child,
            _dir: dir,
        }
    }

    /// Kills the process with SIGKILL, as systemd's start timeout would.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL fetch-model");
        self.child.wait().expect("reap fetch-model");
    }

    /// From now on the server answers for the pinned path with `reply`.
    fn then_serve(&self, reply: Reply) {
        self.server.set_route(&self.path, reply);
    }
}

impl Drop for StalledDownload {
    fn drop(&mut self) {
        // A failed assertion must not leave the process behind; after `kill` this is a no-op.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `fetch-model` to the end and checks it succeeded with the right file and nothing else
/// left in the directory.
fn fetch_model_completes(server: &FixtureServer, model: &Path) {
    let out = fetch_model_command(server, model)
        .output()
        .expect("run fetch-model");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(std::fs::read(model).expect("read model"), fixture());
    assert_eq!(
        dir_entries(model.parent().expect("model dir")),
        ["model.safetensors"],
        "the partial file and its sidecar are gone"
    );
}

/// This process's umask, from /proc (Linux 4.7+).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))
        .expect("Umask line in /proc/self/status");
    u32::from_str_radix(line.trim(), 8).expect("octal umask")
}

fn stalling(etag: &'static str, body: Vec<u8>) -> Reply {
    Reply {
        etag: Some(etag),
        honour_range: true,
        stall_at: Some(STALL_AT),
        ..Reply::ok(body)
    }
}

/// The pinned file with `etag`, honouring Range, to its end.
fn resumable(etag: &'static str) -> Reply {
    Reply {
        stall_at: None,
        ..stalling(etag, fixture())
    }
}

/// Issue #15: systemd kills the first start on a slow link; the next start continues the
/// download instead of starting from zero.
#[test]
fn fetch_model_killed_mid_download_resumes_on_the_next_run() {
    let mut download = StalledDownload::start("\"v1\"", fixture());
    download.kill();
    let partial_mode = std::fs::metadata(&download.partial)
        .expect("partial")
        .permissions();
    download.then_serve(resumable("\"v1\""));
    let server = &download.server;
    fetch_model_completes(server, &download.model);

    assert_eq!(
        server.seen(),
        [
            Seen {
                range: None,
                if_range: None
            },
            Seen {
                range: Some(STALL_AT),
                if_range: Some("\"v1\"".to_owned())
            }
        ]
    );
    assert_eq!(server.served(), FIXTURE_LEN, "each byte is sent once");
    // The mode the model has always had (tempfile's 0644, less the umask): readable by the
    // daemon's user when root fetched it, writable by no one else.
    assert_eq!(partial_mode.mode() & 0o777, 0o644 & !umask());
}

/// The partial file is locked while a download runs: a second `fetch-model` fails at once with
/// EX_TEMPFAIL and leaves the first one's bytes alone.
#[test]
fn a_second_fetch_model_during_a_download_fails_with_tempfail() {
    let mut first = StalledDownload::start("\"v1\"", fixture());
    let second = fetch_model_command(&first.server, &first.model)
        .output()
        .expect("run the second fetch-model");
    first.kill();
    let (server, partial) = (&first.server, &first.partial);

    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("another process is downloading")
            && stderr.contains(&*partial.to_string_lossy()),
        "{stderr}"
    );
    assert_eq!(
        server.requests(),
        1,
        "the second process asked the server nothing"
    );
    assert_eq!(
        std::fs::metadata(partial).expect("partial").len(),
        STALL_AT as u64
    );
}

/// The file on the server changed since the partial download (another ETag): `If-Range` makes
/// the server send the whole new file, which is not stitched onto the old prefix.
#[test]
fn a_partial_download_of_a_file_since_changed_on_the_server_starts_over() {
    let mut old = fixture();
    old.reverse();
    let mut download = StalledDownload::start("\"v0\"", old);
    download.kill();
    download.then_serve(resumable("\"v1\""));
    let server = &download.server;
    fetch_model_completes(server, &download.model);

    // One request for the new file: no stitched file failing its checksum and fetched again.
    assert_eq!(
        server.seen()[1..],
        [Seen {
            range: Some(STALL_AT),
            if_range: Some("\"v0\"".to_owned())
        }]
    );
    assert_eq!(server.served(), STALL_AT + FIXTURE_LEN);
}

/// A damaged prefix (a power cut, a bad SD card) fails the SHA-256 after resuming: the file is
/// downloaded once more from the start, and the partial file is gone afterwards.
#[test]
fn a_corrupt_partial_download_is_fetched_once_more_from_the_start() {
    let mut download = StalledDownload::start("\"v1\"", fixture());
    download.kill();
    let mut bytes = std::fs::read(&download.partial).expect("partial");
    bytes[STALL_AT / 2] ^= 0x01;
    std::fs::write(&download.partial, bytes).expect("damage the partial file");
    download.then_serve(resumable("\"v1\""));
    let server = &download.server;
    fetch_model_completes(server, &download.model);

    // Killed run, the resumed request, one download from the start.
    let ranges: Vec<Option<usize>> = server.seen().iter().map(|seen| seen.range).collect();
    assert_eq!(ranges, [None, Some(STALL_AT), None]);
}

/// A server that ignores Range answers 200 with the whole file: it replaces the prefix.
#[test]
fn a_server_ignoring_range_gets_the_partial_download_replaced() {
    let mut download = StalledDownload::start("\"v1\"", fixture());
    download.kill();
    download.then_serve(Reply {
        etag: Some("\"v1\""),
        ..Reply::ok(fixture())
    });
    let server = &download.server;
    fetch_model_completes(server, &download.model);

    let ranges: Vec<Option<usize>> = server.seen().iter().map(|seen| seen.range).collect();
    assert_eq!(ranges, [None, Some(STALL_AT)]);
    assert_eq!(server.served(), STALL_AT + FIXTURE_LEN);
}

/// A partial file longer than the file on the server (damaged) gets 416 for its Range request:
/// it is discarded and the file downloaded from the start.
#[test]
fn a_partial_download_longer_than_the_file_gets_416_and_starts_over() {
    let mut download = StalledDownload::start("\"v1\"", fixture());
    download.kill();
    let too_long = FIXTURE_LEN + 1000;
    std::fs::File::options()
        .write(true)
        .open(&download.partial)
        .and_then(|file| file.set_len(too_long as u64))
        .expect("lengthen the partial file");
    download.then_serve(resumable("\"v1\""));
    let server = &download.server;
    fetch_model_completes(server, &download.model);

    let ranges: Vec<Option<usize>> = server.seen().iter().map(|seen| seen.range).collect();
    assert_eq!(ranges, [None, Some(too_long), None]);
}
