//! The web page and its JSON API, served by the daemon (axum, on the daemon's tokio runtime).
//!
//! ```text
//! pipeline threads ──frame_done / event──▶ Board ◀──read── web server ──▶ browser, Prometheus
//!                                           │ (latest state, atomics)
//!                                           └──broadcast (only while someone listens)──▶ /api/events
//! ```
//!
//! - Pages (`/`, embedded in the binary, no internet needed): *Cameras*, each camera's
//!   latest snapshot, label, score, Top-3 bars, availability, frames per second, latency and
//!   last event time, updated live; *Classify*, the Top-3 of uploaded images; *Thresholds*,
//!   for the ImageNet classifier and each head the recent top-1 scores as a histogram, and
//!   sliders (the global threshold, each label's) previewing which frames a threshold would
//!   turn unknown, applied through the overrides file. Recent scores are recorded only for
//!   ten minutes after the page (its API) was last asked ([`Board`]): without a browser the
//!   web page adds no per-frame work beyond a relaxed atomic load.
//! - API: `GET /api/cameras`, `GET /api/cameras/{id}/snapshot.jpg`, `GET /api/events`
//!   (server-sent events), `POST /api/classify` (`classify --json`'s report plus the daemon's
//!   postprocessing), `GET`/`POST /api/thresholds` ([`thresholds`](self) module),
//!   `GET /metrics` (Prometheus), `GET /healthz`, `GET /readyz`.
//! - *Label and train* ([`labels`](self) and [`training`](self) modules): a camera's collected
//!   frames and class folders, bulk labelling, a training job with live progress and its
//!   report, and activating the trained head without a restart ([`Activator`]):
//!   `GET /api/datasets/{camera}`, `GET /api/datasets/{camera}/frames/{class}/{file}`,
//!   `POST /api/datasets/{camera}/assign`, `POST /api/datasets/{camera}/delete`,
//!   `POST /api/datasets/{camera}/classes`, `DELETE /api/datasets/{camera}/classes/{class}`,
//!   `GET|POST /api/train`, `POST /api/train/activate`.
//! - Security ([`auth`](self) module): loopback by default, answering only to loopback host
//!   names (DNS rebinding); beyond it credentials are required (a config error otherwise);
//!   requests that change state pass a same-origin check; bodies
//!   over `max_upload_bytes` get 413; camera ids select configured cameras only; the page
//!   renders every label with `textContent`.

mod api;
mod assets;
mod auth;
mod board;
mod config;
mod labels;
mod metrics;
mod thresholds;
mod training;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

pub use board::{
    Board, CameraWatch, RecentScore, RecentScores, RecordingWindow, RECENT_SCORES,
    RECORDING_ARMED_FOR,
};
pub use config::WebConfig;
pub use labels::UNLABELLED;
pub use training::Activator;

use crate::commands::classifier::Classifier;
use crate::model::{Model, ModelConfig};
use crate::postprocess::Postprocessor;
use crate::preprocess::Tta;
use crate::publish::Publisher;
use crate::shutdown::Shutdown;
use crate::sysexits::Sysexit;

