//! The MQTT publisher against a real mosquitto (and the embedded broker) on 127.0.0.1.

mod common {
    pub mod mosquitto;
    pub mod tls;
    pub mod wait;
}

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::mosquitto::{free_port, write_password_file, Mosquitto, Received, Subscriber};
use common::tls::make_certificates;
use edgeclass::capture::CameraId;
use edgeclass::postprocess::Prediction;
use edgeclass::publish::{EmbeddedBroker, Event, MqttConfig, PublishError, Publisher};

const WAIT: Duration = Duration::from_secs(20);

fn config(url: Option<String>) -> MqttConfig {
    let mut cfg = MqttConfig {
        url,
        reconnect_min_ms: 50,
        reconnect_max_ms: 400,
        ..MqttConfig::default()
    };
    cfg.discovery.node_id = Some("testnode".into());
    cfg
}

fn cameras(names: &[&str]) -> Vec<CameraId> {
    names.iter().map(|name| id(name)).collect()
}

fn id(name: &str) -> CameraId {
    name.parse().expect("test camera id")
}

fn event(camera: &str, frame: u64, label: &str) -> Event {
    Event {
        camera: id(camera),
        seq: 0,
        ts: SystemTime::now(),
        frame,
        label: label.into(),
        score: 0.75,
        unknown: false,
        top3: vec![
            Prediction {
                label: label.into(),
                raw_label: "tabby, tabby cat".into(),
                index: 281,
                wnid: "n02123045".into(),
                score: 0.75,
            },
            Prediction {
                label: "tiger cat".into(),
                raw_label: "tiger cat".into(),
                index: 282,
                wnid: "n02123159".into(),
                score: 0.15,
            },
            Prediction {
                label: "Egyptian cat".into(),
                raw_label: "Egyptian cat".into(),
                index: 285,
                wnid: "n02124075".into(),
                score: 0.05,
            },
        ],
        model: "resnet18-q8_0".into(),
        latency_ms: 12.5,
        heartbeat: false,
    }
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_connected(publisher: &Publisher) {
    wait_for("the publisher to connect", || publisher.stats().connected).await;
}

/// Subscriber calls block; run them off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

fn seq_of(message: &Received) -> u64 {
    message.json()["seq"].as_u64().expect("seq is a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_schema_retained_state_and_offline_on_shutdown() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/#"]);
    let publisher = Publisher::start(
        &config(Some(broker.url())),
        &cameras(&["door"]),
        "resnet18-q8_0",
    )
    .await
    .unwrap();
    assert_eq!(publisher.event(event("door", 10, "cat")), 1);
    assert_eq!(publisher.event(event("door", 11, "cat")), 2);

    let (sub, events) = blocking(move || {
        let events = sub.collect_on("edgeclass/door/event", 2, WAIT);
        (sub, events)
    })
    .await;
    assert_eq!(events.len(), 2);
    let json = events[0].json();
    assert_eq!(json["camera"], "door");
    assert_eq!(json["seq"], 1);
    assert_eq!(json["frame"], 10);
    assert_eq!(json["label"], "cat");
    assert_eq!(json["unknown"], false);
    assert_eq!(json["model"], "resnet18-q8_0");
    assert_eq!(json["latency_ms"], 12.5);
    assert_eq!(json["top3"].as_array().unwrap().len(), 3);
    assert_eq!(json["top3"][1]["wnid"], "n02123159");
    assert_eq!(json["top3"][0]["raw_label"], "tabby, tabby cat");
    assert_eq!(json["top3"][2]["index"], 285);
    let ts = json["ts"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(ts).is_ok(), "ts {ts} is RFC 3339");
    assert_eq!(seq_of(&events[1]), 2);
    assert!(!events[0].retain);

    // A late subscriber sees the retained state.
    let late = blocking({
        let port = broker.port();
        move || {
            let late = Subscriber::connect(port, &["edgeclass/#"]);
            let mut seen = std::collections::BTreeMap::new();
            for m in late.drain_pending() {
                seen.insert(m.topic.clone(), (m.text(), m.retain));
            }
            seen
        }
    })
    .await;
    assert_eq!(late["edgeclass/status"], ("online".to_string(), true));
    assert_eq!(late["edgeclass/door/label"], ("cat".to_string(), true));
    assert_eq!(
        late["edgeclass/door/availability"],
        ("online".to_string(), true)
    );
    assert!(
        !late.contains_key("edgeclass/door/event"),
        "events are not retained"
    );
    // The last event is retained on the state topic: Home Assistant's attributes source.
    let (state, retained) = &late["edgeclass/door/state"];
    assert!(retained, "the state is retained");
    let state: serde_json::Value = serde_json::from_str(state).expect("state is JSON");
    assert_eq!(state["seq"], 2, "the state is the last event");
    assert_eq!(state["frame"], 11);
    assert_eq!(state["top3"], json["top3"]);

    // The subscriber can have both events before the publisher has processed their PUBACKs.
    wait_for("both events to be acknowledged", || {
        publisher.stats().queued == 0
    })
    .await;
    let stats = publisher.stats();
    assert_eq!((stats.sent, stats.dropped, stats.queued), (2, 0, 0));

    publisher.shutdown(WAIT).await.unwrap();
    let offline = blocking(move || {
        let mut last = std::collections::BTreeMap::new();
        let wanted = ["edgeclass/status", "edgeclass/door/availability"];
        while !wanted
            .iter()
            .all(|t| last.get(*t) == Some(&"offline".to_string()))
        {
            match sub.recv(WAIT) {
                Some(m) => last.insert(m.topic.clone(), m.text()),
                None => break,
            };
        }
        last
    })
    .await;
    assert_eq!(offline["edgeclass/status"], "offline", "{offline:?}");
    assert_eq!(offline["edgeclass/door/availability"], "offline");
}

