//! A leader that finds a dependency cluster with registered pods but no `snapshot` holds its
//! round for up to `dependency_wait` (`docs/spec.md`, `[model] dependency_wait`), on the
//! simulator of `sim/`.
//!
//! The case it is for: after a ZooKeeper outage longer than the session timeout every session
//! expires, so every ephemeral `snapshot` is gone; a dependent cluster's new leader is elected at
//! about the same time as its dependency's, and the dependency's new leader rewrites its snapshot
//! a moment later. Configuring without the dependency meanwhile restarts every pod of the
//! dependent cluster twice for an outage that changed nothing.

mod sim;

use ochopod_core::leader::LeaderAction;
use ochopod_core::settings::ModelSettings;
use ochopod_core::wire::{Dependencies, Pods};
use sim::*;
use std::time::Duration;

fn settings(wait: f64) -> ModelSettings {
    ModelSettings {
        depends_on: vec!["db".into()],
        dependency_wait: secs(wait),
        ..ModelSettings::default()
    }
}

fn db() -> Pods {
    pods_in("prod", "db", &["db-1", "db-2"])
}

fn views(db: Pods) -> Dependencies {
    let mut d = Dependencies::new();
    d.insert("db".into(), db);
    d
}

fn snapshot_writes(s: &LeaderSim) -> Vec<Pods> {
    s.log
        .iter()
        .filter_map(|(_, a)| match a {
            LeaderAction::WriteSnapshot { snapshot } => Some(snapshot.clone()),
            _ => None,
        })
        .collect()
}

/// A new leader of a cluster committed with `db` as `db()`, elected while `prod.db` has pods
/// but no snapshot.
fn elected_without_the_snapshot(wait: f64) -> LeaderSim {
    let members = pods(&["pod-a", "pod-b"]);
    let mut s = LeaderSim::new(settings(wait));
    s.elected_with(
        Some(hash_with(&members, &views(db()))),
        members,
        vec![("prod.db".into(), None, true)],
    );
    s
}

#[test]
fn a_new_leader_holds_its_round_until_the_dependency_snapshot_comes_back_unchanged() {
    let mut s = elected_without_the_snapshot(10.0);
    s.run_until(4.0);
    assert!(s.controls().is_empty(), "held: {:?}", s.controls());
    assert_eq!(s.leader.state(), "leader (configuration pending)");
    let status = s.leader.status(s.now);
    assert!(
        status.contains("held up to 6.0 s") && status.contains("prod.db"),
        "{status}"
    );
    // The dependency's new leader rewrites the snapshot: the cluster is as committed.
    s.dependency("prod.db", Some(db()), true);
    s.run_until(120.0);
    assert!(s.controls().is_empty(), "no round: {:?}", s.controls());
    assert_eq!(snapshot_writes(&s), vec![pods(&["pod-a", "pod-b"])]);
    assert_eq!(s.leader.state(), "leader");
}

#[test]
fn a_dependency_snapshot_that_comes_back_changed_gives_one_round_at_once() {
    let mut s = elected_without_the_snapshot(10.0);
    s.run_until(3.0);
    let changed = pods_in("prod", "db", &["db-1", "db-3"]);
    s.dependency("prod.db", Some(changed.clone()), true);
    s.run_until(120.0);
    let starts = s.round_starts();
    assert_eq!(starts.len(), 1, "one round: {starts:?}");
    assert_eq!(
        starts[0].1,
        secs(3.0),
        "at the snapshot, not after the wait"
    );
    let commits = s.commit_log();
    assert_eq!(commits.len(), 1);
    assert_eq!(
        commits[0].2,
        hash_with(&pods(&["pod-a", "pod-b"]), &views(changed))
    );
}

#[test]
fn a_snapshot_that_never_comes_lets_one_round_run_without_it_after_the_wait() {
    // (dependency_wait, when the one round starts)
    for (wait, start) in [(10.0, 10.0), (2.5, 2.5), (0.0, 0.0)] {
        let mut s = elected_without_the_snapshot(wait);
        s.run_until(120.0);
        let starts = s.round_starts();
        assert_eq!(starts.len(), 1, "wait {wait}: {starts:?}");
        assert_eq!(starts[0].1, secs(start), "wait {wait}");
        let commits = s.commit_log();
        assert_eq!(commits.len(), 1, "wait {wait}");
        assert_eq!(
            commits[0].2,
            hash_with(&pods(&["pod-a", "pod-b"]), &views(Pods::new())),
            "configured without the dependency, wait {wait}"
        );
        assert_eq!(s.leader.state(), "leader", "wait {wait}");
    }
}

#[test]
fn a_change_of_members_during_the_wait_is_held_too_and_runs_once_with_the_snapshot() {
    let mut s = elected_without_the_snapshot(10.0);
    s.at(1.0);
    s.members(pods(&["pod-a", "pod-b", "pod-c"]));
    s.run_until(5.0);
    assert!(s.controls().is_empty(), "held: {:?}", s.controls());
    s.dependency("prod.db", Some(db()), true);
    s.run_until(120.0);
    let starts = s.round_starts();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].1, secs(5.0));
    assert_eq!(
        s.commit_log()[0].2,
        hash_with(&pods(&["pod-a", "pod-b", "pod-c"]), &views(db()))
    );
}

#[test]
fn a_snapshot_seen_once_is_kept_as_no_news_and_never_awaited() {
    // A leader that saw the dependency's snapshot keeps it while the node is missing (its
    // leader's session expired): a member change configures at once, with the last view.
    let members = pods(&["pod-a", "pod-b"]);
    let mut s = LeaderSim::new(settings(10.0));
    s.elected_with(
        Some(hash_with(&members, &views(db()))),
        members,
        vec![("prod.db".into(), Some(db()), true)],
    );
    s.run_until(1.0);
    s.dependency("prod.db", None, true);
    s.members(pods(&["pod-a"]));
    s.run_until(120.0);
    let starts = s.round_starts();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].1, secs(1.0));
    assert_eq!(
        s.commit_log()[0].2,
        hash_with(&pods(&["pod-a"]), &views(db()))
    );
}

#[test]
fn the_default_wait_is_ten_seconds() {
    assert_eq!(
        ModelSettings::default().dependency_wait,
        Duration::from_secs(10)
    );
}
