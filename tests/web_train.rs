//! The *Label and train* API against the real daemon on 127.0.0.1: listing a camera's frames,
//! bulk labelling on real files, traversal and cross-site writes refused, a training job on
//! rendered door scenes run to its report, and "Activate" starting the head on the running
//! camera, with its events and Home Assistant sensor on a real mosquitto.

mod common {
    pub mod mosquitto;
    pub mod rng;
    pub mod scenes;
    pub mod wait;
    pub mod web;
}

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use common::mosquitto::Subscriber;
use common::scenes::{write_doors, Variation};
use common::wait::poll_until;
use common::web::{config, sample, WebDaemon};

const WAIT: Duration = Duration::from_secs(30);
/// Training on the synthetic backbone in a debug build, on a shared 2-core machine.
const TRAINING: Duration = Duration::from_secs(600);

/// The dataset folder of camera `door` in the daemon's state directory.
fn door_dataset(dir: &Path) -> PathBuf {
    dir.join("state/datasets/door")
}

fn chelsea_daemon(extra: &str, prepare: impl FnOnce(&Path)) -> WebDaemon {
    let source = format!("file:{}", sample("chelsea.jpg").display());
    let extra = extra.to_string();
    WebDaemon::start(move |broker, port, dir| {
        prepare(dir);
        config(broker, port, &[("door", &source)], "", &extra)
    })
}

fn post(daemon: &WebDaemon, path: &str, body: Value, origin: Option<&str>) -> (u16, String) {
    let mut request = daemon
        .agent()
        .post(daemon.url(path))
        .header("content-type", "application/json");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let mut response = request.send(body.to_string()).expect("POST");
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), text)
}

fn status(daemon: &WebDaemon, path: &str) -> u16 {
    daemon.get(path).expect("GET").status().as_u16()
}

