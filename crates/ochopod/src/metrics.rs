//! `/metrics`: Prometheus text exposition, with the maintained `prometheus-client` crate.

use ochopod_core::pod::PodMachine;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The agent's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) rounds_ok: Counter,
    pub(crate) rounds_failed: Counter,
    pub(crate) round_seconds: Histogram,
    pub(crate) restarts: Counter,
    pub(crate) sanity_failures: Gauge<u64, AtomicU64>,
    pub(crate) leader: Gauge,
    pub(crate) zk_connected: Gauge,
    pub(crate) process_running: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("ochopod");
        let m = Metrics {
            rounds_ok: Counter::default(),
            rounds_failed: Counter::default(),
            round_seconds: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            restarts: Counter::default(),
            sanity_failures: Gauge::default(),
            leader: Gauge::default(),
            zk_connected: Gauge::default(),
            process_running: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "configuration_rounds_ok",
            "Configuration rounds committed by this pod as leader",
            m.rounds_ok.clone(),
        );
        registry.register(
            "configuration_rounds_failed",
            "Configuration rounds aborted by this pod as leader",
            m.rounds_failed.clone(),
        );
        registry.register(
            "configuration_round_seconds",
            "Duration of configuration rounds led by this pod",
            m.round_seconds.clone(),
        );
        registry.register(
            "process_restarts",
            "Restarts of the sub-process after it crashed",
            m.restarts.clone(),
        );
        registry.register(
            "sanity_check_failures",
            "Failed sanity checks since the agent started",
            m.sanity_failures.clone(),
        );
        registry.register(
            "leader",
            "1 while this pod leads its cluster",
            m.leader.clone(),
        );
        registry.register(
            "zookeeper_connected",
            "1 while the ZooKeeper session is connected",
            m.zk_connected.clone(),
        );
        registry.register(
            "process_running",
            "1 while the sub-process is alive",
            m.process_running.clone(),
        );
        Metrics { registry, ..m }
    }

    pub(crate) fn round(&self, ok: bool, duration_ms: u64) {
        if ok {
            self.rounds_ok.inc();
        } else {
            self.rounds_failed.inc();
        }
        self.round_seconds.observe(duration_ms as f64 / 1000.0);
    }

    pub(crate) fn observe_pod(&self, pod: &PodMachine) {
        self.sanity_failures.set(pod.sanity_failures());
        self.process_running.set(i64::from(pod.pid().is_some()));
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
