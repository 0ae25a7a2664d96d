//! Properties of both machines under random events, on the simulator of `sim/`.
//!
//! 1. Leader: a commit's snapshot is exactly the set of pods that answered 200 to `on` in that
//!    round, and no round commits while one of its pods did not answer 200 to `on`. Once the noise
//!    stops, the leader converges: clean, with the current hash committed.
//! 2. Pod: never two steps without a result in between (checked by the simulator on every
//!    action), and every control request gets exactly one reply.

mod sim;

use ochopod_core::leader::{Answer, LeaderAction, Verdict};
use ochopod_core::pod::{PodAction, StepResult};
use ochopod_core::settings::{GiveUp, ModelSettings, ProcessSettings};
use ochopod_core::wire::{Epoch, Task};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;
use sim::*;
use std::collections::{BTreeMap, BTreeSet};

const KEYS: [&str; 5] = ["pod-a", "pod-b", "pod-c", "pod-d", "pod-e"];

fn members(mask: u8) -> ochopod_core::Pods {
    let keys: Vec<&str> = KEYS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, k)| *k)
        .collect();
    pods(&keys)
}

#[derive(Clone, Debug)]
enum LeaderOp {
    Members(u8),
    Dependency(Option<u8>, bool),
    Answer(Index, u8),
    Commit(bool),
    Probe(bool),
    Advance(u32),
    Connected(bool),
}

fn leader_op() -> impl Strategy<Value = LeaderOp> {
    prop_oneof![
        2 => (0u8..32).prop_map(LeaderOp::Members),
        1 => (proptest::option::of(0u8..4), any::<bool>())
            .prop_map(|(s, p)| LeaderOp::Dependency(s, p)),
        8 => (any::<Index>(), 0u8..10).prop_map(|(i, r)| LeaderOp::Answer(i, r)),
        2 => (0u8..5).prop_map(|x| LeaderOp::Commit(x != 0)),
        1 => any::<bool>().prop_map(LeaderOp::Probe),
        3 => (0u32..40_000).prop_map(LeaderOp::Advance),
        1 => (0u8..4).prop_map(|x| LeaderOp::Connected(x != 0)),
    ]
}

fn reply(kind: u8) -> Answer {
    match kind {
        0 => answer(410, "dead"),
        1 => answer(500, "hook failed"),
        2 => unreachable("connection refused"),
        _ => accepted(),
    }
}

/// What the pods of one round answered, step by step.
#[derive(Default, Debug)]
struct Track {
    sent: BTreeMap<Task, BTreeSet<String>>,
    ok: BTreeMap<Task, BTreeSet<String>>,
    bad: BTreeMap<Task, BTreeSet<String>>,
    /// The pods and dependencies of the `on` body.
    on_body: Option<(ochopod_core::Pods, ochopod_core::Dependencies)>,
}

/// Checks every new action of the log against what the pods answered.
fn audit(s: &LeaderSim, from: usize, rounds: &mut BTreeMap<u64, Track>, full_shutdown: bool) {
    for (_, action) in &s.log[from..] {
        match action {
            LeaderAction::Control {
                round,
                task,
                key,
                body,
                ..
            } => {
                let t = rounds.entry(*round).or_default();
                if *task == Task::On {
                    t.on_body = Some((body.pods.clone(), body.dependencies.clone()));
                    // `on` goes to exactly the pods that passed the step before.
                    let before = if full_shutdown {
                        Task::Off
                    } else {
                        Task::Check
                    };
                    assert!(
                        t.ok.get(&before).is_some_and(|ok| ok.contains(key)),
                        "round {round}: on to {key}, which did not answer 200 to {before}"
                    );
                }
                t.sent.entry(*task).or_default().insert(key.clone());
            }
            LeaderAction::Commit {
                round,
                hash,
                snapshot,
            } => {
                let t = rounds.entry(*round).or_default();
                if t.sent.is_empty() {
                    // A round of no pods (every one gone or dead) sends nothing.
                    assert!(
                        snapshot.is_empty(),
                        "round {round}: a snapshot without a request"
                    );
                    continue;
                }
                let on_ok = t.ok.get(&Task::On).cloned().unwrap_or_default();
                let on_sent = t.sent.get(&Task::On).cloned().unwrap_or_default();
                let keys: BTreeSet<String> = snapshot.keys().cloned().collect();
                assert_eq!(
                    keys, on_ok,
                    "round {round}: snapshot = pods that accepted on"
                );
                assert_eq!(on_sent, on_ok, "round {round}: every pod asked accepted on");
                assert!(t.bad.get(&Task::On).is_none_or(BTreeSet::is_empty));
                let before = if full_shutdown {
                    Task::Off
                } else {
                    Task::Check
                };
                let passed = t.ok.get(&before).cloned().unwrap_or_default();
                assert_eq!(
                    on_ok, passed,
                    "round {round}: nobody who passed {before} is left out"
                );
                let Some((view, deps)) = t.on_body.clone() else {
                    // Every pod answered 410 before on: an empty configuration.
                    assert!(
                        snapshot.is_empty(),
                        "round {round}: a snapshot nobody accepted"
                    );
                    continue;
                };
                assert_eq!(
                    &view, snapshot,
                    "round {round}: configured with the snapshot's view"
                );
                assert_eq!(hash, &hash_with(snapshot, &deps), "round {round}: its hash");
            }
            _ => {}
        }
    }
}

