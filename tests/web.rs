//! The web page's HTTP API against the real daemon on 127.0.0.1: schemas, snapshots, the live
//! stream, `/metrics` through a Prometheus text parser, uploads, limits, credentials, CSRF and
//! path traversal.

mod common {
    pub mod heads;
    pub mod mosquitto;
    pub mod wait;
    pub mod web;
}

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::heads::write_head;
use common::mosquitto::Subscriber;
use common::wait::poll_until;
use common::web::{config, sample, WebDaemon, START};
use edgeclass::model::{Model, Precision};
use edgeclass::postprocess::topk::{softmax_in_place, top_k};
use edgeclass::preprocess::{read_image_file, PreprocessConfig, Preprocessor};

const WAIT: Duration = Duration::from_secs(30);

fn chelsea_daemon(web: &str) -> WebDaemon {
    let source = format!("file:{}", sample("chelsea.jpg").display());
    let web = web.to_string();
    WebDaemon::start(move |broker, port, _| config(broker, port, &[("door", &source)], &web, ""))
}

/// The counters of `/metrics`, parsed by `prometheus-parse`, as `(name, camera) -> value`.
fn scrape(daemon: &WebDaemon) -> Vec<prometheus_parse::Sample> {
    let mut response = daemon.get("/metrics").expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let text = response.body_mut().read_to_string().expect("body");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("/metrics is not the text format: {e}\n{text}"))
        .samples
}

fn value(samples: &[prometheus_parse::Sample], name: &str) -> f64 {
    let sample = samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("no {name} in /metrics"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: unexpected {other:?}"),
    }
}

#[test]
fn cameras_snapshot_events_and_metrics_follow_the_frames() {
    let daemon = chelsea_daemon("");
    let has_event = poll_until(WAIT, || {
        daemon.get_json("/api/cameras")[0]["event"].is_object()
    });
    assert!(
        has_event,
        "no event reached /api/cameras\n{}",
        daemon.stderr()
    );
    let cameras = daemon.get_json("/api/cameras");
    let door = &cameras[0];
    assert_eq!(cameras.as_array().map(Vec::len), Some(1));
    assert_eq!(door["id"], "door");
    assert_eq!(door["online"], true);
    assert!(door["frames_processed"].as_u64() > Some(0), "{door}");
    assert!(door["fps"].is_number(), "{door}");
    let event = &door["event"];
    assert_eq!(event["camera"], "door");
    assert_eq!(event["top3"].as_array().map(Vec::len), Some(3), "{event}");
    assert!(event["label"].is_string() && event["latency_ms"].is_number());

    // The snapshot is the captured JPEG byte for byte.
    let mut response = daemon
        .get("/api/cameras/door/snapshot.jpg")
        .expect("GET snapshot");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let jpeg = response.body_mut().read_to_vec().expect("body");
    assert_eq!(jpeg, std::fs::read(sample("chelsea.jpg")).unwrap());

    // The live stream delivers events as they are published.
    let response = daemon.get("/api/events").expect("GET /api/events");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut lines = BufReader::new(response.into_body().into_reader()).lines();
    let data = lines
        .find_map(|line| line.ok()?.strip_prefix("data:").map(str::to_string))
        .expect("an event on /api/events");
    let update: serde_json::Value = serde_json::from_str(data.trim()).expect("JSON event");
    assert_eq!(update["kind"], "event");
    assert_eq!(update["event"]["camera"], "door");

    // The counters move as frames flow.
    let first = scrape(&daemon);
    let processed = value(&first, "edgeclass_frames_processed_total");
    assert!(processed > 0.0);
    assert!(value(&first, "edgeclass_frames_captured_total") >= processed);
    assert_eq!(value(&first, "edgeclass_camera_online"), 1.0);
    assert_eq!(value(&first, "edgeclass_broker_connected"), 1.0);
    assert!(first
        .iter()
        .any(|s| s.metric == "edgeclass_inference_latency_seconds"
            && s.labels.get("camera") == Some("door")));
    assert!(first
        .iter()
        .any(|s| s.metric.starts_with("edgeclass_model")));
    let moved = poll_until(WAIT, || {
        let now = scrape(&daemon);
        value(&now, "edgeclass_frames_processed_total") > processed
            && value(&now, "edgeclass_events_published_total") > 0.0
    });
    assert!(moved, "frames_processed did not move");

    // Ready: model loaded, broker connected, camera online.
    let ready = daemon.get_json("/readyz");
    assert_eq!(ready["ready"], true, "{ready}");
}

