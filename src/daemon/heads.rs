//! The custom heads the pipelines run: loaded at start (an unusable head stops the daemon with
//! a configuration error), reloaded on SIGHUP (or the web page's "Activate") when their file
//! changed (an unusable file keeps the running head); heads added to the config, or to a
//! running camera's `heads`, start running at the reload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::capture::{CameraConfig, CameraId};
use crate::config::{Config, ConfigError, HeadConfig, HeadName};
use crate::model::{Ensemble, Model};
use crate::postprocess::{PolicyConfig, Postprocessor};
use crate::publish::Publisher;

/// A head as the pipelines run it.
#[derive(Debug)]
pub struct ActiveHead {
    /// Its name, the topic level of its events.
    pub name: HeadName,
    /// The classifier over the backbone's features: one head, or an ensemble of them.
    pub head: Ensemble,
    /// Its thresholds and labels.
    pub postprocessor: Postprocessor,
    /// Its publish policy.
    pub policy: PolicyConfig,
    /// `model` of its events: the backbone's description and the head's name.
    pub description: String,
    /// The files as they were when loaded: a reload reads them again only when one changed.
    stamps: Vec<Option<FileStamp>>,
}

/// What tells that a file was replaced or rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    /// The stamps of a head entry's files.
    fn of_all(paths: &[PathBuf]) -> Vec<Option<FileStamp>> {
        paths.iter().map(|path| FileStamp::of(path)).collect()
    }

    /// `None` when the file cannot be inspected: loading it then says why.
    fn of(path: &Path) -> Option<FileStamp> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            path: path.to_path_buf(),
            modified: metadata.modified().ok(),
            len: metadata.len(),
        })
    }
}

impl ActiveHead {
    fn new(
        config: &HeadConfig,
        head: Ensemble,
        postprocessor: Postprocessor,
        stamps: Vec<Option<FileStamp>>,
        model: &Model,
    ) -> ActiveHead {
        ActiveHead {
            name: config.name.clone(),
            description: format!("{}+{}", model.description(), config.name),
            head,
            postprocessor,
            policy: config.publish_policy.clone(),
            stamps,
        }
    }
}

/// Every `[[heads]]` entry, loaded and checked against the model's backbone; an unusable head
/// is a configuration error naming its key and file.
pub fn load(
    config: &Config,
    config_file: &Path,
    model: &Model,
) -> Result<Vec<Arc<ActiveHead>>, ConfigError> {
    // Stamped before reading, so a file replaced meanwhile is read again on the next reload.
    let stamps: Vec<_> = config
        .heads
        .iter()
        .map(|h| FileStamp::of_all(&h.weights))
        .collect();
    let loaded = config.load_heads(config_file, Some(model))?;
    Ok(config
        .heads
        .iter()
        .zip(loaded)
        .zip(stamps)
        .map(|((head_config, (head, postprocessor)), stamp)| {
            log::info!(
                "head {} loaded from {} (classes: {})",
                head_config.name,
                files(head_config),
                head.classes().join(", ")
            );
            Arc::new(ActiveHead::new(
                head_config,
                head,
                postprocessor,
                stamp,
                model,
            ))
        })
        .collect())
}

/// The running heads with `config` applied: each head's file is read again when it changed,
/// its postprocessor and policy are rebuilt; entries new in `config` are loaded and appended
/// (indices of running heads never change). A head whose file or settings are unusable keeps
/// running as it was (a new one is left out), and the log says why. A head removed from the
/// config runs until the daemon restarts.
pub fn reload(running: &[Arc<ActiveHead>], config: &Config, model: &Model) -> Vec<Arc<ActiveHead>> {
    let mut heads: Vec<Arc<ActiveHead>> = running
        .iter()
        .map(|old| {
            let Some(index) = config.heads.iter().position(|h| h.name == old.name) else {
                log::warn!(
                    "head {} is no longer in the config; it runs until the daemon restarts",
                    old.name
                );
                return Arc::clone(old);
            };
            match reload_one(old, index, &config.heads[index], model) {
                Ok(new) => Arc::new(new),
                Err(err) => {
                    log::error!("head {}: keeping the running head: {err:#}", old.name);
                    Arc::clone(old)
                }
            }
        })
        .collect();
    for (index, head_config) in config.heads.iter().enumerate() {
        if running.iter().any(|h| h.name == head_config.name) {
            continue;
        }
        match load_new(index, head_config, model) {
            Ok(head) => heads.push(Arc::new(head)),
            Err(err) => log::error!("head {}: not started: {err:#}", head_config.name),
        }
    }
    heads
}

