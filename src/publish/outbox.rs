//! The ordered, bounded queue of messages waiting for the broker.
//!
//! Two kinds of message share one queue so their relative order is kept:
//! - events: never coalesced; beyond the limit the oldest queued event is dropped and counted;
//! - retained state (status, availability, label, snapshot, discovery): only the latest per topic
//!   matters, so a newer one replaces a queued older one and they never count against the limit.

use std::collections::VecDeque;

/// One MQTT publish waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Retained state (latest per topic wins) rather than an event.
    pub retain: bool,
}

impl Message {
    pub fn event(topic: String, payload: Vec<u8>) -> Self {
        Message {
            topic,
            payload,
            retain: false,
        }
    }

    pub fn state(topic: String, payload: impl Into<Vec<u8>>) -> Self {
        Message {
            topic,
            payload: payload.into(),
            retain: true,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<Message>,
    events: usize,
    limit: usize,
    dropped: u64,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            events: 0,
            limit,
            dropped: 0,
        }
    }

    /// Events waiting (retained state not counted).
    pub fn events(&self) -> usize {
        self.events
    }

    /// Events dropped because the limit was hit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Messages waiting, events and state.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    fn position_of_state(&self, topic: &str) -> Option<usize> {
        self.queue.iter().position(|m| m.retain && m.topic == topic)
    }

    /// Appends a message; a retained one replaces a queued one on the same topic.
    pub fn push(&mut self, message: Message) {
        if message.retain {
            if let Some(old) = self.position_of_state(&message.topic) {
                self.queue.remove(old);
            }
        } else {
            self.events += 1;
        }
        self.queue.push_back(message);
        self.enforce_limit();
    }

    /// Puts messages that were handed to the client but not acknowledged back at the front, in
    /// their original order, so they go out again before anything newer.
    pub fn requeue_front(&mut self, messages: impl DoubleEndedIterator<Item = Message>) {
        for message in messages.rev() {
            self.push_front(message);
        }
        self.enforce_limit();
    }

    /// Puts retained state at the front unless a newer value for its topic is already queued.
    pub fn push_front(&mut self, message: Message) {
        if message.retain {
            if self.position_of_state(&message.topic).is_some() {
                return;
            }
        } else {
            self.events += 1;
        }
        self.queue.push_front(message);
    }

    pub fn pop_front(&mut self) -> Option<Message> {
        let message = self.queue.pop_front()?;
        if !message.retain {
            self.events -= 1;
        }
        Some(message)
    }

    fn enforce_limit(&mut self) {
        while self.events > self.limit {
            let Some(oldest) = self.queue.iter().position(|m| !m.retain) else {
                return;
            };
            self.queue.remove(oldest);
            self.events -= 1;
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> Message {
        Message::event("e".into(), n.to_string().into_bytes())
    }

    fn drain(outbox: &mut Outbox) -> Vec<String> {
        std::iter::from_fn(|| outbox.pop_front())
            .map(|m| format!("{}={}", m.topic, String::from_utf8_lossy(&m.payload)))
            .collect()
    }

    #[test]
    fn keeps_order_and_drops_oldest_events_beyond_limit() {
        let mut outbox = Outbox::new(3);
        outbox.push(Message::state("s".into(), "on"));
        for n in 1..=5 {
            outbox.push(event(n));
        }
        assert_eq!(outbox.events(), 3);
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(drain(&mut outbox), ["s=on", "e=3", "e=4", "e=5"]);
        assert_eq!(outbox.events(), 0);
    }

    #[test]
    fn newer_state_replaces_queued_state_on_same_topic() {
        let mut outbox = Outbox::new(10);
        outbox.push(Message::state("label".into(), "cat"));
        outbox.push(event(1));
        outbox.push(Message::state("label".into(), "dog"));
        assert_eq!(drain(&mut outbox), ["e=1", "label=dog"]);
    }

    #[test]
    fn requeued_messages_go_first_in_order_and_stale_state_is_skipped() {
        let mut outbox = Outbox::new(3);
        outbox.push(event(3));
        outbox.push(Message::state("label".into(), "new"));
        outbox.requeue_front(
            vec![
                event(1),
                Message::state("label".into(), "old"),
                event(2),
                Message::state("status".into(), "online"),
            ]
            .into_iter(),
        );
        assert_eq!(
            drain(&mut outbox),
            ["e=1", "e=2", "status=online", "e=3", "label=new"]
        );
        assert_eq!(outbox.dropped(), 0);
    }

    #[test]
    fn requeue_beyond_limit_drops_the_oldest() {
        let mut outbox = Outbox::new(2);
        outbox.push(event(3));
        outbox.requeue_front(vec![event(1), event(2)].into_iter());
        assert_eq!(outbox.dropped(), 1);
        assert_eq!(drain(&mut outbox), ["e=2", "e=3"]);
    }
}
