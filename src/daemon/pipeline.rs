//! One camera's path from frame to event: decode (and crop), motion gate, model, postprocess,
//! policy, publish; then, off the event's latency, saving the frame for labelling. Runs on its
//! own thread; the model is shared with the other cameras.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use image::RgbImage;
use tokio::sync::watch;

use crate::capture::{CameraConfig, Collector, Frame, FrameSlot, MotionGate, PixelFormat};
use crate::heartbeat::Heartbeat;
use crate::model::Model;
use crate::postprocess::{
    Classification, Decision, PolicyConfig, Postprocessor, PublishMode, PublishPolicy,
};
use crate::preprocess::{PreprocessConfig, Preprocessor};
use crate::publish::{Event, Publisher};

/// How long a pipeline waits for a frame before checking whether a heartbeat event is due.
/// (Shutdown does not wait for it: closing the slot ends the wait at once.)
const FRAME_WAIT: Duration = Duration::from_millis(250);

/// Settings that SIGHUP replaces while the pipelines run.
pub struct Reloadable {
    pub postprocessor: Arc<Postprocessor>,
    pub policy: PolicyConfig,
}

/// What the pipelines share with the daemon.
pub struct Shared {
    pub model: Arc<Model>,
    pub publisher: Publisher,
    /// The daemon sends reloaded settings here; each pipeline holds a receiver.
    pub settings: watch::Sender<Reloadable>,
    pub snapshots: bool,
    pub print_events: bool,
}

/// The per-camera state of the frame-to-event path; buffers are reused frame to frame.
pub struct Pipeline {
    camera: CameraConfig,
    slot: Arc<FrameSlot>,
    shared: Arc<Shared>,
    settings: watch::Receiver<Reloadable>,
    /// Idle while waiting for a frame, due at once while working on one.
    heartbeat: Arc<Heartbeat>,
    preprocessor: Preprocessor,
    motion: MotionGate,
    /// `None` unless `[cameras.collect]` is enabled.
    collector: Option<Collector>,
    policy: PublishPolicy,
    logits: Vec<f32>,
    jpeg: Vec<u8>,
    /// The last model output and its latency, standing for frames the motion gate skips.
    last_classification: Option<(Classification, f32)>,
    last_event: Option<Event>,
}

impl Pipeline {
    pub fn new(
        camera: CameraConfig,
        slot: Arc<FrameSlot>,
        heartbeat: Arc<Heartbeat>,
        preprocess: PreprocessConfig,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        let settings = shared.settings.subscribe();
        let policy = PublishPolicy::new(&settings.borrow().policy)?;
        let collector = camera.collect.enabled.then(|| {
            Collector::new(
                camera.id.clone(),
                &camera.collect,
                &crate::model::fetch::data_dir(),
            )
        });
        Ok(Self {
            motion: MotionGate::new(&camera.motion),
            collector,
            policy,
            settings,
            heartbeat,
            preprocessor: Preprocessor::new(preprocess).with_region(camera.crop),
            logits: Vec::with_capacity(1000),
            jpeg: Vec::new(),
            last_classification: None,
            camera,
            slot,
            shared,
            last_event: None,
        })
    }

    /// Runs until the daemon closes the slot; a frame that fails is logged and skipped.
    pub fn run(mut self) {
        loop {
            // The camera thread has its own heartbeat, so waiting for it is never late.
            self.heartbeat.idle();
            let frame = self.slot.take(FRAME_WAIT);
            self.heartbeat.expect_by(Instant::now());
            match frame {
                Some(frame) => {
                    if let Err(err) = self.process(&frame) {
                        log::warn!("camera {}: {err:#}", self.camera.id);
                    }
                    // After the event went out: saving is not part of its latency.
                    self.collect(&frame);
                }
                None if self.slot.is_closed() => break,
                None => self.heartbeat_if_due(),
            }
        }
        self.heartbeat.idle();
    }

