//! The publisher: a non-blocking handle for the daemon, a task that drives the rumqttc event loop
//! (reconnecting with exponential backoff) and a task that feeds the queue into the client.
//!
//! Why an own queue: rumqttc keeps unacknowledged publishes only as long as the broker keeps the
//! session; after a broker restart (no persistence) or with a clean session it silently drops
//! them, and while disconnected its bounded request channel blocks producers. So the publisher
//! hands at most [`SEND_WINDOW`] messages to rumqttc, tracks them until acknowledged, and on a
//! connection error takes them all back (clearing rumqttc's own copies) and re-sends them first
//! after reconnecting, in order.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Incoming, Outgoing, QoS};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use super::config::{MqttConfig, SnapshotConfig};
use super::connection::{
    ca_path, misconfiguration, mqtt_options, publish_packet_len, qos_of, SEND_WINDOW,
};
use super::discovery::Announcement;
use super::outbox::{Message, Outbox};
use super::{Event, PublishError, Topics};
use crate::capture::CameraId;

/// Counters for logs and health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishStats {
    /// Events waiting for the broker (queued or unacknowledged).
    pub queued: usize,
    /// Events dropped because the queue limit was hit (or they could not be serialized).
    pub dropped: u64,
    /// Events acknowledged by the broker (written, for QoS 0).
    pub sent: u64,
    /// Connected to the broker right now.
    pub connected: bool,
    /// Snapshots not published because they exceeded `snapshot.max_bytes` or, with topic and
    /// header, `max_packet_bytes`.
    pub oversized_snapshots: u64,
}

/// Handle to the MQTT side; cheap to clone, every method but [`Publisher::shutdown`] is
/// non-blocking and safe to call from any thread.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the feeder: new messages, a connection, or a freed send window.
    wake: Notify,
    /// Signals acknowledgements, for shutdown's flush.
    progress: Notify,
    client: AsyncClient,
    topics: Topics,
    qos: QoS,
    snapshot: SnapshotConfig,
    max_packet_bytes: usize,
    cameras: Vec<CameraId>,
    broker: String,
    /// The CA bundle TLS verifies the broker with, named when it does not trust the broker.
    ca_file: PathBuf,
    reconnect_min: Duration,
    reconnect_max: Duration,
    discovery: Option<Discovery>,
    /// Taken by [`Publisher::shutdown`].
    tasks: Mutex<Option<Tasks>>,
}

/// The publisher's background tasks.
struct Tasks {
    /// Drives rumqttc; ends by itself after a clean DISCONNECT.
    network: JoinHandle<()>,
    /// Feeds the queue into rumqttc; runs until aborted.
    feeder: JoinHandle<()>,
}

/// What discovery configs are built from, and Home Assistant's status topic.
struct Discovery {
    announcement: Announcement,
    ha_status_topic: String,
}

/// A message given to rumqttc; `pkid` is known once rumqttc has written it.
struct Handed {
    message: Message,
    pkid: Option<u16>,
}

struct State {
    outbox: Outbox,
    handed: VecDeque<Handed>,
    connected: bool,
    /// Latest retained value per topic, re-published after every connect so a broker that
    /// restarted without persistence gets the state back.
    retained: BTreeMap<String, Message>,
    /// The discovery configs announced so far, re-sent when Home Assistant restarts.
    announced: Vec<Message>,
    /// Last event number and published label per camera and classifier (`None`: ImageNet).
    seqs: HashMap<(CameraId, Option<String>), u64>,
    labels: HashMap<(CameraId, Option<String>), String>,
    sent: u64,
    invalid: u64,
    oversized_snapshots: u64,
    /// Cameras whose oversized snapshot was warned about (once each).
    oversized_warned: HashSet<CameraId>,
}

impl State {
    fn publish_state(&mut self, message: Message) {
        self.retained.insert(message.topic.clone(), message.clone());
        self.outbox.push(message);
    }