/// Answers the `i`-th inflight request and records the answer for the audit.
fn answer_tracked(s: &mut LeaderSim, rounds: &mut BTreeMap<u64, Track>, i: usize, r: Answer) {
    let sent = s.inflight[i].clone();
    let t = rounds.entry(sent.round).or_default();
    let table = if r.verdict == Verdict::Accepted {
        &mut t.ok
    } else {
        &mut t.bad
    };
    table.entry(sent.task).or_default().insert(sent.key.clone());
    s.answer_index(i, r);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_commit_holds_exactly_the_pods_that_accepted_on(
        sequential in any::<bool>(),
        full_shutdown in any::<bool>(),
        damper in prop::sample::select(vec![0.0, 1.0, 30.0]),
        first in 0u8..32,
        ops in proptest::collection::vec(leader_op(), 1..80),
    ) {
        let mut s = LeaderSim::new(ModelSettings {
            sequential,
            full_shutdown,
            damper: secs(damper),
            depends_on: vec!["db".into()],
            has_probe: true,
            probe_every: secs(10.0),
            ..ModelSettings::default()
        });
        s.auto = false;
        let mut rounds: BTreeMap<u64, Track> = BTreeMap::new();
        s.elected(None, members(first));
        audit(&s, 0, &mut rounds, full_shutdown);
        for op in ops {
            let from = s.log.len();
            match op {
                LeaderOp::Members(mask) => s.members(members(mask)),
                LeaderOp::Dependency(snapshot, has_pods) => {
                    let snap = snapshot.map(|m| pods_in("prod", "db", &KEYS[..usize::from(m)]));
                    s.dependency("prod.db", snap, has_pods);
                }
                LeaderOp::Answer(i, kind) => {
                    if !s.inflight.is_empty() {
                        let i = i.index(s.inflight.len());
                        answer_tracked(&mut s, &mut rounds, i, reply(kind));
                    }
                }
                LeaderOp::Commit(ok) => {
                    if !s.commits.is_empty() {
                        s.answer_commit(if ok { Ok(()) } else { Err("fenced".into()) });
                    }
                }
                LeaderOp::Probe(ok) => {
                    if s.probing {
                        s.answer_probe(if ok { Ok("up".into()) } else { Err("down".into()) });
                    }
                }
                LeaderOp::Advance(ms) => {
                    let t = s.t().as_secs_f64() + f64::from(ms) / 1000.0;
                    s.run_until(t);
                }
                LeaderOp::Connected(c) => s.connection(c),
            }
            audit(&s, from, &mut rounds, full_shutdown);
        }
        // The noise stops: everybody answers 200, commits land, the session is up.
        let from = s.log.len();
        s.connection(true);
        // Requests still in flight get their answer (the runtime's HTTP timeout guarantees one).
        let horizon = origin() + s.t() + secs(600.0);
        for _ in 0..10_000 {
            let from = s.log.len();
            if !s.inflight.is_empty() {
                answer_tracked(&mut s, &mut rounds, 0, reply(9));
            } else if !s.commits.is_empty() {
                s.answer_commit(Ok(()));
            } else if s.probing {
                s.answer_probe(Ok("up".into()));
            } else if !s.step(horizon) {
                break;
            }
            audit(&s, from, &mut rounds, full_shutdown);
        }
        audit(&s, from, &mut rounds, full_shutdown);
        prop_assert_eq!(s.leader.state(), "leader");
        let current = s.leader.current_hash();
        prop_assert_eq!(s.leader.committed_hash(), Some(current.as_str()));
    }
}

