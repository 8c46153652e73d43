//! Everything that turns a published snapshot into bytes for someone else:
//! the metric table, the text formats (Prometheus and OpenMetrics), gzip, the
//! cached bodies a scrape serves, and the OTLP push.
//!
//! Reads snapshots and telemetry; never polls, never changes either, and
//! knows nothing of HTTP connections or routes (`http` serves what is
//! published here).

mod agents;
#[cfg(test)]
pub(crate) mod fixtures;
mod gzip;
pub mod otlp;
mod published;
pub mod table;
mod text;

pub use gzip::{InflateError, PlainText};
pub(crate) use published::Rows;
pub use published::{Body, Exposition, Published};
pub use text::Format;
pub(crate) use text::{deny_set, is_denied};
