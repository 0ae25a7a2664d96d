//! The leader's rules (`docs/protocol.md#the-leader`), one test each, on the simulator of `sim/`.

mod sim;

use ochopod_core::leader::{Answer, LeaderAction};
use ochopod_core::settings::ModelSettings;
use ochopod_core::wire::{Dependencies, Pods, Task};
use sim::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn ok() -> Answer {
    accepted()
}

fn keys(p: &Pods) -> Vec<&str> {
    p.keys().map(String::as_str).collect()
}

/// A leader of a clean `{pod-a, pod-b}` cluster.
fn clean(settings: ModelSettings) -> LeaderSim {
    let members = pods(&["pod-a", "pod-b"]);
    let mut s = LeaderSim::new(settings);
    s.elected(Some(hash_of(&members)), members);
    s.log.clear();
    s
}

#[test]
fn a_hash_mismatch_waits_for_the_damper() {
    for damper in [0.0, 1.5, 30.0] {
        let mut s = clean(model(damper));
        s.at(2.0).members(pods(&["pod-a", "pod-b", "pod-c"]));
        if damper > 0.0 {
            assert_eq!(s.leader.state(), "leader (configuration pending)");
            s.run_until(2.0 + damper - 0.001);
            assert!(s.controls().is_empty(), "damper {damper}: sent early");
        }
        s.run_until(2.0 + damper + 100.0);
        let starts = s.round_starts();
        assert_eq!(starts.len(), 1, "damper {damper}: one round");
        assert_eq!(
            starts[0].1,
            secs(2.0 + damper),
            "damper {damper}: starts when it ends"
        );
        assert_eq!(s.commit_log().len(), 1);
        assert_eq!(s.leader.state(), "leader");
    }
}

#[test]
fn a_change_back_to_the_committed_hash_cancels_the_round() {
    // (what happens, when) with a 30 s damper: every case comes back before it runs out.
    type Case = (&'static str, &'static [(f64, &'static [&'static str])]);
    let table: &[Case] = &[
        (
            "a pod vanishes and re-registers",
            &[(1.0, &["pod-a"]), (29.0, &["pod-a", "pod-b"])],
        ),
        (
            "a pod joins and leaves",
            &[
                (5.0, &["pod-a", "pod-b", "pod-c"]),
                (6.0, &["pod-a", "pod-b"]),
            ],
        ),
        (
            "several moves",
            &[(1.0, &[]), (2.0, &["pod-b"]), (3.0, &["pod-a", "pod-b"])],
        ),
    ];
    for (what, steps) in table {
        let mut s = clean(model(30.0));
        for (t, members) in *steps {
            s.run_until(*t);
            s.members(pods(members));
        }
        assert_eq!(s.leader.state(), "leader", "{what}");
        s.run_until(600.0);
        assert!(s.controls().is_empty(), "{what}: no control action at all");
        assert!(s.commit_log().is_empty(), "{what}: nothing committed");
    }
}

#[test]
fn a_round_runs_check_then_off_iff_full_shutdown_then_on_then_ok_then_commits() {
    for full_shutdown in [false, true] {
        let mut s = LeaderSim::new(ModelSettings {
            full_shutdown,
            ..ModelSettings::default()
        });
        let members = pods(&["pod-a", "pod-b", "pod-c"]);
        s.elected(None, members.clone());
        s.run_until(1.0);
        let tasks: Vec<Task> = s.controls().iter().map(|c| c.2).collect();
        let mut expected = vec![Task::Check; 3];
        if full_shutdown {
            expected.extend([Task::Off; 3]);
        }
        expected.extend([Task::On; 3]);
        expected.extend([Task::Ok; 3]);
        assert_eq!(tasks, expected, "full_shutdown {full_shutdown}");
        // The commit comes after every ok, with the pods that accepted on.
        let last_ok = s
            .log
            .iter()
            .rposition(|(_, a)| matches!(a, LeaderAction::Control { task: Task::Ok, .. }))
            .unwrap();
        let commit = s
            .log
            .iter()
            .position(|(_, a)| matches!(a, LeaderAction::Commit { .. }))
            .expect("a commit");
        assert!(commit > last_ok, "ok before commit");
        let (_, _, hash, snapshot) = &s.commit_log()[0];
        assert_eq!(snapshot, &members);
        assert_eq!(hash, &hash_of(&members));
        assert_eq!(s.leader.committed_hash(), Some(hash.as_str()));
        assert_eq!(s.outcomes(), vec!["ok".to_string()]);
    }
}