    fn process(&mut self, frame: &Frame) -> anyhow::Result<()> {
        let settings = self.settings.borrow_and_update();
        if settings.has_changed() {
            if let Err(err) = self.policy.reconfigure(&settings.policy) {
                log::error!(
                    "camera {}: keeping the previous publish policy: {err}",
                    self.camera.id
                );
            }
        }
        // Cloned out so a reload is not held up by the model run below.
        let postprocessor = Arc::clone(&settings.postprocessor);
        drop(settings);
        let started = Instant::now();
        let rgb = self.preprocessor.decode(frame)?;
        let (classification, latency_ms) = if self.motion.changed(rgb) {
            let input = self.preprocessor.normalize();
            self.shared.model.forward(input, &mut self.logits)?;
            let classification = postprocessor.classify(&self.logits);
            let latency_ms = started.elapsed().as_secs_f32() * 1e3;
            self.last_classification = Some((classification.clone(), latency_ms));
            (classification, latency_ms)
        } else {
            // The scene did not change, so neither did its classification. `on_change` counts it
            // toward `hold` (a static scene still gets its first state published); `every` would
            // re-send it for each frame, so there only a heartbeat may go out.
            match (&self.last_classification, self.policy.config().mode) {
                (Some(last), PublishMode::OnChange) => last.clone(),
                _ => {
                    self.heartbeat_if_due();
                    return Ok(());
                }
            }
        };
        match self.policy.decide(&classification, Instant::now()) {
            Decision::Skip => {}
            Decision::Heartbeat => self.heartbeat(),
            Decision::Publish => {
                let event = self.event(frame, classification, latency_ms);
                if self.shared.snapshots {
                    self.publish_snapshot(frame)?;
                }
                self.emit(event);
            }
        }
        Ok(())
    }

    fn event(&self, frame: &Frame, classification: Classification, latency_ms: f32) -> Event {
        Event {
            camera: self.camera.id.clone(),
            seq: 0, // assigned by the publisher
            ts: frame.captured_at,
            frame: frame.seq,
            label: classification.label,
            score: classification.score,
            unknown: classification.unknown,
            top3: classification.top,
            model: self.shared.model.description(),
            latency_ms,
            heartbeat: false,
        }
    }

    /// Publishes the classified image as the camera's retained snapshot.
    fn publish_snapshot(&mut self, frame: &Frame) -> anyhow::Result<()> {
        let whole = self.camera.crop.is_none();
        let jpeg = classified_jpeg(frame, whole, self.preprocessor.decoded(), &mut self.jpeg)
            .context("cannot encode the snapshot as JPEG")?;
        self.shared.publisher.snapshot(&self.camera.id, jpeg);
        Ok(())
    }

    /// Offers the frame just processed to the collector, which saves it if it is due, new and
    /// within the caps. Failures are logged: they never stop classification.
    fn collect(&mut self, frame: &Frame) {
        let Some(collector) = &mut self.collector else {
            return;
        };
        let image = self.preprocessor.decoded();
        if !collector.wants(image, Instant::now()) {
            return;
        }
        let whole = self.camera.crop.is_none();
        match classified_jpeg(frame, whole, image, &mut self.jpeg) {
            Ok(jpeg) => collector.save(jpeg, frame.captured_at),
            Err(err) => log::warn!(
                "camera {}: cannot encode a frame for labelling as JPEG: {err}",
                self.camera.id
            ),
        }
    }

    fn heartbeat_if_due(&mut self) {
        if self.policy.heartbeat_due(Instant::now()) {
            self.heartbeat();
        }
    }

    /// Re-sends the last event, marked as a heartbeat.
    fn heartbeat(&mut self) {
        if let Some(mut event) = self.last_event.clone() {
            event.ts = SystemTime::now();
            event.heartbeat = true;
            self.emit(event);
        }
    }

    fn emit(&mut self, event: Event) {
        if !event.heartbeat {
            self.last_event = Some(event.clone());
        }
        if !self.shared.print_events {
            self.shared.publisher.event(event);
            return;
        }
        let mut printed = event.clone();
        printed.seq = self.shared.publisher.event(event);
        if let Ok(line) = serde_json::to_string(&printed) {
            println!("{line}");
        }
    }
}

/// The classified image as JPEG: a JPEG frame byte for byte when `whole` (no crop region), else
/// `image` (the decoded frame or its region) encoded into the reused `buffer`.
fn classified_jpeg<'a>(
    frame: &'a Frame,
    whole: bool,
    image: &RgbImage,
    buffer: &'a mut Vec<u8>,
) -> image::ImageResult<&'a [u8]> {
    let is_jpeg = matches!(frame.format, PixelFormat::Mjpeg | PixelFormat::Encoded)
        && frame.data.starts_with(&[0xFF, 0xD8]);
    if whole && is_jpeg {
        return Ok(&frame.data);
    }
    buffer.clear();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut *buffer, 80).encode_image(image)?;
    Ok(buffer)
}
