//! The driver loop under paused tokio time, with ZooKeeper and the other pods scripted: what it
//! asks of ZooKeeper and of the pods, in which order and when (in virtual time), and what it
//! answers to control requests. The pod's own side (hooks, reaper) is real.

use ochopod::testing::{start_scripted, PodClient, Scripted};
use ochopod::{ClusterView, HookResult, Lifecycle, ModelSettings, ProcessCommand, ProcessSettings};
use ochopod::{Pods, Registration};
use ochopod_core::leader::{Answer, Verdict};
use ochopod_core::wire::{Epoch, Task};
use ochopod_zk::{ZkCommand, ZkEvent};
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// A pod with no process of its own to configure (the tests drive its leader side).
struct Idle;

impl Lifecycle for Idle {
    async fn configure(&self, _cluster: &ClusterView) -> HookResult<ProcessCommand> {
        Err("not configured in these tests".into())
    }
}

/// Pods that answer every control request at once with `verdict`, recording what they got and
/// when (virtual time).
#[derive(Clone)]
struct Pods2 {
    sent: Arc<RwLock<Vec<(Instant, Task, String)>>>,
}

impl PodClient for Pods2 {
    fn control(
        &self,
        addr: String,
        task: Task,
        _timeout_secs: u64,
        _epoch: Epoch,
        _body: bytes::Bytes,
        _timeout: Duration,
    ) -> futures::future::BoxFuture<'static, Answer> {
        self.sent
            .write()
            .expect("sent lock")
            .push((Instant::now(), task, addr));
        Box::pin(async { Answer::new(Verdict::Accepted, "200") })
    }
}

fn reg(ip: &str) -> Registration {
    Registration {
        cluster: "web".into(),
        namespace: "demo".into(),
        ip: ip.into(),
        port: "8080".into(),
        ports: [("8080".to_string(), 8080u16)].into(),
        ..Default::default()
    }
}

fn members() -> Pods {
    [
        ("a".to_string(), reg("10.0.0.1")),
        ("b".to_string(), reg("10.0.0.2")),
    ]
    .into()
}

fn start(damper: Duration) -> (Scripted, Pods2) {
    let pods = Pods2 {
        sent: Arc::default(),
    };
    let model = ModelSettings {
        damper,
        ..Default::default()
    };
    let s = start_scripted(
        "a",
        reg("10.0.0.1"),
        model,
        ProcessSettings::default(),
        Idle,
        pods.clone(),
    )
    .expect("the scripted driver starts");
    (s, pods)
}

