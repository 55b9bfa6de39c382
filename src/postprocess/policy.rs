//! [`PublishPolicy`]: which classifications of one camera become MQTT events.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Classification, PostprocessError};

/// When to publish a classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishMode {
    /// Every classification.
    Every,
    /// Only a label change held for `hold` consecutive classifications.
    #[default]
    OnChange,
}

/// The `[publish_policy]` config table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Publish every classification, or only label changes (the default).
    pub mode: PublishMode,
    /// Consecutive classifications with the same new label before it is published (`on_change`).
    pub hold: u32,
    /// Minimum time between two publishes (heartbeats excluded).
    pub min_interval_ms: u64,
    /// Heartbeat period in seconds; 0 disables heartbeats.
    pub heartbeat_s: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: PublishMode::OnChange,
            hold: 3,
            min_interval_ms: 0,
            heartbeat_s: 60,
        }
    }
}

impl PolicyConfig {
    /// Checks value ranges; errors name the `publish_policy.*` key.
    pub fn validate(&self) -> Result<(), PostprocessError> {
        self.validate_section("publish_policy")
    }

    /// [`PolicyConfig::validate`] for the table at key path `section`, e.g.
    /// `heads[0].publish_policy`.
    pub fn validate_section(&self, section: &str) -> Result<(), PostprocessError> {
        if self.hold == 0 {
            return Err(PostprocessError::Config {
                key: format!("{section}.hold"),
                problem: "must be at least 1".to_string(),
            });
        }
        Ok(())
    }
}

/// What to do with one classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Publish this classification.
    Publish,
    /// Nothing new, but the heartbeat is due: re-send the current state.
    Heartbeat,
    /// Publish nothing.
    Skip,
}

/// Publish state of one camera. Survives config reloads through [`PublishPolicy::reconfigure`].
///
/// - `every`: every classification is published, at most one per `min_interval_ms`.
/// - `on_change`: a classification is published when its label (top-1 or unknown label) differs
///   from the last published label and the same label was seen `hold` times in a row, so a
///   flickering top-1 publishes nothing. The first stable label after start counts as a change.
///   A due change held back by `min_interval_ms` is published by the next classification that
///   still carries it.
/// - In both modes, when nothing was published for `heartbeat_s` seconds (counted from the last
///   publish or heartbeat, or initially from the first classification), [`Decision::Heartbeat`]
///   tells the caller to re-send its current state so consumers know the camera is alive.
///   `heartbeat_s = 0` disables heartbeats.
#[derive(Debug, Clone)]
pub struct PublishPolicy {
    config: PolicyConfig,
    /// Label of the last published classification.
    published: Option<String>,
    /// The current run of identical labels and its length.
    streak: Option<(String, u32)>,
    last_publish: Option<Instant>,
    /// Start of the current heartbeat period: last publish, heartbeat, or first classification.
    last_sign_of_life: Option<Instant>,
}

impl PublishPolicy {
    /// A policy with no history.
    pub fn new(config: &PolicyConfig) -> Result<Self, PostprocessError> {
        config.validate()?;
        Ok(Self {
            config: config.clone(),
            published: None,
            streak: None,
            last_publish: None,
            last_sign_of_life: None,
        })
    }

    /// Switches to `config` keeping the history (last published label, current streak, timers).
    /// On error the old config stays in force.
    pub fn reconfigure(&mut self, config: &PolicyConfig) -> Result<(), PostprocessError> {
        config.validate()?;
        self.config = config.clone();
        Ok(())
    }

    /// The config in force.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The label of the last published classification, if any.
    pub fn published_label(&self) -> Option<&str> {
        self.published.as_deref()
    }

    /// Decides about `classification`, seen at `now`, and records the outcome.
    pub fn decide(&mut self, classification: &Classification, now: Instant) -> Decision {
        let label = classification.label.as_str();
        let run = match &mut self.streak {
            Some((streak_label, run)) if streak_label == label => {
                *run = run.saturating_add(1);
                *run
            }
            streak => {
                *streak = Some((label.to_string(), 1));
                1
            }
        };
        self.last_sign_of_life.get_or_insert(now);

        let wanted = match self.config.mode {
            PublishMode::Every => true,
            PublishMode::OnChange => {
                run >= self.config.hold && self.published.as_deref() != Some(label)
            }
        };
        let interval_passed = self.last_publish.is_none_or(|last| {
            now.saturating_duration_since(last)
                >= Duration::from_millis(self.config.min_interval_ms)
        });
        if wanted && interval_passed {
            if self.published.as_deref() != Some(label) {
                self.published = Some(label.to_string());
            }
            self.last_publish = Some(now);
            self.last_sign_of_life = Some(now);
            return Decision::Publish;
        }
        if self.heartbeat_due(now) {
            Decision::Heartbeat
        } else {
            Decision::Skip
        }
    }

    /// Whether a heartbeat is due at `now` (and if so, starts the next heartbeat period). For
    /// frames that were not classified at all, such as a static scene skipped by motion gating.
    pub fn heartbeat_due(&mut self, now: Instant) -> bool {
        let Some(sign_of_life) = self.last_sign_of_life else {
            return false;
        };
        let due = self.config.heartbeat_s > 0
            && now.saturating_duration_since(sign_of_life)
                >= Duration::from_secs(self.config.heartbeat_s);
        if due {
            self.last_sign_of_life = Some(now);
        }
        due
    }
}
