//! One camera's path from frame to event: decode (and crop), motion gate, model, postprocess,
//! policy, publish; then, off the event's latency, saving the frame for labelling. Runs on its
//! own thread; the model is shared with the other cameras. While the gate finds the scene
//! settled, the pipeline asks its slot for no more than `idle_fps` frames a second
//! ([`MotionGate::idle_until`]).
//!
//! A camera with heads runs the backbone once per frame and gives its features to each head:
//! every classifier (the ImageNet one first, then the heads) is one [`Stream`] with its own
//! postprocessor, publish policy and topics.
//!
//! With test-time augmentation (`[model] tta`) every view of the frame takes that path and
//! each stream averages its probabilities over the views before postprocessing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use image::RgbImage;
use tokio::sync::watch;

use super::heads::{ActiveHead, Assignments};
use crate::capture::{CameraConfig, Collector, Frame, FrameSlot, GateStats, MotionGate};
use crate::heartbeat::Heartbeat;
use crate::model::{EnsembleBuffers, Model, IMAGENET_CLASSES};
use crate::postprocess::{
    Classification, Decision, MeanProbabilities, PolicyConfig, Postprocessor, PublishMode,
    PublishPolicy,
};
use crate::preprocess::{PreprocessConfig, PreprocessError, Preprocessor, Tta};
use crate::publish::{Event, Publisher};
use crate::web::CameraWatch;

/// How long a pipeline waits for a frame before checking whether a heartbeat event is due.
/// (Shutdown does not wait for it: closing the slot ends the wait at once.)
const FRAME_WAIT: Duration = Duration::from_millis(250);

/// Settings that SIGHUP replaces while the pipelines run.
pub struct Reloadable {
    /// Shared with the web page's uploads.
    pub postprocessor: Arc<Postprocessor>,
    pub policy: PolicyConfig,
    /// Every head loaded: `[[heads]]` entries in config order, then those added by reloads
    /// (an index never changes while the daemon runs).
    pub heads: Vec<Arc<ActiveHead>>,
    /// Which of `heads` each camera runs.
    pub assignments: Assignments,
}

/// What the pipelines share with the daemon.
pub struct Shared {
    pub model: Arc<Model>,
    pub publisher: Publisher,
    /// The daemon sends reloaded settings here; each pipeline holds a receiver.
    pub settings: watch::Sender<Arc<Reloadable>>,
    /// `[model] tta`: the views of each frame that are classified and averaged.
    pub tta: Tta,
    pub snapshots: bool,
    pub print_events: bool,
}

/// One classifier's classifications on one camera: the ImageNet classifier or a head.
struct Stream {
    /// Index into [`Reloadable::heads`]; `None` for the ImageNet classifier.
    head: Option<usize>,
    policy: PublishPolicy,
    /// The last classification and its latency, standing for frames the motion gate skips.
    last_classification: Option<(Classification, f32)>,
    last_event: Option<Event>,
    /// What to do about the current frame (decided for every stream before any is published,
    /// so the snapshot goes out once, first).
    decision: Decision,
    /// The probabilities averaged over the views, with test-time augmentation.
    mean: MeanProbabilities,
}

impl Stream {
    fn new(head: Option<usize>, settings: &Reloadable) -> anyhow::Result<Self> {
        Ok(Stream {
            policy: PublishPolicy::new(Stream::policy_config(head, settings))?,
            head,
            last_classification: None,
            last_event: None,
            decision: Decision::Skip,
            mean: MeanProbabilities::default(),
        })
    }

    fn policy_config(head: Option<usize>, settings: &Reloadable) -> &PolicyConfig {
        head.map_or(&settings.policy, |h| &settings.heads[h].policy)
    }

    /// The head's name (its topic level); `None` for the ImageNet classifier.
    fn head_name(head: Option<usize>, settings: &Reloadable) -> Option<&str> {
        head.map(|h| settings.heads[h].name.as_str())
    }
}

/// The per-camera state of the frame-to-event path; buffers are reused frame to frame.
pub struct Pipeline {
    camera: CameraConfig,
    slot: Arc<FrameSlot>,
    shared: Arc<Shared>,
    settings: watch::Receiver<Arc<Reloadable>>,
    /// Idle while waiting for a frame, due at once while working on one.
    heartbeat: Arc<Heartbeat>,
    preprocessor: Preprocessor,
    motion: MotionGate,
    /// `None` unless `[cameras.collect]` is enabled.
    collector: Option<Collector>,
    /// The ImageNet classifier's, then one per head of the camera.
    streams: Vec<Stream>,
    logits: Vec<f32>,
    /// The backbone's features, for the heads.
    features: Vec<f32>,
    head_buffers: EnsembleBuffers,
    head_logits: Vec<f32>,
    jpeg: Vec<u8>,
    /// Frames skipped because their JPEG was cut off.
    cut_off_frames: u64,
    /// The web page's view of this camera, when the page is served.
    watch: Option<Arc<CameraWatch>>,
}

