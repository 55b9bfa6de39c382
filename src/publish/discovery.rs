//! Home Assistant MQTT discovery: one device per edgeclass instance, per camera a `sensor` (the
//! top-1 label, top-3 as attributes) and an `image` (the snapshot), and per camera and custom
//! head an `enum` sensor (the head's label, its possible labels as options).

use serde_json::json;

use super::config::{slug, MqttConfig};
use super::outbox::Message;
use super::Topics;
use crate::capture::CameraId;

/// What the discovery payloads are built from.
pub(crate) struct Announcement {
    pub discovery_prefix: String,
    pub node_id: String,
    pub device_name: String,
    pub model: String,
    pub qos: u8,
    pub snapshots: bool,
    pub topics: Topics,
}

/// Attributes shown on the sensor, taken from the retained state (the last event's JSON): retained
/// so Home Assistant has them as soon as it subscribes, also after it restarts.
const ATTRIBUTES_TEMPLATE: &str = "{{ {'top3': value_json.top3, 'score': value_json.score, \
     'unknown': value_json.unknown, 'seq': value_json.seq, 'ts': value_json.ts, \
     'frame': value_json.frame, 'model': value_json.model, \
     'latency_ms': value_json.latency_ms} | tojson }}";

/// The retained discovery messages (topic, JSON payload) a [`super::Publisher`] started with
/// `cfg` and `model` announces for `cameras`, then those of [`super::Publisher::announce_head`]
/// for each `(head, labels)` on every camera; none with discovery disabled. For tools and the
/// fuzz target of the published JSON (`fuzz/fuzz_targets/discovery.rs`).
pub fn discovery_messages(
    cfg: &MqttConfig,
    model: &str,
    cameras: &[CameraId],
    heads: &[(&str, &[&str])],
) -> Vec<(String, Vec<u8>)> {
    if !cfg.discovery.enabled {
        return Vec::new();
    }
    let announcement = Announcement::new(cfg, model, Topics::new(&cfg.topic_prefix));
    let mut messages = announcement.messages(cameras);
    for camera in cameras {
        for (head, labels) in heads {
            messages.push(announcement.head_sensor(camera, head, labels));
        }
    }
    messages
        .into_iter()
        .map(|message| (message.topic, message.payload))
        .collect()
}

impl Announcement {
    /// What `cfg`'s discovery section and `model` announce, under `topics`.
    pub fn new(cfg: &MqttConfig, model: &str, topics: Topics) -> Self {
        let node_id = cfg.node_id();
        let device_name = cfg
            .discovery
            .device_name
            .clone()
            .unwrap_or_else(|| format!("edgeclass {node_id}"));
        Announcement {
            discovery_prefix: cfg.discovery.prefix.clone(),
            node_id,
            device_name,
            model: model.to_string(),
            qos: cfg.qos,
            snapshots: cfg.snapshot.enabled,
            topics,
        }
    }

    /// The retained config messages for every camera. With snapshots off the image entity's
    /// config is an empty retained payload, which removes an entity announced earlier.
    pub fn messages(&self, cameras: &[CameraId]) -> Vec<Message> {
        let mut messages = Vec::with_capacity(cameras.len() * 2);
        for camera in cameras {
            messages.push(self.sensor(camera));
            messages.push(self.image(camera));
        }
        messages
    }

    /// `<discovery prefix>/status`: Home Assistant's birth/last-will topic.
    pub fn ha_status_topic(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    fn object_id(&self, camera: &CameraId, what: &str) -> String {
        format!(
            "edgeclass_{}_{}_{what}",
            self.node_id,
            slug(camera.as_str())
        )
    }

    fn config_topic(&self, component: &str, object_id: &str) -> String {
        format!(
            "{}/{component}/{}/{object_id}/config",
            self.discovery_prefix, self.node_id
        )
    }

    /// The keys every entity of `camera` shares; `what` ends its id, `name` follows the camera's
    /// in its name.
    fn common(
        &self,
        camera: &CameraId,
        component: &str,
        what: &str,
        name: &str,
    ) -> serde_json::Value {
        let object_id = self.object_id(camera, what);
        json!({
            "name": format!("{camera} {name}"),
            "unique_id": object_id,
            "default_entity_id": format!("{component}.{object_id}"),
            "availability": [
                { "topic": self.topics.status(), "payload_available": "online",
                  "payload_not_available": "offline" },
                { "topic": self.topics.availability(camera), "payload_available": "online",
                  "payload_not_available": "offline" },
            ],
            "availability_mode": "all",
            "qos": self.qos,
            "device": {
                "identifiers": [format!("edgeclass_{}", self.node_id)],
                "name": self.device_name,
                "manufacturer": "edgeclass",
                "model": self.model,
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
            "origin": { "name": "edgeclass", "sw_version": env!("CARGO_PKG_VERSION") },
        })
    }

    fn sensor(&self, camera: &CameraId) -> Message {
        let config = self.label_sensor(camera, None, "label", "label");
        self.sensor_message(camera, "label", config)
    }

    /// The retained config of the sensor for `head`'s label on `camera`: an `enum` whose options
    /// are `labels` (each once, in order), so it must be announced again when they change.
    pub fn head_sensor(&self, camera: &CameraId, head: &str, labels: &[&str]) -> Message {
        let what = format!("head_{}", slug(head));
        let mut config = self.label_sensor(camera, Some(head), &what, head);
        let mut options: Vec<&str> = Vec::with_capacity(labels.len());
        for &label in labels {
            if !options.contains(&label) {
                options.push(label);
            }
        }
        config["device_class"] = "enum".into();
        config["options"] = options.into();
        self.sensor_message(camera, &what, config)
    }

    /// The config of the label sensor of the ImageNet classifier (`head` none) or of a head.
    fn label_sensor(
        &self,
        camera: &CameraId,
        head: Option<&str>,
        what: &str,
        name: &str,
    ) -> serde_json::Value {
        let mut config = self.common(camera, "sensor", what, name);
        config["state_topic"] = self.topics.label(camera, head).into();
        config["json_attributes_topic"] = self.topics.state(camera, head).into();
        config["json_attributes_template"] = ATTRIBUTES_TEMPLATE.into();
        config["icon"] = "mdi:image-search".into();
        config
    }

    fn sensor_message(&self, camera: &CameraId, what: &str, config: serde_json::Value) -> Message {
        let topic = self.config_topic("sensor", &self.object_id(camera, what));
        Message::state(topic, config.to_string())
    }

    fn image(&self, camera: &CameraId) -> Message {
        let topic = self.config_topic("image", &self.object_id(camera, "snapshot"));
        if !self.snapshots {
            return Message::state(topic, Vec::new());
        }
        let mut config = self.common(camera, "image", "snapshot", "snapshot");
        config["image_topic"] = self.topics.snapshot(camera).into();
        config["content_type"] = "image/jpeg".into();
        Message::state(topic, config.to_string())
    }
}
