//! The Thresholds page's API: the recent top-1 scores with the thresholds in effect, and
//! applying new thresholds (the global one, per label, and a head's) through the overrides
//! file and the daemon's reload.
//!
//! - `GET /api/thresholds` arms the recording of recent scores for
//!   [`RECORDING_ARMED_FOR`](super::RECORDING_ARMED_FOR) (see [`Board`](super::Board)) and
//!   answers `{overrides_file, recording: {since_ms, until_ms}, <ImageNet classifier>, heads:
//!   [{name, <head classifier>}]}`, where a classifier is `{unknown_label, threshold, frames,
//!   labels: [{label, threshold, own}], recent: [{camera, label, score, ts_ms}]}`: its
//!   `threshold` (a head's is `null` when unset), the frames recorded since `since_ms`, the
//!   recent classifications newest first, and a label for each top-1 label among them (`own`:
//!   set by its own key, so it does not follow `threshold`).
//! - `POST /api/thresholds` with any of `{"threshold": 0.5, "thresholds": {"<label>": 0.7},
//!   "heads": {"<head>": {"threshold": 0.6, "thresholds": {"<label>": 0.8}}}}`: each value a
//!   probability, each label one the classifier publishes, each head a running one (400
//!   naming the field otherwise); written to `[postprocess]` and the head's `[[heads]]` entry
//!   of the overrides file, then the daemon reloads as on SIGHUP. A configuration that does
//!   not load with the change (409) leaves the overrides file as it was.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::board::RecordingWindow;
use super::{App, HeadPostprocessors, Reload};
use crate::config::overrides;
use crate::postprocess::Postprocessor;

/// Where the page's thresholds go, how they take effect, and the heads they may be for.
pub(super) struct Thresholds {
    pub(super) overrides_file: PathBuf,
    pub(super) reload: Reload,
    pub(super) heads: HeadPostprocessors,
}

/// The answer of `GET /api/thresholds` (and of a successful POST).
#[derive(Serialize)]
pub(super) struct Current {
    overrides_file: PathBuf,
    recording: RecordingWindow,
    #[serde(flatten)]
    imagenet: Classifier,
    heads: Vec<HeadClassifier>,
}

#[derive(Serialize)]
struct HeadClassifier {
    name: String,
    #[serde(flatten)]
    classifier: Classifier,
}

/// One classifier's thresholds and recent scores.
#[derive(Serialize)]
struct Classifier {
    unknown_label: String,
    threshold: Option<f32>,
    frames: u64,
    labels: Vec<LabelThreshold>,
    recent: Vec<Recent>,
}

#[derive(Serialize)]
struct LabelThreshold {
    label: String,
    threshold: f32,
    own: bool,
}

#[derive(Serialize)]
struct Recent {
    camera: String,
    #[serde(flatten)]
    score: super::RecentScore,
}

/// `GET /api/thresholds`
pub(super) async fn current(State(app): State<Arc<App>>) -> Json<Current> {
    Json(snapshot(&app))
}

fn snapshot(app: &App) -> Current {
    let recording = app.board.arm_recording();
    let imagenet = classifier(app, None, &(app.classify.postprocessor)());
    let heads = (app.thresholds.heads)()
        .into_iter()
        .map(|(name, postprocessor)| HeadClassifier {
            classifier: classifier(app, Some(&name), &postprocessor),
            name,
        })
        .collect();
    Current {
        overrides_file: app.thresholds.overrides_file.clone(),
        recording,
        imagenet,
        heads,
    }
}

/// The recent scores of `head` (`None`: the ImageNet classifier) on every camera.
fn classifier(app: &App, head: Option<&str>, postprocessor: &Postprocessor) -> Classifier {
    let mut frames = 0;
    let mut recent = Vec::new();
    for camera in app.board.cameras() {
        let scores = camera.recent_scores(head);
        frames += scores.seen;
        let id = camera.id().to_string();
        recent.extend(scores.scores.into_iter().map(|score| Recent {
            camera: id.clone(),
            score,
        }));
    }
    recent.sort_by_key(|entry| std::cmp::Reverse(entry.score.ts_ms));
    let mut labels = BTreeMap::new();
    for entry in &recent {
        if let Some(threshold) = postprocessor.threshold_of(&entry.score.label) {
            labels.insert(entry.score.label.clone(), threshold);
        }
    }
    Classifier {
        unknown_label: postprocessor.unknown_label().to_string(),
        threshold: postprocessor.global_threshold(),
        frames,
        labels: labels
            .into_iter()
            .map(|(label, threshold)| LabelThreshold {
                own: postprocessor.has_own_threshold(&label),
                label,
                threshold,
            })
            .collect(),
        recent,
    }
}

