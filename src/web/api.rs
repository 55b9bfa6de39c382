//! The JSON API and the live stream: cameras, snapshots, events, classifying uploads, health.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::board::CameraWatch;
use super::App;
use crate::capture::Frame;
use crate::commands::classifier::{Buffers, Classifier};
use crate::commands::classify::Report;
use crate::postprocess::{Classification, Postprocessor, Prediction};
use crate::preprocess::{PreprocessConfig, Preprocessor, Tta};
use crate::publish::Event;

/// An error answer: a status and a JSON `{"error": ...}`.
#[derive(Debug)]
pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{what} not found"))
}

/// `GET /api/cameras`: one entry per camera.
#[derive(Serialize)]
struct CameraStatus {
    id: String,
    online: bool,
    frames_captured: u64,
    frames_processed: u64,
    frames_dropped: u64,
    /// Frames processed per second, over the time since the previous sample.
    fps: f32,
    /// The last event of the ImageNet classifier (label, score, top3, latency_ms, ts).
    event: Option<Event>,
    /// The last event of each head the camera runs, by head name.
    heads: std::collections::BTreeMap<String, Event>,
}

/// The processing rate of each camera, sampled when `/api/cameras` is asked (at most once a
/// second, whoever asks), so nothing runs while nobody looks.
#[derive(Default)]
pub(super) struct Rates(Mutex<std::collections::HashMap<String, (Instant, u64, f32)>>);

/// The shortest time between two rate samples.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Rates {
    fn fps(&self, camera: &CameraWatch) -> f32 {
        let mut rates = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let processed = camera.processed();
        let entry = rates
            .entry(camera.id().to_string())
            .or_insert((now, processed, 0.0));
        let elapsed = now.duration_since(entry.0);
        if elapsed >= RATE_WINDOW {
            entry.2 = processed.saturating_sub(entry.1) as f32 / elapsed.as_secs_f32();
            *entry = (now, processed, entry.2);
        }
        entry.2
    }
}

pub(super) async fn cameras(State(app): State<Arc<App>>) -> Json<Vec<impl Serialize>> {
    let list = app
        .board
        .cameras()
        .map(|camera| {
            let (captured, dropped) = camera.captured_and_dropped();
            let mut events = camera.latest_events();
            let event = events.remove(&None);
            CameraStatus {
                id: camera.id().to_string(),
                online: camera.online(),
                frames_captured: captured,
                frames_processed: camera.processed(),
                frames_dropped: dropped,
                fps: app.rates.fps(camera),
                event,
                heads: events
                    .into_iter()
                    .filter_map(|(head, event)| Some((head?, event)))
                    .collect(),
            }
        })
        .collect();
    Json(list)
}

/// `GET /api/cameras/{id}/snapshot.jpg`: the latest frame; a JPEG frame byte for byte, any
/// other format (raw camera pixels, a PNG file) encoded to JPEG here, not in the pipeline.
pub(super) async fn snapshot(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    // The id only ever selects a configured camera; it never reaches the file system.
    let camera = app.board.camera(&id).ok_or_else(|| not_found("camera"))?;
    let frame = camera
        .with_latest_frame(|frame| {
            if frame.is_jpeg() {
                Ok(Bytes::copy_from_slice(&frame.data))
            } else {
                Err(frame.clone())
            }
        })
        .ok_or_else(|| not_found("frame (none processed yet)"))?;
    let jpeg = match frame {
        Ok(jpeg) => jpeg,
        Err(frame) => tokio::task::spawn_blocking(move || encode_jpeg(&frame))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response())
}

fn encode_jpeg(frame: &Frame) -> Result<Bytes, ApiError> {
    let failed = |e: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e);
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let image = preprocessor
        .decode(frame)
        .map_err(|e| failed(e.to_string()))?;
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(image)
        .map_err(|e| failed(e.to_string()))?;
    Ok(jpeg.into())
}