/// A head entry added since the daemon started.
fn load_new(index: usize, config: &HeadConfig, model: &Model) -> anyhow::Result<ActiveHead> {
    let stamps = FileStamp::of_all(&config.weights);
    let head = config.load(Some(model))?;
    let postprocessor = config.postprocessor(index, &head)?;
    log::info!(
        "head {} added from {} (classes: {})",
        config.name,
        files(config),
        head.classes().join(", ")
    );
    Ok(ActiveHead::new(config, head, postprocessor, stamps, model))
}

/// Which heads each camera runs: indices into the running heads, by camera id.
pub type Assignments = BTreeMap<CameraId, Vec<usize>>;

/// The heads `config` gives each of the running `cameras`, on top of those in `previous`
/// (a head taken off a camera runs until the daemon restarts). A name that is not among
/// `heads` (its file failed to load) is left out; the load said why.
pub fn assign(
    cameras: &[CameraConfig],
    config: &Config,
    heads: &[Arc<ActiveHead>],
    previous: &Assignments,
) -> Assignments {
    cameras
        .iter()
        .map(|camera| {
            let mut assigned = previous.get(&camera.id).cloned().unwrap_or_default();
            let names = config
                .cameras
                .iter()
                .find(|c| c.id == camera.id)
                .map_or(&camera.heads, |c| &c.heads);
            for name in names {
                let index = heads.iter().position(|h| h.name.as_str() == name);
                if let Some(index) = index.filter(|i| !assigned.contains(i)) {
                    assigned.push(index);
                }
            }
            (camera.id.clone(), assigned)
        })
        .collect()
}

fn reload_one(
    old: &ActiveHead,
    index: usize,
    config: &HeadConfig,
    model: &Model,
) -> anyhow::Result<ActiveHead> {
    let stamps = FileStamp::of_all(&config.weights);
    let changed = stamps.iter().any(Option::is_none) || stamps != old.stamps;
    let head = if changed {
        config.load(Some(model))?
    } else {
        old.head.clone()
    };
    let postprocessor = config.postprocessor(index, &head)?;
    if changed {
        log::info!(
            "head {} reloaded from {} (classes: {})",
            config.name,
            files(config),
            head.classes().join(", ")
        );
    }
    Ok(ActiveHead::new(config, head, postprocessor, stamps, model))
}

/// The head files of an entry, for the log.
fn files(config: &HeadConfig) -> String {
    let paths: Vec<_> = config
        .weights
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    paths.join(", ")
}

/// Announces the Home Assistant sensor of each head in `which` on every camera that runs it
/// in `assignments`.
pub fn announce(
    publisher: &Publisher,
    heads: &[Arc<ActiveHead>],
    assignments: &Assignments,
    which: impl Fn(&CameraId, usize) -> bool,
) {
    for (camera, assigned) in assignments {
        for &index in assigned.iter().filter(|&&i| which(camera, i)) {
            let head = &heads[index];
            let labels: Vec<&str> = head.postprocessor.labels().collect();
            publisher.announce_head(camera, head.name.as_str(), &labels);
        }
    }
}

/// Warns when the reloaded config adds or removes cameras, or takes heads off them: that
/// takes a restart (adding heads does not).
pub fn warn_about_restart(cameras: &[CameraConfig], config: &Config) {
    let same_cameras = cameras.len() == config.cameras.len()
        && cameras
            .iter()
            .zip(&config.cameras)
            .all(|(a, b)| a.id == b.id && a.heads.iter().all(|h| b.heads.contains(h)));
    if !same_cameras {
        log::warn!(
            "cameras were added or removed, or heads taken off a camera: that takes effect \
             when the daemon restarts"
        );
    }
}
