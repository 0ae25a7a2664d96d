//! Fixtures shared by the criterion benches and the instruction-count guard: clusters of
//! realistic registrations (every key an agent writes) and a leader ready for one step.

#![allow(dead_code, unreachable_pub)]

use ochopod_core::leader::{Answer, Leader, LeaderAction, Verdict};
use ochopod_core::settings::ModelSettings;
use ochopod_core::wire::Task;
use ochopod_core::{ControlBody, Dependencies, Pods, Registration};
use serde_json::json;
use std::time::Instant;

/// The key of pod `i` (a UUID, as the agent makes them).
pub fn key(i: usize) -> String {
    format!("6f1c2d3e-{:04x}-4000-8000-{:012x}", i % 0x1_0000, i)
}

/// A registration as an agent of the `local` binding writes it.
pub fn registration(i: usize) -> Registration {
    let mut reg = Registration {
        cluster: "web".into(),
        namespace: "bench".into(),
        binding: "local".into(),
        fwk: "local".into(),
        ip: format!("10.0.{}.{}", i / 250, i % 250 + 1),
        public: String::new(),
        port: "8080".into(),
        node: format!("node-{i}"),
        application: "web".into(),
        task: format!("task-{i}"),
        seq: Some(i as u64),
        zk: "127.0.0.1:2181".into(),
        protocol: Some(2),
        ..Default::default()
    };
    reg.ports
        .insert("8080".into(), 20_000 + (i % 40_000) as u16);
    reg.ports
        .insert("9000".into(), 30_000 + (i % 30_000) as u16);
    reg.extra.insert("status".into(), json!(""));
    reg.extra.insert("debug".into(), json!(false));
    reg.extra.insert("local".into(), json!(true));
    reg.extra.insert("start".into(), json!(true));
    reg
}

/// `n` pods, by key.
pub fn pods(n: usize) -> Pods {
    (0..n).map(|i| (key(i), registration(i))).collect()
}

/// The control body of an `on` to a cluster of `n` pods, addressed to the middle pod.
pub fn body(n: usize) -> ControlBody {
    ControlBody {
        pods: pods(n),
        dependencies: Dependencies::new(),
        key: key(n / 2),
    }
}

/// A leader of a clean, committed cluster of `n - 1` pods, and the `n`-pod membership that a
/// join makes (hand it to `handle_members`).
pub fn leader_before_join(n: usize, now: Instant) -> (Leader, Pods) {
    let all = pods(n);
    let mut before = all.clone();
    before.remove(&key(n - 1));
    let mut leader = Leader::new(ModelSettings::default(), "bench.web", Vec::new());
    let committed =
        ochopod_core::hash::config_hash(&before, &Default::default(), &Dependencies::new());
    leader.handle_elected(now, Some(committed), before, Vec::new());
    while leader.poll_action().is_some() {}
    (leader, all)
}

/// One leader step: a pod joins; the leader hashes, starts a round and hands out every `check`.
/// Returns the number of actions drained.
pub fn members_step(leader: &mut Leader, members: Pods, now: Instant) -> usize {
    leader.handle_members(now, members);
    let mut n = 0;
    while leader.poll_action().is_some() {
        n += 1;
    }
    n
}

/// A whole round after a join: every pod answers 200 to `check` and `on`, the commit lands.
/// Returns the number of actions drained.
pub fn full_round(leader: &mut Leader, members: Pods, now: Instant) -> usize {
    leader.handle_members(now, members);
    let mut drained = 0;
    let mut pending: Vec<LeaderAction> = Vec::new();
    loop {
        while let Some(action) = leader.poll_action() {
            drained += 1;
            pending.push(action);
        }
        if pending.is_empty() {
            return drained;
        }
        for action in pending.drain(..) {
            match action {
                LeaderAction::Control {
                    round, task, key, ..
                } if task != Task::Ok => {
                    leader.handle_reply(now, round, &key, Answer::new(Verdict::Accepted, "200"))
                }
                LeaderAction::Commit { round, .. } => leader.handle_commit(now, round, Ok(())),
                _ => {}
            }
        }
    }
}