#[derive(Clone, Debug)]
enum PodOp {
    /// A control request: task, epoch (czxid), deadline in ms from now, a body for this pod.
    Control(Task, Option<i64>, Option<u32>, bool),
    /// The outstanding step ends: Ok or Err.
    Result(bool),
    /// The live process exits with this code.
    Exit(Option<i32>),
    Advance(u32),
    ResetEpoch,
}

fn pod_op() -> impl Strategy<Value = PodOp> {
    let task = prop::sample::select(Task::ALL.to_vec());
    prop_oneof![
        4 => (
            task,
            proptest::option::of(0i64..4),
            proptest::option::weighted(0.2, 0u32..20_000),
            (0u8..8).prop_map(|x| x != 0),
        )
            .prop_map(|(t, e, d, b)| PodOp::Control(t, e, d, b)),
        6 => (0u8..6).prop_map(|x| PodOp::Result(x != 0)),
        1 => prop::sample::select(vec![Some(0), Some(1), Some(137), None]).prop_map(PodOp::Exit),
        3 => (0u32..90_000).prop_map(PodOp::Advance),
        1 => Just(PodOp::ResetEpoch),
    ]
}

fn step_result(step: &PodAction, ok: bool) -> StepResult {
    match (step, ok) {
        (PodAction::Configure { .. }, true) => StepResult::Configured(Ok(())),
        (PodAction::Configure { .. }, false) => StepResult::Configured(Err("template".into())),
        (PodAction::Spawn, true) => StepResult::Spawned(Ok(0)), // the simulator picks the pid
        (PodAction::Spawn, false) => StepResult::Spawned(Err("ENOENT".into())),
        (_, true) => StepResult::Hook(Ok(json!({"m": 1}))),
        (_, false) => StepResult::Hook(Err("exit 1".into())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn one_step_at_a_time_and_exactly_one_reply_per_request(
        strict in any::<bool>(),
        start in any::<bool>(),
        soft in any::<bool>(),
        ignores_term in any::<bool>(),
        exit_on_give_up in any::<bool>(),
        checks in 1u32..4,
        ops in proptest::collection::vec(pod_op(), 1..80),
    ) {
        let mut s = PodSim::new(ProcessSettings {
            strict,
            start,
            soft,
            checks,
            grace: secs(5.0),
            check_every: secs(10.0),
            restart_delay: secs(1.0),
            restart_delay_max: secs(8.0),
            on_give_up: if exit_on_give_up { GiveUp::Exit } else { GiveUp::Off },
            ..ProcessSettings::default()
        });
        s.on_term = if ignores_term { OnTerm::Ignores } else { OnTerm::Exits };
        s.auto = false;
        for op in ops {
            match op {
                PodOp::Control(task, epoch, deadline, for_me) => {
                    let keys: &[&str] = if for_me { &["pod-a", "pod-b"] } else { &["pod-b"] };
                    let b = body(&pods(keys), &ochopod_core::Dependencies::new());
                    let epoch = epoch.map(|czxid| Epoch { czxid, seq: 1 });
                    let deadline = deadline.map(|ms| s.now + secs(f64::from(ms) / 1000.0));
                    s.request(task, b, epoch, deadline);
                }
                PodOp::Result(ok) => {
                    if let Some(step) = s.step.clone() {
                        let mut r = step_result(&step, ok);
                        if let StepResult::Spawned(Ok(_)) = r {
                            s.next_pid += 1;
                            r = StepResult::Spawned(Ok(s.next_pid));
                        }
                        s.result(r);
                    }
                }
                PodOp::Exit(code) => {
                    if s.alive.is_some() {
                        s.exit(code);
                    }
                }
                PodOp::Advance(ms) => s.run_for(f64::from(ms) / 1000.0),
                PodOp::ResetEpoch => s.m.reset_epoch(),
            }
        }
        // Steps end, timers run: every request must have been answered exactly once.
        s.auto = true;
        s.run_for(3600.0);
        prop_assert!(s.step.is_none());
        let mut count: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, id, _, _) in &s.replies {
            *count.entry(*id).or_default() += 1;
        }
        for id in &s.sent {
            prop_assert_eq!(count.get(id).copied(), Some(1), "request {} ({:?})", id, s.log);
        }
        prop_assert_eq!(count.len(), s.sent.len(), "replies only to requests sent");
    }
}