#[test]
fn the_commit_holds_exactly_the_pods_that_accepted_on() {
    // The snapshot is the round's pods, not the membership when the commit is written.
    let mut s = LeaderSim::new(ModelSettings::default());
    s.auto = false;
    s.elected(None, pods(&["pod-a", "pod-b"]));
    for k in ["pod-a", "pod-b"] {
        s.answer(k, ok()); // check
    }
    s.members(pods(&["pod-a", "pod-b", "pod-c"])); // joins during on
    for k in ["pod-a", "pod-b"] {
        s.answer(k, ok()); // on
    }
    let (_, _, _, snapshot) = &s.commit_log()[0];
    assert_eq!(keys(snapshot), vec!["pod-a", "pod-b"]);
}

#[test]
fn sequential_sends_one_at_a_time_in_key_order_and_parallel_sends_all() {
    for sequential in [true, false] {
        let mut s = LeaderSim::new(ModelSettings {
            sequential,
            ..ModelSettings::default()
        });
        s.auto = false;
        // Inserted out of order: the order is the keys'.
        let members = pods(&["pod-c", "pod-a", "pod-b"]);
        s.elected(None, members);
        for task in [Task::Check, Task::On] {
            let mut order = Vec::new();
            while order.len() < 3 {
                let expected = if sequential { 1 } else { 3 - order.len() };
                assert_eq!(
                    s.inflight.len(),
                    expected,
                    "sequential {sequential}, {task}"
                );
                assert!(s.inflight.iter().all(|x| x.task == task));
                let key = s.inflight[0].key.clone();
                s.answer(&key, ok());
                order.push(key);
            }
            assert_eq!(
                order,
                vec!["pod-a", "pod-b", "pod-c"],
                "sequential {sequential}"
            );
        }
        assert_eq!(s.commits.len(), 1);
    }
}

#[test]
fn a_pod_answering_410_at_check_is_dropped_from_on_the_commit_and_later_hashes() {
    for sequential in [false, true] {
        let mut s = LeaderSim::new(ModelSettings {
            sequential,
            ..ModelSettings::default()
        });
        s.reply = Box::new(|_, task, key| match (task, key) {
            (Task::Check, "pod-b") => answer(410, "dead"),
            _ => accepted(),
        });
        s.elected(None, pods(&["pod-a", "pod-b", "pod-c"]));
        s.run_until(1.0);
        let to_b: Vec<Task> = s
            .controls()
            .iter()
            .filter(|c| c.3 == "pod-b")
            .map(|c| c.2)
            .collect();
        assert_eq!(
            to_b,
            vec![Task::Check],
            "only the check reached the dead pod"
        );
        for (_, a) in &s.log {
            if let LeaderAction::Control {
                task: Task::On,
                body,
                ..
            } = a
            {
                assert_eq!(keys(&body.pods), vec!["pod-a", "pod-c"]);
            }
        }
        assert_eq!(s.outcomes(), vec!["ok".to_string()], "dropped, not aborted");
        let (_, round, hash, snapshot) = &s.commit_log()[0];
        assert_eq!(*round, 1, "the same round goes on");
        assert_eq!(keys(snapshot), vec!["pod-a", "pod-c"]);
        let live = pods(&["pod-a", "pod-c"]);
        assert_eq!(hash, &hash_of(&live));
        assert!(s.leader.dead().contains("pod-b"));
        // The dead pod's registration is still there: the cluster is clean all the same.
        assert_eq!(s.leader.current_hash(), hash_of(&live));
        assert_eq!(s.leader.state(), "leader");
        // A later change: the next round and its hash still leave the dead pod out.
        s.members(pods(&["pod-a", "pod-b", "pod-c", "pod-d"]));
        s.run_until(2.0);
        let commits = s.commit_log();
        assert_eq!(commits.len(), 2);
        assert_eq!(keys(&commits[1].3), vec!["pod-a", "pod-c", "pod-d"]);
        assert_eq!(commits[1].2, hash_of(&pods(&["pod-a", "pod-c", "pod-d"])));
        assert!(s
            .controls()
            .iter()
            .filter(|c| c.1 == 2)
            .all(|c| c.3 != "pod-b"));
    }
}

#[test]
fn a_pod_answering_410_during_on_aborts_and_the_retry_leaves_it_out() {
    let mut s = LeaderSim::new(model(0.0));
    s.reply = Box::new(|_, task, key| match (task, key) {
        (Task::On, "pod-b") => answer(410, "dead"),
        _ => accepted(),
    });
    s.elected(None, pods(&["pod-a", "pod-b", "pod-c"]));
    s.run_until(5.0);
    // The others were configured with the dead pod: the round aborts, the retry drops it.
    assert!(s.outcomes()[0].contains("pod-b"), "{:?}", s.outcomes());
    let starts = s.round_starts();
    assert_eq!(
        starts.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![secs(0.0), secs(1.0)]
    );
    let (_, round, _, snapshot) = &s.commit_log()[0];
    assert_eq!(*round, 2);
    assert_eq!(keys(snapshot), vec!["pod-a", "pod-c"]);
    assert!(s
        .controls()
        .iter()
        .filter(|c| c.1 == 2)
        .all(|c| c.3 != "pod-b"));
}

