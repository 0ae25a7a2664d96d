//! The leader executor: carries out the leader's actions (control requests within the fan-out
//! limit, commits, snapshots, probes, the end of a round).

use crate::lifecycle::Lifecycle;
use bytes::Bytes;
use ochopod_core::leader::{Answer, LeaderAction, RoundOutcome, Verdict};
use ochopod_core::wire::{ControlBody, Registration, Task};
use ochopod_core::ClusterView;
use ochopod_zk::ZkCommand;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

use super::{Driver, Msg};

impl<L: Lifecycle> Driver<L> {
    pub(super) fn do_leader(&mut self, action: LeaderAction) {
        let Some((_, epoch)) = &self.leader else {
            return;
        };
        let epoch = *epoch;
        match action {
            LeaderAction::Control {
                round,
                task,
                key,
                body,
                timeout_secs,
                request_timeout,
            } => {
                if task != Task::Ok && self.logged.round != round {
                    self.logged.round = round;
                    info!(
                        "configuration round {round}: asking {} pods to configure",
                        body.pods.len()
                    );
                }
                let addr = body.pods.get(&key).and_then(Registration::control_addr);
                let mismatch = body
                    .pods
                    .get(&key)
                    .and_then(|r| tls_mismatch(&key, r, self.settings.tls.is_some()));
                let (pods, deps) = self.body_cache.serialized(&body);
                let client = self.client.clone();
                let tx = self.tx.clone();
                let permits = Arc::clone(&self.fan_out);
                let active = Arc::clone(&self.active_round);
                if task != Task::Ok {
                    active.store(round, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::spawn(async move {
                    let Ok(permit) = permits.acquire_owned().await else {
                        return; // the semaphore is never closed
                    };
                    // Queued behind the fan-out limit while the round ended (aborted, or the
                    // leadership lost): not sent. `ok` is sent after the round's end.
                    if task != Task::Ok
                        && active.load(std::sync::atomic::Ordering::Relaxed) != round
                    {
                        return;
                    }
                    // Built once a permit is held: at most `fan_out` bodies exist at once.
                    let payload = control_body(&pods, &deps, &key);
                    let reply = match addr {
                        _ if mismatch.is_some() => {
                            Answer::new(Verdict::Unreachable, mismatch.unwrap_or_default())
                        }
                        None => Answer::new(
                            Verdict::Unreachable,
                            format!("pod {key} has no usable control address"),
                        ),
                        Some(addr) => {
                            client
                                .control(addr, task, timeout_secs, epoch, payload, request_timeout)
                                .await
                        }
                    };
                    if task == Task::Ok {
                        if reply.verdict != Verdict::Accepted {
                            warn!(%key, ?reply, "ok failed (logged only)");
                        }
                        return;
                    }
                    let _ = tx.send(Msg::LeaderReply {
                        round,
                        key,
                        reply,
                        permit,
                    });
                });
            }
            LeaderAction::Commit {
                round,
                hash,
                snapshot,
            } => {
                info!(round, %hash, pods = snapshot.len(), "committing configuration");
                let _ = self.zk.send(ZkCommand::Commit {
                    epoch,
                    round,
                    hash,
                    snapshot,
                });
            }
            LeaderAction::WriteSnapshot { snapshot } => {
                let _ = self.zk.send(ZkCommand::WriteSnapshot { epoch, snapshot });
            }
            LeaderAction::Probe { body } => {
                let l = Arc::clone(&self.lifecycle);
                let tx = self.tx.clone();
                let key = self.settings.key.clone();
                tokio::spawn(async move {
                    let r = match ClusterView::new(&key, &body) {
                        Ok(view) => match l.probe(&view).await {
                            Ok(s) => Ok(s.unwrap_or_default()),
                            Err(e) => Err(e.0),
                        },
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = tx.send(Msg::Probe(r));
                });
            }
            LeaderAction::RoundEnded {
                outcome,
                mut report,
            } => {
                self.active_round
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                report.started_ms = unix_ms().saturating_sub(report.duration_ms);
                let ok = outcome == RoundOutcome::Committed;
                if ok {
                    info!(outcome = %report.outcome, ms = report.duration_ms, "configuration round ended");
                } else {
                    // A failed round (a pod answered 401, a hook failed) is worth a look.
                    warn!(outcome = %report.outcome, ms = report.duration_ms, "configuration round failed");
                }
                self.shared.metrics.round(ok, report.duration_ms);
                let entry = ochopod_core::HistoryEntry::from_report(&report, &self.settings.key);
                let _ = self.zk.send(ZkCommand::RecordRound(entry));
                self.last_round = Some(report);
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The pods and dependencies of a step's body, serialized once per step (a round sends the same
/// body to every pod). It holds the body's `Arc` itself: comparing bare addresses would match a
/// new body allocated where a freed one was, and send the pods a stale view.
#[derive(Default)]
pub(super) struct BodyCache(Option<(Arc<ControlBody>, Bytes, Bytes)>);

impl BodyCache {
    fn serialized(&mut self, body: &Arc<ControlBody>) -> (Bytes, Bytes) {
        match &self.0 {
            Some((cached, pods, deps)) if Arc::ptr_eq(cached, body) => (pods.clone(), deps.clone()),
            _ => {
                let pods = Bytes::from(serde_json::to_vec(&body.pods).unwrap_or_default());
                let deps = Bytes::from(serde_json::to_vec(&body.dependencies).unwrap_or_default());
                self.0 = Some((Arc::clone(body), pods.clone(), deps.clone()));
                (pods, deps)
            }
        }
    }
}

/// The control body for pod `key`: `{"pods":..,"dependencies":..,"key":..}` from the step's
/// pre-serialized parts.
fn control_body(pods: &[u8], deps: &[u8], key: &str) -> Bytes {
    let key_json = serde_json::to_string(key).unwrap_or_default();
    let mut out = Vec::with_capacity(pods.len() + deps.len() + key_json.len() + 40);
    out.extend_from_slice(b"{\"pods\":");
    out.extend_from_slice(pods);
    out.extend_from_slice(b",\"dependencies\":");
    out.extend_from_slice(deps);
    out.extend_from_slice(b",\"key\":");
    out.extend_from_slice(key_json.as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

/// Why this leader cannot talk to the pod `key` registered as `reg`: one side speaks TLS (its
/// registration says `"tls": "true"`), the other plain HTTP.
fn tls_mismatch(key: &str, reg: &Registration, leader_tls: bool) -> Option<String> {
    let pod_tls = reg.extra.get("tls").and_then(serde_json::Value::as_str) == Some("true");
    (pod_tls != leader_tls).then(|| {
        let (pod, leader) = if pod_tls {
            ("serves TLS", "speaks plain HTTP")
        } else {
            ("serves plain HTTP", "speaks TLS")
        };
        format!(
            "pod {key} {pod} and this leader {leader}: give every pod of the cluster the same \
             tls_cert, tls_key and tls_ca (a secured cluster has no 1.x pods)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ochopod_core::wire::Pods;

    #[test]
    fn control_body_is_the_wire_control_body() {
        let mut pods = Pods::new();
        pods.insert(
            "k\"1".to_string(),
            Registration {
                cluster: "web".into(),
                namespace: "demo".into(),
                ip: "127.0.0.1".into(),
                ..Default::default()
            },
        );
        let body = ControlBody {
            pods: pods.clone(),
            dependencies: [("db".to_string(), pods)].into(),
            key: String::new(),
        };
        let p = serde_json::to_vec(&body.pods).unwrap();
        let d = serde_json::to_vec(&body.dependencies).unwrap();
        let out: ControlBody = serde_json::from_slice(&control_body(&p, &d, "k\"1")).unwrap();
        assert_eq!(out.pods, body.pods);
        assert_eq!(out.dependencies, body.dependencies);
        assert_eq!(out.key, "k\"1");
    }

    fn body_of(keys: &[&str]) -> Arc<ControlBody> {
        let pods: Pods = keys
            .iter()
            .map(|k| (k.to_string(), Registration::default()))
            .collect();
        Arc::new(ControlBody {
            pods,
            dependencies: Default::default(),
            key: String::new(),
        })
    }

    /// A round's body is serialized once, and a later body is never served the earlier bytes,
    /// even when the earlier one was freed and the allocator hands out its address again (the
    /// bug this cache once had: a new pod was sent the previous view and answered 400).
    #[test]
    fn body_cache_never_serves_a_freed_body() {
        let mut cache = BodyCache::default();
        for n in 1..50 {
            let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let body = body_of(&keys);
            let (pods, _) = cache.serialized(&body);
            let again = cache.serialized(&body).0;
            assert!(
                std::ptr::eq(pods.as_ptr(), again.as_ptr()),
                "serialized once"
            );
            let decoded: Pods = serde_json::from_slice(&pods).unwrap();
            assert_eq!(decoded.len(), n, "body {n} was served another body's bytes");
            drop(body);
        }
    }
}
