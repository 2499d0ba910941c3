//! `GET /metrics`: the agent's metrics in the Prometheus text format (OpenMetrics), with the
//! maintained `prometheus-client` crate: sessions active and total by runtime and outcome,
//! bytes relayed per direction, pulls and their durations, refusals and errors by kind.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A runtime label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Runtime {
    /// `docker` or `containerd`.
    pub runtime: String,
}

/// A session's runtime and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ended {
    /// `docker` or `containerd`.
    pub runtime: String,
    /// `completed`, `client_left`, `idle`, `failed`.
    pub outcome: String,
}

/// A direction of the relay.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    /// `stdin` (client to process) or `output` (process to client).
    pub direction: String,
}

/// How something ended, or what went wrong.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The kind.
    pub kind: String,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// TCP connections open now (at most `limits.maxConnections`).
    pub connections_open: Gauge,
    /// Sessions running now.
    pub sessions_active: Family<Runtime, Gauge>,
    /// Sessions ended.
    pub sessions: Family<Ended, Counter>,
    /// Payload bytes relayed.
    pub bytes: Family<Direction, Counter>,
    /// Pulls, by outcome (`done`, `failed`).
    pub pulls: Family<Kind, Counter>,
    /// How long pulls took, in seconds.
    pub pull_seconds: Histogram,
    /// Requests refused or failed, by kind (`bad_request`, `not_found`, `conflict`,
    /// `runtime`, `pull`, ...).
    pub errors: Family<Kind, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric, prefixed `kubectl_debug_agent_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kubectl_debug_agent");
        let connections_open = Gauge::default();
        let sessions_active = Family::<Runtime, Gauge>::default();
        let sessions = Family::<Ended, Counter>::default();
        let bytes = Family::<Direction, Counter>::default();
        let pulls = Family::<Kind, Counter>::default();
        let pull_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let errors = Family::<Kind, Counter>::default();
        registry.register(
            "connections_open",
            "TCP connections open now, of limits.maxConnections",
            connections_open.clone(),
        );
        registry.register(
            "sessions_active",
            "Debug sessions running now",
            sessions_active.clone(),
        );
        registry.register("sessions", "Debug sessions ended", sessions.clone());
        registry.register(
            "relayed_bytes",
            "Payload bytes relayed, per direction",
            bytes.clone(),
        );
        registry.register("pulls", "Image pulls, by outcome", pulls.clone());
        registry.register(
            "pull_duration_seconds",
            "How long image pulls took",
            pull_seconds.clone(),
        );
        registry.register(
            "errors",
            "Requests refused or failed, by kind",
            errors.clone(),
        );
        Metrics {
            registry,
            connections_open,
            sessions_active,
            sessions,
            bytes,
            pulls,
            pull_seconds,
            errors,
        }
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&Kind { kind: kind.into() }).inc();
    }

    /// The metrics as text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The kind of error an HTTP refusal code stands for.
pub fn kind_of(code: u16) -> &'static str {
    match code {
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        502 => "pull",
        503 => "runtime_unavailable",
        _ => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_in_the_prometheus_text_format() {
        let metrics = Metrics::new();
        metrics
            .sessions
            .get_or_create(&Ended {
                runtime: "docker".into(),
                outcome: "completed".into(),
            })
            .inc();
        metrics.error(kind_of(404));
        metrics.pull_seconds.observe(0.3);
        let text = metrics.encode();
        assert!(
            text.contains(
                "kubectl_debug_agent_sessions_total{runtime=\"docker\",outcome=\"completed\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("kubectl_debug_agent_errors_total{kind=\"not_found\"} 1"));
        assert!(text.contains("kubectl_debug_agent_pull_duration_seconds_count 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