fn frames_of(listing: &Value, class: &str) -> Vec<String> {
    listing["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .find(|c| c["name"] == class)
        .map(|c| {
            c["frames"]
                .as_array()
                .expect("frames")
                .iter()
                .map(|f| f.as_str().expect("name").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn files_in(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(folder)
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn frames_are_listed_labelled_in_bulk_and_deleted_and_paths_never_escape() {
    let daemon = chelsea_daemon("", |dir| {
        let unlabelled = door_dataset(dir).join("unlabelled");
        fs::create_dir_all(&unlabelled).expect("mkdir");
        for i in 0..6 {
            fs::write(
                unlabelled.join(format!("door-{i}.jpg")),
                format!("frame {i}"),
            )
            .unwrap();
        }
        fs::write(dir.join("state/secret.txt"), "not for the page").unwrap();
    });
    let dataset = door_dataset(daemon.dir.path());
    let own = daemon.url("");

    let listing = daemon.get_json("/api/datasets/door");
    assert_eq!(listing["camera"], "door");
    let unlabelled = frames_of(&listing, "unlabelled");
    assert_eq!(unlabelled.len(), 6, "{listing}");
    let mut response = daemon
        .get("/api/datasets/door/frames/unlabelled/door-2.jpg")
        .expect("GET frame");
    assert_eq!(response.status(), 200);
    assert_eq!(response.body_mut().read_to_string().unwrap(), "frame 2");

    // Nothing outside a camera's listed frames is served.
    for path in [
        "/api/datasets/door/frames/unlabelled/..%2F..%2Fsecret.txt",
        "/api/datasets/door/frames/..%2F..%2F/secret.txt",
        "/api/datasets/door/frames/../../secret.txt",
        "/api/datasets/..%2Fdoor/frames/unlabelled/door-2.jpg",
        "/api/datasets/door/frames/unlabelled/%2Fetc%2Fpasswd",
        "/api/datasets/nope",
    ] {
        let code = status(&daemon, path);
        assert!(code == 404 || code == 400, "{path}: {code}");
    }

    // Classes: created with the label rules, refused as paths or duplicates.
    let (code, text) = post(
        &daemon,
        "/api/datasets/door/classes",
        json!({"name": "open"}),
        None,
    );
    assert_eq!(code, 201, "{text}");
    for (name, expected) in [
        ("open", 409),
        ("..", 400),
        ("a/b", 400),
        ("unlabelled", 400),
    ] {
        let (code, text) = post(
            &daemon,
            "/api/datasets/door/classes",
            json!({ "name": name }),
            None,
        );
        assert_eq!(code, expected, "{name}: {text}");
    }
    assert!(!daemon.dir.path().join("state/datasets/a").exists());

    // Bulk assign: three frames move into open/.
    let picked: Vec<Value> = unlabelled[..3]
        .iter()
        .map(|f| json!({"class": "unlabelled", "file": f}))
        .collect();
    let body = json!({"frames": picked, "to": "open"});
    // From another site: refused, nothing moves.
    let (code, _) = post(
        &daemon,
        "/api/datasets/door/assign",
        body.clone(),
        Some("http://evil.example"),
    );
    assert_eq!(code, 403);
    assert_eq!(files_in(&dataset.join("open")), Vec::<String>::new());
    let (code, text) = post(&daemon, "/api/datasets/door/assign", body, Some(&own));
    assert_eq!(code, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["moved"], 3);
    assert_eq!(files_in(&dataset.join("open")), unlabelled[..3]);
    assert_eq!(files_in(&dataset.join("unlabelled")), unlabelled[3..]);
    let listing = daemon.get_json("/api/datasets/door");
    assert_eq!(frames_of(&listing, "open").len(), 3);

    // A frame that is not listed (a traversal, or gone) moves nothing at all.
    for (class, file) in [("unlabelled", "../../secret.txt"), ("..", "secret.txt")] {
        let body = json!({"frames": [
            {"class": "unlabelled", "file": unlabelled[3]},
            {"class": class, "file": file},
        ], "to": "open"});
        let (code, text) = post(&daemon, "/api/datasets/door/assign", body, None);
        assert_eq!(code, 404, "{text}");
    }
    let body = json!({"frames": [], "to": "../.."});
    assert_eq!(
        post(&daemon, "/api/datasets/door/assign", body, None).0,
        404
    );
    assert_eq!(files_in(&dataset.join("unlabelled")), unlabelled[3..]);
    assert!(daemon.dir.path().join("state/secret.txt").exists());

    // Deleting a class puts its frames back in unlabelled/.
    let response = daemon
        .agent()
        .delete(daemon.url("/api/datasets/door/classes/open"))
        .call()
        .expect("DELETE");
    assert_eq!(response.status(), 204);
    assert!(!dataset.join("open").exists());
    assert_eq!(files_in(&dataset.join("unlabelled")), unlabelled);

    // Deleting frames removes their files.
    let body = json!({"frames": [{"class": "unlabelled", "file": unlabelled[0]}]});
    let (code, text) = post(&daemon, "/api/datasets/door/delete", body, None);
    assert_eq!(code, 200, "{text}");
    assert_eq!(files_in(&dataset.join("unlabelled")), unlabelled[1..]);
}

/// The nice value of `process`'s thread named `name`, while it runs.
fn thread_nice(process: u32, name: &str) -> Option<i64> {
    fs::read_dir(format!("/proc/{process}/task"))
        .ok()?
        .filter_map(Result::ok)
        .find(|task| {
            fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .and_then(|task| {
            let stat = fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the parenthesized command name; nice is the 19th field of the line.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            fields.get(16)?.parse().ok()
        })
}

/// Polls `GET /api/train` until the job leaves the running phases; returns the last status and
/// every phase seen.
fn wait_for_job(daemon: &WebDaemon) -> (Value, Vec<String>) {
    let mut phases: Vec<String> = Vec::new();
    let mut last = Value::Null;
    let finished = poll_until(TRAINING, || {
        last = daemon.get_json("/api/train");
        let phase = last["phase"].as_str().unwrap_or_default().to_string();
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
        }
        phase == "done" || phase == "failed"
    });
    assert!(
        finished,
        "training did not finish: {last}\n{}",
        daemon.stderr()
    );
    (last, phases)
}

#[test]
fn a_training_job_runs_to_its_report_and_activation_starts_the_head_without_a_restart() {
    let mut daemon = chelsea_daemon("[mqtt.discovery]\nnode_id = \"testnode\"\n", |dir| {
        let dataset = door_dataset(dir);
        fs::create_dir_all(dataset.join("unlabelled")).expect("mkdir");
        fs::write(dataset.join("unlabelled/door-1.jpg"), "not labelled").unwrap();
        // One class only, for now.
        write_doors(&dataset, 12, 1, Variation::CAMERA);
        fs::remove_dir_all(dataset.join("closed")).expect("rm closed");
    });
    let dataset = door_dataset(daemon.dir.path());
    let state = daemon.dir.path().join("state");
    let pid = daemon.pid();

    // Bad data is refused before any work, saying why.
    let start = json!({"camera": "door", "head": "door_state"});
    let (code, text) = post(&daemon, "/api/train", start.clone(), None);
    assert_eq!(code, 422, "{text}");
    assert!(text.contains("at least 2"), "{text}");
    let (code, text) = post(
        &daemon,
        "/api/train",
        json!({"camera": "door", "head": "door/state"}),
        None,
    );
    assert_eq!(code, 400, "{text}");
    assert_eq!(
        post(&daemon, "/api/train/activate", json!({}), None).0,
        409,
        "nothing trained yet"
    );

    write_doors(&dataset, 12, 1, Variation::CAMERA);
    let (code, text) = post(&daemon, "/api/train", start.clone(), None);
    assert_eq!(code, 202, "{text}");
    let (code, text) = post(&daemon, "/api/train", start, None);
    assert_eq!(code, 409, "one job at a time: {text}");
    assert!(
        poll_until(WAIT, || thread_nice(pid, "train") == Some(19)),
        "no training thread at nice 19\n{}",
        daemon.stderr()
    );

    let (job, phases) = wait_for_job(&daemon);
    assert_eq!(job["phase"], "done", "{job}");
    assert!(phases.iter().any(|p| p == "fitting"), "phases: {phases:?}");
    let epochs = job["epochs"].as_array().expect("epochs");
    assert!(!epochs.is_empty(), "{job}");
    for key in ["train_loss", "val_accuracy", "learning_rate"] {
        assert!(epochs[0][key].is_number(), "{key}: {}", epochs[0]);
    }
    let report = &job["report"];
    let classes: Vec<_> = report["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(classes, ["closed", "open"], "unlabelled/ is not a class");
    assert!(report["val_accuracy"].as_f64() >= Some(0.0), "{report}");
    assert!(report["validation"].is_object(), "{report}");

    // Activate: the head file, the overrides entry, and the head running on the camera.
    let events = Subscriber::connect(daemon.broker.port(), &["edgeclass/door/door_state/event"]);
    let discovery = Subscriber::connect(daemon.broker.port(), &["homeassistant/sensor/#"]);
    let (code, text) = post(&daemon, "/api/train/activate", json!({}), None);
    assert_eq!(code, 200, "{text}");
    let head_file = state.join("heads/door-door_state.gguf");
    assert!(head_file.is_file(), "{text}");
    let overrides = fs::read_to_string(state.join("overrides.toml")).expect("overrides.toml");
    assert!(
        overrides.contains("door_state") && overrides.contains(&*head_file.to_string_lossy()),
        "{overrides}"
    );
    let event = events
        .wait_for_topic("edgeclass/door/door_state/event", WAIT)
        .unwrap_or_else(|| panic!("no event of the activated head\n{}", daemon.stderr()))
        .json();
    assert!(
        ["open", "closed"].contains(&event["label"].as_str().unwrap_or_default()),
        "{event}"
    );
    let sensor = discovery
        .wait_until(WAIT, |m| {
            m.topic.starts_with("homeassistant/sensor/")
                && m.topic.contains("door_state")
                && m.topic.ends_with("/config")
        })
        .unwrap_or_else(|| panic!("no discovery config for the head\n{}", daemon.stderr()))
        .json();
    let options = sensor["options"].to_string();
    assert!(
        options.contains("open") && options.contains("closed"),
        "{sensor}"
    );
    assert!(daemon.is_running() && daemon.pid() == pid, "no restart");
    let live = daemon.get_json("/api/cameras");
    assert!(
        poll_until(WAIT, || daemon.get_json("/api/cameras")[0]["heads"]
            ["door_state"]
            .is_object()),
        "{live}"
    );
}
