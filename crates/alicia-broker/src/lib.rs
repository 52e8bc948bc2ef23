//! Embedded MQTT broker.
