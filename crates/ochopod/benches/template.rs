//! Criterion bench of the runtime's template rendering: a 100-pod cluster view rendered with
//! [`ochopod::template::Renderer`] (a members list, `grep`, a ZooKeeper-style server list).
//!
//! `cargo bench -p ochopod --bench template`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ochopod::template::Renderer;
use ochopod_core::{ClusterView, ControlBody, Pods, Registration};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

const TEMPLATE: &str = r#"# {{ cluster.size }} pods, I am {{ cluster.index }} (seq {{ cluster.seq }}) on {{ env.HOSTNAME }}
{% for key, pod in cluster.pods|items %}{{ key }} {{ pod.ip }}:{{ pod.ports["9000"] }}
{% endfor %}servers={{ grep("", 9000) }}
{% for key, pod in cluster.pods|items %}server.{{ pod.seq }}={{ pod.ip }}:2888:3888
{% endfor %}"#;

fn view(n: usize) -> Arc<ClusterView> {
    let pods: Pods = (0..n)
        .map(|i| {
            let mut reg = Registration {
                cluster: "web".into(),
                namespace: "bench".into(),
                binding: "local".into(),
                fwk: "local".into(),
                ip: format!("10.0.{}.{}", i / 250, i % 250 + 1),
                port: "8080".into(),
                node: format!("node-{i}"),
                seq: Some(i as u64),
                protocol: Some(2),
                ..Default::default()
            };
            reg.ports.insert("8080".into(), 20_000 + i as u16);
            reg.ports.insert("9000".into(), 30_000 + i as u16);
            (format!("6f1c2d3e-0000-4000-8000-{i:012x}"), reg)
        })
        .collect();
    let key = pods.keys().nth(n / 2).expect("n > 0").clone();
    let body = ControlBody {
        pods,
        key,
        ..Default::default()
    };
    Arc::new(ClusterView::new(&body.key, &body).expect("key in view"))
}

fn render(c: &mut Criterion) {
    let view = view(100);
    let vars: BTreeMap<String, String> = [("HOSTNAME".to_string(), "bench".to_string())].into();
    let mut group = c.benchmark_group("template");
    group.throughput(Throughput::Elements(100));
    let renderer = Renderer::new(Arc::clone(&view), &vars);
    let out = renderer.render("bench.j2", TEMPLATE).expect("renders");
    assert_eq!(out.lines().count(), 1 + 100 + 1 + 100, "{out}");
    group.bench_function("render/100", |b| {
        b.iter(|| {
            renderer
                .render("bench.j2", black_box(TEMPLATE))
                .expect("renders")
        })
    });
    group.bench_function("new_and_render/100", |b| {
        b.iter(|| {
            Renderer::new(Arc::clone(&view), &vars)
                .render("bench.j2", black_box(TEMPLATE))
                .expect("renders")
        })
    });
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
