//! Orchestration: camera threads, latest-frame slots, inference, publishing, signals, systemd.
//!
//! ```text
//! camera thread ──put──▶ FrameSlot ──take──▶ pipeline thread ──Event──▶ Publisher (tokio)
//!   (one per camera)      (latest wins)        (shared Model)
//! ```
//! The daemon owns the lifecycle: it loads the config and the model, starts the broker
//! connection (or the embedded broker), tells systemd it is ready, feeds the watchdog from
//! pipeline progress, reloads thresholds/labels/policy on SIGHUP and shuts down cleanly on
//! SIGTERM/SIGINT.

mod pipeline;
pub mod service;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::capture::{self, CameraEvent, FrameSlot};
use crate::config::Config;
use crate::model::fetch::WeightsSource;
use crate::model::{Model, ModelConfig};
use crate::postprocess::Postprocessor;
use crate::publish::{EmbeddedBroker, Publisher};

use pipeline::{Pipeline, Reloadable, Shared};
use service::Progress;

/// How long shutdown may take to flush events and say `offline` (systemd's stop timeout is
/// longer; users expect a prompt exit).
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// Runs the daemon until SIGTERM/SIGINT. Errors before the pipeline starts are returned (the
/// caller maps config errors to exit code 78); afterwards problems degrade and recover.
pub fn run(config_file: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_file)?;
    service::init_logging(&config.log.level);
    log::info!(
        "edgeclass {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        config_file.display()
    );

    let model = Arc::new(load_model(&config.model)?);
    log::info!(
        "model {} loaded ({} classes)",
        model.description(),
        model.num_classes()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("edgeclass-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, config_file.to_path_buf(), model))
}

/// The model named by the config, fetched and quantized on first start when missing.
pub fn load_model(config: &ModelConfig) -> anyhow::Result<Model> {
    if let Some(seed) = config.synthetic_seed {
        log::warn!("using synthetic weights (seed {seed}): classifications are meaningless");
        return Ok(Model::synthetic(seed, config.precision, config.threads)?);
    }
    let weights = config.weights_path();
    if !weights.exists() {
        anyhow::ensure!(
            config.fetch,
            "model file {} does not exist and [model] fetch is false",
            weights.display()
        );
        let source = WeightsSource {
            base_url: config.base_url.clone(),
            sha256: config.sha256.clone(),
            ..WeightsSource::default()
        };
        log::info!("model {} is missing: fetching it", weights.display());
        crate::model::install::install(&weights, config.precision, &source, None, None)?;
    }
    Ok(Model::load(&weights, config.precision, config.threads)?)
}

async fn serve(config: Config, config_file: PathBuf, model: Arc<Model>) -> anyhow::Result<()> {
    let _broker = match &config.mqtt.url {
        Some(_) => None,
        None => Some(EmbeddedBroker::start(config.mqtt.embedded_listen)?),
    };
    let camera_ids: Vec<_> = config.cameras.iter().map(|c| c.id.clone()).collect();
    let publisher = Publisher::start(&config.mqtt, &camera_ids, &model.description()).await?;

    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let settings = Arc::new(RwLock::new(Arc::new(Reloadable {
        postprocessor: Arc::new(Postprocessor::new(&config.postprocess)?),
        policy: config.publish_policy.clone(),
        generation: 0,
    })));
    let shared = Arc::new(Shared {
        model,
        publisher: publisher.clone(),
        settings: settings.clone(),
        progress: progress.clone(),
        stop: stop.clone(),
        snapshots: config.mqtt.snapshot.enabled,
        print_events: config.log.print_events,
    });

    let (camera_events, camera_status) = mpsc::channel();
    let mut slots = Vec::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for camera in &config.cameras {
        let slot = Arc::new(FrameSlot::new());
        threads.push(capture::spawn(
            camera.clone(),
            slot.clone(),
            camera_events.clone(),
            stop.clone(),
        )?);
        let pipeline = Pipeline::new(
            camera.clone(),
            slot.clone(),
            config.preprocess.clone(),
            shared.clone(),
        )?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("pipeline-{}", camera.id))
                .spawn(move || pipeline.run())
                .context("cannot start a pipeline thread")?,
        );
        slots.push((camera.id.clone(), slot));
    }
    drop(camera_events);
    forward_camera_status(camera_status, publisher.clone());

    service::ready(&format!("classifying {} camera(s)", config.cameras.len()));
    service::spawn_watchdog(progress);
    log::info!("ready: {} camera(s)", config.cameras.len());

    wait_for_shutdown(&config_file, &settings).await;

    service::stopping();
    log::info!("stopping");
    stop.store(true, Ordering::Relaxed);
    for (camera, slot) in &slots {
        slot.close();
        let stats = slot.stats();
        log::info!(
            "camera {camera}: {} frames processed, {} stale frames dropped",
            stats.delivered,
            stats.dropped
        );
    }
    // Capture threads may sit in a blocking read up to their timeout; pipelines notice `stop`
    // within one slot wait. Join off the runtime so the flush below is not delayed by them.
    let joined =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())));
    if tokio::time::timeout(Duration::from_secs(1), joined)
        .await
        .is_err()
    {
        log::warn!("a camera thread is still blocked; exiting without it");
    }
    let stats = publisher.stats();
    log::info!(
        "MQTT: {} events sent, {} dropped while the broker was unreachable",
        stats.sent,
        stats.dropped
    );
    publisher.shutdown(SHUTDOWN_FLUSH).await?;
    log::info!("stopped");
    Ok(())
}

/// Camera threads report online/offline on a std channel; relay that to MQTT availability.
fn forward_camera_status(status: mpsc::Receiver<CameraEvent>, publisher: Publisher) {
    std::thread::spawn(move || {
        for event in status {
            match event {
                CameraEvent::Online(camera) => publisher.camera_available(&camera, true),
                CameraEvent::Offline { camera, .. } => publisher.camera_available(&camera, false),
            }
        }
    });
}

/// Waits for SIGTERM/SIGINT; on SIGHUP reloads thresholds, label maps and the publish policy.
async fn wait_for_shutdown(config_file: &Path, settings: &RwLock<Arc<Reloadable>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        log::error!("cannot install signal handlers; stopping");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => reload(config_file, settings),
        }
    }
}

/// Rebuilds the reloadable settings from the config file; a bad file keeps the old ones.
fn reload(config_file: &Path, settings: &RwLock<Arc<Reloadable>>) {
    let result = Config::load(config_file)
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            let postprocessor = Postprocessor::new(&config.postprocess)?;
            Ok((postprocessor, config.publish_policy))
        });
    match result {
        Ok((postprocessor, policy)) => {
            let mut current = settings.write().unwrap_or_else(|e| e.into_inner());
            let generation = current.generation + 1;
            *current = Arc::new(Reloadable {
                postprocessor: Arc::new(postprocessor),
                policy,
                generation,
            });
            log::info!(
                "reloaded thresholds, label maps and publish policy from {}",
                config_file.display()
            );
        }
        Err(err) => log::error!("reload failed, keeping the previous settings: {err:#}"),
    }
}
