//! Jitter in the machines' backoffs, on the simulator of `sim/`: a machine given a `Jitter`
//! spreads each backoff delay `d` uniformly in `[d/2, d]`; the same seed gives the same schedule,
//! two seeds give two schedules; a machine without one waits the exact delays.

mod sim;

use ochopod_core::jitter::Jitter;
use ochopod_core::leader::Leader;
use ochopod_core::pod::PodMachine;
use ochopod_core::settings::ProcessSettings;
use ochopod_core::wire::{Dependencies, Task};
use sim::*;
use std::time::Duration;

/// The crash loop's delays: from each crash to the restart that follows it. The process crashes
/// 0.5 s after every start and never runs long enough to reset the backoff.
fn crash_delays(seed: Option<u64>) -> Vec<Duration> {
    let settings = ProcessSettings {
        restart_delay: secs(1.0),
        restart_delay_max: secs(8.0),
        check_every: secs(10_000.0),
        ..process()
    };
    let mut s = PodSim::new(settings.clone());
    let machine = PodMachine::new(settings, "pod-a");
    s.m = match seed {
        Some(seed) => machine.with_jitter(Jitter::new(seed)),
        None => machine,
    };
    let id = s.on(&[], &Dependencies::new());
    s.settle();
    assert_eq!(s.code(id), 200);
    let life = secs(0.5);
    s.lifetime = Some((life, Some(1)));
    s.exit_at = Some((s.now + life, s.m.pid().expect("running"), Some(1)));
    s.run_until(60.0);
    s.spawn_times()
        .windows(2)
        .map(|w| w[1] - w[0] - life)
        .collect()
}

/// The nominal crash backoff: at once, then 1, 2, 4, 8 s, then 8 s (the maximum).
fn nominal_crash(i: usize) -> Duration {
    secs([0.0, 1.0, 2.0, 4.0].get(i).copied().unwrap_or(8.0))
}

#[test]
fn the_crash_backoff_is_spread_within_half_and_full_delay_and_replays_per_seed() {
    let exact = crash_delays(None);
    assert!(exact.len() >= 8, "{exact:?}");
    for (i, d) in exact.iter().enumerate() {
        assert_eq!(*d, nominal_crash(i), "without jitter: the exact delays");
    }
    let a = crash_delays(Some(1));
    let b = crash_delays(Some(2));
    assert_eq!(
        a,
        crash_delays(Some(1)),
        "the same seed gives the same schedule"
    );
    assert_ne!(a, b, "two seeds give two schedules");
    for delays in [&a, &b] {
        assert!(delays.len() >= 8, "{delays:?}");
        for (i, d) in delays.iter().enumerate() {
            let n = nominal_crash(i);
            assert!(
                *d >= n / 2 && *d <= n,
                "restart {i}: {d:?} outside [{:?}, {n:?}]",
                n / 2
            );
        }
        assert_eq!(
            delays[0],
            Duration::ZERO,
            "the first restart stays immediate"
        );
        assert!(
            delays
                .iter()
                .enumerate()
                .any(|(i, d)| *d < nominal_crash(i)),
            "jitter shortened no delay: {delays:?}"
        );
    }
}

/// The times between the starts of the rounds of a leader whose round always fails (pod-b
/// refuses `check`).
fn retry_gaps(seed: Option<u64>) -> Vec<Duration> {
    let mut s = LeaderSim::new(model(0.0));
    let machine = Leader::new(model(0.0), "prod.web", Vec::new());
    s.leader = match seed {
        Some(seed) => machine.with_jitter(Jitter::new(seed)),
        None => machine,
    };
    s.reply = Box::new(|_, task, key| {
        if task == Task::Check && key == "pod-b" {
            answer(500, "nope")
        } else {
            accepted()
        }
    });
    s.elected(None, pods(&["pod-a", "pod-b"]));
    s.run_until(300.0);
    s.round_starts()
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .collect()
}

/// The nominal retry backoff (damper 0): 1, 2, 4, 8, 16 s, then 30 s (the cap).
fn nominal_retry(i: usize) -> Duration {
    secs([1.0, 2.0, 4.0, 8.0, 16.0].get(i).copied().unwrap_or(30.0))
}

#[test]
fn the_retry_backoff_is_spread_within_half_and_full_delay_and_replays_per_seed() {
    let exact = retry_gaps(None);
    assert!(exact.len() >= 8, "{exact:?}");
    for (i, d) in exact.iter().enumerate() {
        assert_eq!(*d, nominal_retry(i), "without jitter: the exact delays");
    }
    let a = retry_gaps(Some(7));
    let b = retry_gaps(Some(8));
    assert_eq!(
        a,
        retry_gaps(Some(7)),
        "the same seed gives the same schedule"
    );
    assert_ne!(a, b, "two seeds give two schedules");
    for gaps in [&a, &b] {
        assert!(gaps.len() >= 8, "{gaps:?}");
        for (i, d) in gaps.iter().enumerate() {
            let n = nominal_retry(i);
            assert!(
                *d >= n / 2 && *d <= n,
                "retry {i}: {d:?} outside [{:?}, {n:?}]",
                n / 2
            );
        }
    }
}

/// Leaders of clusters that fail together (one seed each, as each agent seeds its own) retry
/// at different instants instead of in one burst.
#[test]
fn leaders_with_different_seeds_do_not_retry_in_lockstep() {
    let firsts: Vec<Duration> = (0..20u64).map(|seed| retry_gaps(Some(seed))[3]).collect();
    let mut distinct = firsts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), firsts.len(), "{firsts:?}");
}
