//! The HTTP server: health and readiness, Prometheus metrics and the JSON API, on one port.

pub mod api;
pub mod health;
pub mod metrics;
