//! The web page's "Activate": a trained head is written into the overrides file as a
//! `[[heads]]` entry and added to its camera's `heads`, then the daemon reloads as on SIGHUP,
//! which starts the head on the running camera and announces its Home Assistant sensor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Notify;

use crate::config::overrides::{overrides_path, update};
use crate::config::{Config, HeadName};
use crate::web::Activator;

/// Activation through the overrides file and a reload request.
pub struct Activation {
    config_file: PathBuf,
    overrides_file: PathBuf,
    reload: Arc<Notify>,
}

impl Activation {
    /// Activates for the daemon run with `config_file`, asking for reloads on `reload`.
    pub fn new(config_file: PathBuf, reload: Arc<Notify>) -> Self {
        Self {
            config_file,
            overrides_file: overrides_path(),
            reload,
        }
    }
}

impl Activator for Activation {
    fn activate(&self, camera: &str, head: &HeadName, weights: &Path) -> anyhow::Result<()> {
        // The camera's heads as they are now (config file and overrides), plus this one: the
        // overrides entry replaces the list.
        let config = Config::load(&self.config_file)?;
        let mut heads = config
            .cameras
            .iter()
            .find(|c| c.id.as_str() == camera)
            .with_context(|| format!("camera {camera} is not in the config"))?
            .heads
            .clone();
        if !heads.iter().any(|h| h == head.as_str()) {
            heads.push(head.to_string());
        }
        update(&self.overrides_file, |table| {
            upsert(table, "heads", "name", head.as_str(), |entry| {
                entry.insert(
                    "weights".into(),
                    toml::Value::String(weights.display().to_string()),
                );
            });
            upsert(table, "cameras", "id", camera, |entry| {
                let names = heads.iter().cloned().map(toml::Value::String).collect();
                entry.insert("heads".into(), toml::Value::Array(names));
            });
        })
        .with_context(|| format!("updating {}", self.overrides_file.display()))?;
        log::info!(
            "head {head} activated on camera {camera} ({}); reloading",
            weights.display()
        );
        self.reload.notify_one();
        Ok(())
    }
}

/// The entry of the array `table[array]` whose `key` is `id` (made if missing), changed by
/// `change`.
fn upsert(
    table: &mut toml::Table,
    array: &str,
    key: &str,
    id: &str,
    change: impl FnOnce(&mut toml::Table),
) {
    let entries = table
        .entry(array)
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    if !entries.is_array() {
        *entries = toml::Value::Array(Vec::new());
    }
    let Some(entries) = entries.as_array_mut() else {
        return;
    };
    let position = entries
        .iter()
        .position(|e| e.get(key).and_then(toml::Value::as_str) == Some(id));
    let index = position.unwrap_or_else(|| {
        let mut entry = toml::Table::new();
        entry.insert(key.into(), toml::Value::String(id.into()));
        entries.push(toml::Value::Table(entry));
        entries.len() - 1
    });
    if let Some(entry) = entries[index].as_table_mut() {
        change(entry);
    }
}
