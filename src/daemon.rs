//! Orchestration: camera threads, latest-frame slots, inference, publishing, signals, systemd.
