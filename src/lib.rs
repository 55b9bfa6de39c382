//! edgeclass: classify camera frames on the edge and publish Top-3 events over MQTT.
//!
//! # How a frame flows
//!
//! A frame flows one way through the stages, each a module with a small public surface and its
//! own tests:
//!
//! ```text
//! capture ──Frame──▶ preprocess ──tensor──▶ model ──logits──▶ postprocess ──Classification──▶ publish
//! ```
//!
//! | stage | module | what it owns |
//! |---|---|---|
//! | capture | [`capture`] | frame sources (V4L2 cameras, files, folders, HTTP snapshots), one thread per camera, the latest-frame-wins [`capture::FrameSlot`], the motion gate, saving frames for labelling ([`capture::Collector`]), [`capture::CameraId`] |
//! | preprocess | [`preprocess`] | decoding (JPEG, YUYV, NV12, ...; JPEG at a reduced DCT scale and YUYV/NV12 resized straight from their planes unless `exact`), cutting out a camera's crop region ([`preprocess::CropRegion`]) and torchvision's eval transform into a reused tensor; the test-time augmented views ([`preprocess::Tta`]) |
//! | model | [`model`] | ResNet-18 in f32 or int8 ([`model::kernels`]), EfficientNet-Lite0 in f32 ([`model::Architecture`]); loading, quantizing and calibrating; fetching the weights ([`model::install`]); custom heads ([`model::Head`]) on the backbone's features, and ensembles of them ([`model::Ensemble`]) |
//! | postprocess | [`postprocess`] | softmax, top-k, thresholds, label maps, groups, the publish policy, for the ImageNet classes and each head's own; averaging probabilities over test-time views and ensemble members ([`postprocess::MeanProbabilities`]) |
//! | publish | [`publish`] | MQTT events, retained state, snapshots, availability, Home Assistant discovery, the embedded broker |
//!
//! # Around the stages
//!
//! - A camera may also run custom heads (`[[heads]]` in the [`config`]): the backbone runs once
//!   per frame ([`model::Model::forward_with_features`]) and each head classifies its features
//!   into its own classes, postprocessed and published on its own topics.
//! - The [`daemon`] wires the stages together and owns the lifecycle: it loads the [`config`]
//!   (each section owned by its stage), starts one capture thread and one pipeline thread per
//!   camera, tells systemd it is ready, reloads thresholds, labels, changed head files and
//!   added heads on SIGHUP (or the web page's "Activate"), and stops every thread and task through one [`shutdown::Shutdown`]. Every worker thread reports a
//!   [`heartbeat::Heartbeat`], and the systemd watchdog is fed only while all of them are on
//!   schedule.
//! - [`evaluate`] measures a model on labelled images (`edgeclass eval`): accuracy, confusion,
//!   calibration, and the thresholds that reach a target precision.
//! - [`train`] fits a head for the user's own classes (`edgeclass train`) on the frozen
//!   backbone's features: augmentation, AdamW with a cosine schedule, early stopping,
//!   distillation; optionally with the backbone's layer4 fine-tuned too (`--unfreeze layer4`,
//!   [`train::unfreeze`]). A [`model::Head`] file then runs next to the ImageNet classes on the
//!   same backbone pass (a head with its own layer4 runs in `classify`, `eval` and as a
//!   teacher, not in the daemon).
//! - [`web`] serves the web page and its JSON API from the daemon (cameras live, classifying
//!   uploads, tuning thresholds, labelling a camera's frames and training a head on them,
//!   Prometheus `/metrics`, health probes); the pipelines write what it shows into a
//!   [`web::Board`] at almost no cost (recent scores only while the Thresholds page is in use),
//!   and nothing per browser. Thresholds it applies (global, per label, heads') and heads
//!   it activates go to the [`config::overrides`] file, merged over the config file at every
//!   load.
//! - [`dataset`] reads labelled folders (one sub-folder per class) for `eval` and `train`.
//! - [`commands`] holds one thin module per CLI verb.
//!
//! # Errors and exit codes
//!
//! Each stage's error type names the file, key, URL or device it failed on and says which
//! [`sysexits::Sysexit`] it deserves (`sysexit()`); `main` walks the error chain and decides the
//! process exit status there, and prints the chain once (no error repeats its source).

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod capture;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod dataset;
pub mod evaluate;
pub mod heartbeat;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod publish;
pub mod shutdown;
pub mod sysexits;
pub mod train;
pub mod web;
