//! The daemon end to end: the real binary on `file:` sources with synthetic weights, a real
//! mosquitto on 127.0.0.1, a real MQTT subscriber.

mod common {
    pub mod daemon;
    pub mod heads;
    pub mod mosquitto;
    pub mod rng;
    pub mod scenes;
    pub mod wait;
}

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::daemon::Daemon;
use common::heads::{seeded_head, synthetic_backbone, write_head};
use common::mosquitto::{free_port, Mosquitto, Received, Subscriber};
use common::scenes::{door, write_doors, Variation};
use common::wait::{is_listening, poll_until};
use edgeclass::model::{write_gguf, Head, Network, StorageDtype};
use edgeclass::postprocess::topk::{softmax_in_place, top_k};
use edgeclass::postprocess::MeanProbabilities;
use edgeclass::preprocess::{read_image_file, PreprocessConfig, Preprocessor, Tta};

const WAIT: Duration = Duration::from_secs(30);

/// How long a steady scene is watched for an event that must not come. No message tells that
/// the daemon classified a frame and decided to stay silent, so this stays a window: at one
/// frame per 100 ms it spans some twenty frames, far more than `hold = 3`.
const QUIET_WINDOW: Duration = Duration::from_secs(2);

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name)
}

/// A config for one `file:` camera with synthetic weights; `extra` is appended (TOML tables;
/// `[cameras.motion]` there belongs to that camera).
fn config(url: &str, source: &Path, extra: &str) -> String {
    format!(
        r#"
[model]
synthetic_seed = 7
precision = "q8_0"
threads = 1

[mqtt]
url = "{url}"
reconnect_min_ms = 50
reconnect_max_ms = 400

[mqtt.discovery]
node_id = "testnode"

[[cameras]]
id = "door"
source = "file:{source}"
interval_ms = 100

{extra}
"#,
        source = source.display()
    )
}

fn events(messages: &[Received]) -> Vec<serde_json::Value> {
    messages
        .iter()
        .filter(|m| m.topic.ends_with("/event"))
        .map(Received::json)
        .collect()
}

#[test]
fn publishes_events_state_and_discovery_then_goes_offline_on_sigterm() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/#", "homeassistant/#"]);
    let extra = "[postprocess]\nthreshold = 0.0\n[publish_policy]\nmode = \"every\"\n";
    let mut daemon = Daemon::start(&config(
        &broker.url(),
        &sample("chelsea.jpg"),
        &format!("{extra}[cameras.motion]\nenabled = false\n"),
    ));

    let event = sub
        .wait_for_topic("edgeclass/door/event", WAIT)
        .unwrap_or_else(|| panic!("no event\n{}", daemon.stderr()))
        .json();
    assert_eq!(event["camera"], "door");
    assert!(event["seq"].as_u64().is_some_and(|s| s >= 1));
    let ts = event["ts"].as_str().expect("ts is a string");
    assert!(
        humantime::parse_rfc3339(ts).is_ok(),
        "ts {ts} is not RFC 3339"
    );
    assert!(event["frame"].is_u64());
    assert_eq!(event["unknown"], false, "threshold 0 never gives unknown");
    assert_eq!(event["model"], "resnet18-q8_0");
    assert!(event["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    let top3 = event["top3"].as_array().expect("top3 is an array");
    assert_eq!(top3.len(), 3);
    for p in top3 {
        for key in ["label", "raw_label", "wnid"] {
            assert!(p[key].is_string(), "{key} in {p}");
        }
        assert!(p["index"].as_u64().is_some_and(|i| i < 1000));
    }
    let scores: Vec<f64> = top3
        .iter()
        .map(|p| p["score"].as_f64().unwrap_or(-1.0))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] > 0.0,
        "{scores:?}"
    );
    assert_eq!(event["label"], top3[0]["label"]);
    assert_eq!(event["score"], top3[0]["score"]);

    // Retained state, availability and Home Assistant discovery, as a late subscriber sees them.
    let late = Subscriber::connect(broker.port(), &["edgeclass/#", "homeassistant/#"]);
    let retained = late.drain_pending();
    let text = |topic: &str| {
        retained
            .iter()
            .find(|m| m.topic == topic)
            .map(Received::text)
    };
    assert_eq!(text("edgeclass/status").as_deref(), Some("online"));
    assert_eq!(
        text("edgeclass/door/availability").as_deref(),
        Some("online")
    );
    assert_eq!(
        text("edgeclass/door/label"),
        event["label"].as_str().map(String::from)
    );
    let sensor = retained
        .iter()
        .find(|m| m.topic.starts_with("homeassistant/sensor/") && m.topic.ends_with("/config"))
        .expect("a discovery config for the label sensor")
        .json();
    assert_eq!(sensor["state_topic"], "edgeclass/door/label");
    assert!(sensor["unique_id"].is_string() && sensor["default_entity_id"].is_string());

    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "exit {status:?}\n{}", daemon.stderr());
    let offline = sub.wait_until(WAIT, |m| {
        m.topic == "edgeclass/status" && m.text() == "offline"
    });
    assert!(offline.is_some(), "no offline status after SIGTERM");
}

#[test]
fn sigkill_leaves_the_last_will_offline() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/status"]);
    let mut daemon = Daemon::start(&config(&broker.url(), &sample("chelsea.jpg"), ""));
    assert!(
        sub.wait_until(WAIT, |m| m.text() == "online").is_some(),
        "never online\n{}",
        daemon.stderr()
    );
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5));
    assert!(
        sub.wait_until(WAIT, |m| m.text() == "offline").is_some(),
        "no last will"
    );
}

