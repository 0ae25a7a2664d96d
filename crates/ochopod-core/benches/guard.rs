//! The instruction-count guard's workloads (run under `valgrind --tool=callgrind` by
//! `scripts/bench-guard.sh`).
//!
//! `guard <workload> <0|1>` builds the workload's input, then runs the measured code `REPS`
//! times when the second argument is 1 and not at all when it is 0: the script subtracts the two
//! instruction counts, so process start-up and input building cancel out. `guard --list` prints
//! the workloads and their repetitions. Under `cargo bench` (any other arguments) every workload
//! runs once, as a smoke test.
// A bench measures real time (the core itself never reads the clock).
#![allow(clippy::disallowed_methods)]

#[path = "support/fixtures.rs"]
mod fixtures;

use ochopod_core::hash::config_hash;
use ochopod_core::{ClusterView, Dependencies};
use std::collections::BTreeSet;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

/// (name, repetitions): enough repetitions that the measured part dwarfs the noise.
const WORKLOADS: [(&str, u32); 7] = [
    ("hash_10", 200),
    ("hash_100", 20),
    ("hash_1000", 2),
    ("view_100", 20),
    ("view_1000", 2),
    ("leader_join_step_100", 10),
    ("leader_full_round_100", 5),
];

fn run(name: &str, measure: bool) -> Result<(), String> {
    let reps = WORKLOADS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| if measure { *r } else { 0 })
        .ok_or_else(|| format!("unknown workload {name:?}; `guard --list` prints them"))?;
    let now = Instant::now();
    match name {
        "hash_10" | "hash_100" | "hash_1000" => {
            let n: usize = name["hash_".len()..].parse().expect("size");
            let pods = fixtures::pods(n);
            let (dead, deps) = (BTreeSet::new(), Dependencies::new());
            for _ in 0..reps {
                black_box(config_hash(black_box(&pods), &dead, &deps));
            }
        }
        "view_100" | "view_1000" => {
            let n: usize = name["view_".len()..].parse().expect("size");
            let body = fixtures::body(n);
            for _ in 0..reps {
                black_box(
                    ClusterView::new(&body.key, black_box(&body)).map_err(|e| e.to_string())?,
                );
            }
        }
        "leader_join_step_100" => {
            let inputs: Vec<_> = (0..reps)
                .map(|_| fixtures::leader_before_join(100, now))
                .collect();
            for (mut leader, members) in inputs {
                black_box(fixtures::members_step(&mut leader, members, now));
            }
        }
        "leader_full_round_100" => {
            let inputs: Vec<_> = (0..reps)
                .map(|_| fixtures::leader_before_join(100, now))
                .collect();
            for (mut leader, members) in inputs {
                black_box(fixtures::full_round(&mut leader, members, now));
            }
        }
        _ => unreachable!("checked against WORKLOADS"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--list"] => {
            for (name, reps) in WORKLOADS {
                println!("{name} {reps}");
            }
            Ok(())
        }
        [name, flag @ ("0" | "1")] => run(name, flag == "1"),
        _ => WORKLOADS.iter().try_for_each(|(name, _)| {
            let t = Instant::now();
            run(name, true)?;
            println!("guard workload {name}: ok ({:?})", t.elapsed());
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guard: {e}");
            ExitCode::from(2)
        }
    }
}
