//! Training from the page: one job at a time on a background thread at the lowest CPU
//! priority, running what `edgeclass train` runs ([`crate::train::train`], default options)
//! on a camera's class folders; its progress and report are polled from `GET /api/train`.
//! "Activate" writes the trained head to `<data dir>/heads/<camera>-<head>.gguf` (atomically)
//! and hands it to the daemon ([`Activator`]) without a restart.
//!
//! The job loads its own copy of the model with one thread, on its niced thread: the backbone
//! work of training then never runs at normal priority nor in the pipelines' thread pool (the
//! cost is the model's memory a second time while a job runs).

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::labels::{Datasets, UNLABELLED};
use super::App;
use crate::config::HeadName;
use crate::dataset::training_classes_except;
use crate::model::{install, Head, ModelConfig};
use crate::train::features::Skipped;
use crate::train::fit::Epoch;
use crate::train::{self, Progress, TrainOptions};

/// Makes a trained head run on a camera: the daemon's side of "Activate".
pub trait Activator: Send + Sync {
    /// Runs the head file `weights` as head `head` on `camera` from now on, and keeps it so
    /// across restarts; the error says why not.
    fn activate(&self, camera: &str, head: &HeadName, weights: &Path) -> anyhow::Result<()>;
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// No job has run.
    #[default]
    Idle,
    /// Loading the model.
    Loading,
    /// Running the backbone over the pictures.
    Features,
    /// Fitting the head, epoch by epoch.
    Fitting,
    /// Finished: the report and the head are there.
    Done,
    /// Failed: `error` says why.
    Failed,
}

/// The job's state, as `GET /api/train` answers it.
#[derive(Debug, Clone, Default, Serialize)]
struct Status {
    phase: Phase,
    camera: Option<String>,
    head: Option<String>,
    pictures_done: usize,
    pictures_total: usize,
    max_epochs: usize,
    /// Every finished epoch: loss, validation loss and accuracy, learning rate.
    epochs: Vec<Epoch>,
    skipped: Vec<Skipped>,
    /// [`crate::train::Report`], when done.
    report: Option<serde_json::Value>,
    error: Option<String>,
    /// Where "Activate" put the head, once it did.
    activated: Option<PathBuf>,
    /// The trained head, until it is activated or another job starts.
    #[serde(skip)]
    trained: Option<Head>,
}

impl Status {
    fn running(&self) -> bool {
        matches!(
            self.phase,
            Phase::Loading | Phase::Features | Phase::Fitting
        )
    }
}

/// The page's training job and what it needs.
pub(super) struct Trainer {
    datasets: Datasets,
    heads_dir: PathBuf,
    model: ModelConfig,
    activator: Arc<dyn Activator>,
    status: Arc<Mutex<Status>>,
}

/// `POST /api/train`.
#[derive(Deserialize)]
pub(super) struct Start {
    camera: String,
    /// The head's name: its topic level and Home Assistant sensor.
    head: String,
}

fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Trainer {
    pub(super) fn new(
        datasets: Datasets,
        data_dir: &Path,
        model: ModelConfig,
        activator: Arc<dyn Activator>,
    ) -> Self {
        Self {
            datasets,
            heads_dir: data_dir.join("heads"),
            model,
            activator,
            status: Arc::default(),
        }
    }
}

/// `GET /api/train`: the current or last job.
pub(super) async fn status(State(app): State<Arc<App>>) -> Response {
    Json(lock(&app.trainer.status).clone()).into_response()
}