/// `GET /api/events`: server-sent events, one JSON message per event or availability change.
/// A browser that falls behind skips to the newest messages.
pub(super) async fn events(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = app.board.subscribe();
    let stream = stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(text) => return Some((Ok(SseEvent::default().data(&*text)), receiver)),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `GET /healthz`: the process serves requests.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when the model is loaded (always, once serving), the broker connected
/// and every camera delivering; else 503. The body says which.
pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    #[derive(Serialize)]
    struct Readiness {
        ready: bool,
        model: String,
        broker_connected: bool,
        cameras: std::collections::BTreeMap<String, bool>,
    }
    let broker_connected = app.publisher.stats().connected;
    let cameras: std::collections::BTreeMap<_, _> = app
        .board
        .cameras()
        .map(|c| (c.id().to_string(), c.online()))
        .collect();
    let ready = broker_connected && cameras.values().all(|&online| online);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        model: app.classify.model_description.clone(),
        broker_connected,
        cameras,
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the Prometheus text format.
pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &app.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// What `POST /api/classify` runs: the daemon's model, one image at a time.
pub(super) struct Classify {
    classifier: Classifier,
    model_description: String,
    tta: Tta,
    /// The daemon's current ImageNet postprocessor (reloads included).
    pub(super) postprocessor: Box<dyn Fn() -> Arc<Postprocessor> + Send + Sync>,
    /// One permit: uploads take turns instead of crowding the CPU the cameras need.
    turn: tokio::sync::Semaphore,
    work: Mutex<(Preprocessor, Buffers)>,
}

impl Classify {
    pub(super) fn new(
        classifier: Classifier,
        tta: Tta,
        postprocessor: Box<dyn Fn() -> Arc<Postprocessor> + Send + Sync>,
    ) -> Self {
        let preprocess = classifier.model.preprocess_config();
        Self {
            model_description: classifier.description.clone(),
            classifier,
            tta,
            postprocessor,
            turn: tokio::sync::Semaphore::new(1),
            work: Mutex::new((Preprocessor::new(preprocess), Buffers::default())),
        }
    }
}

/// `classify --json`'s report plus the daemon's postprocessing of the same scores.
#[derive(Serialize)]
struct Classified<'a> {
    #[serde(flatten)]
    report: Report<'a>,
    /// Thresholds, label map and groups applied, as the daemon would publish it.
    classification: Mapped,
}

#[derive(Serialize)]
struct Mapped {
    label: String,
    score: f32,
    unknown: bool,
    top3: Vec<Prediction>,
}

impl From<Classification> for Mapped {
    fn from(c: Classification) -> Self {
        Mapped {
            label: c.label,
            score: c.score,
            unknown: c.unknown,
            top3: c.top,
        }
    }
}

/// `POST /api/classify`: the raw image as the body → one JSON object; `multipart/form-data`
/// → an array, one object per file part.
pub(super) async fn classify(State(app): State<Arc<App>>, request: Request) -> Response {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let result = if multipart {
        classify_parts(app, request).await
    } else {
        classify_body(app, request).await
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn classify_body(app: Arc<App>, request: Request) -> Result<Response, ApiError> {
    let bytes = Bytes::from_request(request, &())
        .await
        .map_err(|e| ApiError(e.status(), e.body_text()))?;
    let json = classify_one(&app, bytes, "upload".into()).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

async fn classify_parts(app: Arc<App>, request: Request) -> Result<Response, ApiError> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError(e.status(), e.body_text()))?;
    let mut answers = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError(e.status(), e.body_text()))?
    {
        let name = field.file_name().unwrap_or("upload").to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError(e.status(), e.body_text()))?;
        answers.push(classify_one(&app, bytes, name).await?);
    }
    if answers.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "no file part in the form".into(),
        ));
    }
    let json = format!("[{}]", answers.join(","));
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Classifies one uploaded image on a blocking thread, as `classify --json` would.
async fn classify_one(app: &Arc<App>, bytes: Bytes, name: String) -> Result<String, ApiError> {
    let _turn = app
        .classify
        .turn
        .acquire()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let classify = &app.classify;
        let mut work = classify.work.lock().unwrap_or_else(PoisonError::into_inner);
        let (preprocessor, buffers) = &mut *work;
        run_classify(classify, preprocessor, buffers, bytes, &name)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn run_classify(
    classify: &Classify,
    preprocessor: &mut Preprocessor,
    buffers: &mut Buffers,
    bytes: Bytes,
    name: &str,
) -> Result<String, ApiError> {
    let started = Instant::now();
    let frame = Frame::encoded(bytes.into(), name.to_string());
    preprocessor
        .decode(&frame)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    buffers
        .classify(&classify.classifier, preprocessor, classify.tta)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let classification = (classify.postprocessor)().classify(buffers.scores());
    let report = Report::new(
        &classify.classifier,
        buffers,
        Path::new(name),
        classify.tta,
        latency_ms,
    );
    serde_json::to_string(&Classified {
        report,
        classification: classification.into(),
    })
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
