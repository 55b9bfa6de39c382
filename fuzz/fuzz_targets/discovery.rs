//! Home Assistant's discovery configs from any topic prefix, discovery prefix, device name,
//! client id, model name, camera ids, head names and labels: every payload parses back as JSON
//! with the same names, model and (for a head) its labels, each once, in order; never a panic.
#![no_main]

use arbitrary::Arbitrary;
use edgeclass::capture::CameraId;
use edgeclass::publish::{discovery_messages, MqttConfig};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Debug, Arbitrary)]
struct Input {
    topic_prefix: String,
    discovery_prefix: String,
    device_name: Option<String>,
    client_id: Option<String>,
    snapshots: bool,
    model: String,
    cameras: Vec<String>,
    head: Option<(String, Vec<String>)>,
}

fuzz_target!(|input: Input| {
    let cameras: Vec<CameraId> = input
        .cameras
        .iter()
        .filter_map(|id| id.parse().ok())
        .take(4)
        .collect();
    let mut cfg = MqttConfig {
        topic_prefix: input.topic_prefix,
        client_id: input.client_id,
        ..MqttConfig::default()
    };
    cfg.discovery.enabled = true;
    cfg.discovery.prefix = input.discovery_prefix;
    cfg.discovery.device_name = input.device_name.clone();
    cfg.snapshot.enabled = input.snapshots;
    let labels: Vec<&str> = input
        .head
        .iter()
        .flat_map(|(_, labels)| labels.iter().map(String::as_str))
        .collect();
    let heads: Vec<(&str, &[&str])> = input
        .head
        .iter()
        .map(|(name, _)| (name.as_str(), labels.as_slice()))
        .collect();
    let messages = discovery_messages(&cfg, &input.model, &cameras, &heads);
    assert_eq!(messages.len(), cameras.len() * (2 + heads.len()));
    for (i, (topic, payload)) in messages.iter().enumerate() {
        assert!(topic.starts_with(&cfg.discovery.prefix), "{topic}");
        assert!(topic.ends_with("/config"), "{topic}");
        if payload.is_empty() {
            // The image entity's removal when snapshots are off.
            assert!(!input.snapshots && topic.contains("/image/"), "{topic}");
            continue;
        }
        let json: Value = serde_json::from_slice(payload).expect("discovery payload is JSON");
        let camera = if i < 2 * cameras.len() {
            &cameras[i / 2]
        } else {
            &cameras[(i - 2 * cameras.len()) / heads.len()]
        };
        let name = json["name"].as_str().expect("name is a string");
        assert!(name.starts_with(&format!("{camera} ")), "{name}");
        assert_eq!(json["device"]["model"], input.model.as_str());
        if let Some(device_name) = &input.device_name {
            assert_eq!(json["device"]["name"], device_name.as_str());
        }
        if i >= 2 * cameras.len() {
            let mut unique: Vec<&str> = Vec::new();
            for label in &labels {
                if !unique.contains(label) {
                    unique.push(label);
                }
            }
            assert_eq!(json["options"], serde_json::json!(unique));
        }
    }
});