#[test]
fn any_other_failure_aborts_and_retries_with_a_capped_doubling_backoff() {
    // (task that fails, reply, damper, expected gaps between round starts)
    let fail = |code: u16| answer(code, "nope");
    let gaps_1s = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0];
    let table: Vec<(Task, Answer, f64, &[f64])> = vec![
        (Task::Check, fail(406), 0.0, &gaps_1s),
        (Task::Check, fail(500), 0.0, &gaps_1s),
        (
            Task::Check,
            unreachable("connection refused"),
            0.0,
            &gaps_1s,
        ),
        (Task::Check, fail(409), 0.0, &gaps_1s),
        (Task::On, fail(406), 0.0, &gaps_1s),
        (Task::On, unreachable("timed out"), 0.0, &gaps_1s),
        (Task::Check, fail(500), 0.4, &gaps_1s),
        (
            Task::Check,
            fail(500),
            3.0,
            &[3.0, 6.0, 12.0, 24.0, 30.0, 30.0],
        ),
        (Task::On, fail(500), 30.0, &[30.0, 30.0, 30.0]),
    ];
    for (task, reply, damper, gaps) in table {
        let what = format!("{task} {reply:?} damper {damper}");
        let mut s = LeaderSim::new(model(damper));
        let r = reply.clone();
        s.reply = Box::new(move |_, t, key| {
            if t == task && key == "pod-b" {
                r.clone()
            } else {
                accepted()
            }
        });
        s.elected(None, pods(&["pod-a", "pod-b"]));
        let horizon = damper + gaps.iter().sum::<f64>() + 0.5;
        s.run_until(horizon);
        let starts: Vec<f64> = s.round_starts().iter().map(|r| r.1.as_secs_f64()).collect();
        let seen: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        let seen: Vec<f64> = seen.iter().map(|g| (g * 1000.0).round() / 1000.0).collect();
        assert_eq!(seen, gaps.to_vec(), "{what}");
        assert!(s.commit_log().is_empty(), "{what}: never commits");
        assert_eq!(s.leader.state(), "leader (retrying)", "{what}");
        assert!(
            s.leader.round_failure().unwrap().contains("pod-b"),
            "{what}"
        );
        assert!(s.outcomes().iter().all(|o| o.contains("pod-b")), "{what}");
        if task == Task::Check {
            assert!(
                s.controls().iter().all(|c| c.2 == Task::Check),
                "{what}: no on after a failed check"
            );
        }
    }
}

#[test]
fn a_pod_leaving_while_the_step_waits_on_it_aborts_at_once() {
    for (task, sequential) in [(Task::Check, false), (Task::On, false), (Task::Check, true)] {
        let what = format!("{task} sequential={sequential}");
        let mut s = LeaderSim::new(ModelSettings {
            sequential,
            ..ModelSettings::default()
        });
        s.auto = false;
        s.elected(None, pods(&["pod-a", "pod-b", "pod-c"]));
        s.answer("pod-a", ok()); // check (in sequential mode, b and c are not asked yet)
        if task == Task::On {
            s.answer("pod-b", ok());
            s.answer("pod-c", ok());
            s.answer("pod-a", ok()); // on
        }
        // pod-c vanishes from ZooKeeper while the step still waits on (or queues) it.
        s.at(2.0).members(pods(&["pod-a", "pod-b"]));
        let outcomes = s.outcomes();
        assert_eq!(outcomes.len(), 1, "{what}: aborted at once, {outcomes:?}");
        assert!(
            outcomes[0].contains("pod-c") && outcomes[0].contains("left"),
            "{what}: {outcomes:?}"
        );
        assert_eq!(s.leader.state(), "leader (retrying)", "{what}");
        // The retry (after the 1 s minimum) configures the two that remain.
        s.auto = true;
        s.inflight.clear();
        s.run_until(10.0);
        let commits = s.commit_log();
        assert_eq!(commits.len(), 1, "{what}");
        assert_eq!(keys(&commits[0].3), vec!["pod-a", "pod-b"], "{what}");
        assert_eq!(
            s.round_starts()[1].1,
            secs(3.0),
            "{what}: retried after 1 s"
        );
    }
}