#[test]
fn uploads_are_classified_like_classify_json() {
    let daemon = chelsea_daemon("max_upload_bytes = 200000");
    let photo = std::fs::read(sample("chelsea.jpg")).unwrap();
    let mut response = daemon
        .agent()
        .post(daemon.url("/api/classify"))
        .header("content-type", "image/jpeg")
        .send(&photo[..])
        .expect("POST /api/classify");
    let text = response.body_mut().read_to_string().unwrap();
    assert_eq!(response.status(), 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();

    // What `edgeclass classify --json` computes for the same model and file.
    let model = Model::synthetic(7, Precision::Q8_0, 1).unwrap();
    let mut preprocessor =
        Preprocessor::new(PreprocessConfig::for_input_size(model.input_size() as u32));
    let mut logits = Vec::new();
    let input = preprocessor
        .run(&read_image_file(&sample("chelsea.jpg")).unwrap())
        .unwrap();
    model.forward(input, &mut logits).unwrap();
    softmax_in_place(&mut logits);
    let expected = top_k(&logits, 3);
    let top3 = answer["top3"].as_array().expect("top3");
    assert_eq!(top3.len(), 3);
    for (guess, (index, score)) in top3.iter().zip(expected) {
        assert_eq!(guess["index"].as_u64(), Some(index as u64), "{text}");
        let got = guess["score"].as_f64().unwrap();
        assert!((got - f64::from(score)).abs() < 1e-5, "{got} vs {score}");
        assert!(guess["wnid"].as_str().is_some_and(|w| w.starts_with('n')));
    }
    assert_eq!(answer["model"], model.description());
    assert_eq!(answer["precision"], "q8_0");
    assert!(answer["latency_ms"].is_number());
    // The daemon's postprocessing of the same scores (threshold 0: never unknown).
    let mapped = &answer["classification"];
    assert_eq!(mapped["unknown"], false);
    assert_eq!(mapped["label"], top3[0]["label"]);
    assert_eq!(mapped["top3"][0]["index"], top3[0]["index"]);

    // Multipart: one answer per file part.
    let boundary = "edgeclass-test-boundary";
    let mut form = Vec::new();
    for name in ["a.jpg", "b.jpg"] {
        form.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; \
                 filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n"
            )
            .as_bytes(),
        );
        form.extend_from_slice(&photo);
        form.extend_from_slice(b"\r\n");
    }
    form.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut response = daemon
        .agent()
        .post(daemon.url("/api/classify"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .send(&form[..])
        .unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    assert_eq!(response.status(), 200, "{text}");
    let answers: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answers[1]["file"], "b.jpg");
    assert_eq!(answers[1]["top3"], answer["top3"]);

    // Not an image: 422 with a reason. Too large: 413, raw or multipart.
    let response = daemon
        .agent()
        .post(daemon.url("/api/classify"))
        .send(&b"not an image"[..])
        .unwrap();
    assert_eq!(response.status(), 422);
    let big = vec![0u8; 200_001];
    let response = daemon
        .agent()
        .post(daemon.url("/api/classify"))
        .send(&big[..])
        .unwrap();
    assert_eq!(response.status(), 413);
    let mut big_form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; \
         filename=\"big.jpg\"\r\n\r\n"
    )
    .into_bytes();
    big_form.extend_from_slice(&big);
    big_form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = daemon
        .agent()
        .post(daemon.url("/api/classify"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .send(&big_form[..])
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[test]
fn cross_site_writes_rebound_host_names_and_path_tricks_are_refused() {
    let daemon = chelsea_daemon("");
    let photo = std::fs::read(sample("chelsea.jpg")).unwrap();
    let post = |headers: &[(&str, &str)]| {
        let mut request = daemon.agent().post(daemon.url("/api/classify"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send(&photo[..]).unwrap().status()
    };
    let own = format!("http://127.0.0.1:{}", daemon.port);
    assert_eq!(post(&[("origin", &own)]), 200);
    assert_eq!(post(&[("origin", "http://evil.example")]), 403);
    assert_eq!(post(&[("referer", "http://evil.example/page")]), 403);
    assert_eq!(post(&[("sec-fetch-site", "cross-site")]), 403);

    // On loopback only loopback host names are served: a site re-pointed at 127.0.0.1 (DNS
    // rebinding) gets nothing, not even a read.
    let host = |name: &str| {
        let request = daemon.agent().get(daemon.url("/api/cameras"));
        let response = request.header("host", format!("{name}:{}", daemon.port));
        response.call().unwrap().status()
    };
    assert_eq!(host("evil.example"), 403);
    assert_eq!(host("localhost"), 200);
    assert_eq!(host("127.0.0.1"), 200);

    for path in [
        "/api/cameras/nope/snapshot.jpg",
        "/api/cameras/..%2F..%2Fetc%2Fpasswd/snapshot.jpg",
        "/api/cameras/../../etc/passwd",
        "/api/cameras/%2e%2e/snapshot.jpg",
        "/../../etc/passwd",
        "/app.js/../../Cargo.toml",
    ] {
        let mut response = daemon.get(path).unwrap();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        assert!(
            matches!(response.status().as_u16(), 400 | 404),
            "{path}: {} {body}",
            response.status()
        );
        assert!(!body.contains("root:"), "{path}: {body}");
    }
}

#[test]
fn beyond_loopback_credentials_are_required() {
    // Without credentials the daemon refuses to start: a configuration error.
    let mut refused = WebDaemon::spawn(|broker, port, _| {
        let source = format!("file:{}", sample("chelsea.jpg").display());
        config(
            broker,
            port,
            &[("door", &source)],
            &format!("listen = \"0.0.0.0:{port}\""),
            "",
        )
    });
    let status = refused.wait_exit(START);
    assert_eq!(status.code(), Some(78), "{}", refused.stderr());
    assert!(
        refused.stderr().contains("web.listen"),
        "{}",
        refused.stderr()
    );

    // With a token: every request but the probes needs it.
    let daemon = WebDaemon::start(|broker, port, dir| {
        let passwd = dir.join("web.passwd");
        std::fs::write(&passwd, "ana:s3cret\n").unwrap();
        let source = format!("file:{}", sample("chelsea.jpg").display());
        config(
            broker,
            port,
            &[("door", &source)],
            &format!(
                "listen = \"0.0.0.0:{port}\"\ntoken = \"t0ken\"\npassword_file = \"{}\"",
                passwd.display()
            ),
            "",
        )
    });
    for path in [
        "/",
        "/api/cameras",
        "/metrics",
        "/api/cameras/door/snapshot.jpg",
    ] {
        let response = daemon.get(path).unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert!(response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
    }
    assert_eq!(daemon.get("/healthz").unwrap().status(), 200);
    let with = |value: &str| {
        daemon
            .agent()
            .get(daemon.url("/api/cameras"))
            .header("authorization", value)
            .call()
            .unwrap()
            .status()
    };
    assert_eq!(with("Bearer t0ken"), 200);
    assert_eq!(with("Bearer wrong"), 401);
    // HTTP Basic, as a browser sends it: ana:s3cret, then anyone:t0ken, then ana:wrong.
    assert_eq!(with("Basic YW5hOnMzY3JldA=="), 200);
    assert_eq!(with("Basic YW55b25lOnQwa2Vu"), 200);
    assert_eq!(with("Basic YW5hOndyb25n"), 401);
    // Writes need credentials too.
    let response = daemon
        .agent()
        .post(daemon.url("/api/classify"))
        .send(&b"x"[..])
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[test]
fn a_taken_port_costs_the_page_but_not_the_events() {
    // Another program holds the web port: the daemon says so and classifies and publishes on.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("address").port();
    let mut daemon = WebDaemon::spawn(|broker, _, _| {
        let source = format!("file:{}", sample("chelsea.jpg").display());
        config(
            broker,
            taken,
            &[("door", &source)],
            &format!("listen = \"127.0.0.1:{taken}\""),
            "",
        )
    });
    let event = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &daemon.broker.port().to_string()])
        .args(["-t", "edgeclass/door/event", "-C", "1", "-W", "30"])
        .output()
        .expect("mosquitto_sub (run .ci/setup)");
    let event = String::from_utf8_lossy(&event.stdout);
    assert!(
        event.contains("\"camera\":\"door\""),
        "no event: {event}\n{}",
        daemon.stderr()
    );
    assert!(
        daemon
            .stderr()
            .contains(&format!("cannot listen on 127.0.0.1:{taken} (web.listen)")),
        "{}",
        daemon.stderr()
    );
    assert!(
        daemon.is_running(),
        "the daemon stopped\n{}",
        daemon.stderr()
    );
    drop(holder);
}

/// POSTs `body` to `/api/thresholds` with `origin`; the status and the body.
fn post_thresholds(daemon: &WebDaemon, origin: &str, body: &str) -> (u16, String) {
    let mut response = daemon
        .agent()
        .post(daemon.url("/api/thresholds"))
        .header("origin", origin)
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .expect("POST /api/thresholds");
    let text = response.body_mut().read_to_string().expect("body");
    (response.status().as_u16(), text)
}

#[test]
fn applied_thresholds_go_to_the_overrides_file_and_the_events_follow_them() {
    let daemon = chelsea_daemon("");
    let events = Subscriber::connect(daemon.broker.port(), &["edgeclass/door/event"]);
    let has_scores = poll_until(WAIT, || {
        daemon.get_json("/api/thresholds")["labels"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    });
    assert!(has_scores, "no recent scores\n{}", daemon.stderr());
    let current = daemon.get_json("/api/thresholds");
    let label = current["labels"][0]["label"].as_str().unwrap().to_string();
    // The config's global threshold 0.0 applies to the label.
    assert_eq!(current["labels"][0]["threshold"], 0.0, "{current}");
    let recent = &current["recent"][0];
    assert_eq!(recent["camera"], "door");
    assert_eq!(recent["label"], label.as_str());
    assert!(
        recent["score"].as_f64() > Some(0.0) && recent["ts_ms"].is_u64(),
        "{recent}"
    );
    let overrides = daemon.dir.path().join("state/overrides.toml");
    assert_eq!(
        current["overrides_file"].as_str(),
        Some(overrides.to_str().unwrap())
    );

    // Cross-site: refused, nothing written.
    let apply = format!("{{\"thresholds\": {{{label:?}: 1.0}}}}");
    let (status, _) = post_thresholds(&daemon, "http://evil.example", &apply);
    assert_eq!(status, 403);
    assert!(!overrides.exists());

    // Invalid values: 400 naming the field, nothing written.
    let own = format!("http://127.0.0.1:{}", daemon.port);
    for (body, field) in [
        (
            format!("{{\"thresholds\": {{{label:?}: 1.5}}}}"),
            format!("thresholds.{label:?}"),
        ),
        (
            format!("{{\"thresholds\": {{{label:?}: \"high\"}}}}"),
            "thresholds".to_string(),
        ),
        (
            "{\"thresholds\": {\"no such label\": 0.5}}".to_string(),
            "thresholds.\"no such label\"".to_string(),
        ),
        ("{\"thresholds\": {}}".to_string(), "thresholds".to_string()),
        ("{\"threshold\": -0.5}".to_string(), "threshold".to_string()),
        ("{\"thresold\": 0.5}".to_string(), "thresold".to_string()),
        ("not json".to_string(), "expected".to_string()),
    ] {
        let (status, text) = post_thresholds(&daemon, &own, &body);
        assert_eq!(status, 400, "{body}: {text}");
        let error: serde_json::Value = serde_json::from_str(&text).expect("a JSON error");
        let error = error["error"].as_str().unwrap_or_default();
        assert!(error.contains(&field), "{body}: {error}");
    }
    assert!(!overrides.exists());

    // Applied: written to the overrides file, reloaded, and the events follow.
    let (status, text) = post_thresholds(&daemon, &own, &apply);
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let applied = answer["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == label.as_str())
        .expect("the label in the answer");
    assert_eq!(applied["threshold"], 1.0, "{answer}");
    let written: toml::Table = std::fs::read_to_string(&overrides)
        .expect("the overrides file")
        .parse()
        .expect("TOML");
    assert_eq!(
        written["postprocess"]["thresholds"][label.as_str()].as_float(),
        Some(1.0),
        "{written}"
    );
    let unknown = events
        .wait_until(WAIT, |m| m.json()["unknown"] == true)
        .unwrap_or_else(|| panic!("events did not follow the threshold\n{}", daemon.stderr()))
        .json();
    assert_eq!(unknown["label"], "unrecognized");
    assert_eq!(unknown["top3"][0]["label"], label.as_str());
}

#[test]
fn recent_scores_are_recorded_only_once_the_thresholds_page_asks() {
    let daemon = chelsea_daemon("");
    let flowed = poll_until(WAIT, || {
        daemon.get_json("/api/cameras")[0]["frames_processed"].as_u64() >= Some(3)
    });
    assert!(flowed, "no frames processed\n{}", daemon.stderr());
    // Frames were classified, but nobody asked: the first request finds nothing, and recording
    // starts with it (that nothing is even written before is board.rs's unit test).
    let first = daemon.get_json("/api/thresholds");
    assert_eq!(first["frames"], 0, "{first}");
    assert_eq!(first["recent"].as_array().map(Vec::len), Some(0), "{first}");
    let (since, until) = (
        first["recording"]["since_ms"].as_u64().expect("since_ms"),
        first["recording"]["until_ms"].as_u64().expect("until_ms"),
    );
    assert_eq!(until - since, 600_000, "armed for ten minutes: {first}");
    // Asked once: recording runs, and a later request keeps its start.
    let filled = poll_until(WAIT, || {
        daemon.get_json("/api/thresholds")["frames"].as_u64() >= Some(2)
    });
    assert!(
        filled,
        "nothing recorded after a request\n{}",
        daemon.stderr()
    );
    let later = daemon.get_json("/api/thresholds");
    assert_eq!(later["recording"]["since_ms"].as_u64(), Some(since));
    let recent = later["recent"].as_array().expect("recent");
    assert!(!recent.is_empty() && recent.len() as u64 <= later["frames"].as_u64().unwrap());
    assert!(
        recent.iter().all(|r| r["ts_ms"].as_u64() >= Some(since)),
        "{later}"
    );
}

#[test]
fn global_and_head_thresholds_go_to_the_overrides_file_and_the_events_follow_them() {
    let weights = tempfile::tempdir().expect("temp dir");
    let head_file = weights.path().join("garage_door.gguf");
    write_head(&head_file, &["open", "closed"], 16, 1);
    let source = format!("file:{}", sample("chelsea.jpg").display());
    let daemon = WebDaemon::start(|broker, port, _| {
        let camera = format!(
            "[[cameras]]\nid = \"door\"\nsource = \"{source}\"\ninterval_ms = 100\n\
             heads = [\"garage_door\"]\n[cameras.motion]\nenabled = false\n\n\
             [[heads]]\nname = \"garage_door\"\nweights = \"{}\"\n\
             [heads.postprocess]\nthreshold = 0.0\n",
            head_file.display()
        );
        config(broker, port, &[], "", &camera)
    });
    let events = Subscriber::connect(
        daemon.broker.port(),
        &["edgeclass/door/event", "edgeclass/door/garage_door/event"],
    );
    let scored = poll_until(WAIT, || {
        let current = daemon.get_json("/api/thresholds");
        current["recent"].as_array().is_some_and(|r| !r.is_empty())
            && current["heads"][0]["recent"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
    });
    assert!(scored, "no recent scores\n{}", daemon.stderr());
    let current = daemon.get_json("/api/thresholds");
    assert_eq!(current["threshold"], 0.0, "{current}");
    let head = &current["heads"][0];
    assert_eq!(head["name"], "garage_door", "{current}");
    assert_eq!(head["threshold"], 0.0, "{head}");
    assert!(head["frames"].as_u64() > Some(0), "{head}");
    let head_label = head["recent"][0]["label"].as_str().unwrap().to_string();
    assert!(["open", "closed"].contains(&head_label.as_str()), "{head}");
    assert_eq!(head["labels"][0]["own"], false, "{head}");

    let own = format!("http://127.0.0.1:{}", daemon.port);
    let overrides = daemon.dir.path().join("state/overrides.toml");
    for (body, field) in [
        (
            r#"{"heads": {"attic": {"threshold": 0.5}}}"#,
            r#"heads."attic""#,
        ),
        (
            r#"{"heads": {"garage_door": {"threshold": 2}}}"#,
            r#"heads."garage_door".threshold"#,
        ),
        (
            r#"{"heads": {"garage_door": {"thresholds": {"ajar": 0.5}}}}"#,
            r#"heads."garage_door".thresholds."ajar""#,
        ),
        (
            r#"{"heads": {"garage_door": {"treshold": 0.5}}}"#,
            "heads.garage_door",
        ),
        (r#"{"heads": {}}"#, "nothing to apply"),
    ] {
        let (status, text) = post_thresholds(&daemon, &own, body);
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(&field.replace('"', "\\\"")), "{body}: {text}");
    }
    assert!(!overrides.exists());

    // The global threshold: every ImageNet label follows it.
    let (status, text) = post_thresholds(&daemon, &own, r#"{"threshold": 1.0}"#);
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["threshold"], 1.0, "{answer}");
    let written = || -> toml::Table {
        std::fs::read_to_string(&overrides)
            .expect("the overrides file")
            .parse()
            .expect("TOML")
    };
    assert_eq!(written()["postprocess"]["threshold"].as_float(), Some(1.0));
    let unknown = events
        .wait_until(WAIT, |m| {
            m.topic == "edgeclass/door/event" && m.json()["unknown"] == true
        })
        .unwrap_or_else(|| panic!("events did not follow the threshold\n{}", daemon.stderr()));
    assert_eq!(unknown.json()["label"], "unrecognized");

    // A head's global threshold, in the head's [[heads]] entry: its events turn unknown.
    let (status, text) = post_thresholds(
        &daemon,
        &own,
        r#"{"heads": {"garage_door": {"threshold": 1.0}}}"#,
    );
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["heads"][0]["threshold"], 1.0, "{answer}");
    let head_entry = |table: &toml::Table| -> toml::Table {
        table["heads"]
            .as_array()
            .and_then(|heads| {
                heads
                    .iter()
                    .find(|h| h["name"].as_str() == Some("garage_door"))
            })
            .and_then(|h| h["postprocess"].as_table().cloned())
            .unwrap_or_else(|| panic!("no [[heads]] garage_door postprocess in {table}"))
    };
    let table = written();
    assert_eq!(
        head_entry(&table)["threshold"].as_float(),
        Some(1.0),
        "{table}"
    );
    // The ImageNet threshold written before is still there.
    assert_eq!(table["postprocess"]["threshold"].as_float(), Some(1.0));
    let head_event = |unknown: bool| {
        events
            .wait_until(WAIT, |m| {
                m.topic == "edgeclass/door/garage_door/event" && m.json()["unknown"] == unknown
            })
            .unwrap_or_else(|| {
                panic!(
                    "no head event with unknown = {unknown}: {}\n{}",
                    daemon.get_json("/api/thresholds")["heads"],
                    daemon.stderr()
                )
            })
            .json()
    };
    assert!(head_event(true)["score"].as_f64() < Some(1.0));

    // One of the head's labels: its own threshold wins over the global one.
    let body =
        format!(r#"{{"heads": {{"garage_door": {{"thresholds": {{{head_label:?}: 0.0}}}}}}}}"#);
    let (status, text) = post_thresholds(&daemon, &own, &body);
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let label = answer["heads"][0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == head_label.as_str())
        .cloned()
        .expect("the head's label in the answer");
    assert_eq!(label["threshold"], 0.0, "{answer}");
    assert_eq!(label["own"], true, "{answer}");
    let table = written();
    assert_eq!(
        head_entry(&table)["thresholds"][head_label.as_str()].as_float(),
        Some(0.0),
        "{table}"
    );
    assert_eq!(head_event(false)["label"], head_label.as_str());
}