/// The body of `POST /api/thresholds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Apply {
    threshold: Option<f64>,
    #[serde(default)]
    thresholds: BTreeMap<String, f64>,
    #[serde(default)]
    heads: BTreeMap<String, HeadApply>,
}

/// A head's part of `POST /api/thresholds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadApply {
    threshold: Option<f64>,
    #[serde(default)]
    thresholds: BTreeMap<String, f64>,
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// One key to write: its path in the overrides file, the request field it came from, its value.
struct Change {
    key: Vec<String>,
    field: String,
    value: f64,
}

/// Checks the request against the running classifiers; the keys to write.
fn changes(app: &App, request: Apply) -> Result<Vec<Change>, ApiError> {
    let mut changes = Vec::new();
    let imagenet = (app.classify.postprocessor)();
    classifier_changes(
        &mut changes,
        &imagenet,
        "",
        &["postprocess"],
        request.threshold,
        request.thresholds,
    )?;
    let running = (app.thresholds.heads)();
    for (name, head) in request.heads {
        let field = format!("heads.{name:?}");
        let postprocessor = running
            .iter()
            .find(|(running, _)| *running == name)
            .map(|(_, postprocessor)| postprocessor)
            .ok_or_else(|| bad_request(format!("{field}: no head of that name runs")))?;
        classifier_changes(
            &mut changes,
            postprocessor,
            &format!("{field}."),
            &["heads", &name, "postprocess"],
            head.threshold,
            head.thresholds,
        )?;
    }
    if changes.is_empty() {
        return Err(bad_request(
            "thresholds: nothing to apply (give threshold, thresholds or heads)".into(),
        ));
    }
    Ok(changes)
}

/// The changes to one classifier's table at `table` (`field` prefixes the request's field
/// names in errors).
fn classifier_changes(
    changes: &mut Vec<Change>,
    postprocessor: &Postprocessor,
    field: &str,
    table: &[&str],
    threshold: Option<f64>,
    thresholds: BTreeMap<String, f64>,
) -> Result<(), ApiError> {
    let key = |rest: &[&str]| table.iter().chain(rest).map(|k| k.to_string()).collect();
    if let Some(value) = threshold {
        let field = format!("{field}threshold");
        check_probability(&field, value)?;
        changes.push(Change {
            key: key(&["threshold"]),
            field,
            value,
        });
    }
    for (label, value) in thresholds {
        let field = format!("{field}thresholds.{label:?}");
        check_probability(&field, value)?;
        if postprocessor.threshold_of(&label).is_none() {
            return Err(bad_request(format!(
                "{field}: the classifier publishes no label named so"
            )));
        }
        changes.push(Change {
            key: key(&["thresholds", &label]),
            field,
            value,
        });
    }
    Ok(())
}

fn check_probability(field: &str, value: f64) -> Result<(), ApiError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(bad_request(format!(
            "{field}: {value} is not a probability in 0.0..=1.0"
        )))
    }
}

/// `POST /api/thresholds`
pub(super) async fn apply(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<Json<Current>, ApiError> {
    let mut reader = serde_json::Deserializer::from_slice(&body);
    let request: Apply = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => bad_request(e.into_inner().to_string()),
            _ => bad_request(format!("{path}: {}", e.into_inner())),
        }
    })?;
    let changes = changes(&app, request)?;
    let worker = app.clone();
    tokio::task::spawn_blocking(move || write_and_reload(&worker.thresholds, &changes))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(snapshot(&app)))
}

/// Writes the thresholds into the overrides file and reloads; puts the file back when the
/// configuration does not load with them.
fn write_and_reload(thresholds: &Thresholds, changes: &[Change]) -> Result<(), ApiError> {
    let keys: Vec<Vec<&str>> = changes
        .iter()
        .map(|change| change.key.iter().map(String::as_str).collect())
        .collect();
    let values = keys
        .iter()
        .zip(changes)
        .map(|(key, change)| (&key[..], toml::Value::Float(change.value)));
    let undo = overrides::set_all(&thresholds.overrides_file, values)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let applied: Vec<String> = changes
        .iter()
        .map(|change| format!("{} = {}", change.field, change.value))
        .collect();
    log::info!(
        "web page: thresholds {} written to {}",
        applied.join(", "),
        thresholds.overrides_file.display()
    );
    if let Err(err) = (thresholds.reload)() {
        let message = format!("{err:#}");
        log::error!("web page: the thresholds do not load, overrides file put back: {message}");
        if let Err(undo_err) = undo.undo() {
            log::error!("{undo_err}");
        }
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "the configuration does not load with this change (nothing changed): {message}"
            ),
        ));
    }
    Ok(())
}