#[test]
fn the_backoff_resets_after_a_successful_round() {
    let mut s = LeaderSim::new(model(0.0));
    let failing = std::rc::Rc::new(std::cell::Cell::new(true));
    let f = failing.clone();
    s.reply = Box::new(
        move |_, _, _| {
            if f.get() {
                answer(500, "")
            } else {
                accepted()
            }
        },
    );
    s.elected(None, pods(&["pod-a"]));
    s.run_until(7.5); // failed at 0, 1, 3, 7
    assert_eq!(s.round_starts().len(), 4);
    failing.set(false);
    s.run_until(20.0); // the retry at 15 succeeds
    assert_eq!(s.commit_log().len(), 1);
    assert_eq!(s.leader.round_failure(), None);
    failing.set(true);
    s.members(pods(&["pod-a", "pod-b"]));
    s.run_until(21.5);
    let starts: Vec<f64> = s.round_starts().iter().map(|r| r.1.as_secs_f64()).collect();
    assert_eq!(
        starts,
        vec![0.0, 1.0, 3.0, 7.0, 15.0, 20.0, 21.0],
        "1 s again after a success"
    );
}

#[test]
fn a_failed_commit_retries_the_round() {
    let mut s = LeaderSim::new(model(0.0));
    let mut n = 0;
    s.commit = Box::new(move |_| {
        n += 1;
        if n == 1 {
            Err("not the lock holder".into())
        } else {
            Ok(())
        }
    });
    let members = pods(&["pod-a", "pod-b"]);
    s.elected(None, members.clone());
    s.run_until(0.5);
    assert_eq!(
        s.leader.committed_hash(),
        None,
        "a failed commit commits nothing"
    );
    assert!(s.outcomes()[0].contains("commit failed"));
    assert_eq!(s.leader.state(), "leader (retrying)");
    s.run_until(5.0);
    let starts = s.round_starts();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1].1, secs(1.0));
    assert_eq!(s.leader.committed_hash(), Some(hash_of(&members).as_str()));
    assert_eq!(s.leader.state(), "leader");
}

#[test]
fn a_new_leader_whose_hash_matches_rewrites_the_snapshot_and_runs_no_round() {
    let members = pods(&["pod-a", "pod-b"]);
    // (committed hash, expect WriteSnapshot, expect a round)
    let table = [
        (Some(hash_of(&members)), true, false),
        (Some(hash_of(&pods(&["pod-a"]))), false, true),
        (None, false, true),
    ];
    for (committed, snapshot, round) in table {
        let mut s = LeaderSim::new(model(0.0));
        s.elected(committed.clone(), members.clone());
        let writes: Vec<&Pods> = s
            .log
            .iter()
            .filter_map(|(_, a)| match a {
                LeaderAction::WriteSnapshot { snapshot } => Some(snapshot),
                _ => None,
            })
            .collect();
        assert_eq!(writes.len(), usize::from(snapshot), "{committed:?}");
        if snapshot {
            assert_eq!(writes[0], &members);
        }
        s.run_until(60.0);
        assert_eq!(!s.controls().is_empty(), round, "{committed:?}");
        assert_eq!(s.commit_log().len(), usize::from(round), "{committed:?}");
    }
}

/// Found by scripts/chaos.sh: the old leader was cut off, so its session (and its ephemeral
/// snapshot) expired; the new leader was elected while that pod's node was gone, and the pod came
/// back (same key and registration) before the damper ran out. The cluster was as committed
/// again, so no round ran, and the new leader must still write the snapshot it never wrote, or
/// the cluster keeps no `snapshot` until its next change.
#[test]
fn a_new_leader_whose_hash_comes_back_before_the_damper_rewrites_the_snapshot() {
    let members = pods(&["pod-a", "pod-b"]);
    let mut s = LeaderSim::new(model(2.0));
    // Elected while pod-b's node is gone: the hash differs, a round is pending.
    s.elected(Some(hash_of(&members)), pods(&["pod-a"]));
    let writes = |s: &LeaderSim| -> Vec<Pods> {
        s.log
            .iter()
            .filter_map(|(_, a)| match a {
                LeaderAction::WriteSnapshot { snapshot } => Some(snapshot.clone()),
                _ => None,
            })
            .collect()
    };
    assert!(writes(&s).is_empty(), "nothing to restore yet");
    s.run_until(1.0);
    // pod-b registers again (same key and registration) before the damper runs out.
    s.members(members.clone());
    s.run_until(60.0);
    assert_eq!(writes(&s), vec![members.clone()]);
    assert!(s.controls().is_empty(), "no round: {:?}", s.controls());
    assert_eq!(s.leader.state(), "leader");
}

