//! The Thresholds page's API: the recent top-1 scores with the thresholds in effect, and
//! applying new per-label thresholds through the overrides file and the daemon's reload.
//!
//! - `GET /api/thresholds`: `{overrides_file, unknown_label, labels: [{label, threshold}],
//!   recent: [{camera, label, score, ts_ms}]}`, the recent classifications newest first, a
//!   label for each top-1 label among them.
//! - `POST /api/thresholds` with `{"thresholds": {"<label>": 0.7, ...}}`: each value a
//!   probability, each label one the ImageNet classifier publishes (400 naming the field
//!   otherwise); written to `[postprocess.thresholds]` of the overrides file, then the daemon
//!   reloads as on SIGHUP. A configuration that does not load with the change (409) leaves the
//!   overrides file as it was.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::{App, Reload};
use crate::config::overrides;

/// Where the page's thresholds go, and how they take effect.
pub(super) struct Thresholds {
    pub(super) overrides_file: PathBuf,
    pub(super) reload: Reload,
}

/// The answer of `GET /api/thresholds` (and of a successful POST).
#[derive(Serialize)]
pub(super) struct Current {
    overrides_file: PathBuf,
    unknown_label: String,
    labels: Vec<LabelThreshold>,
    recent: Vec<Recent>,
}

#[derive(Serialize)]
struct LabelThreshold {
    label: String,
    threshold: f32,
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
    let postprocessor = (app.classify.postprocessor)();
    let mut recent: Vec<Recent> = app
        .board
        .cameras()
        .flat_map(|camera| {
            let id = camera.id().to_string();
            camera.recent_scores().into_iter().map(move |score| Recent {
                camera: id.clone(),
                score,
            })
        })
        .collect();
    recent.sort_by_key(|entry| std::cmp::Reverse(entry.score.ts_ms));
    let mut labels = BTreeMap::new();
    for entry in &recent {
        if let Some(threshold) = postprocessor.threshold_of(&entry.score.label) {
            labels.insert(entry.score.label.clone(), threshold);
        }
    }
    Current {
        overrides_file: app.thresholds.overrides_file.clone(),
        unknown_label: postprocessor.unknown_label().to_string(),
        labels: labels
            .into_iter()
            .map(|(label, threshold)| LabelThreshold { label, threshold })
            .collect(),
        recent,
    }
}

/// The body of `POST /api/thresholds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Apply {
    thresholds: BTreeMap<String, f64>,
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
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
    if request.thresholds.is_empty() {
        return Err(bad_request("thresholds: no label given".into()));
    }
    let postprocessor = (app.classify.postprocessor)();
    for (label, &value) in &request.thresholds {
        if !(0.0..=1.0).contains(&value) {
            return Err(bad_request(format!(
                "thresholds.{label:?}: {value} is not a probability in 0.0..=1.0"
            )));
        }
        if postprocessor.threshold_of(label).is_none() {
            return Err(bad_request(format!(
                "thresholds.{label:?}: the classifier publishes no label named so"
            )));
        }
    }
    let worker = app.clone();
    tokio::task::spawn_blocking(move || write_and_reload(&worker.thresholds, request))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(snapshot(&app)))
}

/// Writes the thresholds into the overrides file and reloads; puts the file back when the
/// configuration does not load with them.
fn write_and_reload(thresholds: &Thresholds, request: Apply) -> Result<(), ApiError> {
    let keys: Vec<[&str; 3]> = request
        .thresholds
        .keys()
        .map(|label| ["postprocess", "thresholds", label.as_str()])
        .collect();
    let changes = keys
        .iter()
        .zip(request.thresholds.values())
        .map(|(key, &value)| (&key[..], toml::Value::Float(value)));
    let undo = overrides::set_all(&thresholds.overrides_file, changes)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    log::info!(
        "web page: thresholds {:?} written to {}",
        request.thresholds,
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
