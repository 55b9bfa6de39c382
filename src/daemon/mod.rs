//! Orchestration: camera threads, latest-frame slots, inference, publishing, signals, systemd.
//!
//! ```text
//! camera thread ──put──▶ FrameSlot ──take──▶ pipeline thread ──Event──▶ Publisher (tokio)
//!   (one per camera)      (latest wins)        (shared Model and heads)
//! ```
//! The daemon owns the lifecycle: it loads the config, the model and the custom heads (a head
//! trained on another backbone is a configuration error), starts the broker connection (or the
//! embedded broker), tells systemd it is ready, pets the watchdog while every camera's threads
//! keep their schedule, reloads thresholds/labels/policy and changed head files on SIGHUP and
//! shuts down cleanly on SIGTERM/SIGINT (the stop order is written down in `serve`).

mod activate;
mod heads;
mod pipeline;
pub mod service;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::capture::{self, CameraConfig, CameraEvent, FrameSlot};
use crate::config::Config;
use crate::heartbeat::Heartbeat;
use crate::model::Model;
use crate::postprocess::Postprocessor;
use crate::publish::{EmbeddedBroker, Publisher};
use crate::shutdown::Shutdown;
use crate::web::{self, Board};

use heads::{ActiveHead, Assignments};
use pipeline::{Pipeline, Reloadable, Shared};
use service::CameraHeartbeats;

/// How long shutdown may take to flush events and say `offline` (systemd's stop timeout is
/// longer; users expect a prompt exit).
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// How long shutdown waits for the camera and pipeline threads before going on without them.
const THREADS_JOIN: Duration = Duration::from_secs(1);

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
    for warning in config.warnings() {
        log::warn!("{}: {warning}", config_file.display());
    }
    if let Some(overrides) = &config.overrides_file {
        log::info!("overrides file {} is in effect", overrides.display());
    }

    let model = Arc::new(service::while_starting(
        "loading the model (downloading it on first start)",
        || crate::model::install::load_configured(&config.model),
    )?);
    log::info!(
        "model {} loaded ({} classes)",
        model.description(),
        model.num_classes()
    );
    let heads = heads::load(&config, config_file, &model)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("edgeclass-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(config, config_file.to_path_buf(), model, heads));
    // `serve` gave up on threads still blocked after `THREADS_JOIN`; dropping the runtime would
    // wait for their join forever, so leave them to the process exit.
    runtime.shutdown_background();
    result
}