#[test]
fn per_label_threshold_turns_the_label_unknown_after_sighup_reload() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
    let base = "[publish_policy]\nmode = \"every\"\n[cameras.motion]\nenabled = false\n";
    let mut daemon = Daemon::start(&config(
        &broker.url(),
        &sample("coffee.jpg"),
        &format!("[postprocess]\nthreshold = 0.0\n{base}"),
    ));
    let first = sub
        .wait_for_topic("edgeclass/door/event", WAIT)
        .expect("first event")
        .json();
    let label = first["label"].as_str().expect("label").to_string();
    assert_eq!(first["unknown"], false);

    // Same global threshold, but this label now needs certainty: it becomes "unknown" while the
    // raw Top-3 still names it.
    let reloaded = config(
        &broker.url(),
        &sample("coffee.jpg"),
        &format!("[postprocess]\nthreshold = 0.0\nunknown_label = \"nothing sure\"\n[postprocess.thresholds]\n\"{label}\" = 1.0\n{base}"),
    );
    fs::write(daemon.config_file(), reloaded).expect("rewrite config");
    daemon.signal(libc::SIGHUP);
    let unknown = sub
        .wait_until(WAIT, |m| m.json()["unknown"] == true)
        .unwrap_or_else(|| panic!("reload did not apply\n{}", daemon.stderr()))
        .json();
    assert_eq!(unknown["label"], "nothing sure");
    assert_eq!(unknown["top3"][0]["label"], label.as_str());
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn the_overrides_file_in_the_state_directory_applies_at_start_and_on_reload() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
    let state = tempfile::tempdir().expect("state dir");
    let state_env = state.path().display().to_string();
    let overrides = state.path().join("overrides.toml");
    let cfg = config(
        &broker.url(),
        &sample("coffee.jpg"),
        "[postprocess]\nthreshold = 0.0\n[publish_policy]\nmode = \"every\"\n\
         [cameras.motion]\nenabled = false\n",
    );
    let mut daemon = Daemon::start_with_env(&cfg, &[("STATE_DIRECTORY", &state_env)]);
    let first = sub
        .wait_for_topic("edgeclass/door/event", WAIT)
        .unwrap_or_else(|| panic!("no first event\n{}", daemon.stderr()))
        .json();
    let label = first["label"].as_str().expect("label").to_string();
    assert_eq!(first["unknown"], false);

    // The config file stays as it is; the overrides file makes the label need certainty.
    fs::write(
        &overrides,
        format!(
            "[postprocess]\nunknown_label = \"nothing sure\"\n\
             [postprocess.thresholds]\n\"{label}\" = 1.0\n"
        ),
    )
    .expect("write overrides");
    daemon.signal(libc::SIGHUP);
    let unknown = sub
        .wait_until(WAIT, |m| m.json()["unknown"] == true)
        .unwrap_or_else(|| panic!("the overrides did not apply on reload\n{}", daemon.stderr()))
        .json();
    assert_eq!(unknown["label"], "nothing sure");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());

    // check-config says the overrides file is in effect.
    let out = Command::new(env!("CARGO_BIN_EXE_edgeclass"))
        .arg("check-config")
        .arg(daemon.config_file())
        .env("STATE_DIRECTORY", &state_env)
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "overrides file {} is in effect",
            overrides.display()
        )),
        "{stdout}"
    );

    // At start too: a fresh daemon is unknown from its first event on.
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
    let mut daemon = Daemon::start_with_env(&cfg, &[("STATE_DIRECTORY", &state_env)]);
    let event = sub
        .wait_for_topic("edgeclass/door/event", WAIT)
        .unwrap_or_else(|| panic!("no event\n{}", daemon.stderr()))
        .json();
    assert_eq!(event["label"], "nothing sure", "{event}");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());

    // A bad value in it: exit 78, naming the overrides file and the key.
    fs::write(&overrides, "[postprocess]\nthreshold = 2.0\n").expect("write overrides");
    let mut daemon = Daemon::start_with_env(&cfg, &[("STATE_DIRECTORY", &state_env)]);
    assert_eq!(
        daemon.wait_exit(WAIT).code(),
        Some(78),
        "{}",
        daemon.stderr()
    );
    let err = daemon.stderr();
    assert!(
        err.contains("postprocess.threshold")
            && err.contains(&format!("from overrides file {}", overrides.display())),
        "{err}"
    );
}

#[test]
fn groups_sum_member_probabilities_into_one_label() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let groups = dir.path().join("groups.toml");
    fs::write(&groups, "[groups.anything]\nmembers = [\"0-999\"]\n").expect("groups file");
    let extra = format!(
        "[postprocess]\nthreshold = 0.99\ngroups = \"{}\"\n[publish_policy]\nmode = \"every\"\n",
        groups.display()
    );
    let _daemon = Daemon::start(&config(&broker.url(), &sample("chelsea.jpg"), &extra));
    let event = sub
        .wait_for_topic("edgeclass/door/event", WAIT)
        .expect("event")
        .json();
    // Every class is a member: the group holds all the probability and clears any threshold.
    assert_eq!(event["label"], "anything");
    assert_eq!(event["unknown"], false);
    assert!(
        event["score"].as_f64().is_some_and(|s| s > 0.999),
        "{event}"
    );
}

#[test]
fn on_change_publishes_a_steady_scene_once() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
    let extra = "[publish_policy]\nmode = \"on_change\"\nhold = 3\nheartbeat_s = 0\n[cameras.motion]\nenabled = false\n";
    let daemon = Daemon::start(&config(&broker.url(), &sample("chelsea.jpg"), extra));
    let first = sub.wait_for_topic("edgeclass/door/event", WAIT);
    assert!(first.is_some(), "no event\n{}", daemon.stderr());
    // Frames keep coming every 100 ms and keep being classified, but nothing changes.
    let more = sub.drain_for(QUIET_WINDOW);
    assert!(
        more.is_empty(),
        "on_change re-published a steady scene: {} events",
        more.len()
    );
}

#[test]
fn static_scene_behind_the_motion_gate_still_publishes_its_state_once() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
    // The defaults: motion gate on, on_change with hold = 3. Only the first frame is classified;
    // the gated repeats stand for it, so the state is published after three frames, and once.
    let daemon = Daemon::start(&config(&broker.url(), &sample("chelsea.jpg"), ""));
    let first = sub.wait_for_topic("edgeclass/door/event", WAIT);
    assert!(
        first.is_some(),
        "a static scene never published\n{}",
        daemon.stderr()
    );
    let more = sub.drain_for(QUIET_WINDOW);
    assert!(more.is_empty(), "re-published: {} events", more.len());
}

