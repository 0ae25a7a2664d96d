//! `/metrics`: Prometheus text exposition, with the maintained `prometheus-client` crate.

use ochopod_core::pod::PodMachine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

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
    checks: Arc<CheckGauges>,
}

impl Metrics {
    /// `labels` identify the pod on the gauges made of its sanity check's numbers (namespace,
    /// cluster, key).
    pub(crate) fn new(labels: Vec<(String, String)>) -> Self {
        let mut registry = Registry::with_prefix("ochopod");
        let checks = Arc::new(CheckGauges {
            labels: labels
                .into_iter()
                .map(|(k, v)| (k, escape_label(&v)))
                .collect(),
            values: RwLock::new(Vec::new()),
        });
        registry.register_collector(Box::new(CheckCollector(Arc::clone(&checks))));
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
            checks,
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

    /// Reads the pod machine's own counters (after every batch of messages).
    pub(crate) fn observe_pod(&self, pod: &PodMachine) {
        // The counter follows the machine's: it only ever moves up by what is new.
        let seen = self.restarts.get();
        if pod.restarts() > seen {
            self.restarts.inc_by(pod.restarts() - seen);
        }
        self.sanity_failures.set(pod.sanity_failures());
        self.process_running.set(i64::from(pod.pid().is_some()));
        // As `/info` shows them: the last check's numbers while the process runs, none otherwise.
        let values = match pod.metrics() {
            Value::Object(m) if pod.pid().is_some() => check_values(m),
            _ => Vec::new(),
        };
        *self.checks.values.write().expect("check gauges lock") = values;
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The gauges made of the last sanity check's numbers: `ochopod_check_<name>{namespace, cluster,
/// key}`, encoded on each scrape.
#[derive(Debug)]
struct CheckGauges {
    labels: Vec<(String, String)>,
    /// (metric name without the prefix, the key path it came from, value), sorted by name.
    values: RwLock<Vec<(String, String, f64)>>,
}

#[derive(Debug)]
struct CheckCollector(Arc<CheckGauges>);

impl Collector for CheckCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let values = self.0.values.read().expect("check gauges lock");
        for (name, path, value) in values.iter() {
            let gauge = ConstGauge::new(*value);
            let help = format!("What the sanity check returned as {path}");
            let mut metric = encoder.encode_descriptor(name, &help, None, gauge.metric_type())?;
            gauge.encode(metric.encode_family(&self.0.labels)?)?;
        }
        Ok(())
    }
}

/// The numbers of a sanity check's object as gauges: a number as it is, `true`/`false` as 1/0,
/// a nested object's numbers under `<outer>_<inner>`; strings, lists and nulls are skipped (a
/// gauge holds one number). Names keep `[A-Za-z0-9_]` and turn anything else into `_`; when two
/// keys end up with the same name, the first in key order wins.
fn check_values(object: &serde_json::Map<String, Value>) -> Vec<(String, String, f64)> {
    fn walk(
        object: &serde_json::Map<String, Value>,
        name: &str,
        path: &str,
        out: &mut Vec<(String, String, f64)>,
    ) {
        for (k, v) in object {
            let name = if name.is_empty() {
                format!("check_{}", metric_name(k))
            } else {
                format!("{name}_{}", metric_name(k))
            };
            let path = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match v {
                Value::Number(n) => {
                    if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                        out.push((name, path, f));
                    }
                }
                Value::Bool(b) => out.push((name, path, f64::from(u8::from(*b)))),
                Value::Object(inner) => walk(inner, &name, &path, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(object, "", "", &mut out);
    // Stable order and one gauge per name (Prometheus rejects a name twice).
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|later, first| later.0 == first.0);
    out.iter_mut().for_each(|(_, p, _)| *p = escape_help(p));
    out
}

/// A Prometheus metric name part: `[A-Za-z0-9_]`, anything else as `_`.
fn metric_name(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// A label value as the text format writes it (the encoder writes it as given).
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A `# HELP` text as the text format writes it.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels() -> Vec<(String, String)> {
        vec![
            ("namespace".into(), "prod".into()),
            ("cluster".into(), "kafka".into()),
            ("key".into(), "a\"b".into()),
        ]
    }

    #[test]
    fn numbers_and_booleans_become_gauges_with_the_pod_labels() {
        let Value::Object(m) = json!({
            "calls": 3, "lag-ms": 1.5, "healthy": true, "name": "x", "list": [1],
            "disk": {"free": 10, "used %": 90}, "none": null
        }) else {
            unreachable!()
        };
        let metrics = Metrics::new(labels());
        *metrics.checks.values.write().unwrap() = check_values(&m);
        let text = metrics.encode();
        let l = r#"{namespace="prod",cluster="kafka",key="a\"b"}"#;
        for line in [
            format!("ochopod_check_calls{l} 3.0"),
            format!("ochopod_check_lag_ms{l} 1.5"),
            format!("ochopod_check_healthy{l} 1.0"),
            format!("ochopod_check_disk_free{l} 10.0"),
            format!("ochopod_check_disk_used__{l} 90.0"),
            "# TYPE ochopod_check_calls gauge".to_string(),
            "# HELP ochopod_check_disk_used__ What the sanity check returned as disk.used %".into(),
        ] {
            assert!(text.lines().any(|t| t == line), "{line} missing in\n{text}");
        }
        assert!(
            !text.contains("check_name"),
            "strings are no gauges:\n{text}"
        );
        assert!(!text.contains("check_list"), "lists are no gauges:\n{text}");
        assert!(!text.contains("check_none"), "nulls are no gauges:\n{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn names_that_collide_keep_the_first_key() {
        let Value::Object(m) = json!({"a b": 1, "a-b": 2}) else {
            unreachable!()
        };
        let v = check_values(&m);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "check_a_b");
    }

    #[test]
    fn no_check_no_gauges() {
        let metrics = Metrics::new(labels());
        assert!(!metrics.encode().contains("ochopod_check_"));
    }
}