async fn serve(
    config: Config,
    config_file: PathBuf,
    model: Arc<Model>,
    heads: Vec<Arc<ActiveHead>>,
) -> anyhow::Result<()> {
    let _broker = match &config.mqtt.url {
        Some(_) => None,
        None => Some(EmbeddedBroker::start(config.mqtt.embedded_listen)?),
    };
    let camera_ids: Vec<_> = config.cameras.iter().map(|c| c.id.clone()).collect();
    let publisher = Publisher::start(&config.mqtt, &camera_ids, &model.description()).await?;
    let assignments = heads::assign(&config.cameras, &config, &heads, &Assignments::new());
    heads::announce(&publisher, &heads, &assignments, |_, _| true);

    let shutdown = Shutdown::new();
    let shared = Arc::new(Shared {
        model,
        publisher: publisher.clone(),
        settings: watch::Sender::new(Arc::new(Reloadable {
            postprocessor: Arc::new(Postprocessor::new(&config.postprocess)?),
            policy: config.publish_policy.clone(),
            heads,
            assignments,
        })),
        tta: config.model.tta,
        snapshots: config.mqtt.snapshot.enabled,
        print_events: config.log.print_events,
    });

    let slots: Vec<_> = config
        .cameras
        .iter()
        .map(|camera| (camera.id.clone(), Arc::new(FrameSlot::new())))
        .collect();
    // The web page's view of the cameras, written by the pipelines only when it is served.
    let board = config
        .web
        .enabled
        .then(|| Arc::new(Board::new(slots.iter().map(|(id, slot)| (id, slot)))));
    if let Some(board) = &board {
        // The web page's Apply and Activate reload as SIGHUP does.
        let reload: web::Reload = {
            let (file, shared, cameras) =
                (config_file.clone(), shared.clone(), config.cameras.clone());
            Arc::new(move || reload(&file, &shared, &cameras))
        };
        let context = web::Context {
            data_dir: crate::model::fetch::data_dir(),
            model_config: config.model.clone(),
            activator: Arc::new(activate::Activation::new(
                config_file.clone(),
                reload.clone(),
            )),
            board: board.clone(),
            publisher: publisher.clone(),
            model: shared.model.clone(),
            tta: config.model.tta,
            postprocessor: current_postprocessor(&shared),
            head_postprocessors: current_head_postprocessors(&shared),
            overrides_file: config
                .overrides_file
                .clone()
                .unwrap_or_else(crate::config::overrides::path),
            reload,
        };
        match web::start(&config.web, context, shutdown.clone()).await {
            Ok(_) => {}
            // The page is an extra: a taken port must not stop classifying and publishing.
            Err(err @ web::WebError::Bind { .. }) => {
                log::error!("no web page: {:#}", anyhow::Error::from(err))
            }
            Err(err) => return Err(err.into()),
        }
    }

    let (camera_events, camera_status) = mpsc::channel();
    let mut heartbeats = Vec::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (camera, (_, slot)) in config.cameras.iter().zip(&slots) {
        let watch = board
            .as_ref()
            .and_then(|b| b.camera(camera.id.as_str()).cloned());
        let camera_heartbeats = CameraHeartbeats {
            camera: camera.id.clone(),
            capture: Arc::new(Heartbeat::new()),
            pipeline: Arc::new(Heartbeat::new()),
        };
        threads.push(capture::spawn(
            camera.clone(),
            slot.clone(),
            camera_events.clone(),
            shutdown.clone(),
            camera_heartbeats.capture.clone(),
        )?);
        let pipeline = Pipeline::new(
            camera.clone(),
            slot.clone(),
            camera_heartbeats.pipeline.clone(),
            config.preprocess_for(shared.model.architecture()),
            shared.clone(),
            watch,
        )?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("pipeline-{}", camera.id))
                .spawn(move || pipeline.run())
                .context("cannot start a pipeline thread")?,
        );
        heartbeats.push(camera_heartbeats);
    }
    drop(camera_events);
    threads.push(forward_camera_status(
        camera_status,
        publisher.clone(),
        board.clone(),
    )?);

    service::ready(&format!("classifying {} camera(s)", config.cameras.len()));
    service::spawn_watchdog(heartbeats, shutdown.clone());
    log::info!("ready: {} camera(s)", config.cameras.len());

    wait_for_shutdown(&config_file, &shared, &config.cameras).await;

    // The stop order, in one place:
    // 1. SIGTERM/SIGINT ended the wait above.
    // 2. systemd hears STOPPING.
    // 3. Shutdown is triggered: capture threads sleeping until their next frame or retry wake at
    //    once and end; the watchdog task ends.
    // 4. The slots are closed: pipelines waiting for a frame wake at once and end (one busy with
    //    a frame finishes it first); late frames are no longer accepted.
    // 5. Camera, pipeline and status threads are joined, for at most `THREADS_JOIN`: a capture
    //    inside a blocking read (V4L2 dequeue, HTTP request) only notices shutdown when the read
    //    returns, up to its timeout, and the daemon exits without waiting for that. The status
    //    thread ends once every camera thread has.
    // 6. MQTT flushes queued events and says `offline` for every camera and the instance, for at
    //    most `SHUTDOWN_FLUSH`, then disconnects cleanly.
    // 7. `run` returns and the process exits.
    service::stopping();
    log::info!("stopping");
    shutdown.trigger();
    for (camera, slot) in &slots {
        slot.close();
        let stats = slot.stats();
        log::info!(
            "camera {camera}: {} frames processed, {} stale frames dropped, {} not wanted by the \
             idle motion gate",
            stats.delivered,
            stats.dropped,
            stats.unwanted
        );
    }
    // Joined off the runtime so a blocked thread cannot hold up the timer or the flush.
    let joined =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())));
    if tokio::time::timeout(THREADS_JOIN, joined).await.is_err() {
        log::warn!("a camera thread is still blocked in a read; exiting without it");
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

/// Relays the camera threads' online/offline reports (a std channel) to MQTT availability
/// and the web page. The thread ends when the last camera thread has ended and dropped its
/// sender.
fn forward_camera_status(
    status: mpsc::Receiver<CameraEvent>,
    publisher: Publisher,
    board: Option<Arc<Board>>,
) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("camera-status".into())
        .spawn(move || {
            for event in status {
                let (camera, online) = match event {
                    CameraEvent::Online(camera) => (camera, true),
                    CameraEvent::Offline { camera, .. } => (camera, false),
                };
                publisher.camera_available(&camera, online);
                if let Some(watch) = board.as_ref().and_then(|b| b.camera(camera.as_str())) {
                    watch.set_online(online);
                }
            }
        })
        .context("cannot start the camera status thread")
}

