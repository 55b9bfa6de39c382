//! The web page's "Activate": a trained head is written into the overrides file as a
//! `[[heads]]` entry and added to its camera's `heads`, then the daemon reloads as on SIGHUP,
//! which starts the head on the running camera and announces its Home Assistant sensor.

use std::path::{Path, PathBuf};

use crate::config::overrides;
use crate::config::{Config, HeadName};
use crate::web::{Activator, Reload};
use anyhow::Context;

/// Activation through the overrides file and a reload request.
pub struct Activation {
    config_file: PathBuf,
    overrides_file: PathBuf,
    reload: Reload,
}

impl Activation {
    /// Activates for the daemon run with `config_file`, reloading it with `reload`.
    pub fn new(config_file: PathBuf, reload: Reload) -> Self {
        Self {
            config_file,
            overrides_file: overrides::path(),
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
        let names = heads.into_iter().map(toml::Value::String).collect();
        let weights_key = ["heads", head.as_str(), "weights"];
        let heads_key = ["cameras", camera, "heads"];
        let undo = overrides::set_all(
            &self.overrides_file,
            [
                (
                    &weights_key[..],
                    toml::Value::String(weights.display().to_string()),
                ),
                (&heads_key[..], toml::Value::Array(names)),
            ],
        )?;
        log::info!(
            "head {head} activated on camera {camera} ({}); reloading",
            weights.display()
        );
        // A configuration that no longer loads would stop the next start: put the file back.
        if let Err(err) = (self.reload)() {
            undo.undo()?;
            return Err(err.context("the activated head does not fit; overrides file restored"));
        }
        Ok(())
    }
}
