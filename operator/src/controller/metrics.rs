//! Prometheus metrics and the HTTP endpoints `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconcile passes by result (`converged`, `not_ready`, `rejected`, `error`).
    pub passes: IntCounterVec,
    /// Host failures by reason (`unreachable`, `host_key_mismatch`, `apply_failed`, ...).
    pub failures: IntCounterVec,
    /// Duration of a mesh pass.
    pub pass_duration: Histogram,
    /// Steps applied on hosts.
    pub steps_applied: IntCounter,
    /// Reachable hosts per mesh at the last pass.
    pub hosts_reachable: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let passes = IntCounterVec::new(
            Opts::new("gremesh_passes_total", "Mesh reconcile passes by result"),
            &["result"],
        )
        .expect("static metric");
        let failures = IntCounterVec::new(
            Opts::new("gremesh_host_failures_total", "Host failures by reason"),
            &["reason"],
        )
        .expect("static metric");
        let pass_duration = Histogram::with_opts(
            HistogramOpts::new("gremesh_pass_duration_seconds", "Duration of one mesh pass")
                .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        )
        .expect("static metric");
        let steps_applied =
            IntCounter::new("gremesh_steps_applied_total", "Steps applied on hosts")
                .expect("static metric");
        let hosts_reachable = IntGaugeVec::new(
            Opts::new(
                "gremesh_hosts_reachable",
                "Reachable hosts per mesh at the last pass",
            ),
            &["mesh"],
        )
        .expect("static metric");
        for c in [
            Box::new(passes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(pass_duration.clone()),
            Box::new(steps_applied.clone()),
            Box::new(hosts_reachable.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            passes,
            failures,
            pass_duration,
            steps_applied,
            hosts_reachable,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

/// Serves the endpoints until the process ends. `/readyz` answers 200 once `ready` is set
/// (the operator reached the API server), 503 before.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Shared>| async move { s.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Shared>| async move {
                if s.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(Shared { metrics, ready });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
