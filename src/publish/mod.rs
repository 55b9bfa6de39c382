//! MQTT publishing: events, retained state, snapshots, availability, Home Assistant discovery,
//! and the embedded broker.