/// What can go wrong configuring or starting the web server.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A `[web]` key has an invalid value.
    #[error("invalid web config {key}: {message}")]
    Config {
        /// Path of the key, e.g. `web.listen`.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The password file cannot be read or is malformed.
    #[error("web.password_file {}: {message}", file.display())]
    PasswordFile {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The address cannot be listened on (in use, not local).
    #[error("cannot listen on {listen} (web.listen)")]
    Bind {
        /// The address.
        listen: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl WebError {
    /// The kind of failure, for the process exit status.
    pub fn sysexit(&self) -> Sysexit {
        match self {
            WebError::Config { .. } | WebError::PasswordFile { .. } => Sysexit::Config,
            WebError::Bind { .. } => Sysexit::Unavailable,
        }
    }
}

/// What the handlers share.
struct App {
    board: Arc<Board>,
    publisher: Publisher,
    registry: prometheus_client::registry::Registry,
    rates: api::Rates,
    classify: api::Classify,
    datasets: labels::Datasets,
    trainer: training::Trainer,
    thresholds: thresholds::Thresholds,
}

/// Reloads the daemon's settings as SIGHUP does; `Err` when the configuration does not load
/// (the previous settings stay).
pub type Reload = Arc<dyn Fn() -> anyhow::Result<()> + Send + Sync>;

/// The postprocessors of the heads the daemon runs now, by head name (SIGHUP replaces them).
pub type HeadPostprocessors = Box<dyn Fn() -> Vec<(String, Postprocessor)> + Send + Sync>;

/// What the daemon hands the web server.
pub struct Context {
    /// The cameras' state.
    pub board: Arc<Board>,
    /// The MQTT publisher, for its counters and connection state.
    pub publisher: Publisher,
    /// The daemon's model, shared with the pipelines.
    pub model: Arc<Model>,
    /// `[model] tta`.
    pub tta: Tta,
    /// The daemon's current ImageNet postprocessor (SIGHUP replaces it).
    pub postprocessor: Box<dyn Fn() -> Arc<Postprocessor> + Send + Sync>,
    /// The heads' current postprocessors, for their thresholds.
    pub head_postprocessors: HeadPostprocessors,
    /// The state directory: the cameras' datasets and trained heads are kept there.
    pub data_dir: PathBuf,
    /// `[model]`, for training jobs to load the backbone with.
    pub model_config: ModelConfig,
    /// Makes a trained head run on its camera.
    pub activator: Arc<dyn Activator>,
    /// The overrides file the Thresholds page writes.
    pub overrides_file: PathBuf,
    /// The daemon's reload, run after the overrides file changed.
    pub reload: Reload,
}

/// Binds `config.listen` and serves until `shutdown`; returns once listening, so the caller
/// hears about an address it cannot listen on.
pub async fn start(
    config: &WebConfig,
    context: Context,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, WebError> {
    let access = Arc::new(auth::Access::load(config)?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| WebError::Bind {
            listen: config.listen,
            source,
        })?;
    let classifier = Classifier::imagenet(context.model);
    let datasets = labels::Datasets::new(&context.data_dir);
    let app = Arc::new(App {
        registry: metrics::registry(
            context.board.clone(),
            context.publisher.clone(),
            classifier.description.clone(),
        ),
        board: context.board,
        publisher: context.publisher,
        rates: api::Rates::default(),
        classify: api::Classify::new(classifier, context.tta, context.postprocessor),
        trainer: training::Trainer::new(
            datasets.clone(),
            &context.data_dir,
            context.model_config,
            context.activator,
        ),
        datasets,
        thresholds: thresholds::Thresholds {
            overrides_file: context.overrides_file,
            reload: context.reload,
            heads: context.head_postprocessors,
        },
    });
    let router = Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .route("/label.js", get(assets::label_script))
        .route("/api/cameras", get(api::cameras))
        .route("/api/cameras/:id/snapshot.jpg", get(api::snapshot))
        .route("/api/events", get(api::events))
        .route("/api/classify", post(api::classify))
        .route("/api/datasets/:camera", get(labels::list))
        .route(
            "/api/datasets/:camera/frames/:class/:file",
            get(labels::frame),
        )
        .route("/api/datasets/:camera/assign", post(labels::assign))
        .route("/api/datasets/:camera/delete", post(labels::delete_frames))
        .route("/api/datasets/:camera/classes", post(labels::create_class))
        .route(
            "/api/datasets/:camera/classes/:class",
            delete(labels::delete_class),
        )
        .route("/api/train", get(training::status).post(training::start))
        .route("/api/train/activate", post(training::activate))
        .route(
            "/api/thresholds",
            get(thresholds::current).post(thresholds::apply),
        )
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .with_state(app)
        .layer(DefaultBodyLimit::max(config.max_upload_bytes))
        .layer(axum::middleware::from_fn_with_state(access, auth::guard));
    log::info!("web page on http://{}/", config.listen);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.recv().await })
            .await;
        if let Err(err) = served {
            log::error!("web server stopped: {err}");
        }
    }))
}
