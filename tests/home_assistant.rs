//! edgeclass's MQTT output as Home Assistant sees it: a real Home Assistant Core (the version
//! pinned in `tests/fixtures/home_assistant/requirements.txt`, installed by `.ci/setup`),
//! onboarded and given the MQTT integration through its REST API, a real mosquitto and the real
//! daemon on `file:` cameras. One Home Assistant start serves every scenario; it is restarted
//! once.
//!
//! Run it alone with `cargo test --locked --test home_assistant -- --nocapture` (it prints how
//! long Home Assistant took to show each state). `EDGECLASS_HA_VENV` points it at another
//! installation (a virtualenv with `bin/hass`).

mod common {
    pub mod daemon;
    pub mod mosquitto;
    pub mod rng;
    pub mod scenes;
    pub mod wait;
}

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::mosquitto::{free_port, Mosquitto, Subscriber};
use common::scenes::{door, write_doors, Variation};
use common::wait::poll_until;
use edgeclass::model::{write_gguf, Model, Network, Precision, StorageDtype};
use edgeclass::preprocess::{read_image_file, PreprocessConfig, Preprocessor};
use serde_json::{json, Value};

/// The pinned versions; the test reads Home Assistant's from here.
const REQUIREMENTS: &str = include_str!("fixtures/home_assistant/requirements.txt");

/// Home Assistant's start until its HTTP API answers (~5 s unloaded).
const HA_START: Duration = Duration::from_secs(90);
/// An entity reaching a state: well under a second unloaded; generous for a loaded CI machine.
const HA_WAIT: Duration = Duration::from_secs(30);
/// How often Home Assistant's REST API is polled.
const POLL: Duration = Duration::from_millis(100);

const HOST: &str = "pi";
const SEED: u64 = 7;

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name)
}

/// The Home Assistant version in `requirements.txt`.
fn pinned_version() -> &'static str {
    REQUIREMENTS
        .lines()
        .find_map(|line| line.strip_prefix("homeassistant=="))
        .expect("tests/fixtures/home_assistant/requirements.txt pins homeassistant==<version>")
        .trim()
}

/// Whether this Home Assistant takes the entity id from the discovery's `default_entity_id`
/// (2025.10 and later); older versions derive it from the device and entity names.
fn honours_default_entity_id(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2025, 10)
}

/// `bin/hass` of the installation `.ci/setup` made, or of `EDGECLASS_HA_VENV`.
fn hass_binary() -> PathBuf {
    let version = pinned_version();
    let venv = std::env::var_os("EDGECLASS_HA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/opt/edgeclass-ci/ha-{version}")));
    let hass = venv.join("bin/hass");
    assert!(
        hass.is_file(),
        "Home Assistant {version} is not installed at {}: run `sudo .ci/setup` (it installs \
         tests/fixtures/home_assistant/requirements.txt there), or set EDGECLASS_HA_VENV to a \
         virtualenv with it",
        venv.display()
    );
    hass
}

/// A Home Assistant Core process on 127.0.0.1 with its config dir in a temp dir, and a client
/// for its REST API.
struct HomeAssistant {
    hass: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    http: ureq::Agent,
    token: Option<String>,
}

impl HomeAssistant {
    /// Writes `configuration.yaml` (HTTP on a free loopback port, then `yaml`) and starts it.
    fn start(yaml: &str) -> HomeAssistant {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let configuration = format!(
            "homeassistant:\n  name: edgeclass test\n  time_zone: UTC\n  unit_system: metric\n\
             http:\n  server_host: 127.0.0.1\n  server_port: {port}\n{yaml}"
        );
        fs::write(dir.path().join("configuration.yaml"), configuration).expect("write config");
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut ha = HomeAssistant {
            hass: hass_binary(),
            dir,
            port,
            child: None,
            http,
            token: None,
        };
        ha.run();
        ha
    }

    /// Starts `hass` on the config dir and waits until its HTTP API answers.
    fn run(&mut self) {
        let output = |name: &str| fs::File::create(self.dir.path().join(name)).expect("log file");
        let child = Command::new(&self.hass)
            .arg("--config")
            .arg(self.dir.path())
            .arg("--skip-pip")
            .stdin(Stdio::null())
            .stdout(output("hass.stdout"))
            .stderr(output("hass.stderr"))
            .spawn()
            .expect("spawn hass");
        self.child = Some(child);
        let started = Instant::now();
        let up = poll_until(HA_START, || {
            thread::sleep(POLL);
            self.get("/api/").is_some()
        });
        assert!(up, "Home Assistant did not answer\n{}", self.log());
        eprintln!("Home Assistant's API answers after {:?}", started.elapsed());
    }