#[test]
fn a_disconnected_session_starts_no_round_and_aborts_the_one_under_way() {
    let settings = ModelSettings {
        has_probe: true,
        probe_every: secs(10.0),
        ..model(0.0)
    };
    // Disconnected while clean: leadership is suspended (no probe) and the timer stays quiet.
    let mut s = clean(settings.clone());
    s.connection(false);
    s.run_until(60.0);
    let probes = s
        .log
        .iter()
        .filter(|(_, a)| matches!(a, LeaderAction::Probe { .. }))
        .count();
    assert_eq!(probes, 0, "no probe while suspended");
    s.connection(true);
    s.run_until(61.0);
    let probes = s
        .log
        .iter()
        .filter(|(_, a)| matches!(a, LeaderAction::Probe { .. }))
        .count();
    assert_eq!(probes, 1, "the probe resumes on reconnect");

    // No round starts while disconnected.
    let mut s = clean(settings.clone());
    s.connection(false);
    s.at(1.0).members(pods(&["pod-a", "pod-b", "pod-c"]));
    s.run_until(120.0);
    assert!(s.controls().is_empty(), "no round while disconnected");
    assert_eq!(
        s.leader.state(),
        "leader (suspended: ZooKeeper disconnected)"
    );
    s.connection(true);
    s.run_until(121.0);
    assert_eq!(
        s.round_starts(),
        vec![(1, secs(120.0))],
        "starts on reconnect"
    );
    assert_eq!(s.commit_log().len(), 1);

    // A round under way is aborted and its late answers commit nothing.
    let mut s = clean(settings);
    s.auto = false;
    s.at(1.0).members(pods(&["pod-a", "pod-b", "pod-c"]));
    for k in ["pod-a", "pod-b", "pod-c"] {
        s.answer(k, ok()); // check
    }
    s.answer("pod-a", ok()); // on
    s.at(2.0).connection(false);
    assert!(s.outcomes()[0].contains("ZooKeeper"), "{:?}", s.outcomes());
    s.answer("pod-b", ok());
    s.answer("pod-c", ok());
    assert!(s.commit_log().is_empty(), "no commit after the abort");
    s.auto = true;
    s.run_until(100.0);
    assert_eq!(s.round_starts().len(), 1, "no new round while disconnected");
    s.connection(true);
    s.run_until(101.0);
    assert_eq!(s.round_starts().len(), 2);
    assert_eq!(s.commit_log().len(), 1);
}

#[test]
fn the_probe_runs_every_probe_every_only_while_clean() {
    let mut s = LeaderSim::new(ModelSettings {
        has_probe: true,
        probe_every: secs(10.0),
        damper: secs(30.0),
        ..ModelSettings::default()
    });
    let mut n = 0;
    s.probe = Box::new(move || {
        n += 1;
        if n == 3 {
            Err(" disk full \n".into())
        } else {
            Ok(format!("  {n} ok\n"))
        }
    });
    let members = pods(&["pod-a"]);
    s.elected(Some(hash_of(&members)), members);
    s.run_until(25.0);
    let probes = |s: &LeaderSim| -> Vec<f64> {
        s.log
            .iter()
            .filter(|(_, a)| matches!(a, LeaderAction::Probe { .. }))
            .map(|(t, _)| t.as_secs_f64())
            .collect()
    };
    assert_eq!(probes(&s), vec![0.0, 10.0, 20.0]);
    assert_eq!(
        s.leader.status(s.now),
        "* disk full",
        "a failure becomes `* msg`"
    );
    s.members(pods(&["pod-a", "pod-b"])); // pending until 55
    s.run_until(40.0);
    s.members(pods(&["pod-a", "pod-b", "pod-c"])); // still pending (a probe is overdue)
    s.run_until(54.0);
    assert_eq!(probes(&s), vec![0.0, 10.0, 20.0], "no probe while pending");
    s.run_until(75.5);
    // The round at 55 commits; the probe resumes at once, then every 10 s.
    assert_eq!(probes(&s), vec![0.0, 10.0, 20.0, 55.0, 65.0, 75.0]);
    assert_eq!(s.leader.status(s.now), "6 ok");
    // Without a probe, or with probe_every = 0, nothing is ever probed.
    for settings in [
        ModelSettings::default(),
        ModelSettings {
            has_probe: true,
            probe_every: Duration::ZERO,
            ..ModelSettings::default()
        },
    ] {
        let mut s = clean(settings);
        s.run_until(600.0);
        assert!(probes(&s).is_empty());
    }
}

#[test]
fn the_status_shows_the_countdown_while_pending() {
    let mut s = clean(model(30.0));
    s.at(10.0).members(pods(&["pod-a"]));
    // (at, status)
    for (t, expected) in [
        (10.0, "configuration in 30.0 s"),
        (22.5, "configuration in 17.5 s"),
        (39.9, "configuration in 0.1 s"),
    ] {
        s.run_until(t);
        assert_eq!(s.leader.status(s.now), expected);
        assert_eq!(s.leader.state(), "leader (configuration pending)");
    }
    s.run_until(41.0);
    assert_eq!(s.leader.state(), "leader");
    assert!(!s.leader.status(s.now).contains("configuration in"));
}

