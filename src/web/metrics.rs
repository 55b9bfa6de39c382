//! `GET /metrics`: the Prometheus text format, written by `prometheus-client`.
//!
//! Every value is read when scraped (the camera slots' and the publisher's own counters, the
//! [`Board`]'s atomics and latency histograms), so metrics add no work between scrapes.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::board::Board;
use crate::publish::Publisher;

/// The registry behind `/metrics`, names prefixed `edgeclass_`.
pub(super) fn registry(board: Arc<Board>, publisher: Publisher, model: String) -> Registry {
    let mut registry = Registry::with_prefix("edgeclass");
    registry.register(
        "model",
        "The ImageNet model the daemon runs",
        Info::new(vec![("model".to_string(), model)]),
    );
    registry.register_collector(Box::new(Scrape { board, publisher }));
    registry
}

/// Reads the daemon's counters at scrape time.
struct Scrape {
    board: Arc<Board>,
    publisher: Publisher,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

type Labels<'a> = [(&'static str, &'a str); 1];

impl Scrape {
    /// One metric family with a value per camera.
    fn per_camera<M: EncodeMetric>(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help): (&str, &str),
        value: impl Fn(&super::board::CameraWatch) -> M,
    ) -> std::fmt::Result {
        let Some(first) = self.board.cameras().next() else {
            return Ok(());
        };
        let metric_type = value(first).metric_type();
        let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
        for camera in self.board.cameras() {
            let id = camera.id().to_string();
            let labels: Labels = [("camera", &id)];
            value(camera).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn single<M: EncodeMetric>(
        encoder: &mut DescriptorEncoder,
        (name, help): (&str, &str),
        metric: M,
    ) -> std::fmt::Result {
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.per_camera(
            &mut encoder,
            ("frames_captured", "Frames the camera delivered"),
            |c| ConstCounter::new(c.captured_and_dropped().0),
        )?;
        self.per_camera(
            &mut encoder,
            ("frames_processed", "Frames the pipeline finished"),
            |c| ConstCounter::new(c.processed()),
        )?;
        self.per_camera(
            &mut encoder,
            (
                "frames_dropped",
                "Frames replaced by a newer one before the pipeline took them",
            ),
            |c| ConstCounter::new(c.captured_and_dropped().1),
        )?;
        self.per_camera(
            &mut encoder,
            ("camera_online", "1 while the camera delivers frames"),
            |c| ConstGauge::new(i64::from(c.online())),
        )?;
        self.per_camera(
            &mut encoder,
            (
                "inference_latency_seconds",
                "Preprocessing, inference and postprocessing of a classified frame",
            ),
            |c| c.latency.clone(),
        )?;
        let stats = self.publisher.stats();
        Self::single(
            &mut encoder,
            (
                "events_published",
                "Events the broker acknowledged or accepted",
            ),
            ConstCounter::new(stats.sent),
        )?;
        Self::single(
            &mut encoder,
            ("events_queued", "Events waiting for the broker"),
            ConstGauge::new(i64::try_from(stats.queued).unwrap_or(i64::MAX)),
        )?;
        Self::single(
            &mut encoder,
            (
                "events_dropped",
                "Events dropped while the broker was unreachable and the queue full",
            ),
            ConstCounter::new(stats.dropped),
        )?;
        Self::single(
            &mut encoder,
            ("broker_connected", "1 while connected to the MQTT broker"),
            ConstGauge::new(i64::from(stats.connected)),
        )
    }
}