/// `POST /api/train` `{"camera", "head"}`: checks the camera's classes (a clear 422 if they
/// cannot be trained on) and starts the job; 409 while one runs.
pub(super) async fn start(
    State(app): State<Arc<App>>,
    Json(request): Json<Start>,
) -> Result<Response, ApiError> {
    let camera = app
        .board
        .camera(&request.camera)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "camera not found".into()))?
        .id()
        .to_string();
    let head = HeadName::try_from(request.head)
        .map_err(|why| ApiError(StatusCode::BAD_REQUEST, format!("head name: {why}")))?;
    let trainer = &app.trainer;
    let data = trainer.datasets.camera_dir(&camera);
    let classes =
        tokio::task::spawn_blocking(move || training_classes_except(&data, Some(UNLABELLED)))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    {
        let mut status = lock(&trainer.status);
        if status.running() {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "a training job is running; wait for it to finish".into(),
            ));
        }
        *status = Status {
            phase: Phase::Loading,
            camera: Some(camera.clone()),
            head: Some(head.to_string()),
            max_epochs: TrainOptions::default().fit.max_epochs,
            ..Status::default()
        };
    }
    let shared = trainer.status.clone();
    let model_config = ModelConfig {
        threads: 1,
        ..trainer.model.clone()
    };
    let spawned = std::thread::Builder::new()
        .name("train".into())
        .spawn(move || {
            lower_priority();
            // A panic must not leave the job "running" forever (every later start a 409).
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                run(&model_config, &classes, &shared)
            }))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("training stopped by an internal error")));
            let mut status = lock(&shared);
            match result {
                Ok((head, report)) => {
                    status.phase = Phase::Done;
                    status.report = Some(report);
                    status.trained = Some(head);
                }
                Err(err) => {
                    log::warn!("training for camera {camera} failed: {err:#}");
                    status.phase = Phase::Failed;
                    status.error = Some(format!("{err:#}"));
                }
            }
        });
    if let Err(err) = spawned {
        let mut status = lock(&trainer.status);
        status.phase = Phase::Failed;
        status.error = Some(format!("cannot start the training thread: {err}"));
    }
    Ok((StatusCode::ACCEPTED, Json(lock(&trainer.status).clone())).into_response())
}

/// The lowest CPU priority for the calling thread (Linux nice values are per thread, and
/// threads it starts inherit it): classifying frames goes first. The shipped unit allows
/// `setpriority` after its `~@resources` deny list for this; a filter that refuses it leaves the
/// job at normal priority, logged.
fn lower_priority() {
    // SAFETY: gettid and setpriority have no memory-safety preconditions.
    let result = unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, 19)
    };
    if result != 0 {
        log::warn!(
            "training runs at normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The job: load the model, train, return the head and the report as JSON.
fn run(
    model_config: &ModelConfig,
    classes: &[crate::dataset::TrainingClass],
    status: &Arc<Mutex<Status>>,
) -> anyhow::Result<(Head, serde_json::Value)> {
    let model = install::load_configured(model_config)?;
    let mut progress = Reporter(status.clone());
    let trained = train::train(
        &model,
        model.source(),
        classes,
        &TrainOptions::default(),
        None,
        &mut progress,
    )?;
    Ok((trained.head, serde_json::to_value(&trained.report)?))
}

/// Writes progress into the job's status.
struct Reporter(Arc<Mutex<Status>>);

impl Progress for Reporter {
    fn picture(&mut self, done: usize, total: usize) {
        let mut status = lock(&self.0);
        status.phase = Phase::Features;
        status.pictures_done = done;
        status.pictures_total = total;
    }

    fn skipped(&mut self, skipped: &Skipped) {
        lock(&self.0).skipped.push(skipped.clone());
    }

    fn epoch(&mut self, epoch: &Epoch, max_epochs: usize) {
        let mut status = lock(&self.0);
        status.phase = Phase::Fitting;
        status.max_epochs = max_epochs;
        status.epochs.push(*epoch);
    }
}

/// `POST /api/train/activate`: the finished job's head goes to
/// `<data dir>/heads/<camera>-<head>.gguf` and runs on its camera from now on.
pub(super) async fn activate(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let trainer = &app.trainer;
    let (camera, head_name, head) = {
        let status = lock(&trainer.status);
        match (&status.camera, &status.head, &status.trained) {
            (Some(camera), Some(name), Some(head)) if status.phase == Phase::Done => {
                (camera.clone(), name.clone(), head.clone())
            }
            _ => {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    "no trained head to activate: train one first".into(),
                ))
            }
        }
    };
    let head_name = HeadName::try_from(head_name)
        .map_err(|why| ApiError(StatusCode::INTERNAL_SERVER_ERROR, why))?;
    let heads_dir = trainer.heads_dir.clone();
    let activator = trainer.activator.clone();
    let path = tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
        let path = heads_dir.join(format!("{camera}-{head_name}.gguf"));
        save_atomically(&head, &path)?;
        activator.activate(&camera, &head_name, &path)?;
        Ok(path)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    let mut status = lock(&trainer.status);
    status.activated = Some(path.clone());
    Ok(Json(serde_json::json!({ "head_file": path })).into_response())
}

/// Writes `head` to a hidden file beside `path`, then renames it over `path`: the daemon (or
/// a reload) never reads half a file.
fn save_atomically(head: &Head, path: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = path.parent().context("a head file path has a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("a head file path has a name")?;
    let temporary = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    head.save(&temporary)?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))?;
    Ok(())
}