#[test]
fn dependency_views_are_keyed_as_written_and_wildcards_are_unions() {
    let mut s = LeaderSim::new(ModelSettings {
        depends_on: vec![
            "db".into(),
            "/shared.zk".into(),
            "cache-*".into(),
            "queue".into(),
        ],
        ..ModelSettings::default()
    });
    let db = pods_in("prod", "db", &["db-1"]);
    let zk = pods_in("shared", "zk", &["zk-1", "zk-2"]);
    let c1 = pods_in("prod", "cache-1", &["c1"]);
    let c2 = pods_in("prod", "cache-2", &["c2"]);
    s.elected_with(
        None,
        pods(&["pod-a"]),
        vec![
            ("prod.db".into(), Some(db.clone()), true),
            ("shared.zk".into(), Some(zk.clone()), true),
            ("prod.cache-1".into(), Some(c1.clone()), true),
            ("prod.cache-2".into(), Some(c2.clone()), true),
            // Not a dependency: ignored.
            (
                "prod.other".into(),
                Some(pods_in("prod", "other", &["o"])),
                true,
            ),
            ("dev.db".into(), Some(pods_in("dev", "db", &["x"])), true),
        ],
    );
    s.run_until(1.0);
    let mut expected = Dependencies::new();
    expected.insert("db".into(), db);
    expected.insert("/shared.zk".into(), zk);
    expected.insert("cache-*".into(), c1.into_iter().chain(c2).collect());
    expected.insert("queue".into(), Pods::new()); // no snapshot yet: empty
    assert_eq!(s.leader.dependency_views(), expected);
    for (_, a) in &s.log {
        if let LeaderAction::Control { body, .. } = a {
            assert_eq!(body.dependencies, expected);
        }
    }
    assert_eq!(s.commit_log()[0].2, hash_with(&pods(&["pod-a"]), &expected));
    // A cluster that appears later joins the wildcard and reconfigures.
    let c3 = pods_in("prod", "cache-3", &["c3"]);
    s.dependency("prod.cache-3", Some(c3), true);
    s.run_until(2.0);
    assert_eq!(s.commit_log().len(), 2);
    assert_eq!(s.commit_log()[1].3, pods(&["pod-a"]));
    let body = s
        .log
        .iter()
        .rev()
        .find_map(|(_, a)| match a {
            LeaderAction::Control { body, .. } => Some(body.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(keys(&body.dependencies["cache-*"]), vec!["c1", "c2", "c3"]);
}

#[test]
fn a_missing_dependency_snapshot_is_no_news_while_it_has_pods_and_gone_without() {
    // (has_pods, expected view of `db` afterwards, a new round)
    let db = pods_in("prod", "db", &["db-1", "db-2"]);
    let table = [(true, db.clone(), false), (false, Pods::new(), true)];
    for (has_pods, view, round) in table {
        let mut s = LeaderSim::new(ModelSettings {
            depends_on: vec!["db".into()],
            ..ModelSettings::default()
        });
        s.elected_with(
            None,
            pods(&["pod-a"]),
            vec![("prod.db".into(), Some(db.clone()), true)],
        );
        s.run_until(1.0);
        assert_eq!(s.commit_log().len(), 1);
        s.dependency("prod.db", None, has_pods);
        s.run_until(2.0);
        assert_eq!(
            s.leader.dependency_views()["db"],
            view,
            "has_pods {has_pods}"
        );
        assert_eq!(
            s.commit_log().len(),
            1 + usize::from(round),
            "has_pods {has_pods}"
        );
    }
}

#[test]
fn changes_during_a_round_lead_to_another_round_after_it() {
    for change in ["join", "dependency"] {
        let mut s = LeaderSim::new(ModelSettings {
            depends_on: vec!["db".into()],
            damper: secs(5.0),
            ..ModelSettings::default()
        });
        s.auto = false;
        s.elected(None, pods(&["pod-a", "pod-b"]));
        s.run_until(5.0);
        assert_eq!(s.inflight.len(), 2, "round 1 checks");
        s.at(6.0);
        match change {
            "join" => s.members(pods(&["pod-a", "pod-b", "pod-c"])),
            _ => s.dependency("prod.db", Some(pods_in("prod", "db", &["d"])), true),
        }
        assert_eq!(s.leader.state(), "leader (configuring)");
        s.auto = true;
        s.settle();
        let commits = s.commit_log();
        assert_eq!(commits.len(), 1);
        assert_eq!(
            keys(&commits[0].3),
            vec!["pod-a", "pod-b"],
            "{change}: round 1 as started"
        );
        assert_eq!(
            s.leader.state(),
            "leader (configuration pending)",
            "{change}"
        );
        s.run_until(30.0);
        let starts = s.round_starts();
        assert_eq!(starts.len(), 2, "{change}");
        assert_eq!(starts[1].1, secs(11.0), "{change}: after the damper");
        let commits = s.commit_log();
        assert_eq!(commits[1].2, s.leader.current_hash(), "{change}");
        assert_eq!(s.leader.state(), "leader");
    }
}

#[test]
fn control_requests_carry_the_timeouts_of_the_settings() {
    let mut s = LeaderSim::new(ModelSettings {
        control_timeout: secs(90.5),
        ..ModelSettings::default()
    });
    s.elected(None, pods(&["pod-a"]));
    s.run_until(1.0);
    let mut seen = BTreeSet::new();
    for (_, a) in &s.log {
        if let LeaderAction::Control {
            timeout_secs,
            request_timeout,
            task,
            ..
        } = a
        {
            assert_eq!(*timeout_secs, 91, "whole seconds, rounded up");
            assert_eq!(*request_timeout, secs(90.5 * 1.25));
            seen.insert(*task);
        }
    }
    assert_eq!(seen.len(), 3);
}

/// Sequential, health-gated settings: checks every `every` s, for `timeout` s.
fn gated(every: f64, timeout: f64) -> ModelSettings {
    ModelSettings {
        sequential: true,
        gate: true,
        gate_every: secs(every),
        gate_timeout: secs(timeout),
        ..ModelSettings::default()
    }
}

/// Health answers per pod: `fails[key]` 503s before the first 200 (`None`: never passes).
fn health_script(fails: &[(&'static str, Option<u32>)]) -> impl FnMut(u64, Task, &str) -> Answer {
    let mut calls: std::collections::BTreeMap<String, u32> = Default::default();
    let fails: Vec<(&str, Option<u32>)> = fails.to_vec();
    move |_, task, key| {
        if task != Task::Health {
            return ok();
        }
        let n = calls.entry(key.to_string()).or_default();
        *n += 1;
        let limit = fails
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(Some(0), |f| f.1);
        match limit {
            Some(l) if *n > l => ok(),
            _ => answer(503, &format!("not ready yet ({n})")),
        }
    }
}

/// The (time, task, key) of every request but `ok`.
fn sequence(s: &LeaderSim) -> Vec<(Duration, Task, String)> {
    s.controls()
        .into_iter()
        .filter(|c| c.2 != Task::Ok)
        .map(|(t, _, task, key)| (t, task, key))
        .collect()
}

#[test]
fn a_gated_round_configures_the_next_pod_only_once_the_last_ones_check_passed() {
    let mut s = LeaderSim::new(gated(2.0, 60.0));
    s.reply = Box::new(health_script(&[("pod-a", Some(3)), ("pod-b", Some(0))]));
    s.elected(None, pods(&["pod-a", "pod-b"]));
    s.run_until(100.0);
    let at = |t: f64, task, key: &str| (secs(t), task, key.to_string());
    assert_eq!(
        sequence(&s),
        vec![
            at(0.0, Task::Check, "pod-a"),
            at(0.0, Task::Check, "pod-b"),
            at(0.0, Task::On, "pod-a"),
            // At once after on, then every gate_every (not check_every) while it fails.
            at(0.0, Task::Health, "pod-a"),
            at(2.0, Task::Health, "pod-a"),
            at(4.0, Task::Health, "pod-a"),
            at(6.0, Task::Health, "pod-a"),
            at(6.0, Task::On, "pod-b"),
            // The last pod is gated too: the round commits once it passed.
            at(6.0, Task::Health, "pod-b"),
        ]
    );
    assert_eq!(s.outcomes(), vec!["ok".to_string()]);
    assert_eq!(s.commit_log()[0].0, secs(6.0));
    assert_eq!(s.leader.state(), "leader");
}

#[test]
fn a_check_that_never_passes_fails_the_round_with_why_at_the_timeout() {
    let mut s = LeaderSim::new(gated(3.0, 10.0));
    s.reply = Box::new(health_script(&[("pod-a", None)]));
    s.elected(None, pods(&["pod-a", "pod-b"]));
    s.run_until(5.0);
    assert_eq!(
        s.leader.status(s.now),
        "configuring: waiting for pod pod-a's sanity check (2 failed: health 503: not ready yet (2))"
    );
    s.run_until(10.5);
    let health: Vec<Duration> = sequence(&s)
        .into_iter()
        .filter(|c| c.1 == Task::Health)
        .map(|c| c.0)
        .collect();
    // Every 3 s, and a last one at the timeout itself.
    assert_eq!(
        health,
        vec![secs(0.0), secs(3.0), secs(6.0), secs(9.0), secs(10.0)]
    );
    assert!(
        !sequence(&s)
            .iter()
            .any(|c| c.1 == Task::On && c.2 == "pod-b"),
        "pod-b is never configured behind an unhealthy pod-a"
    );
    let outcomes = s.outcomes();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        outcomes[0],
        "pod pod-a: its sanity check did not pass within 10 s of its on (5 checks; the last: \
         health 503: not ready yet (5))"
    );
    assert_eq!(s.leader.round_failure(), Some(outcomes[0].as_str()));
    assert!(s.commit_log().is_empty());
    assert_eq!(s.leader.state(), "leader (retrying)");
    let report = s
        .log
        .iter()
        .find_map(|(_, a)| match a {
            LeaderAction::RoundEnded { report, .. } => Some(report.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(report.answers["pod-a"], "health 503: not ready yet (5)");
}

#[test]
fn a_pod_that_does_not_know_health_is_not_gated_and_without_sequential_nothing_is() {
    // A 1.x pod answers 400 to an unknown task.
    let mut s = LeaderSim::new(gated(1.0, 60.0));
    s.reply = Box::new(|_, task, _| match task {
        Task::Health => answer(400, "unknown task"),
        _ => ok(),
    });
    s.elected(None, pods(&["pod-a", "pod-b"]));
    s.run_until(1.0);
    let tasks: Vec<Task> = sequence(&s).into_iter().map(|c| c.1).collect();
    use Task::*;
    assert_eq!(tasks, vec![Check, Check, On, Health, On, Health]);
    assert_eq!(s.outcomes(), vec!["ok".to_string()]);

    // `gate` without `sequential`: the round runs as it always did.
    let mut s = LeaderSim::new(ModelSettings {
        sequential: false,
        ..gated(1.0, 60.0)
    });
    s.elected(None, pods(&["pod-a", "pod-b"]));
    s.run_until(1.0);
    assert!(!sequence(&s).iter().any(|c| c.1 == Health));
    assert_eq!(s.outcomes(), vec!["ok".to_string()]);
}

#[test]
fn a_gated_pod_that_leaves_or_dies_aborts_the_round() {
    let mut s = LeaderSim::new(gated(1.0, 60.0));
    s.reply = Box::new(health_script(&[("pod-a", None)]));
    s.elected(None, pods(&["pod-a", "pod-b"]));
    s.run_until(2.5);
    s.members(pods(&["pod-b"]));
    assert_eq!(
        s.outcomes()[0],
        "pod pod-a left the cluster during on",
        "no need to wait out the gate"
    );

    let mut s = LeaderSim::new(gated(1.0, 60.0));
    s.reply = Box::new(|_, task, _| match task {
        Task::Health => answer(410, "this pod is dead"),
        _ => ok(),
    });
    s.elected(None, pods(&["pod-a", "pod-b"]));
    s.run_until(0.5);
    assert_eq!(s.outcomes()[0], "pod pod-a is dead during its health gate");
}

/// A round that failed after its `on` reached some pods left them with a view that is not the
/// committed one: when the cluster comes back to its committed hash, the retry still runs (and
/// configures them back), instead of the leader calling the cluster clean. (A change undone
/// before any `on` went out still starts nothing.)
#[test]
fn a_failed_on_is_retried_even_when_the_cluster_comes_back_to_the_committed_hash() {
    let mut s = LeaderSim::new(model(0.0));
    s.reply = Box::new(|_, task, key| {
        if task == Task::On && key == "pod-b" {
            answer(500, "configure failed")
        } else {
            accepted()
        }
    });
    s.elected(Some(hash_of(&pods(&["pod-a"]))), pods(&["pod-a"]));
    s.members(pods(&["pod-a", "pod-b"]));
    s.settle();
    assert_eq!(s.leader.state(), "leader (retrying)");
    let on_a = |s: &LeaderSim| {
        s.controls()
            .iter()
            .filter(|c| c.2 == Task::On && c.3 == "pod-a")
            .count()
    };
    assert_eq!(on_a(&s), 1, "pod-a took the view with pod-b");
    // pod-b goes away: the hash is the committed one again, but pod-a holds another view.
    s.members(pods(&["pod-a"]));
    s.run_until(5.0);
    assert_eq!(on_a(&s), 2, "pod-a is configured back");
    let commits = s.commit_log();
    assert_eq!(commits.len(), 1, "{commits:?}");
    assert_eq!(commits[0].2, hash_of(&pods(&["pod-a"])));
    assert_eq!(s.leader.state(), "leader");
    assert_eq!(s.leader.round_failure(), None);
}