/// Starts a publisher on its own runtime against `port`, then drops the runtime: the network
/// task dies and the socket closes without DISCONNECT, exactly as when the process is killed.
fn assert_last_will_on_abrupt_death(port: u16, cfg: MqttConfig) {
    let sub = Subscriber::connect(port, &["edgeclass/status"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let publisher = Publisher::start(&cfg, &cameras(&["door"]), "m")
            .await
            .unwrap();
        wait_connected(&publisher).await;
    });
    let online = sub
        .wait_for_topic("edgeclass/status", WAIT)
        .map(|m| m.text());
    assert_eq!(online.as_deref(), Some("online"));
    runtime.shutdown_background();
    let will = sub.wait_for_topic("edgeclass/status", WAIT);
    assert_eq!(will.map(|m| m.text()).as_deref(), Some("offline"));
}

#[test]
fn last_will_says_offline_when_the_process_dies_without_disconnect() {
    let broker = Mosquitto::start();
    assert_last_will_on_abrupt_death(broker.port(), config(Some(broker.url())));
}

#[test]
fn embedded_broker_delivers_the_last_will() {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _broker = EmbeddedBroker::start(listen).unwrap();
    let mut cfg = config(None);
    cfg.embedded_listen = listen;
    assert_last_will_on_abrupt_death(listen.port(), cfg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovery_and_reannounce_on_ha_birth() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["homeassistant/#"]);
    let mut cfg = config(Some(broker.url()));
    cfg.discovery.device_name = Some("Garage edge".into());
    let publisher = Publisher::start(&cfg, &cameras(&["door", "yard"]), "resnet18-q8_0")
        .await
        .unwrap();

    let sensor_topic = "homeassistant/sensor/testnode/edgeclass_testnode_door_label/config";
    let image_topic = "homeassistant/image/testnode/edgeclass_testnode_door_snapshot/config";
    let (sub, configs) = blocking(move || {
        let mut configs = std::collections::BTreeMap::new();
        while configs.len() < 4 {
            match sub.wait_until(WAIT, |m| m.topic.ends_with("/config")) {
                Some(m) => configs.insert(m.topic.clone(), m),
                None => break,
            };
        }
        (sub, configs)
    })
    .await;
    assert_eq!(configs.len(), 4, "{:?}", configs.keys());

    let sensor = configs[sensor_topic].json();
    assert_eq!(sensor["unique_id"], "edgeclass_testnode_door_label");
    assert_eq!(
        sensor["default_entity_id"],
        "sensor.edgeclass_testnode_door_label"
    );
    assert!(sensor.get("object_id").is_none(), "object_id is deprecated");
    assert_eq!(sensor["state_topic"], "edgeclass/door/label");
    assert_eq!(sensor["json_attributes_topic"], "edgeclass/door/state");
    assert!(sensor["json_attributes_template"]
        .as_str()
        .unwrap()
        .contains("value_json.top3"));
    assert_eq!(sensor["availability_mode"], "all");
    let availability: Vec<&str> = sensor["availability"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        availability,
        ["edgeclass/status", "edgeclass/door/availability"]
    );
    assert_eq!(sensor["device"]["identifiers"][0], "edgeclass_testnode");
    assert_eq!(sensor["device"]["name"], "Garage edge");
    assert_eq!(sensor["device"]["model"], "resnet18-q8_0");
    assert_eq!(sensor["qos"], 1);

    let image = configs[image_topic].json();
    assert_eq!(image["unique_id"], "edgeclass_testnode_door_snapshot");
    assert_eq!(
        image["default_entity_id"],
        "image.edgeclass_testnode_door_snapshot"
    );
    assert_eq!(image["image_topic"], "edgeclass/door/snapshot");
    assert_eq!(image["content_type"], "image/jpeg");
    assert_eq!(
        image["device"], sensor["device"],
        "one device for all entities"
    );
    let yard = configs["homeassistant/sensor/testnode/edgeclass_testnode_yard_label/config"].json();
    assert_eq!(yard["state_topic"], "edgeclass/yard/label");

    // Home Assistant restarts: its birth message triggers a fresh announcement.
    let again = blocking(move || {
        sub.publish("homeassistant/status", "online", false);
        sub.wait_until(WAIT, |m| m.topic == sensor_topic)
    })
    .await;
    let again = again.expect("discovery re-announced after homeassistant/status online");
    assert_eq!(again.json(), sensor);
    publisher.shutdown(WAIT).await.unwrap();

    // Retained, so Home Assistant finds them whenever it subscribes.
    let port = broker.port();
    let late = blocking(move || {
        Subscriber::connect(port, &[sensor_topic]).wait_for_topic(sensor_topic, WAIT)
    })
    .await
    .expect("retained sensor config");
    assert!(late.retain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_have_their_own_topics_seqs_and_sensor_reannounced_when_labels_change() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/#", "homeassistant/#"]);
    let publisher = Publisher::start(&config(Some(broker.url())), &cameras(&["door"]), "m")
        .await
        .unwrap();
    publisher.announce_head(
        &id("door"),
        "garage_door",
        &["open", "closed", "open", "unrecognized"],
    );
    publisher.event(event("door", 1, "tabby"));
    publisher.head_event("garage_door", event("door", 1, "open"));
    publisher.head_event("garage_door", event("door", 2, "closed"));
    let head_sensor =
        "homeassistant/sensor/testnode/edgeclass_testnode_door_head_garage_door/config";

    let (sub, received) = blocking(move || {
        let mut received = Vec::new();
        while let Some(m) = sub.wait_until(WAIT, |m| m.topic.starts_with("edgeclass/door/")) {
            received.push(m);
            if received
                .iter()
                .filter(|m| m.topic.ends_with("/event"))
                .count()
                == 3
            {
                break;
            }
        }
        (sub, received)
    })
    .await;
    let on =
        |topic: &str| -> Vec<&Received> { received.iter().filter(|m| m.topic == topic).collect() };
    // Each classifier counts its own events from 1.
    let seqs: Vec<u64> = on("edgeclass/door/garage_door/event")
        .into_iter()
        .map(seq_of)
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(
        on("edgeclass/door/event")
            .into_iter()
            .map(seq_of)
            .collect::<Vec<_>>(),
        [1]
    );

    let port = broker.port();
    let retained = blocking(move || {
        Subscriber::connect(port, &["edgeclass/#", "homeassistant/#"]).drain_pending()
    })
    .await;
    let last = |topic: &str| retained.iter().rfind(|m| m.topic == topic).cloned();
    assert_eq!(
        last("edgeclass/door/garage_door/label")
            .map(|m| m.text())
            .as_deref(),
        Some("closed")
    );
    assert_eq!(
        last("edgeclass/door/label").map(|m| m.text()).as_deref(),
        Some("tabby")
    );
    let sensor = last(head_sensor).expect("head sensor config").json();
    assert_eq!(sensor["name"], "door garage_door");
    assert_eq!(sensor["state_topic"], "edgeclass/door/garage_door/label");
    assert_eq!(
        sensor["json_attributes_topic"],
        "edgeclass/door/garage_door/state"
    );
    let head_state = last("edgeclass/door/garage_door/state").expect("retained head state");
    assert_eq!(head_state.json()["seq"], 2);
    assert_eq!(head_state.json()["label"], "closed");
    assert_eq!(
        sensor["options"],
        serde_json::json!(["open", "closed", "unrecognized"])
    );

    // New labels replace the announcement, also the one Home Assistant's birth triggers.
    publisher.announce_head(&id("door"), "garage_door", &["parcel", "unrecognized"]);
    let again = blocking(move || {
        let changed = sub.wait_until(WAIT, |m| m.topic == head_sensor);
        sub.publish("homeassistant/status", "online", false);
        let reannounced = sub.wait_until(WAIT, |m| m.topic == head_sensor);
        (changed, reannounced)
    })
    .await;
    for announced in [again.0, again.1] {
        let options = announced.expect("head sensor announced").json()["options"].clone();
        assert_eq!(options, serde_json::json!(["parcel", "unrecognized"]));
    }
    publisher.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_retained_and_size_capped() {
    let broker = Mosquitto::start();
    let mut cfg = config(Some(broker.url()));
    cfg.snapshot.max_bytes = 100_000;
    let publisher = Publisher::start(&cfg, &cameras(&["door"]), "m")
        .await
        .unwrap();
    // Bigger than rumqttc's 10 KiB default packet limit, within ours.
    let jpeg: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    publisher.snapshot(&id("door"), &jpeg);
    publisher.snapshot(&id("door"), &vec![0u8; 100_001]);
    assert_eq!(publisher.stats().oversized_snapshots, 1);
    wait_connected(&publisher).await;
    publisher.shutdown(WAIT).await.unwrap();

    // After the publisher is gone, a new subscriber still gets the retained snapshot.
    let port = broker.port();
    let got = blocking(move || {
        let sub = Subscriber::connect(port, &["edgeclass/door/snapshot"]);
        sub.wait_for_topic("edgeclass/door/snapshot", WAIT)
    })
    .await
    .expect("retained snapshot");
    assert!(got.retain);
    assert_eq!(got.payload, jpeg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_file_against_a_password_protected_broker() {
    let broker = Mosquitto::start_with(|dir| {
        let file = write_password_file(&dir.join("passwd"), "edge", "s3cret");
        format!("password_file {}", file.display())
    });
    let pass_file = broker.dir().join("edge.pass");
    std::fs::write(&pass_file, "s3cret\n").unwrap();

    let mut wrong = config(Some(broker.url()));
    wrong.username = Some("edge".into());
    wrong.password = Some("nope".into());
    wrong.discovery.enabled = false;
    let rejected = Publisher::start(&wrong, &cameras(&["door"]), "m")
        .await
        .unwrap();
    rejected.event(event("door", 1, "cat"));

    let mut cfg = config(Some(broker.url()));
    cfg.username = Some("edge".into());
    cfg.password_file = Some(pass_file);
    let publisher = Publisher::start(&cfg, &cameras(&["door"]), "m")
        .await
        .unwrap();
    publisher.event(event("door", 1, "cat"));
    wait_for("the authenticated event to be acknowledged", || {
        publisher.stats().sent == 1
    })
    .await;
    // The authenticated publisher got through while the wrong password is still refused.
    let refused = rejected.stats();
    assert!(!refused.connected);
    assert_eq!((refused.sent, refused.queued), (0, 1));
    assert!(rejected.shutdown(Duration::from_millis(200)).await.is_err());
    publisher.shutdown(WAIT).await.unwrap();

    let mut missing = cfg.clone();
    missing.password_file = Some(broker.dir().join("does-not-exist"));
    let err = Publisher::start(&missing, &[], "m").await.err().unwrap();
    assert!(
        matches!(
            err,
            PublishError::ReadFile {
                key: "mqtt.password_file",
                ..
            }
        ),
        "{err}"
    );
}

/// Events published while the broker is down are delivered after it comes back, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing_within_the_queue_bound() {
    let mut broker = Mosquitto::start_with(|dir| {
        format!(
            "persistence true\npersistence_location {}/\n",
            dir.display()
        )
    });
    let port = broker.port();
    // A persistent QoS 1 session: mosquitto keeps it (and queues for it) across its restart.
    let sub = Subscriber::persistent(port, "restart-sub", &["edgeclass/+/event"]);
    let mut cfg = config(Some(broker.url()));
    cfg.discovery.enabled = false;
    let publisher = Publisher::start(&cfg, &cameras(&["door"]), "m")
        .await
        .unwrap();
    wait_connected(&publisher).await;

    const TOTAL: u64 = 60;
    for frame in 1..=20 {
        publisher.event(event("door", frame, "cat"));
    }
    let (sub, mut seqs) = blocking(move || {
        let got = sub.collect_on("edgeclass/door/event", 20, WAIT);
        (sub, got.iter().map(seq_of).collect::<Vec<_>>())
    })
    .await;
    assert_eq!(seqs.len(), 20);

    // Mid-stream: these may be queued, in flight or delivered when the broker goes down.
    for frame in 21..=25 {
        publisher.event(event("door", frame, "cat"));
    }
    broker.stop();
    wait_for("the publisher to notice the broker is gone", || {
        !publisher.stats().connected
    })
    .await;
    for frame in 26..=40 {
        publisher.event(event("door", frame, "cat"));
    }
    let while_down = publisher.stats();
    assert!(while_down.queued >= 15, "{while_down:?}");
    broker.restart();
    wait_connected(&publisher).await;
    for frame in 41..=TOTAL {
        publisher.event(event("door", frame, "cat"));
    }
    wait_for("everything to be acknowledged", || {
        publisher.stats().queued == 0
    })
    .await;
    let stats = publisher.stats();
    assert_eq!(stats.dropped, 0);
    assert!(stats.sent >= TOTAL, "{stats:?}");

    let all = blocking(move || {
        // What the first subscriber received (and acknowledged) before the broker died.
        seqs.extend(sub.close().iter().map(seq_of));
        let sub = Subscriber::persistent(port, "restart-sub", &["edgeclass/+/event"]);
        while !(1..=TOTAL).all(|s| seqs.contains(&s)) {
            match sub.wait_for_topic("edgeclass/door/event", WAIT) {
                Some(m) => seqs.push(seq_of(&m)),
                None => break,
            }
        }
        seqs
    })
    .await;
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(
        unique,
        (1..=TOTAL).collect::<BTreeSet<_>>(),
        "every event arrives: {all:?}"
    );
    // At least once (publisher resends unacknowledged events, the broker redelivers to the
    // persistent session): repeats are possible, reordering of first deliveries is not.
    let mut first_seen = Vec::new();
    for seq in &all {
        if !first_seen.contains(seq) {
            first_seen.push(*seq);
        }
    }
    assert!(
        first_seen.windows(2).all(|w| w[0] < w[1]),
        "in order: {all:?}"
    );
    println!(
        "broker restart: {} events, {} deliveries ({} duplicates)",
        TOTAL,
        all.len(),
        all.len() as u64 - TOTAL
    );
    publisher.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bound_drops_the_oldest_and_counts_them() {
    let mut broker = Mosquitto::start_with(|dir| {
        format!(
            "persistence true\npersistence_location {}/\n",
            dir.display()
        )
    });
    let port = broker.port();
    // Create the persistent subscription, then take the broker down before edgeclass starts.
    drop(blocking(move || Subscriber::persistent(port, "bound-sub", &["edgeclass/+/event"])).await);
    broker.stop();

    let mut cfg = config(Some(broker.url()));
    cfg.queue_limit = 5;
    cfg.discovery.enabled = false;
    let publisher = Publisher::start(&cfg, &cameras(&["door"]), "m")
        .await
        .unwrap();
    for frame in 1..=12 {
        publisher.event(event("door", frame, "cat"));
    }
    let stats = publisher.stats();
    assert_eq!(
        (stats.queued, stats.dropped, stats.connected),
        (5, 7, false)
    );

    broker.restart();
    wait_for("the queue to drain", || publisher.stats().queued == 0).await;
    let seqs: Vec<u64> = blocking(move || {
        let sub = Subscriber::persistent(port, "bound-sub", &["edgeclass/+/event"]);
        sub.collect_on("edgeclass/door/event", 5, WAIT)
            .iter()
            .map(seq_of)
            .collect()
    })
    .await;
    assert_eq!(
        seqs,
        [8, 9, 10, 11, 12],
        "the newest five survive, in order"
    );
    assert_eq!(publisher.stats().dropped, 7);
    publisher.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_serves_rumqttc_and_mosquitto_sub_at_qos_0() {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let broker = EmbeddedBroker::start(listen).unwrap();
    assert_eq!(broker.listen(), listen);
    let port = listen.port();
    let sub = blocking(move || Subscriber::connect(port, &["edgeclass/#"])).await;

    let mut cfg = config(None);
    cfg.embedded_listen = listen;
    let publisher = Publisher::start(&cfg, &cameras(&["door"]), "m")
        .await
        .unwrap();
    publisher.event(event("door", 5, "cat"));
    let got = blocking(move || sub.wait_for_topic("edgeclass/door/event", WAIT))
        .await
        .expect("event through the embedded broker");
    assert_eq!(got.json()["frame"], 5);

    // mosquitto_sub as an outside client: the retained label is there.
    let output = blocking(move || {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "edgeclass/door/label", "-C", "1", "-W", "10"])
            .output()
            .expect("run mosquitto_sub")
    })
    .await;
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "cat");

    // A second broker on the same address is refused with the address in the error.
    let err = EmbeddedBroker::start(listen).unwrap_err();
    assert!(err.to_string().contains(&listen.to_string()), "{err}");
    publisher.shutdown(WAIT).await.unwrap();
}

/// Reads one MQTT packet: (packet type, body).
fn read_packet(stream: &mut std::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use std::io::Read;
    let mut header = [0u8; 1];
    stream.read_exact(&mut header).ok()?;
    let (mut length, mut shift) = (0usize, 0);
    loop {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).ok()?;
        length |= usize::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((header[0] >> 4, body))
}

/// A "broker" that accepts one connection, sends CONNACK, swallows `events` event PUBLISH
/// packets without acknowledging them, then closes: those events are in flight when it dies.
fn black_hole_broker(port: u16, events: usize) -> std::thread::JoinHandle<usize> {
    use std::io::Write;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind black hole");
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept the publisher");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let (kind, _) = read_packet(&mut stream).expect("CONNECT");
        assert_eq!(kind, 1, "first packet is CONNECT");
        stream
            .write_all(&[0x20, 0x02, 0x00, 0x00])
            .expect("CONNACK");
        let mut swallowed = 0;
        while swallowed < events {
            match read_packet(&mut stream) {
                Some((3, body)) => {
                    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                    if body[2..2 + topic_len].ends_with(b"/event") {
                        swallowed += 1;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        swallowed
    })
}

/// Events written to a broker that never acknowledged them are re-sent, in order, on the next
/// connection: nothing is lost when the connection dies with publishes in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_in_flight_events_are_replayed_after_reconnect() {
    let mut broker = Mosquitto::start_with(|dir| {
        format!(
            "persistence true\npersistence_location {}/\n",
            dir.display()
        )
    });
    let port = broker.port();
    drop(
        blocking(move || Subscriber::persistent(port, "replay-sub", &["edgeclass/+/event"])).await,
    );
    broker.stop();

    let hole = black_hole_broker(port, 3);
    let mut cfg = config(Some(broker.url()));
    cfg.discovery.enabled = false;
    let publisher = Publisher::start(&cfg, &cameras(&["door"]), "m")
        .await
        .unwrap();
    for frame in 1..=3 {
        publisher.event(event("door", frame, "cat"));
    }
    let swallowed = blocking(move || hole.join().expect("black hole thread")).await;
    assert_eq!(
        swallowed, 3,
        "all three were written and left unacknowledged"
    );
    wait_for("the publisher to notice the drop", || {
        !publisher.stats().connected
    })
    .await;
    assert_eq!(
        publisher.stats().queued,
        3,
        "in-flight events are queued again"
    );

    broker.restart();
    publisher.event(event("door", 4, "cat"));
    wait_for("the replay to be acknowledged", || {
        publisher.stats().queued == 0
    })
    .await;
    let seqs: Vec<u64> = blocking(move || {
        let sub = Subscriber::persistent(port, "replay-sub", &["edgeclass/+/event"]);
        sub.collect_on("edgeclass/door/event", 4, WAIT)
            .iter()
            .map(seq_of)
            .collect()
    })
    .await;
    assert_eq!(seqs, [1, 2, 3, 4]);
    publisher.shutdown(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_custom_ca_and_client_certificate() {
    let broker = Mosquitto::start_with(|dir| {
        make_certificates(dir);
        format!(
            "cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\n",
            d = dir.display()
        )
    });
    let dir = broker.dir().to_path_buf();
    let url = format!("mqtts://127.0.0.1:{}", broker.port());
    let mut cfg = config(Some(url));
    cfg.ca_file = Some(dir.join("ca.pem"));
    cfg.client_cert = Some(dir.join("client.pem"));
    cfg.client_key = Some(dir.join("client.key"));
    let publisher = Publisher::start(&cfg, &cameras(&["door"]), "m")
        .await
        .unwrap();

    // Without a client certificate the broker refuses the handshake.
    let mut anonymous = cfg.clone();
    anonymous.client_cert = None;
    anonymous.client_key = None;
    let refused = Publisher::start(&anonymous, &cameras(&["door"]), "m")
        .await
        .unwrap();
    refused.event(event("door", 1, "cat"));

    publisher.event(event("door", 1, "cat"));
    wait_for("the event to be acknowledged over TLS", || {
        publisher.stats().sent == 1
    })
    .await;
    assert!(!refused.stats().connected);
    assert_eq!(refused.stats().sent, 0);
    assert!(refused.shutdown(Duration::from_millis(100)).await.is_err());
    publisher.shutdown(WAIT).await.unwrap();

    let mut bad_ca = cfg.clone();
    bad_ca.ca_file = Some(dir.join("server.key"));
    let err = Publisher::start(&bad_ca, &[], "m").await.err().unwrap();
    assert!(
        matches!(
            err,
            PublishError::Tls {
                key: "mqtt.ca_file",
                ..
            }
        ),
        "{err}"
    );
}