/// The ImageNet postprocessor the pipelines use now, for the web page's uploads.
fn current_postprocessor(
    shared: &Arc<Shared>,
) -> Box<dyn Fn() -> Arc<Postprocessor> + Send + Sync> {
    let settings = shared.settings.subscribe();
    Box::new(move || Arc::clone(&settings.borrow().postprocessor))
}

/// The heads' postprocessors the pipelines use now, for the web page's thresholds.
fn current_head_postprocessors(shared: &Arc<Shared>) -> web::HeadPostprocessors {
    let settings = shared.settings.subscribe();
    Box::new(move || {
        settings
            .borrow()
            .heads
            .iter()
            .map(|head| (head.name.as_str().to_string(), head.postprocessor.clone()))
            .collect()
    })
}

/// Waits for SIGTERM/SIGINT; on SIGHUP reloads thresholds, label maps, the publish policy,
/// changed head files and added heads.
async fn wait_for_shutdown(config_file: &Path, shared: &Shared, cameras: &[CameraConfig]) {
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
            _ = hup.recv() => {
                if let Err(err) = reload(config_file, shared, cameras) {
                    log::error!("reload failed, keeping the previous settings: {err:#}");
                }
            }
        }
    }
}

/// Rebuilds the reloadable settings from the config file and the overrides file (SIGHUP, and
/// the web page's Apply); a bad file keeps the old ones (the error is returned), and a head
/// whose file or settings are unusable keeps running as it was. `cameras` are the ones running
/// (from the config at start).
fn reload(config_file: &Path, shared: &Shared, cameras: &[CameraConfig]) -> anyhow::Result<()> {
    let config = Config::load(config_file)?;
    let postprocessor = Postprocessor::new(&config.postprocess)?;
    let running = Arc::clone(&shared.settings.borrow());
    heads::warn_about_restart(cameras, &config);
    let heads = heads::reload(&running.heads, &config, &shared.model);
    let assignments = heads::assign(cameras, &config, &heads, &running.assignments);
    // Home Assistant's sensors list the labels a head can publish: announced for heads new on
    // a camera, and again for those whose labels changed.
    heads::announce(&shared.publisher, &heads, &assignments, |camera, index| {
        let ran = running
            .assignments
            .get(camera)
            .is_some_and(|a| a.contains(&index));
        let relabelled = running.heads.get(index).is_none_or(|old| {
            !old.postprocessor
                .labels()
                .eq(heads[index].postprocessor.labels())
        });
        !ran || relabelled
    });
    // Each pipeline sees the change before its next frame.
    shared.settings.send_replace(Arc::new(Reloadable {
        postprocessor: Arc::new(postprocessor),
        policy: config.publish_policy,
        heads,
        assignments,
    }));
    log::info!(
        "reloaded thresholds, label maps, publish policy and heads from {}{}",
        config_file.display(),
        config
            .overrides_file
            .map(|file| format!(" and {}", file.display()))
            .unwrap_or_default()
    );
    Ok(())
}