#[test]
fn motion_gate_skips_repeated_frames_and_sends_heartbeats() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
    let extra = "[publish_policy]\nmode = \"every\"\nheartbeat_s = 1\n[cameras.motion]\nenabled = true\nmax_skip_s = 0\n";
    let started = Instant::now();
    let mut daemon = Daemon::start(&config(&broker.url(), &sample("chelsea.jpg"), extra));
    let first = sub
        .wait_for_topic("edgeclass/door/event", WAIT)
        .unwrap_or_else(|| panic!("no event\n{}", daemon.stderr()))
        .json();
    // With policy `every`, each classification would publish; the gate lets only the first
    // frame through, and the heartbeat repeats it as a sign of life.
    let mut heartbeats = Vec::new();
    while heartbeats.len() < 3 {
        let event = sub
            .wait_for_topic("edgeclass/door/event", WAIT)
            .unwrap_or_else(|| panic!("{} heartbeats at heartbeat_s = 1", heartbeats.len()))
            .json();
        assert_eq!(
            event["heartbeat"], true,
            "a repeated frame was classified: {event}"
        );
        assert_eq!(event["frame"], first["frame"], "{event}");
        heartbeats.push(event);
    }
    // One heartbeat a second, by the daemon's clock: a heartbeat's `ts` is when it was sent (the
    // first event's is its frame's capture, before the classification that starts the period).
    let ts = |event: &serde_json::Value| {
        let text = event["ts"].as_str().expect("ts is a string");
        humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("ts {text}: {e}"))
    };
    let sent: Vec<SystemTime> = std::iter::once(&first).chain(&heartbeats).map(ts).collect();
    let gaps: Vec<Duration> = sent
        .windows(2)
        .map(|pair| pair[1].duration_since(pair[0]).unwrap_or_default())
        .collect();
    // `ts` has millisecond resolution and the period is timed on the monotonic clock.
    assert!(
        gaps.iter().all(|gap| *gap >= Duration::from_millis(900)),
        "heartbeats faster than heartbeat_s = 1: {gaps:?}"
    );
    assert!(
        gaps[1..]
            .iter()
            .all(|gap| *gap <= Duration::from_millis(1750)),
        "heartbeats slower than heartbeat_s = 1: {gaps:?}"
    );
    // At shutdown the camera says what its gate decided: one frame classified, the rest
    // skipped; the camera delivers one per 100 ms, of which the settled gate looks at
    // `idle_fps` (5) a second, over more than two seconds.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(WAIT).success(), "{}", daemon.stderr());
    let lifetime = started.elapsed().as_secs_f64();
    let stderr = daemon.stderr();
    let skipped = stderr
        .lines()
        .find_map(|line| {
            let counts = line
                .split("camera door: motion gate: 1 frames classified, ")
                .nth(1)?;
            counts.strip_suffix(" skipped")?.parse::<u64>().ok()
        })
        .unwrap_or_else(|| panic!("no gate counts at shutdown\n{stderr}"));
    assert!(
        skipped >= 8 && (1 + skipped) as f64 <= (5.0 * lifetime).ceil() + 1.0,
        "{skipped} frames skipped in {lifetime:.1} s\n{stderr}"
    );
}

/// The `seq` of every event among `messages`.
fn seqs(messages: &[Received]) -> impl Iterator<Item = u64> + '_ {
    events(messages)
        .into_iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
}

/// Reads events from `sub` into `seen` until `done(seen)`; false if that takes longer than WAIT.
fn record_until(
    sub: &Subscriber,
    seen: &mut BTreeSet<u64>,
    done: impl Fn(&BTreeSet<u64>) -> bool,
) -> bool {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv(left) {
            Some(message) => seen.extend(seqs(&[message])),
            None => return false,
        }
    }
    true
}

#[test]
fn broker_restart_mid_stream_loses_no_event() {
    let mut broker = Mosquitto::start_with(|dir| {
        format!(
            "persistence true\npersistence_location {}/\n",
            dir.display()
        )
    });
    let port = broker.port();
    let sub = Subscriber::persistent(port, "daemon-restart-sub", &["edgeclass/door/event"]);
    // Printed events tell how far the daemon got while no subscriber can see it.
    let extra = "[publish_policy]\nmode = \"every\"\n[cameras.motion]\nenabled = false\n[log]\nprint_events = true\n";
    let mut daemon = Daemon::start(&config(&broker.url(), &sample("chelsea.jpg"), extra));
    let first = sub
        .wait_for_topic("edgeclass/door/event", WAIT)
        .unwrap_or_else(|| panic!("no event\n{}", daemon.stderr()));
    let mut seen: BTreeSet<u64> = seqs(&[first]).collect();
    seen.extend(seqs(&sub.close()));

    broker.stop();
    // The daemon keeps classifying into its queue: a second's worth of frames.
    let at_stop = daemon.last_printed_seq();
    assert!(
        poll_until(WAIT, || daemon.last_printed_seq() >= at_stop + 10),
        "no events while the broker was down\n{}",
        daemon.stderr()
    );
    let at_restart = daemon.last_printed_seq();
    broker.restart();
    let sub = Subscriber::persistent(port, "daemon-restart-sub", &["edgeclass/door/event"]);
    let continued = (at_restart + 1).max(20);
    assert!(
        record_until(&sub, &mut seen, |s| s.contains(&continued)),
        "the stream did not continue across the restart: no event {continued} (seen {seen:?})\n{}",
        daemon.stderr()
    );
    daemon.signal(libc::SIGTERM);
    assert!(
        daemon.wait_exit(Duration::from_secs(5)).success(),
        "{}",
        daemon.stderr()
    );
    // A clean exit means the broker acknowledged every event the daemon made (the publisher's
    // shutdown fails otherwise), so each one reaches the persistent session.
    let last = daemon.last_printed_seq();
    record_until(&sub, &mut seen, |s| (1..=last).all(|q| s.contains(&q)));

    let missing: Vec<u64> = (1..=last).filter(|s| !seen.contains(s)).collect();
    assert!(
        last >= 20,
        "only {last} events: the stream did not continue across the restart"
    );
    assert!(missing.is_empty(), "lost events {missing:?} of 1..={last}");
}

#[test]
fn embedded_broker_serves_a_real_client_when_no_url_is_configured() {
    let port = free_port();
    let cfg = config(
        "unused",
        &sample("chelsea.jpg"),
        // Without the motion gate every frame publishes, however late the subscriber comes.
        "[publish_policy]\nmode = \"every\"\n[cameras.motion]\nenabled = false\n",
    )
    .replace(
        "url = \"unused\"\n",
        &format!("embedded_listen = \"127.0.0.1:{port}\"\n"),
    );
    let daemon = Daemon::start(&cfg);
    assert!(
        poll_until(WAIT, || is_listening(port)),
        "embedded broker not listening\n{}",
        daemon.stderr()
    );
    let sub = Subscriber::connect(port, &["edgeclass/#"]);
    let event = sub
        .wait_for_topic("edgeclass/door/event", WAIT)
        .expect("event via embedded broker");
    assert_eq!(event.json()["camera"], "door");
}

