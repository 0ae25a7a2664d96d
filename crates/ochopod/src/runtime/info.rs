//! The publisher: what `/info`, `/readyz` and `/metrics` serve, and what the pod log says about
//! the pod's state, refreshed after every batch of messages.

use crate::lifecycle::Lifecycle;
use ochopod_core::wire::{Info, PROTOCOL};
use serde_json::Value;
use tracing::{info, warn};

use super::Driver;

impl<L: Lifecycle> Driver<L> {
    /// Writes what changed in the pod's state to the log: its process state (`running ->
    /// stopped` when turned off) and a new failure (a crash and its restart delay, a failed
    /// check, the circuit breaker).
    pub(super) fn log_changes(&mut self) {
        let process = self.pod.process();
        match self.logged.process.replace(process) {
            Some(old) if old != process => {
                info!("process {} -> {}", old.as_str(), process.as_str());
            }
            _ => {}
        }
        // A failed check, with its reason and its count, as 1.x words it.
        let checks = self.pod.sanity_failures();
        if checks > self.logged.checks {
            self.logged.checks = checks;
            warn!(
                "sanity check ({}/{}) failed -> {}",
                self.pod.failed_checks(),
                self.settings.process.checks.max(1),
                self.pod.last_check_failure().unwrap_or("")
            );
        }
        let failure = self.pod.last_failure();
        if failure != self.logged.failure.as_deref() {
            match failure {
                // Said just above.
                Some(f) if f.starts_with("sanity check failed: ") => {}
                Some(f) => warn!("{f}"),
                None => {}
            }
            self.logged.failure = failure.map(String::from);
        }
    }

    pub(super) fn publish(&self) {
        let now = crate::clock::now();
        let mut registration = self.settings.registration.clone();
        registration.seq = self.seq;
        registration.scrub_secrets();
        let (state, status, round_failure, pending_ms) = match &self.leader {
            Some((l, _)) => (
                l.state().to_string(),
                l.status(now),
                l.round_failure().map(String::from),
                l.dirty_since()
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            ),
            None => ("follower".to_string(), String::new(), None, None),
        };
        // As in 1.x: the last sanity check's metrics while the process runs, `{}` otherwise.
        let metrics = match self.pod.metrics() {
            m @ Value::Object(_) if self.pod.pid().is_some() => m.clone(),
            _ => Value::Object(Default::default()),
        };
        let info = Info {
            application: registration.application.clone(),
            dependencies: self.settings.model.depends_on.clone(),
            ip: registration.ip.clone(),
            metrics,
            node: registration.node.clone(),
            port: registration.port.clone(),
            ports: registration.ports.clone(),
            process: self.pod.process().as_str().to_string(),
            public: registration.public.clone(),
            state,
            status,
            task: registration.task.clone(),
            protocol: PROTOCOL,
            key: self.settings.key.clone(),
            seq: self.seq,
            cluster: registration.full_cluster(),
            registration,
            pid: self.pod.pid(),
            failed_checks: self.pod.failed_checks(),
            last_failure: self.pod.last_failure().map(String::from),
            zk: self.session.to_string(),
            last_round: self.last_round.clone(),
            round_failure,
            pending_ms,
            unreadable: self.unreadable.clone(),
            paused: self.leader.as_ref().and_then(|(l, _)| l.pause_status()),
        };
        let value = serde_json::to_value(&info).unwrap_or(Value::Null);
        *self.shared.info_value.write().expect("info lock") = value;
        self.shared
            .ready
            .store(self.pod.ready(), std::sync::atomic::Ordering::Relaxed);
        self.shared.metrics.observe_pod(&self.pod);
    }
}