/// The next command the driver sends to ZooKeeper that `pick` wants, skipping the others.
async fn next<T>(s: &mut Scripted, mut pick: impl FnMut(ZkCommand) -> Option<T>) -> T {
    loop {
        let cmd = s
            .zk_commands
            .recv()
            .await
            .expect("the driver is still running");
        if let Some(t) = pick(cmd) {
            return t;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_round_waits_out_the_damper_then_checks_configures_commits_and_confirms() {
    let damper = Duration::from_secs(7);
    let (mut s, pods) = start(damper);
    let t0 = Instant::now();
    s.zk_events
        .send(ZkEvent::Elected {
            epoch: "5-1".parse().expect("epoch"),
            committed_hash: None,
            members: members(),
            dependencies: Vec::new(),
            pause: None,
        })
        .expect("driver alive");
    let round = next(&mut s, |c| match c {
        ZkCommand::Commit {
            round, snapshot, ..
        } => {
            assert_eq!(snapshot.len(), 2, "both pods accepted `on`");
            Some(round)
        }
        _ => None,
    })
    .await;
    {
        let sent = pods.sent.read().expect("sent lock");
        let first = sent.first().expect("requests went out").0;
        assert!(
            first - t0 >= damper,
            "the first request went out {:?} after the election, before the {damper:?} damper",
            first - t0
        );
        let tasks: Vec<(Task, &str)> = sent.iter().map(|(_, t, a)| (*t, a.as_str())).collect();
        assert_eq!(
            tasks[..4],
            [
                (Task::Check, "10.0.0.1:8080"),
                (Task::Check, "10.0.0.2:8080"),
                (Task::On, "10.0.0.1:8080"),
                (Task::On, "10.0.0.2:8080"),
            ],
            "check every pod, then on every pod"
        );
        assert!(
            tasks[4..].iter().all(|(t, _)| *t == Task::Ok),
            "only `ok` goes out with the commit: {tasks:?}"
        );
    }
    s.zk_events
        .send(ZkEvent::Committed {
            round,
            result: Ok(()),
        })
        .expect("driver alive");
    let entry = next(&mut s, |c| match c {
        ZkCommand::RecordRound(e) => Some(e),
        _ => None,
    })
    .await;
    assert_eq!(entry.outcome, "ok");
    // `ok` goes to every pod once the round is committed; /info shows the round.
    loop {
        let oks = pods
            .sent
            .read()
            .expect("sent lock")
            .iter()
            .filter(|(_, t, _)| *t == Task::Ok)
            .count();
        let info = s.info();
        if oks == 2 && info["last_round"]["outcome"] == "ok" {
            assert_eq!(info["state"], "leader");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn sigterm_leaves_zookeeper_first_then_ends() {
    let (mut s, _) = start(Duration::from_secs(1));
    s.terminate();
    let left = next(&mut s, |c| match c {
        ZkCommand::Leave(done) => Some(done),
        _ => None,
    })
    .await;
    let _ = left.send(());
    assert_eq!(s.done.await.expect("the driver ends"), 0);
}

/// A ZooKeeper that never confirms the leave does not hold the agent: after 5 s (virtual) it
/// tears down anyway.
#[tokio::test(start_paused = true)]
async fn a_leave_that_never_ends_is_given_up_after_five_seconds() {
    let (mut s, _) = start(Duration::from_secs(1));
    let t0 = Instant::now();
    s.terminate();
    let _held = next(&mut s, |c| match c {
        ZkCommand::Leave(done) => Some(done),
        _ => None,
    })
    .await;
    assert_eq!(s.done.await.expect("the driver ends"), 0);
    assert!(Instant::now() - t0 >= Duration::from_secs(5));
}

/// Control requests go through the pod machine and come back as the control plane's table
/// sends them.
#[tokio::test(start_paused = true)]
async fn control_requests_are_answered_with_the_tables_codes() {
    let (s, _) = start(Duration::from_secs(1));
    let r = s.control(Task::On, None, Value::Null).await;
    assert_eq!(
        r.code, 406,
        "an operator's on to a pod never configured: {r:?}"
    );
    let r = s.control(Task::Signal, None, json!({"x": 1})).await;
    assert_eq!(
        (r.code, r.body),
        (200, json!({})),
        "no signal hook: 200 {{}}"
    );
    let r = s.control(Task::Check, None, Value::Null).await;
    assert_eq!(r.code, 400, "check without a view: {r:?}");
    let r = s.control(Task::Off, None, Value::Null).await;
    assert_eq!((r.code, r.body), (200, json!({})));
    let r = s.control(Task::Kill, None, Value::Null).await;
    assert_eq!(r.code, 200);
    let r = s.control(Task::Off, None, Value::Null).await;
    assert_eq!(r.code, 410, "dead after kill: {r:?}");
}

/// A bad `depends_on` entry is its own error, the core's, not a string: a caller can tell it
/// from the other failures to start.
#[tokio::test(start_paused = true)]
async fn a_bad_dependency_name_is_a_dependency_error() {
    let model = ModelSettings {
        depends_on: vec!["a b".into()],
        ..Default::default()
    };
    let pods = Pods2 {
        sent: Default::default(),
    };
    let err = start_scripted(
        "a",
        reg("10.0.0.1"),
        model,
        ProcessSettings::default(),
        Idle,
        pods,
    )
    .err()
    .expect("refused");
    assert!(matches!(err, ochopod::Error::Dependency(_)), "{err:?}");
    assert!(err.to_string().contains("depends_on"), "{err}");
}