#[test]
fn config_errors_name_the_key_and_file_and_exit_78() {
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |text: &str, env: &[(&str, &str)]| {
        let file = dir.path().join("bad.toml");
        fs::write(&file, text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_edgeclass"))
            .arg("check-config")
            .arg(&file)
            .envs(env.iter().copied())
            .output()
            .expect("run check-config");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            file,
        )
    };
    let camera = "[[cameras]]\nid = \"door\"\nsource = \"file:/tmp\"\n";

    let (code, err, file) = check(
        &format!("[mqtt]\nqos = 1\ntopic_prefx = \"x\"\n{camera}"),
        &[],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("topic_prefx") && err.contains(&file.display().to_string()),
        "{err}"
    );

    let (code, err, _) = check("[model]\nthreads = 2\n", &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("cameras"), "{err}");

    let (code, err, _) = check(&format!("[model]\nprecision = \"q9\"\n{camera}"), &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("model.precision"), "{err}");

    let (code, err, _) = check(camera, &[("EDGECLASS__MQTT__QOS", "5")]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("qos") && err.contains("EDGECLASS__MQTT__QOS"),
        "{err}"
    );

    let (code, err, _) = check(&camera.replace("file:/tmp", "ftp://x"), &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("source"), "{err}");

    let (code, err, file) = check(&format!("{camera}crop = [0.5, 0, 0.75, 1]\n"), &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("cameras[0].crop")
            && err.contains("x + w = 1.25")
            && err.contains(&file.display().to_string()),
        "{err}"
    );

    // The embedded broker has no authentication: not on the network unless said so.
    let (code, err, _) = check(
        &format!("[mqtt]\nembedded_listen = \"0.0.0.0:1883\"\n{camera}"),
        &[],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("embedded_allow_anonymous"), "{err}");

    // The motion gate's keys: ranges, a mask that leaves nothing to watch, and the deprecated
    // whole-frame threshold, which still loads (with a warning saying what to use).
    for (motion, key, fragment) in [
        (
            "min_area = 0",
            "cameras[0].motion.min_area",
            "outside (0, 1]",
        ),
        (
            "cell_threshold = 2",
            "cameras[0].motion.cell_threshold",
            "outside (0, 1]",
        ),
        (
            "idle_fps = nan",
            "cameras[0].motion.idle_fps",
            "NaN is neither 0",
        ),
        (
            "mask = [[0, 0, 1, 1]]",
            "cameras[0].motion.mask",
            "whole watched image",
        ),
        (
            "mask = [[0.5, 0, 0.75, 1]]",
            "cameras[0].motion.mask",
            "x + w = 1.25",
        ),
    ] {
        let (code, err, file) = check(&format!("{camera}[cameras.motion]\n{motion}\n"), &[]);
        assert_eq!(code, Some(78), "{motion}: {err}");
        assert!(
            err.contains(key)
                && err.contains(fragment)
                && err.contains(&file.display().to_string()),
            "{motion}: {err}"
        );
    }
    let (code, err, _) = check(
        &format!("{camera}[cameras.motion]\nthreshold = 0.02\n"),
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("cameras[0].motion.threshold is ignored") && err.contains("cell_threshold"),
        "{err}"
    );

    // Labels Home Assistant would read as its own "no value" are refused, naming the key; the
    // old default `unknown` still loads, with a warning saying what to use instead.
    for (postprocess, key) in [
        (
            "unknown_label = \"unavailable\"",
            "postprocess.unknown_label",
        ),
        ("unknown_label = \"None\"", "postprocess.unknown_label"),
    ] {
        let (code, err, _) = check(&format!("[postprocess]\n{postprocess}\n{camera}"), &[]);
        assert_eq!(code, Some(78), "{postprocess}: {err}");
        assert!(
            err.contains(key) && err.contains("Home Assistant") && err.contains("unrecognized"),
            "{postprocess}: {err}"
        );
    }
    let (code, err, _) = check(
        &format!("[postprocess]\nunknown_label = \"unknown\"\n{camera}"),
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: postprocess.unknown_label = \"unknown\"")
            && err.contains("\"unrecognized\" (the default)"),
        "{err}"
    );
    let (_, err, _) = check(camera, &[]);
    assert!(
        !err.contains("warning"),
        "the default warns about nothing: {err}"
    );

    // A label file that does not exist: named once, with the OS reason once.
    let (code, err, _) = check(
        &format!("[postprocess]\ngroups = \"/nonexistent/groups.toml\"\n{camera}"),
        &[],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("/nonexistent/groups.toml"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");

    let (code, out, _) = check(camera, &[]);
    assert_eq!(code, Some(0), "{out}");

    // The daemon refuses the same bad file with the same code, before touching the network.
    let file = dir.path().join("bad.toml");
    fs::write(&file, "[mqtt]\nqos = 7\n").expect("write");
    let status = Command::new(env!("CARGO_BIN_EXE_edgeclass"))
        .args(["run", "--config"])
        .arg(&file)
        .status()
        .expect("run");
    assert_eq!(status.code(), Some(78));
}

#[test]
fn shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, env) in [
        // The default config points at the packaged label files under /etc.
        (
            "configs/edgeclass.toml",
            vec![(
                "EDGECLASS__POSTPROCESS__GROUPS",
                "configs/labels/groups-home.toml",
            )],
        ),
        ("configs/demo.toml", vec![]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_edgeclass"))
            .arg("check-config")
            .arg(root.join(file))
            .current_dir(root)
            .envs(env)
            .output()
            .expect("run check-config");
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn tells_systemd_ready_pets_the_watchdog_while_working_and_says_stopping() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("socket timeout");
    let socket_env = socket_path.display().to_string();
    let mut daemon = Daemon::start_with_env(
        &config(&broker.url(), &sample("chelsea.jpg"), ""),
        // The watchdog wants a sign of life every 0.5 s: the daemon pets at half that.
        &[("NOTIFY_SOCKET", &socket_env), ("WATCHDOG_USEC", "500000")],
    );
    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    let mut collect_until = |received: &mut Vec<String>, done: &dyn Fn(&[String]) -> bool| {
        let deadline = Instant::now() + WAIT;
        while !done(received) && Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    let count =
        |r: &[String], what: &str| r.iter().filter(|m| m.lines().any(|l| l == what)).count();
    collect_until(&mut received, &|r| count(r, "WATCHDOG=1") >= 3);
    assert!(
        count(&received, "READY=1") == 1,
        "{received:?}\n{}",
        daemon.stderr()
    );
    assert!(count(&received, "WATCHDOG=1") >= 3, "{received:?}");
    let ready_at = received.iter().position(|m| m.contains("READY=1"));
    let first_pet = received.iter().position(|m| m.contains("WATCHDOG=1"));
    assert!(ready_at < first_pet, "watchdog before ready: {received:?}");

    daemon.signal(libc::SIGTERM);
    collect_until(&mut received, &|r| count(r, "STOPPING=1") >= 1);
    assert_eq!(count(&received, "STOPPING=1"), 1, "{received:?}");
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn first_start_fetches_verifies_and_quantizes_a_missing_model() {
    // A mirror of the hub's layout served by a real HTTP server on 127.0.0.1.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let weights = fs::read(fixtures.join("model_tiny_resnet18.safetensors")).expect("fixture");
    let sha256 =
        edgeclass::model::fetch::sha256_file(&fixtures.join("model_tiny_resnet18.safetensors"))
            .expect("hash the fixture");
    let pinned = edgeclass::model::fetch::WeightsSource::default();
    let mirror = tempfile::tempdir().expect("mirror dir");
    let file = mirror
        .path()
        .join(&pinned.repo)
        .join("resolve")
        .join(&pinned.revision)
        .join(&pinned.file);
    fs::create_dir_all(file.parent().expect("parent")).expect("mirror layout");
    fs::write(&file, weights).expect("mirror file");
    let port = free_port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(mirror.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 -m http.server");
    assert!(
        poll_until(WAIT, || is_listening(port)),
        "http.server not listening"
    );

    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
    let models = tempfile::tempdir().expect("model dir");
    let model = models.path().join("resnet18-q8_0.gguf");
    let cfg = config(&broker.url(), &fixtures.join("model_chelsea.jpg"), "").replace(
        "synthetic_seed = 7\n",
        &format!(
            "weights = \"{}\"\nbase_url = \"http://127.0.0.1:{port}\"\nsha256 = \"{sha256}\"\n",
            model.display()
        ),
    );
    // As under systemd: the download must push the start timeout out before READY=1.
    let socket_path = models.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    let socket_env = socket_path.display().to_string();
    let daemon = Daemon::start_with_env(&cfg, &[("NOTIFY_SOCKET", &socket_env)]);
    let event = sub.wait_for_topic("edgeclass/door/event", WAIT);
    let _ = server.kill();
    let _ = server.wait();
    let event = event
        .unwrap_or_else(|| panic!("no event\n{}", daemon.stderr()))
        .json();
    // The downloaded reference network, quantized at first start, sees the tabby cat.
    assert_eq!(event["top3"][0]["index"], 281, "{event}");
    assert_eq!(&fs::read(&model).expect("cached model")[..4], b"GGUF");

    socket.set_nonblocking(true).expect("non-blocking");
    let mut notices = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = socket.recv(&mut buf) {
        notices.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let extended = notices
        .iter()
        .position(|m| m.contains("EXTEND_TIMEOUT_USEC=60000000"));
    let ready = notices.iter().position(|m| m.contains("READY=1"));
    assert!(
        extended.is_some() && extended < ready,
        "the start timeout must be extended before READY=1: {notices:?}"
    );
}

/// Every entry of `dir`, sorted, hidden ones too (no temporary file may be left behind); none
/// while `dir` does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.expect("directory entry").path())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn collects_distinct_frames_as_jpegs_up_to_the_cap() {
    let broker = Mosquitto::start();
    // A folder camera whose first image repeats: the repeat is a near-duplicate.
    let scenes = tempfile::tempdir().expect("temp dir");
    let sources = ["chelsea.jpg", "chelsea.jpg", "coffee.jpg", "astronaut.jpg"];
    for (index, name) in sources.iter().enumerate() {
        fs::copy(sample(name), scenes.path().join(format!("{index}.jpg"))).expect("copy image");
    }
    let state = tempfile::tempdir().expect("state dir");
    // Every frame classified and printed, so the printed events count the frames.
    let extra = "[publish_policy]\nmode = \"every\"\n[log]\nprint_events = true\n\
                 [cameras.motion]\nenabled = false\n\
                 [cameras.collect]\nenabled = true\nevery_s = 0\nmax_files = 3\n";
    // Slow enough that no frame is dropped: the frames come in the folder's order.
    let cfg = config(&broker.url(), scenes.path(), extra)
        .replace("interval_ms = 100", "interval_ms = 200");
    let state_env = state.path().display().to_string();
    let mut daemon = Daemon::start_with_env(&cfg, &[("STATE_DIRECTORY", &state_env)]);

    // No dir configured: the data dir ($STATE_DIRECTORY under systemd).
    let collected = state.path().join("datasets/door/unlabelled");
    assert!(
        poll_until(WAIT, || daemon
            .stderr()
            .contains("collecting stopped at max_files = 3")),
        "the cap was not reached: {:?}\n{}",
        files_in(&collected),
        daemon.stderr()
    );
    // Two more passes over the folder: nothing more is saved.
    let at_cap = daemon.last_printed_seq();
    assert!(
        poll_until(WAIT, || daemon.last_printed_seq() >= at_cap + 8),
        "the camera stopped after the cap\n{}",
        daemon.stderr()
    );
    daemon.signal(libc::SIGTERM);
    assert!(
        daemon.wait_exit(Duration::from_secs(5)).success(),
        "{}",
        daemon.stderr()
    );

    let files = files_in(&collected);
    let names: Vec<String> = files
        .iter()
        .map(|path| {
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in &names {
        let millis = name
            .strip_prefix("door-")
            .and_then(|rest| rest.strip_suffix(".jpg"))
            .unwrap_or_else(|| panic!("{name} is not door-<millis>.jpg"));
        assert!(
            millis.len() == 13 && millis.bytes().all(|b| b.is_ascii_digit()),
            "{name}"
        );
    }
    // Valid JPEGs, saved byte for byte as captured, in capture order: the repeated image once.
    let saved: Vec<Vec<u8>> = files
        .iter()
        .map(|path| fs::read(path).expect("read a collected frame"))
        .collect();
    for (bytes, name) in saved.iter().zip(&names) {
        let format = image::guess_format(bytes).expect("a known image format");
        assert_eq!(format, image::ImageFormat::Jpeg, "{name}");
        assert!(
            image::load_from_memory(bytes).is_ok(),
            "{name} does not decode"
        );
    }
    let expected: Vec<Vec<u8>> = ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"]
        .iter()
        .map(|name| fs::read(sample(name)).expect("read a sample"))
        .collect();
    let sizes = |images: &[Vec<u8>]| images.iter().map(Vec::len).collect::<Vec<_>>();
    assert!(
        saved == expected,
        "saved {names:?} of {:?} bytes, expected chelsea, coffee, astronaut of {:?} bytes\n{}",
        sizes(&saved),
        sizes(&expected),
        daemon.stderr()
    );
}

#[test]
fn crop_classifies_the_region_like_the_image_cut_to_it() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(
        broker.port(),
        &["edgeclass/+/event", "edgeclass/+/snapshot"],
    );
    // 320x200, so the crop below falls on whole pixels: x 80..240, y 20..180. PNG keeps the
    // pixels exact.
    let dir = tempfile::tempdir().expect("temp dir");
    let photo = image::open(sample("chelsea.jpg"))
        .expect("decode chelsea.jpg")
        .into_rgb8();
    let scene = image::imageops::crop_imm(&photo, 0, 0, 320, 200).to_image();
    let region = image::imageops::crop_imm(&scene, 80, 20, 160, 160).to_image();
    let (scene_file, region_file) = (dir.path().join("scene.png"), dir.path().join("region.png"));
    scene.save(&scene_file).expect("write scene.png");
    region.save(&region_file).expect("write region.png");
    let collected = dir.path().join("collected");

    // `door` sees the whole scene, `cropped` the region of it, `precut` the region's file.
    let extra = format!(
        r#"[publish_policy]
mode = "every"

[[cameras]]
id = "cropped"
source = "file:{scene}"
interval_ms = 100
crop = [0.25, 0.1, 0.5, 0.8]

[cameras.collect]
enabled = true
dir = "{collected}"
every_s = 0
max_files = 1

[[cameras]]
id = "precut"
source = "file:{region}"
interval_ms = 100
"#,
        scene = scene_file.display(),
        region = region_file.display(),
        collected = collected.display(),
    );
    let daemon = Daemon::start(&config(&broker.url(), &scene_file, &extra));

    let mut events = std::collections::BTreeMap::new();
    let mut snapshots = std::collections::BTreeMap::new();
    let all_in = sub.wait_until(WAIT, |message| {
        let mut levels = message.topic.split('/').skip(1);
        let (Some(camera), Some(kind)) = (levels.next(), levels.next()) else {
            return false;
        };
        if kind == "event" {
            events
                .entry(camera.to_owned())
                .or_insert_with(|| message.json());
        } else {
            snapshots
                .entry(camera.to_owned())
                .or_insert_with(|| message.payload.clone());
        }
        events.len() == 3 && snapshots.len() == 3
    });
    assert!(
        all_in.is_some(),
        "events from {:?}, snapshots from {:?}\n{}",
        events.keys(),
        snapshots.keys(),
        daemon.stderr()
    );
    assert_eq!(
        events["cropped"]["top3"], events["precut"]["top3"],
        "the region is classified like the image cut to it"
    );
    assert_ne!(
        events["cropped"]["top3"], events["door"]["top3"],
        "the crop changes what is classified"
    );

    // The snapshot and the collected frame of the cropped camera are the region, encoded.
    let size = |bytes: &[u8]| {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
            .map(|image| (image.width(), image.height()))
            .expect("a JPEG")
    };
    assert_eq!(size(&snapshots["cropped"]), (160, 160));
    assert_eq!(size(&snapshots["door"]), (320, 200));
    assert!(
        poll_until(WAIT, || files_in(&collected).len() == 1),
        "nothing collected\n{}",
        daemon.stderr()
    );
    let saved = fs::read(&files_in(&collected)[0]).expect("read the collected frame");
    assert_eq!(size(&saved), (160, 160));
}

// ---- custom heads --------------------------------------------------------------------------

/// `[[heads]] garage_door` on `weights`, never unknown, and the camera running it.
fn head_config(url: &str, weights: &Path, extra: &str) -> String {
    config(
        url,
        &sample("chelsea.jpg"),
        &format!(
            "heads = [\"garage_door\"]\n\
             [cameras.motion]\nenabled = false\n\
             [publish_policy]\nmode = \"every\"\n\
             [[heads]]\nname = \"garage_door\"\nweights = \"{}\"\n\
             [heads.postprocess]\nthreshold = 0.0\n{extra}",
            weights.display()
        ),
    )
}

fn labels(event: &serde_json::Value) -> Vec<String> {
    event["top3"]
        .as_array()
        .expect("top3")
        .iter()
        .map(|p| p["raw_label"].as_str().expect("raw_label").to_string())
        .collect()
}

#[test]
fn heads_publish_on_their_own_topics_with_their_own_home_assistant_sensor() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/#"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("garage_door.gguf");
    let classes = ["open", "closed"];
    let head = write_head(&weights, &classes, 16, 1);
    let mut daemon = Daemon::start(&head_config(&broker.url(), &weights, ""));

    // What the head says about the photo, computed here from the same backbone.
    let frame = read_image_file(&sample("chelsea.jpg")).expect("photo");
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let input = preprocessor.run(&frame).expect("preprocess");
    let (mut logits, mut features, mut hidden, mut head_logits) = Default::default();
    synthetic_backbone()
        .forward_with_features(input, &mut logits, &mut features)
        .expect("forward");
    head.forward(&features, &mut hidden, &mut head_logits);
    softmax_in_place(&mut head_logits);
    let best = top_k(&head_logits, 1)[0];

    let event = sub
        .wait_for_topic("edgeclass/door/garage_door/event", WAIT)
        .unwrap_or_else(|| panic!("no head event\n{}", daemon.stderr()))
        .json();
    assert_eq!(event["camera"], "door");
    assert_eq!(event["label"], classes[best.0], "{event}");
    assert!(
        (event["score"].as_f64().expect("score") - f64::from(best.1)).abs() < 1e-4,
        "{event} vs {best:?}"
    );
    assert_eq!(event["model"], "resnet18-q8_0+garage_door");
    // Two classes: top_k 3 is clamped; a head's class has an index and a name, no WordNet id.
    let top = event["top3"].as_array().expect("top3");
    assert_eq!(top.len(), 2, "{event}");
    assert_eq!(top[0]["index"], best.0);
    assert!(top.iter().all(|p| p.get("wnid").is_none()), "{event}");
    let mut named = labels(&event);
    named.sort();
    assert_eq!(named, ["closed", "open"]);

    // The ImageNet classifier keeps today's topic, and its events keep their WordNet ids.
    let imagenet = sub
        .wait_for_topic("edgeclass/door/event", WAIT)
        .expect("ImageNet event")
        .json();
    assert!(imagenet["top3"][0]["wnid"].is_string(), "{imagenet}");
    assert_eq!(imagenet["model"], "resnet18-q8_0");

    // The head's label is retained beside today's, and Home Assistant has a sensor for it.
    let late = Subscriber::connect(broker.port(), &["edgeclass/#", "homeassistant/#"]);
    let retained = late.drain_pending();
    let text = |topic: &str| {
        retained
            .iter()
            .find(|m| m.topic == topic && m.retain)
            .map(Received::text)
    };
    assert_eq!(
        text("edgeclass/door/garage_door/label").as_deref(),
        Some(classes[best.0])
    );
    assert!(text("edgeclass/door/label").is_some());
    let sensors: Vec<serde_json::Value> = retained
        .iter()
        .filter(|m| m.topic.starts_with("homeassistant/sensor/") && m.topic.ends_with("/config"))
        .map(Received::json)
        .collect();
    let custom = sensors
        .iter()
        .find(|s| s["state_topic"] == "edgeclass/door/garage_door/label")
        .unwrap_or_else(|| panic!("no sensor for the head: {sensors:?}"));
    let default = sensors
        .iter()
        .find(|s| s["state_topic"] == "edgeclass/door/label")
        .expect("today's sensor");
    assert_eq!(
        custom["json_attributes_topic"],
        "edgeclass/door/garage_door/state"
    );
    assert_eq!(custom["device_class"], "enum");
    assert_eq!(
        custom["options"],
        serde_json::json!(["open", "closed", "unrecognized"])
    );
    assert_eq!(custom["device"], default["device"]);
    assert_ne!(custom["unique_id"], default["unique_id"]);

    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn tta_flip_averages_the_frame_and_its_mirror_image_for_imagenet_and_heads() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/#"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("garage_door.gguf");
    let classes = ["open", "closed"];
    let head = write_head(&weights, &classes, 16, 1);
    let config = head_config(&broker.url(), &weights, "")
        .replace("threads = 1\n", "threads = 1\ntta = \"flip\"\n");
    let mut daemon = Daemon::start(&config);

    // The mean of the photo's and its mirror image's probabilities, computed here.
    let frame = read_image_file(&sample("chelsea.jpg")).expect("photo");
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    preprocessor.decode(&frame).expect("decode");
    let (mut logits, mut features, mut hidden, mut head_logits) = Default::default();
    let (mut imagenet_mean, mut head_mean) =
        (MeanProbabilities::default(), MeanProbabilities::default());
    for view in Tta::Flip.views() {
        synthetic_backbone()
            .forward_with_features(preprocessor.view(*view), &mut logits, &mut features)
            .expect("forward");
        head.forward(&features, &mut hidden, &mut head_logits);
        imagenet_mean.add(&logits, 1.0);
        head_mean.add(&head_logits, 1.0);
    }
    let best = |mean: &mut MeanProbabilities| {
        let mut p = mean.logits().to_vec();
        softmax_in_place(&mut p);
        top_k(&p, 1)[0]
    };
    for (topic, (index, score)) in [
        ("edgeclass/door/event", best(&mut imagenet_mean)),
        ("edgeclass/door/garage_door/event", best(&mut head_mean)),
    ] {
        let event = sub
            .wait_for_topic(topic, WAIT)
            .unwrap_or_else(|| panic!("no event on {topic}\n{}", daemon.stderr()))
            .json();
        assert_eq!(event["top3"][0]["index"], index, "{event}");
        assert!(
            (event["score"].as_f64().expect("score") - f64::from(score)).abs() < 1e-4,
            "{event} vs {score}"
        );
    }
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn an_ensemble_of_a_head_with_itself_is_the_head_and_one_of_other_classes_stops_the_start() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/#"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("garage_door.gguf");
    let classes = ["open", "closed"];
    let head = write_head(&weights, &classes, 16, 1);
    let single = format!("weights = \"{}\"", weights.display());
    let twice = format!("weights = [\"{0}\", \"{0}\"]", weights.display());
    let config = head_config(&broker.url(), &weights, "").replace(&single, &twice);
    let mut daemon = Daemon::start(&config);

    let frame = read_image_file(&sample("chelsea.jpg")).expect("photo");
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let input = preprocessor.run(&frame).expect("preprocess");
    let (mut logits, mut features, mut hidden, mut head_logits) = Default::default();
    synthetic_backbone()
        .forward_with_features(input, &mut logits, &mut features)
        .expect("forward");
    head.forward(&features, &mut hidden, &mut head_logits);
    softmax_in_place(&mut head_logits);

    let event = sub
        .wait_for_topic("edgeclass/door/garage_door/event", WAIT)
        .unwrap_or_else(|| panic!("no head event\n{}", daemon.stderr()))
        .json();
    for prediction in event["top3"].as_array().expect("top3") {
        let index = prediction["index"].as_u64().expect("index") as usize;
        let score = prediction["score"].as_f64().expect("score");
        assert!(
            (score - f64::from(head_logits[index])).abs() < 1e-6,
            "{event} vs {head_logits:?}"
        );
    }
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());

    // A member with other classes (here: another order) is a configuration error.
    let other = dir.path().join("reversed.gguf");
    write_head(&other, &["closed", "open"], 16, 2);
    let mixed = format!(
        "weights = [\"{}\", \"{}\"]",
        weights.display(),
        other.display()
    );
    let config = head_config("mqtt://127.0.0.1:9", &weights, "").replace(&single, &mixed);
    let mut daemon = Daemon::start(&config);
    let status = daemon.wait_exit(WAIT);
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(78), "{stderr}");
    for needed in [
        "heads[0].weights",
        &other.display().to_string(),
        &weights.display().to_string(),
    ] {
        assert!(stderr.contains(needed), "{needed:?} not in: {stderr}");
    }
}

#[test]
fn sighup_reloads_a_changed_head_file_and_keeps_the_head_when_the_new_file_is_bad() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/garage_door/event"]);
    let ha = Subscriber::connect(broker.port(), &["homeassistant/sensor/#"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("garage_door.gguf");
    write_head(&weights, &["open", "closed"], 0, 2);
    let mut daemon = Daemon::start(&head_config(&broker.url(), &weights, ""));
    let first = sub
        .wait_for_topic("edgeclass/door/garage_door/event", WAIT)
        .unwrap_or_else(|| panic!("no head event\n{}", daemon.stderr()))
        .json();
    assert!(["open", "closed"].contains(&first["label"].as_str().unwrap_or_default()));

    // Retrained with other classes: the new labels, and a sensor announcing them.
    let retrained = ["parcel", "no_parcel", "courier"];
    write_head(&weights, &retrained, 8, 3);
    daemon.signal(libc::SIGHUP);
    let reloaded = sub
        .wait_until(WAIT, |m| {
            retrained.contains(&m.json()["label"].as_str().unwrap_or_default())
        })
        .unwrap_or_else(|| panic!("the retrained head never published\n{}", daemon.stderr()))
        .json();
    let mut named = labels(&reloaded);
    named.sort();
    assert_eq!(named, ["courier", "no_parcel", "parcel"]);
    let announced = ha.wait_until(WAIT, |m| {
        m.json()["options"] == serde_json::json!(["parcel", "no_parcel", "courier", "unrecognized"])
    });
    assert!(announced.is_some(), "the sensor was not announced again");

    // A bad file: the retrained head keeps running, and the log says which file and why.
    fs::write(&weights, b"not a head").expect("overwrite the head file");
    daemon.signal(libc::SIGHUP);
    let said = poll_until(WAIT, || {
        let log = daemon.stderr();
        log.contains("head garage_door: keeping the running head")
            && log.contains(&weights.display().to_string())
    });
    assert!(
        said,
        "no log line about the bad head file\n{}",
        daemon.stderr()
    );
    sub.drain_pending();
    let after = sub.collect_on("edgeclass/door/garage_door/event", 3, WAIT);
    assert_eq!(
        after.len(),
        3,
        "the head stopped publishing\n{}",
        daemon.stderr()
    );
    for event in after.iter().map(Received::json) {
        let label = event["label"].as_str().unwrap_or_default().to_string();
        assert!(retrained.contains(&label.as_str()), "{event}");
    }
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn a_head_from_another_backbone_or_an_unknown_head_name_stops_the_start_with_78() {
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("garage_door.gguf");
    seeded_head(&["open", "closed"], 0, 4, "0123456789abcdef")
        .save(&weights)
        .expect("save head");
    // No broker: the daemon must refuse before connecting.
    let mut daemon = Daemon::start(&head_config("mqtt://127.0.0.1:9", &weights, ""));
    let status = daemon.wait_exit(WAIT);
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(78), "{stderr}");
    for needed in [
        "heads[0].weights",
        &daemon.config_file().display().to_string(),
        &weights.display().to_string(),
        "<synthetic resnet18 seed 7>",
        "retrain the head on this backbone",
    ] {
        assert!(stderr.contains(needed), "{needed:?} not in: {stderr}");
    }

    let unknown = head_config("mqtt://127.0.0.1:9", &weights, "")
        .replace("heads = [\"garage_door\"]", "heads = [\"garage\"]");
    let mut daemon = Daemon::start(&unknown);
    let status = daemon.wait_exit(WAIT);
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("cameras[0].heads[0]")
            && stderr.contains("garage")
            && stderr.contains(&daemon.config_file().display().to_string()),
        "{stderr}"
    );
}

/// The journey of "your own classes" end to end, with the real binaries: `edgeclass train` on
/// rendered door scenes over the daemon's backbone (seed 7, written to a file as a user's
/// `[model] weights` would be), then the daemon runs the trained head on a camera showing an
/// open door: the head's topic says "open", with the threshold the head file recommends, while
/// the ImageNet classes keep today's topic.
#[test]
fn a_head_trained_by_edgeclass_train_runs_in_the_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backbone = dir.path().join("resnet18-q8_0.gguf");
    write_gguf(&Network::synthetic(7), StorageDtype::Q8_0, &backbone).expect("backbone");
    let data = dir.path().join("garage");
    write_doors(&data, 20, 1, Variation::CAMERA);
    let weights = dir.path().join("garage_door.gguf");
    let out = Command::new(env!("CARGO_BIN_EXE_edgeclass"))
        .arg("train")
        .arg(&data)
        .arg("--output")
        .arg(&weights)
        .arg("--weights")
        .arg(&backbone)
        .args(["--views", "2"])
        .output()
        .expect("edgeclass train runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = Head::load(&weights).expect("trained head");
    let open = head
        .classes()
        .iter()
        .position(|c| c == "open")
        .expect("open");
    let threshold = head.thresholds().expect("recommended thresholds")[open];

    let picture = dir.path().join("open.png");
    door(true, 777, Variation::CAMERA)
        .save(&picture)
        .expect("write picture");
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/#"]);
    let extra = format!(
        "heads = [\"garage_door\"]\n\
         [cameras.motion]\nenabled = false\n\
         [publish_policy]\nmode = \"every\"\n\
         [[heads]]\nname = \"garage_door\"\nweights = \"{}\"\n",
        weights.display()
    );
    let mut daemon = Daemon::start(&config(&broker.url(), &picture, &extra));
    let event = sub
        .wait_for_topic("edgeclass/door/garage_door/event", WAIT)
        .unwrap_or_else(|| panic!("no head event\n{}", daemon.stderr()))
        .json();
    assert_eq!(event["label"], "open", "{event}");
    assert_eq!(event["unknown"], false, "{event}");
    let score = event["score"].as_f64().expect("score");
    assert!(score >= f64::from(threshold), "{score} below {threshold}");
    assert!(sub.wait_for_topic("edgeclass/door/event", WAIT).is_some());
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
}

/// Two Pis on one broker. Under the shipped unit (`ProcSubset=pid`) `/proc/sys` does not exist,
/// so the host name comes from gethostname(2): daemons on hosts `pi-a` and `pi-b` get their own
/// MQTT client ids and Home Assistant node ids, and stay connected side by side instead of
/// taking the broker session from each other in a loop.
#[test]
fn two_hosts_on_one_broker_stay_connected_side_by_side() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/+/event", "homeassistant/#"]);
    let extra = "[cameras.motion]\nenabled = false\n[publish_policy]\nmode = \"every\"\n";
    let on_host = |host: &str, camera: &str| {
        let cfg = config(&broker.url(), &sample("chelsea.jpg"), extra)
            .replace("node_id = \"testnode\"\n", "")
            .replace("id = \"door\"", &format!("id = \"{camera}\""));
        Daemon::start_on_host(&cfg, host)
    };
    let daemons = [on_host("pi-a", "door_a"), on_host("pi-b", "door_b")];

    // Ten events from each: both publish at once, for a second or more.
    let mut seqs = std::collections::BTreeMap::<String, u64>::new();
    let mut discovered = BTreeSet::new();
    let both_going = poll_until(WAIT, || {
        for message in sub.drain_pending() {
            if message.topic.starts_with("homeassistant/") {
                if let Some(node) = message.json()["device"]["identifiers"][0].as_str() {
                    discovered.insert(node.to_string());
                }
            } else {
                let event = message.json();
                let camera = event["camera"].as_str().unwrap_or_default().to_string();
                let seq = event["seq"].as_u64().unwrap_or(0);
                seqs.entry(camera)
                    .and_modify(|s| *s = (*s).max(seq))
                    .or_insert(seq);
            }
        }
        seqs.len() == 2 && seqs.values().all(|&s| s >= 10)
    });
    let stderrs: Vec<String> = daemons.iter().map(Daemon::stderr).collect();
    assert!(
        both_going,
        "events so far: {seqs:?}\n{}",
        stderrs.join("\n---\n")
    );
    assert!(
        discovered.iter().any(|n| n.contains("pi_a"))
            && discovered.iter().any(|n| n.contains("pi_b")),
        "Home Assistant devices: {discovered:?}"
    );
    for stderr in &stderrs {
        assert_eq!(
            stderr.matches("connected to MQTT broker").count(),
            1,
            "one connection, kept:\n{stderr}"
        );
        assert!(
            !stderr.contains("connection to"),
            "a connection was lost:\n{stderr}"
        );
    }
}

/// A camera that cuts off JPEG frames: each cut-off frame is skipped (not classified half
/// grey), said once, counted, and summed up at shutdown; whole frames are still classified.
#[test]
fn cut_off_jpeg_frames_are_skipped_counted_and_reported_once() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
    let scenes = tempfile::tempdir().expect("temp dir");
    let jpeg = fs::read(sample("chelsea.jpg")).expect("photo");
    fs::write(scenes.path().join("0-whole.jpg"), &jpeg).expect("write");
    fs::write(scenes.path().join("1-cut.jpg"), &jpeg[..jpeg.len() / 2]).expect("write");
    let extra = "[cameras.motion]\nenabled = false\n[publish_policy]\nmode = \"every\"\n";
    let mut daemon = Daemon::start(&config(&broker.url(), scenes.path(), extra));
    // The folder loops: several passes over the cut-off frame.
    let mut events = 0;
    let enough = poll_until(WAIT, || {
        events += sub.drain_pending().len();
        events >= 4
    });
    assert!(
        enough,
        "whole frames are still classified\n{}",
        daemon.stderr()
    );
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
    let stderr = daemon.stderr();
    assert_eq!(
        stderr.matches("is cut off").count(),
        1,
        "said once:\n{stderr}"
    );
    let skipped: u64 = stderr
        .lines()
        .find_map(|l| {
            l.split("camera door: ")
                .nth(1)?
                .strip_suffix(" cut-off JPEG frames skipped")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count at shutdown:\n{stderr}"));
    assert!(skipped >= 2, "{skipped} cut-off frames counted:\n{stderr}");
}
