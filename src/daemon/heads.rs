//! The custom heads the pipelines run: loaded at start (an unusable head stops the daemon with
//! a configuration error), reloaded on SIGHUP when their file changed (an unusable file keeps
//! the running head).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::capture::CameraConfig;
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
/// its postprocessor and policy are rebuilt. A head whose file or settings are unusable keeps
/// running as it was, and the log says why. The set of heads is the one loaded at start.
pub fn reload(running: &[Arc<ActiveHead>], config: &Config, model: &Model) -> Vec<Arc<ActiveHead>> {
    running
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

/// Announces the Home Assistant sensor of each of `heads` on every camera that runs it.
pub fn announce<'a>(
    publisher: &Publisher,
    cameras: &[CameraConfig],
    heads: impl IntoIterator<Item = &'a ActiveHead>,
) {
    for head in heads {
        let labels: Vec<&str> = head.postprocessor.labels().collect();
        let runs_it = |c: &&CameraConfig| c.heads.iter().any(|h| h == head.name.as_str());
        for camera in cameras.iter().filter(runs_it) {
            publisher.announce_head(&camera.id, head.name.as_str(), &labels);
        }
    }
}

/// Warns when the reloaded config adds, removes or reassigns heads, which takes a restart.
pub fn warn_about_restart(running: &[Arc<ActiveHead>], cameras: &[CameraConfig], config: &Config) {
    let running_names = running.iter().map(|h| &h.name);
    let same_heads = running_names.eq(config.heads.iter().map(|h| &h.name));
    let same_cameras = cameras.len() == config.cameras.len()
        && cameras
            .iter()
            .zip(&config.cameras)
            .all(|(a, b)| a.id == b.id && a.heads == b.heads);
    if !same_heads || !same_cameras {
        log::warn!(
            "heads or cameras were added, removed or reassigned: that takes effect when the \
             daemon restarts"
        );
    }
}