impl Pipeline {
    pub fn new(
        camera: CameraConfig,
        slot: Arc<FrameSlot>,
        heartbeat: Arc<Heartbeat>,
        preprocess: PreprocessConfig,
        shared: Arc<Shared>,
        watch: Option<Arc<CameraWatch>>,
    ) -> anyhow::Result<Self> {
        let settings = shared.settings.subscribe();
        let current = Arc::clone(&settings.borrow());
        let mut streams = vec![Stream::new(None, &current)?];
        for &index in current.assignments.get(&camera.id).into_iter().flatten() {
            streams.push(Stream::new(Some(index), &current)?);
        }
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
            streams,
            settings,
            heartbeat,
            preprocessor: Preprocessor::new(preprocess).with_region(camera.crop),
            logits: Vec::with_capacity(IMAGENET_CLASSES),
            features: Vec::with_capacity(shared.model.feature_len()),
            head_buffers: EnsembleBuffers::default(),
            head_logits: Vec::new(),
            jpeg: Vec::new(),
            cut_off_frames: 0,
            watch,
            camera,
            slot,
            shared,
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
                Some(frame) => match self.process(&frame) {
                    // After the event went out: saving is not part of its latency. Only
                    // classified frames are offered: one the motion gate skipped was not
                    // decoded, and its scene is the last classified one.
                    Ok(latency_ms) => {
                        // A settled scene is looked at `idle_fps` times a second: the slot
                        // drops the frames in between, which the camera then does not capture.
                        self.slot.want_from(self.motion.idle_until());
                        if latency_ms.is_some() {
                            self.collect(&frame);
                        }
                        if let Some(watch) = &self.watch {
                            watch.frame_done(frame, latency_ms);
                        }
                    }
                    Err(err) => self.skipped(&err),
                },
                None if self.slot.is_closed() => break,
                None => self.heartbeats_if_due(),
            }
        }
        self.heartbeat.idle();
        let GateStats {
            classified,
            skipped,
        } = self.motion.stats();
        log::info!(
            "camera {}: motion gate: {classified} frames classified, {skipped} skipped",
            self.camera.id
        );
        if self.cut_off_frames > 0 {
            log::warn!(
                "camera {}: {} cut-off JPEG frames skipped",
                self.camera.id,
                self.cut_off_frames
            );
        }
    }

    /// Logs a frame that could not be processed. Cut-off JPEGs (USB cameras drop frame ends,
    /// sometimes many a minute) are counted and said once, then summed up at shutdown.
    fn skipped(&mut self, err: &anyhow::Error) {
        let cut_off = err
            .chain()
            .any(|e| matches!(e.downcast_ref(), Some(PreprocessError::Truncated { .. })));
        if cut_off {
            self.cut_off_frames += 1;
            if self.cut_off_frames > 1 {
                return;
            }
        }
        log::warn!(
            "camera {}: {err:#}{}",
            self.camera.id,
            if cut_off {
                " (further cut-off frames are counted, reported at shutdown)"
            } else {
                ""
            }
        );
    }

    /// The current settings; an `Arc`, so a reload is not held up while a frame is processed.
    fn current_settings(&mut self) -> (Arc<Reloadable>, bool) {
        let settings = self.settings.borrow_and_update();
        let changed = settings.has_changed();
        (Arc::clone(&settings), changed)
    }

    /// Classifies the frame if the scene changed and publishes what the policies decide;
    /// returns the classification latency of a classified frame.
    fn process(&mut self, frame: &Frame) -> anyhow::Result<Option<f32>> {
        let (settings, reloaded) = self.current_settings();
        if reloaded {
            self.reconfigure(&settings);
        }
        let started = Instant::now();
        // After a reload the frame is classified even in a static scene, so the new thresholds
        // and heads apply at once.
        let classified = self
            .preprocessor
            .decode_if_changed(frame, &mut self.motion, reloaded)?;
        let mut latency_ms = None;
        if classified {
            let model = &self.shared.model;
            let views = self.shared.tta.views();
            for (n, &view) in views.iter().enumerate() {
                let input = self.preprocessor.view(view);
                if self.streams.len() > 1 {
                    model.forward_with_features(input, &mut self.logits, &mut self.features)?;
                } else {
                    model.forward(input, &mut self.logits)?;
                }
                for stream in &mut self.streams {
                    let (logits, postprocessor) = match stream.head {
                        None => (&self.logits, &*settings.postprocessor),
                        Some(h) => {
                            let head = &settings.heads[h];
                            // `[[heads]]` refuse heads with their own last stage: every head
                            // here reads the shared backbone's features.
                            head.head.forward(
                                &self.features,
                                None,
                                1.0,
                                &mut self.head_buffers,
                                &mut self.head_logits,
                                |_, _| {},
                            )?;
                            (&self.head_logits, &head.postprocessor)
                        }
                    };
                    // Without TTA the logits are classified as they are (no averaging work).
                    let logits = if views.len() == 1 {
                        logits.as_slice()
                    } else {
                        if n == 0 {
                            stream.mean.clear();
                        }
                        stream.mean.add(logits, 1.0);
                        if n + 1 < views.len() {
                            continue;
                        }
                        stream.mean.logits()
                    };
                    let classification = postprocessor.classify(logits);
                    if let Some(watch) = &self.watch {
                        let head = stream.head.map(|h| settings.heads[h].name.as_str());
                        watch.classified(head, &classification);
                    }
                    let elapsed_ms = started.elapsed().as_secs_f32() * 1e3;
                    latency_ms = Some(elapsed_ms);
                    stream.last_classification = Some((classification, elapsed_ms));
                }
            }
        }
        let now = Instant::now();
        for stream in &mut self.streams {
            stream.decision = match (&stream.last_classification, stream.policy.config().mode) {
                // The scene did not change, so neither did its classification. `on_change`
                // counts it toward `hold` (a static scene still gets its first state
                // published); `every` would re-send it for each frame, so there only a
                // heartbeat may go out.
                (Some((classification, _)), mode)
                    if classified || mode == PublishMode::OnChange =>
                {
                    stream.policy.decide(classification, now)
                }
                _ if stream.policy.heartbeat_due(now) => Decision::Heartbeat,
                _ => Decision::Skip,
            };
        }
        if self.shared.snapshots && self.streams.iter().any(|s| s.decision == Decision::Publish) {
            self.publish_snapshot(frame)?;
        }
        for index in 0..self.streams.len() {
            match self.streams[index].decision {
                Decision::Skip => {}
                Decision::Heartbeat => self.heartbeat(index, &settings),
                Decision::Publish => {
                    // Only a classification is ever published, so there is one.
                    if let Some(last) = self.streams[index].last_classification.clone() {
                        let event = self.event(index, last, frame, &settings);
                        self.emit(index, event, &settings);
                    }
                }
            }
        }
        Ok(latency_ms)
    }

    /// Switches every stream to its reloaded publish policy (a bad one keeps the previous),
    /// and starts a stream for each head newly assigned to the camera.
    fn reconfigure(&mut self, settings: &Reloadable) {
        let assigned = settings
            .assignments
            .get(&self.camera.id)
            .into_iter()
            .flatten();
        for &index in assigned {
            if self.streams.iter().any(|s| s.head == Some(index)) {
                continue;
            }
            match Stream::new(Some(index), settings) {
                Ok(stream) => {
                    log::info!(
                        "camera {}: head {} runs from now on",
                        self.camera.id,
                        settings.heads[index].name
                    );
                    self.streams.push(stream);
                }
                Err(err) => log::error!(
                    "camera {}: head {} not started: {err:#}",
                    self.camera.id,
                    settings.heads[index].name
                ),
            }
        }
        for stream in &mut self.streams {
            let config = Stream::policy_config(stream.head, settings);
            if let Err(err) = stream.policy.reconfigure(config) {
                log::error!(
                    "camera {}: keeping the previous publish policy: {err}",
                    self.camera.id
                );
            }
        }
    }

    /// The event of stream `index` for `frame`, classified as `classification`.
    fn event(
        &self,
        index: usize,
        (classification, latency_ms): (Classification, f32),
        frame: &Frame,
        settings: &Reloadable,
    ) -> Event {
        Event {
            camera: self.camera.id.clone(),
            seq: 0, // assigned by the publisher
            ts: frame.captured_at,
            frame: frame.seq,
            label: classification.label,
            score: classification.score,
            unknown: classification.unknown,
            top3: classification.top,
            model: match self.streams[index].head {
                None => self.shared.model.description(),
                Some(h) => settings.heads[h].description.clone(),
            },
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

    /// For the waits without a frame: a heartbeat for every stream whose heartbeat is due.
    fn heartbeats_if_due(&mut self) {
        let (settings, _) = self.current_settings();
        let now = Instant::now();
        for index in 0..self.streams.len() {
            if self.streams[index].policy.heartbeat_due(now) {
                self.heartbeat(index, &settings);
            }
        }
    }

    /// Re-sends stream `index`'s last event, marked as a heartbeat.
    fn heartbeat(&mut self, index: usize, settings: &Reloadable) {
        if let Some(mut event) = self.streams[index].last_event.clone() {
            event.ts = SystemTime::now();
            event.heartbeat = true;
            self.emit(index, event, settings);
        }
    }

    fn emit(&mut self, index: usize, event: Event, settings: &Reloadable) {
        let stream = &mut self.streams[index];
        if !event.heartbeat {
            stream.last_event = Some(event.clone());
        }
        let publisher = &self.shared.publisher;
        let publish = |event: Event| match Stream::head_name(stream.head, settings) {
            None => publisher.event(event),
            Some(head) => publisher.head_event(head, event),
        };
        if !self.shared.print_events && self.watch.is_none() {
            publish(event);
            return;
        }
        let mut published = event.clone();
        published.seq = publish(event);
        if let Some(watch) = &self.watch {
            watch.event(Stream::head_name(stream.head, settings), &published);
        }
        if !self.shared.print_events {
            return;
        }
        if let Ok(line) = serde_json::to_string(&published) {
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
    if whole && frame.is_jpeg() {
        return Ok(&frame.data);
    }
    buffer.clear();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut *buffer, 80).encode_image(image)?;
    Ok(buffer)
}
