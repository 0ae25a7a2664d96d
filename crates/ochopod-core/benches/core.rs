//! Criterion benches of the pure core: the configuration hash and the cluster view for 10, 100
//! and 1,000 pods, and the leader machine (one step after a join, and a whole round) for 100 pods.
//!
//! `cargo bench -p ochopod-core --bench core`; the instruction-count guard is `scripts/bench-guard.sh`.
// A bench measures real time (the core itself never reads the clock).
#![allow(clippy::disallowed_methods)]

#[path = "support/fixtures.rs"]
mod fixtures;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ochopod_core::hash::config_hash;
use ochopod_core::{ClusterView, Dependencies};
use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Instant;

const SIZES: [usize; 3] = [10, 100, 1_000];

fn hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("config_hash");
    for n in SIZES {
        let pods = fixtures::pods(n);
        let dead = BTreeSet::new();
        let deps = Dependencies::new();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &pods, |b, pods| {
            b.iter(|| config_hash(black_box(pods), &dead, &deps))
        });
    }
    group.finish();
}

fn view(c: &mut Criterion) {
    let mut group = c.benchmark_group("cluster_view");
    for n in SIZES {
        let body = fixtures::body(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &body, |b, body| {
            b.iter(|| ClusterView::new(black_box(&body.key), black_box(body)).expect("in view"))
        });
    }
    group.finish();
}

fn leader(c: &mut Criterion) {
    let mut group = c.benchmark_group("leader");
    let now = Instant::now();
    group.bench_function("join_step/100", |b| {
        b.iter_batched(
            || fixtures::leader_before_join(100, now),
            |(mut leader, members)| {
                let n = fixtures::members_step(&mut leader, members, now);
                assert_eq!(n, 100, "one check per pod");
                leader
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("full_round/100", |b| {
        b.iter_batched(
            || fixtures::leader_before_join(100, now),
            |(mut leader, members)| {
                fixtures::full_round(&mut leader, members, now);
                leader
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hash, view, leader);
criterion_main!(benches);