    /// SIGTERM, then waits for the exit (Home Assistant saves its registries on the way out).
    fn stop(&mut self) {
        let mut child = self.child.take().expect("Home Assistant is running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let exited = poll_until(HA_START, || child.try_wait().ok().flatten().is_some());
        assert!(exited, "Home Assistant did not stop\n{}", self.log());
    }

    /// The end of Home Assistant's log, for failure messages.
    fn log(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("home-assistant.log"))
            .or_else(|_| fs::read_to_string(self.dir.path().join("hass.stderr")))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// GET `path`: status and body, or `None` while nothing listens.
    fn get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        let mut response = self.authorized(self.http.get(self.url(path))).call().ok()?;
        let body = response.body_mut().read_to_vec().ok()?;
        Some((response.status().as_u16(), body))
    }

    /// POST `body` as JSON to `path`; the answer must be a 2xx with a JSON body.
    fn post(&self, path: &str, body: &Value) -> Value {
        let mut response = self
            .authorized(self.http.post(self.url(path)))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        assert!((200..300).contains(&status), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}"))
    }

    /// Onboarding's first step creates the owner and returns an auth code; exchanging it gives
    /// the bearer token every later request carries.
    fn onboard(&mut self) {
        let client_id = self.url("/");
        let created = self.post(
            "/api/onboarding/users",
            &json!({"client_id": client_id, "name": "CI", "username": "ci",
                    "password": "edgeclass-ci-password", "language": "en"}),
        );
        let code = created["auth_code"]
            .as_str()
            .expect("auth_code")
            .to_string();
        let mut response = self
            .http
            .post(self.url("/auth/token"))
            .send_form([
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("client_id", client_id.as_str()),
            ])
            .expect("POST /auth/token");
        let text = response.body_mut().read_to_string().expect("token body");
        let token: Value = serde_json::from_str(&text).expect("token JSON");
        let token = token["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{text}"));
        self.token = Some(token.to_string());
    }

    /// The MQTT integration through its config flow, as a user adds it in the UI.
    fn add_mqtt(&self, broker_port: u16) {
        let flow = self.post(
            "/api/config/config_entries/flow",
            &json!({"handler": "mqtt", "show_advanced_options": false}),
        );
        assert_eq!(flow["step_id"], "broker", "{flow}");
        let flow_id = flow["flow_id"].as_str().expect("flow_id");
        let entry = self.post(
            &format!("/api/config/config_entries/flow/{flow_id}"),
            &json!({"broker": "127.0.0.1", "port": broker_port}),
        );
        assert_eq!(entry["type"], "create_entry", "{entry}");
    }

    /// `/api/states/<entity>`, or `None` while the entity does not exist.
    fn state(&self, entity: &str) -> Option<Value> {
        let (status, body) = self.get(&format!("/api/states/{entity}"))?;
        (status == 200).then(|| serde_json::from_slice(&body).expect("state JSON"))
    }

    /// Polls `entity` until `wanted` holds for its state JSON; returns it and how long it took.
    fn wait_state(&self, entity: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        let mut last = None;
        let reached = poll_until(HA_WAIT, || {
            last = self.state(entity);
            let done = last.as_ref().is_some_and(&wanted);
            if !done {
                thread::sleep(POLL);
            }
            done
        });
        assert!(
            reached,
            "{entity} never became {what}; last: {last:?}\n{}",
            self.log()
        );
        eprintln!("{entity} {what} after {:?}", started.elapsed());
        last.expect("a state")
    }

    fn wait_unavailable(&self, entity: &str) {
        self.wait_state(entity, "unavailable", |s| s["state"] == "unavailable");
    }

    fn file(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The top-1 ImageNet class index the daemon's synthetic network gives `image`.
fn top1(model: &Model, image: &Path) -> usize {
    let frame = read_image_file(image).expect("read image");
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let input = preprocessor.run(&frame).expect("preprocess");
    let mut logits = Vec::new();
    model.forward(input, &mut logits).expect("forward");
    (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .expect("logits")
}

/// README's "See it in Home Assistant" automation, verbatim: the first YAML block there.
fn readme_automation() -> String {
    let readme = include_str!("../README.md");
    let section = &readme[readme
        .find("## See it in Home Assistant")
        .expect("README has the Home Assistant section")..];
    let start = section.find("```yaml\n").expect("a YAML example") + "```yaml\n".len();
    let end = start
        + section[start..]
            .find("```")
            .expect("end of the YAML example");
    section[start..end].to_string()
}

/// The Top-3 labels of an event or of a sensor's attributes.
fn top3(json: &Value) -> Vec<String> {
    json["top3"]
        .as_array()
        .unwrap_or_else(|| panic!("no top3 in {json}"))
        .iter()
        .map(|p| p["label"].as_str().expect("label").to_string())
        .collect()
}

/// The last retained payload of each of `topics`.
fn retained(broker: &Mosquitto, topics: &[&str]) -> BTreeMap<String, Vec<u8>> {
    Subscriber::connect(broker.port(), topics)
        .drain_pending()
        .into_iter()
        .map(|m| (m.topic, m.payload))
        .collect()
}

/// The entity registry Home Assistant saved (it writes it on stop): `unique_id -> entity_id` of
/// the MQTT entities, panicking on a unique id registered twice.
fn mqtt_entities(ha: &HomeAssistant) -> BTreeMap<String, String> {
    let text = fs::read_to_string(ha.file(".storage/core.entity_registry")).expect("registry");
    let registry: Value = serde_json::from_str(&text).expect("registry JSON");
    let mut entities = BTreeMap::new();
    for entity in registry["data"]["entities"].as_array().expect("entities") {
        if entity["platform"] != "mqtt" {
            continue;
        }
        let unique_id = entity["unique_id"].as_str().expect("unique_id").to_string();
        let entity_id = entity["entity_id"].as_str().expect("entity_id").to_string();
        if let Some(other) = entities.insert(unique_id.clone(), entity_id.clone()) {
            panic!("{unique_id} registered twice: {other} and {entity_id}");
        }
    }
    entities
}

#[test]
fn home_assistant_shows_state_top3_snapshots_and_availability_across_restarts() {
    let version = pinned_version();
    // Fail at once, naming `.ci/setup`, when Home Assistant is not installed.
    hass_binary();
    let dir = tempfile::tempdir().expect("temp dir");

    // The README automation fires on the label `dog`: a groups file makes `dog` the class the
    // synthetic network sees in the second scene, while the first shows something else.
    let model = Model::synthetic(SEED, Precision::Q8_0, 1).expect("synthetic model");
    let start_scene = sample("coffee.jpg");
    let start_class = top1(&model, &start_scene);
    let rendered = dir.path().join("rendered_door.png");
    door(true, 3, Variation::CAMERA)
        .save(&rendered)
        .expect("render a scene");
    let candidates = [sample("chelsea.jpg"), sample("astronaut.jpg"), rendered];
    let classes: Vec<usize> = candidates.iter().map(|c| top1(&model, c)).collect();
    let (dog_scene, dog_class) = candidates
        .iter()
        .zip(&classes)
        .find(|(_, &class)| class != start_class)
        .unwrap_or_else(|| panic!("every scene is class {start_class}: {classes:?}"));
    let dog_scene = dog_scene.clone();
    let groups = dir.path().join("groups.toml");
    fs::write(
        &groups,
        format!("[groups.dog]\nmembers = [\"{dog_class}\"]\n"),
    )
    .expect("groups");

    // A head trained by `edgeclass train` on the daemon's backbone (as in the README's journey).
    let backbone = dir.path().join("resnet18-q8_0.gguf");
    write_gguf(&Network::synthetic(SEED), StorageDtype::Q8_0, &backbone).expect("backbone");
    let doors = dir.path().join("garage");
    write_doors(&doors, 8, 1, Variation::CAMERA);
    let head = dir.path().join("garage_door.gguf");
    let trained = Command::new(env!("CARGO_BIN_EXE_edgeclass"))
        .arg("train")
        .arg(&doors)
        .arg("--output")
        .arg(&head)
        .arg("--weights")
        .arg(&backbone)
        .output()
        .expect("edgeclass train runs");
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );

    let front_door = dir.path().join("front_door.jpg");
    fs::copy(&start_scene, &front_door).expect("camera picture");
    let yard = dir.path().join("yard.jpg");
    fs::copy(sample("astronaut.jpg"), &yard).expect("camera picture");

    let broker = Mosquitto::start();
    // Steady scenes, no heartbeat: nothing is published again unless the scene changes, so what
    // Home Assistant shows after its restart can only come from retained messages.
    let config = format!(
        r#"
[model]
synthetic_seed = {SEED}
precision = "q8_0"
threads = 1

[postprocess]
threshold = 0.0
groups = "{groups}"

[publish_policy]
heartbeat_s = 0

[mqtt]
url = "{url}"
reconnect_min_ms = 50
reconnect_max_ms = 400

[mqtt.discovery]
node_id = "{HOST}"

[[cameras]]
id = "front_door"
source = "file:{front_door}"
interval_ms = 100
heads = ["garage_door"]
[cameras.motion]
enabled = false

[[cameras]]
id = "yard"
source = "file:{yard}"
interval_ms = 100
[cameras.motion]
enabled = false

[[heads]]
name = "garage_door"
weights = "{head}"
[heads.postprocess]
threshold = 0.0
[heads.postprocess.labels]
open = "Door open"
"#,
        groups = groups.display(),
        url = broker.url(),
        front_door = front_door.display(),
        yard = yard.display(),
        head = head.display(),
    );
    let mut daemon = Daemon::start(&config);

    // The README's automation, with the notify service it calls writing to a file.
    let notifications = dir.path().join("notifications.txt");
    let yaml = format!(
        "command_line:\n  - notify:\n      name: notify\n      command: \"cat >> {}\"\n{}",
        notifications.display(),
        readme_automation()
    );
    let mut ha = HomeAssistant::start(&yaml);
    ha.onboard();
    let (_, config_json) = ha.get("/api/config").expect("config");
    let ha_config: Value = serde_json::from_slice(&config_json).expect("config JSON");
    assert_eq!(
        ha_config["version"], version,
        "the pinned Home Assistant runs"
    );
    ha.add_mqtt(broker.port());

    let id = |component: &str, camera: &str, what: &str| {
        format!("{component}.edgeclass_{HOST}_{camera}_{what}")
    };
    let sensor = id("sensor", "front_door", "label");
    let image = id("image", "front_door", "snapshot");
    let head_sensor = if honours_default_entity_id(version) {
        id("sensor", "front_door", "head_garage_door")
    } else {
        // Named after the device ("edgeclass pi") and the entity ("front_door garage_door").
        id("sensor", "front_door", "garage_door")
    };
    let yard_sensor = id("sensor", "yard", "label");
    let yard_image = id("image", "yard", "snapshot");

    // 1. State = the retained label, attributes = the Top-3 of the last event, snapshot served.
    let wanted = |broker: &Mosquitto| {
        retained(
            broker,
            &[
                "edgeclass/front_door/label",
                "edgeclass/front_door/state",
                "edgeclass/front_door/snapshot",
                "edgeclass/front_door/garage_door/label",
            ],
        )
    };
    poll_until(HA_WAIT, || wanted(&broker).len() == 4);
    let published = wanted(&broker);
    assert_eq!(
        published.len(),
        4,
        "{:?}\n{}",
        published.keys(),
        daemon.stderr()
    );
    let label = String::from_utf8_lossy(&published["edgeclass/front_door/label"]).into_owned();
    let last_event: Value =
        serde_json::from_slice(&published["edgeclass/front_door/state"]).expect("state JSON");
    let state = ha.wait_state(&sensor, "the label with its Top-3", |s| {
        s["state"] == label.as_str() && s["attributes"]["seq"] == last_event["seq"]
    });
    assert_eq!(top3(&state["attributes"]), top3(&last_event));
    assert_eq!(state["attributes"]["score"], last_event["score"]);
    assert_eq!(label, top3(&last_event)[0]);

    // An image entity's state is the time its image last changed.
    ha.wait_state(&image, "showing a snapshot", |s| {
        s["state"] != "unavailable" && s["state"] != "unknown"
    });
    let (status, jpeg) = ha
        .get(&format!("/api/image_proxy/{image}"))
        .expect("image proxy");
    assert_eq!(status, 200);
    assert!(
        jpeg == published["edgeclass/front_door/snapshot"],
        "the image entity serves the published snapshot byte for byte"
    );

    // 5. The head's sensor: its own entity, its own state, its labels as options.
    let head_label =
        String::from_utf8_lossy(&published["edgeclass/front_door/garage_door/label"]).into_owned();
    let state = ha.wait_state(&head_sensor, "the head's label", |s| {
        s["state"] == head_label.as_str()
    });
    let mut options: Vec<&str> = state["attributes"]["options"]
        .as_array()
        .unwrap_or_else(|| panic!("no options: {state}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    options.sort_unstable();
    assert_eq!(options, ["Door open", "closed", "unrecognized"], "{state}");
    assert!(state["attributes"]["top3"].is_array(), "{state}");
    ha.wait_state(&yard_sensor, "available", |s| s["state"] != "unavailable");

    // 6. The camera sees a dog: the README automation fires and its message carries the score.
    let automation = "automation.dog_at_the_front_door";
    let before = ha.wait_state(automation, "on", |s| s["state"] == "on");
    assert!(
        before["attributes"]["last_triggered"].is_null(),
        "nothing has seen a dog yet: {before}"
    );
    let incoming = dir.path().join("incoming.jpg");
    fs::copy(&dog_scene, &incoming).expect("copy");
    fs::rename(&incoming, &front_door).expect("swap the camera's picture");
    ha.wait_state(&sensor, "dog", |s| s["state"] == "dog");
    ha.wait_state(automation, "triggered", |s| {
        !s["attributes"]["last_triggered"].is_null()
    });
    let notified = poll_until(HA_WAIT, || {
        fs::read_to_string(&notifications).is_ok_and(|text| text.contains("Dog at the front door"))
    });
    let text = fs::read_to_string(&notifications).unwrap_or_default();
    assert!(notified, "no notification: {text:?}\n{}", ha.log());
    let score: f64 = text
        .trim()
        .strip_prefix("Dog at the front door (")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("the message carries the score attribute: {text:?}"));
    assert!(score > 0.0 && score <= 1.0, "{text}");

    // 2. Restart Home Assistant: state and Top-3 come back from retained messages alone.
    let before = ha.wait_state(&sensor, "dog with its Top-3", |s| {
        s["state"] == "dog" && top3(&s["attributes"])[0] == "dog"
    });
    ha.stop();
    let entities = mqtt_entities(&ha);
    ha.run();
    let after = ha.wait_state(&sensor, "back with its Top-3", |s| {
        s["state"] == "dog" && s["attributes"]["top3"].is_array()
    });
    assert_eq!(
        after["attributes"]["seq"], before["attributes"]["seq"],
        "the same classification, not a new one"
    );
    assert_eq!(top3(&after["attributes"]), top3(&before["attributes"]));
    ha.wait_state(&head_sensor, "back", |s| s["state"] == head_label.as_str());
    ha.wait_state(&image, "back", |s| s["state"] != "unavailable");

    // 4. One camera's source fails: only its entities go unavailable.
    fs::remove_file(&yard).expect("remove the yard's picture");
    ha.wait_unavailable(&yard_sensor);
    ha.wait_unavailable(&yard_image);
    for entity in [&sensor, &image, &head_sensor] {
        assert_ne!(
            ha.state(entity).expect("state")["state"],
            "unavailable",
            "{entity}"
        );
    }

    // 3. SIGTERM: everything unavailable; started again: available under the same ids.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(HA_WAIT).success(), "{}", daemon.stderr());
    for entity in [&sensor, &image, &head_sensor] {
        ha.wait_unavailable(entity);
    }
    let mut daemon = Daemon::start(&config);
    ha.wait_state(&sensor, "available again", |s| s["state"] == "dog");
    ha.wait_state(&head_sensor, "available again", |s| {
        s["state"] != "unavailable"
    });
    // SIGKILL: the broker's last will makes them unavailable.
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit(HA_WAIT);
    for entity in [&sensor, &image, &head_sensor] {
        ha.wait_unavailable(entity);
    }
    let daemon = Daemon::start(&config);
    ha.wait_state(&sensor, "available after the kill", |s| s["state"] == "dog");
    ha.wait_state(&image, "available after the kill", |s| {
        s["state"] != "unavailable"
    });
    drop(daemon);

    // No duplicates: the same five entities under the same ids before and after all restarts.
    ha.stop();
    let expected: BTreeMap<String, String> = [
        ("front_door_label", &sensor),
        ("front_door_snapshot", &image),
        ("front_door_head_garage_door", &head_sensor),
        ("yard_label", &yard_sensor),
        ("yard_snapshot", &yard_image),
    ]
    .into_iter()
    .map(|(what, entity)| (format!("edgeclass_{HOST}_{what}"), entity.clone()))
    .collect();
    assert_eq!(
        entities, expected,
        "entities before Home Assistant's restart"
    );
    assert_eq!(mqtt_entities(&ha), expected, "entities at the end");

    // Home Assistant had nothing to complain about in what edgeclass sent, in either run (it
    // keeps the previous run's log as `.1`).
    let log = ["home-assistant.log.1", "home-assistant.log"]
        .map(|name| fs::read_to_string(ha.file(name)).expect("Home Assistant's log"))
        .concat();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("WARNING") || line.contains("ERROR"))
        .filter(|line| line.contains("mqtt") || line.contains("edgeclass"))
        .collect();
    assert!(complaints.is_empty(), "{}", complaints.join("\n"));
}