    fn unsent(&self) -> usize {
        self.handed.len() + self.outbox.len()
    }
}

impl Publisher {
    /// Connects to the configured broker (or the embedded one's address) in the background,
    /// announces `online`, every camera `online` and the discovery configs, then serves
    /// [`Publisher::event`] & co. Returns without waiting for the connection: while the broker is
    /// unreachable events queue up (bounded by `queue_limit`). Errors are configuration errors
    /// (keys, password file, TLS files). Must be called within a tokio runtime.
    pub async fn start(
        cfg: &MqttConfig,
        cameras: &[CameraId],
        model: &str,
    ) -> Result<Publisher, PublishError> {
        let topics = Topics::new(&cfg.topic_prefix);
        let options = mqtt_options(cfg, &topics)?;
        let endpoint = cfg.endpoint()?;
        let broker = format!("{}:{}", endpoint.host, endpoint.port);
        let (client, eventloop) = AsyncClient::new(options, SEND_WINDOW * 2);

        let discovery = cfg.discovery.enabled.then(|| {
            let announcement = Announcement::new(cfg, model, topics.clone());
            Discovery {
                ha_status_topic: announcement.ha_status_topic(),
                announcement,
            }
        });

        let mut state = State {
            outbox: Outbox::new(cfg.queue_limit),
            handed: VecDeque::with_capacity(SEND_WINDOW),
            connected: false,
            retained: BTreeMap::new(),
            announced: discovery
                .iter()
                .flat_map(|d| d.announcement.messages(cameras))
                .collect(),
            seqs: HashMap::new(),
            labels: HashMap::new(),
            sent: 0,
            invalid: 0,
            oversized_snapshots: 0,
            oversized_warned: HashSet::new(),
        };
        state.publish_state(Message::state(topics.status(), "online"));
        for message in state.announced.clone() {
            state.publish_state(message);
        }
        for camera in cameras {
            state.publish_state(Message::state(topics.availability(camera), "online"));
        }

        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            wake: Notify::new(),
            progress: Notify::new(),
            client,
            topics,
            qos: qos_of(cfg.qos),
            snapshot: cfg.snapshot.clone(),
            max_packet_bytes: cfg.max_packet_bytes,
            cameras: cameras.to_vec(),
            broker,
            ca_file: ca_path(cfg),
            reconnect_min: Duration::from_millis(cfg.reconnect_min_ms),
            reconnect_max: Duration::from_millis(cfg.reconnect_max_ms),
            discovery,
            tasks: Mutex::new(None),
        });
        *lock_tasks(&inner) = Some(Tasks {
            network: tokio::spawn(drive(Arc::clone(&inner), eventloop)),
            feeder: tokio::spawn(feed_loop(Arc::clone(&inner))),
        });
        Ok(Publisher { inner })
    }

    /// Queues an event for `<prefix>/<camera>/event`, the same JSON for the retained
    /// `<prefix>/<camera>/state` and, when the label changed, the retained
    /// `<prefix>/<camera>/label`. Assigns `event.seq` (per camera, from 1) and returns it.
    pub fn event(&self, event: Event) -> u64 {
        self.classifier_event(None, event)
    }

    /// [`Publisher::event`] for a custom head's classification: `<prefix>/<camera>/<head>/event`,
    /// `<prefix>/<camera>/<head>/state` and `<prefix>/<camera>/<head>/label`, with its own `seq` (per camera and head, from 1).
    /// `head` is the head's name, one topic level.
    pub fn head_event(&self, head: &str, event: Event) -> u64 {
        self.classifier_event(Some(head), event)
    }

    fn classifier_event(&self, head: Option<&str>, mut event: Event) -> u64 {
        let inner = &self.inner;
        let mut state = inner.lock();
        let stream = (event.camera.clone(), head.map(str::to_string));
        let seq = state.seqs.entry(stream.clone()).or_insert(0);
        *seq += 1;
        event.seq = *seq;
        let payload = match serde_json::to_vec(&event) {
            Ok(payload) => payload,
            Err(e) => {
                // Only non-string map keys can fail; Event has none, but never panic the daemon.
                state.invalid += 1;
                log::error!("serializing event of camera {}: {e}", event.camera);
                return event.seq;
            }
        };
        state.outbox.push(Message::event(
            inner.topics.event(&event.camera, head),
            payload.clone(),
        ));
        state.publish_state(Message::state(
            inner.topics.state(&event.camera, head),
            payload,
        ));
        if state.labels.get(&stream) != Some(&event.label) {
            state.publish_state(Message::state(
                inner.topics.label(&event.camera, head),
                event.label.as_bytes(),
            ));
            state.labels.insert(stream, event.label);
        }
        drop(state);
        inner.wake.notify_one();
        event.seq
    }

    /// Announces (again) the Home Assistant sensor of `head` on `camera`, whose state can be
    /// any of `labels` (the head's labels and its unknown label). Call it at start and whenever
    /// the labels change; a no-op with discovery disabled.
    pub fn announce_head(&self, camera: &CameraId, head: &str, labels: &[&str]) {
        let inner = &self.inner;
        let Some(discovery) = &inner.discovery else {
            return;
        };
        let message = discovery.announcement.head_sensor(camera, head, labels);
        let mut state = inner.lock();
        match state
            .announced
            .iter_mut()
            .find(|m| m.topic == message.topic)
        {
            Some(announced) => *announced = message.clone(),
            None => state.announced.push(message.clone()),
        }
        state.publish_state(message);
        drop(state);
        inner.wake.notify_one();
    }

    /// Queues a JPEG for the retained `<prefix>/<camera>/snapshot` (latest wins). Ignored when
    /// snapshots are disabled; counted and skipped (with a warning, once per camera) when larger
    /// than `snapshot.max_bytes` or when its packet would exceed `max_packet_bytes`.
    pub fn snapshot(&self, camera: &CameraId, jpeg: &[u8]) {
        let inner = &self.inner;
        if !inner.snapshot.enabled {
            return;
        }
        let topic = inner.topics.snapshot(camera);
        let packet = publish_packet_len(&topic, inner.qos, jpeg.len());
        let mut state = inner.lock();
        let limit = if jpeg.len() > inner.snapshot.max_bytes {
            Some(format!(
                "mqtt.snapshot.max_bytes ({})",
                inner.snapshot.max_bytes
            ))
        } else if packet > inner.max_packet_bytes {
            Some(format!(
                "mqtt.max_packet_bytes ({}) as a {packet}-byte packet",
                inner.max_packet_bytes
            ))
        } else {
            None
        };
        if let Some(limit) = limit {
            state.oversized_snapshots += 1;
            if state.oversized_warned.insert(camera.clone()) {
                log::warn!(
                    "camera {camera}: a {}-byte snapshot exceeds {limit}: not published \
                     (later ones over the limit are skipped without this warning; events go on)",
                    jpeg.len()
                );
            }
            return;
        }
        state.publish_state(Message::state(topic, jpeg));
        drop(state);
        inner.wake.notify_one();
    }

    /// Publishes the retained `<prefix>/<camera>/availability` (`online` / `offline`).
    pub fn camera_available(&self, camera: &CameraId, online: bool) {
        let inner = &self.inner;
        let payload = if online { "online" } else { "offline" };
        inner
            .lock()
            .publish_state(Message::state(inner.topics.availability(camera), payload));
        inner.wake.notify_one();
    }

    /// Current counters.
    pub fn stats(&self) -> PublishStats {
        let state = self.inner.lock();
        let handed_events = state.handed.iter().filter(|h| !h.message.retain).count();
        PublishStats {
            queued: state.outbox.events() + handed_events,
            dropped: state.outbox.dropped() + state.invalid,
            sent: state.sent,
            connected: state.connected,
            oversized_snapshots: state.oversized_snapshots,
        }
    }

    /// Publishes `offline` for every camera and the instance, waits up to `timeout` for the
    /// broker to acknowledge everything queued, then disconnects cleanly (so the last will is not
    /// sent). On timeout the tasks are stopped anyway and the error says how much was lost.
    pub async fn shutdown(self, timeout: Duration) -> Result<(), PublishError> {
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        {
            let mut state = inner.lock();
            for camera in &inner.cameras {
                state.publish_state(Message::state(inner.topics.availability(camera), "offline"));
            }
            state.publish_state(Message::state(inner.topics.status(), "offline"));
        }
        inner.wake.notify_one();

        let unsent = loop {
            let progress = inner.progress.notified();
            let unsent = inner.lock().unsent();
            if unsent == 0 || timeout_at(deadline, progress).await.is_err() {
                break unsent;
            }
        };
        // Only the first shutdown finds the tasks; a second one has nothing left to stop.
        let tasks = lock_tasks(inner).take();
        if let Some(mut tasks) = tasks {
            if unsent == 0 && inner.client.try_disconnect().is_ok() {
                // The network task ends once rumqttc has written the DISCONNECT; past the
                // deadline it is aborted below like the feeder.
                let _ = timeout_at(deadline, &mut tasks.network).await;
            }
            tasks.network.abort();
            tasks.feeder.abort();
        }
        if unsent > 0 {
            return Err(PublishError::ShutdownIncomplete {
                broker: inner.broker.clone(),
                unsent,
            });
        }
        Ok(())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is a single step.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// After a CONNACK: re-subscribe, put all retained state at the front (status first), then
    /// let the feeder go.
    fn on_connected(&self) {
        let mut state = self.lock();
        state.connected = true;
        if let Some(discovery) = &self.discovery {
            if let Err(e) = self
                .client
                .try_subscribe(discovery.ha_status_topic.clone(), QoS::AtLeastOnce)
            {
                log::warn!("subscribing to {}: {e}", discovery.ha_status_topic);
            }
        }
        let status_topic = self.topics.status();
        let mut retained: Vec<Message> = state
            .retained
            .values()
            .filter(|m| m.topic != status_topic)
            .cloned()
            .collect();
        if let Some(status) = state.retained.get(&status_topic) {
            retained.insert(0, status.clone());
        }
        for message in retained.into_iter().rev() {
            state.outbox.push_front(message);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// After a connection error: take back everything rumqttc holds and queue it again.
    fn on_disconnected(&self, eventloop: &mut EventLoop) {
        let mut state = self.lock();
        state.connected = false;
        // rumqttc moved its unacknowledged publishes and its request channel into `pending`;
        // the feeder may have added more to the channel since. Drain it again and drop it all:
        // `handed` has the same messages and is the one we re-send.
        eventloop.clean();
        eventloop.pending.clear();
        let handed: Vec<Message> = state.handed.drain(..).map(|h| h.message).collect();
        state.outbox.requeue_front(handed.into_iter());
    }

    /// rumqttc wrote a publish: it was the oldest unwritten one we handed over.
    fn on_written(&self, pkid: u16) {
        let mut state = self.lock();
        if self.qos == QoS::AtMostOnce {
            if let Some(done) = state.handed.pop_front() {
                self.delivered(&mut state, done);
            }
        } else if let Some(handed) = state.handed.iter_mut().find(|h| h.pkid.is_none()) {
            handed.pkid = Some(pkid);
        }
    }

    /// The broker acknowledged `pkid` (PUBACK for QoS 1, PUBCOMP for QoS 2).
    fn on_acknowledged(&self, pkid: u16) {
        let mut state = self.lock();
        if let Some(index) = state.handed.iter().position(|h| h.pkid == Some(pkid)) {
            if let Some(done) = state.handed.remove(index) {
                self.delivered(&mut state, done);
            }
        }
    }

    fn delivered(&self, state: &mut State, done: Handed) {
        if !done.message.retain {
            state.sent += 1;
        }
        self.wake.notify_one();
        self.progress.notify_waiters();
    }

    /// Home Assistant (re)started: announce again.
    fn on_ha_status(&self, payload: &[u8]) {
        if self.discovery.is_none() || payload != b"online" {
            return;
        }
        let mut state = self.lock();
        for message in state.announced.clone() {
            state.outbox.push(message);
        }
        // The instance status too: availability is evaluated when the entity is (re)created.
        if let Some(status) = state.retained.get(&self.topics.status()).cloned() {
            state.outbox.push(status);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Hands queued messages to rumqttc while connected and the send window has room.
    fn feed(&self) {
        let mut state = self.lock();
        while state.connected && state.handed.len() < SEND_WINDOW {
            let Some(message) = state.outbox.pop_front() else {
                break;
            };
            match self.client.try_publish(
                message.topic.clone(),
                self.qos,
                message.retain,
                message.payload.clone(),
            ) {
                Ok(()) => state.handed.push_back(Handed {
                    message,
                    pkid: None,
                }),
                Err(e) => {
                    // Channel full or closed: keep the message and retry on the next wake.
                    log::debug!("handing {} to the MQTT client: {e}", message.topic);
                    state.outbox.push_front(message);
                    break;
                }
            }
        }
    }
}

fn lock_tasks(inner: &Inner) -> MutexGuard<'_, Option<Tasks>> {
    inner.tasks.lock().unwrap_or_else(|p| p.into_inner())
}

async fn feed_loop(inner: Arc<Inner>) {
    loop {
        inner.wake.notified().await;
        inner.feed();
    }
}

/// Drives rumqttc: dispatches its events, and on errors sleeps with exponential backoff before
/// polling again (which reconnects). Ends after a clean DISCONNECT.
async fn drive(inner: Arc<Inner>, mut eventloop: EventLoop) {
    let mut backoff = inner.reconnect_min;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Incoming::ConnAck(_))) => {
                log::info!("connected to MQTT broker {}", inner.broker);
                backoff = inner.reconnect_min;
                inner.on_connected();
            }
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => inner.on_written(pkid),
            Ok(MqttEvent::Incoming(Incoming::PubAck(ack))) => inner.on_acknowledged(ack.pkid),
            Ok(MqttEvent::Incoming(Incoming::PubComp(comp))) => inner.on_acknowledged(comp.pkid),
            Ok(MqttEvent::Incoming(Incoming::Publish(publish))) => {
                if inner
                    .discovery
                    .as_ref()
                    .is_some_and(|d| d.ha_status_topic == publish.topic)
                {
                    inner.on_ha_status(&publish.payload);
                }
            }
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                inner.lock().connected = false;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let was_connected = inner.lock().connected;
                inner.on_disconnected(&mut eventloop);
                let problem = misconfiguration(&e, &inner.ca_file);
                if was_connected {
                    log::warn!("MQTT connection to {} lost: {e}", inner.broker);
                } else if backoff != inner.reconnect_min {
                    log::debug!("connecting to MQTT broker {}: {e}", inner.broker);
                } else if let Some(problem) = problem {
                    // Said once until a connection succeeds; retrying stays on the backoff, as a
                    // fixed broker (or fixed password on its side) must be picked up unattended.
                    log::error!(
                        "connecting to MQTT broker {}: {problem}; retrying with backoff up to \
                         mqtt.reconnect_max_ms ({} ms)",
                        inner.broker,
                        inner.reconnect_max.as_millis()
                    );
                } else {
                    log::warn!("connecting to MQTT broker {}: {e}; retrying", inner.broker);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(inner.reconnect_max);
            }
        }
    }
}
