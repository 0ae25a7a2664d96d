//! The coordinator against a real ZooKeeper 3.8, cross-checked with kazoo.

mod common;

use common::{namespace, until, Pod, Proxy, Zk};
use ochopod_core::Pods;
use ochopod_zk::{Directory, SessionState, ZkCommand, ZkEvent, ZkSettings};

fn members(event: &ZkEvent) -> Vec<String> {
    match event {
        ZkEvent::Members(pods) | ZkEvent::Elected { members: pods, .. } => {
            pods.keys().cloned().collect()
        }
        _ => Vec::new(),
    }
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

fn epoch(event: &ZkEvent) -> ochopod_core::Epoch {
    match event {
        ZkEvent::Elected { epoch, .. } => *epoch,
        other => panic!("not an Elected event: {other:?}"),
    }
}

/// Raw payload of the pod node, read with kazoo.
async fn raw_pod(zk: &Zk, ns: &str, cluster: &str, node: &str) -> serde_json::Value {
    let out = zk
        .kazoo(
            "data, _ = zk.get(sys.argv[2]); print(data.decode())",
            &[&format!("/ochopod/clusters/{ns}.{cluster}/pods/{node}")],
        )
        .await;
    serde_json::from_str(out.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_names_and_payloads() {
    let zk = Zk::start().await;
    let ns = namespace();

    // Seq unknown: the first counter becomes the seq, and the payload carries it.
    let mut a = Pod::start(zk.settings(), &ns, "web", None, &[]);
    let (seq, node, after_expiry) = a.registered().await;
    assert!(!after_expiry);
    let (key, counter) = node.rsplit_once('.').unwrap();
    assert_eq!(key, a.key);
    assert_eq!(counter.len(), 10, "ZooKeeper's 10-digit counter: {node}");
    // One node, written once and updated in place: the seq is that node's own counter, and
    // the first pod of a new cluster gets 0 (no counter spent on a swap).
    assert_eq!(counter.parse::<u64>().unwrap(), seq, "{node}");
    assert_eq!(seq, 0, "{node}");
    let payload = raw_pod(&zk, &ns, "web", &node).await;
    assert_eq!(payload["seq"], seq, "{payload}");
    assert_eq!(payload["ip"], "127.0.0.1");
    assert_eq!(payload["namespace"], ns.as_str());
    let listed = zk
        .kazoo(
            "print(json.dumps(zk.get_children(sys.argv[2])))",
            &[&format!("/ochopod/clusters/{ns}.web/pods")],
        )
        .await;
    let listed: Vec<String> = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(listed, vec![node.clone()], "exactly one node for the pod");

    // Seq known (state_dir): written as is, whatever the counter.
    let mut b = Pod::start(zk.settings(), &ns, "web", Some(4242), &[]);
    let (seq_b, node_b, _) = b.registered().await;
    assert_eq!(seq_b, 4242);
    assert!(node_b.starts_with(&b.key));
    assert_eq!(raw_pod(&zk, &ns, "web", &node_b).await["seq"], 4242);

    // The directory sees both, with their seqs.
    let dir = Directory::connect(&zk.settings()).await.unwrap();
    let pods = dir.pods(&format!("{ns}.web")).await.unwrap();
    let seqs: Vec<(String, u64)> = pods.iter().map(|p| (p.key.clone(), p.seq)).collect();
    assert!(seqs.contains(&(a.key.clone(), seq)), "{seqs:?}");
    assert!(seqs.contains(&(b.key.clone(), 4242)), "{seqs:?}");

    // Reset: a new node, same key, same seq.
    a.handle.send(ZkCommand::Reset).await.unwrap();
    let (seq2, node2, after2) = a.registered().await;
    assert_eq!((seq2, after2), (seq, false));
    assert_ne!(node2, node);
    assert!(node2.starts_with(&a.key));
    assert_eq!(raw_pod(&zk, &ns, "web", &node2).await["seq"], seq);

    // Leave deletes the node at once.
    let a_key = a.key.clone();
    a.leave().await;
    let pods = dir.pods(&format!("{ns}.web")).await.unwrap();
    assert!(pods.iter().all(|p| p.key != a_key), "{pods:?}");
    b.leave().await;
    dir.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_then_the_next_with_a_higher_epoch() {
    let zk = Zk::start().await;
    let ns = namespace();
    let cluster = format!("{ns}.kafka");
    let dir = Directory::connect(&zk.settings()).await.unwrap();

    let mut a = Pod::start(zk.settings(), &ns, "kafka", None, &[]);
    let elected_a = a.elected().await;
    assert_eq!(members(&elected_a), vec![a.key.clone()]);
    assert_eq!(dir.leader(&cluster).await.unwrap(), Some(a.key.clone()));

    let mut b = Pod::start(zk.settings(), &ns, "kafka", None, &[]);
    b.registered().await;
    // The leader sees the join.
    let want = sorted(vec![a.key.clone(), b.key.clone()]);
    a.expect("members with b", |e| members(e) == want).await;
    // b contends behind a: its session watches a's contender, so it has decided it does not
    // hold the lock, and any Elected it sent before that decision is already delivered.
    let lock_dir = format!("/ochopod/clusters/{cluster}/coordinator");
    zk.until_queue_waits("b to wait behind a", &lock_dir).await;
    assert!(
        !b.drain()
            .iter()
            .any(|e| matches!(e, ZkEvent::Elected { .. })),
        "only one leader"
    );
    assert_eq!(dir.leader(&cluster).await.unwrap(), Some(a.key.clone()));

    // A third pod joins and leaves: the leader follows.
    let c = Pod::start(zk.settings(), &ns, "kafka", None, &[]);
    let with_c = sorted(vec![a.key.clone(), b.key.clone(), c.key.clone()]);
    a.expect("members with c", |e| members(e) == with_c).await;
    c.leave().await;
    a.expect("members without c", |e| members(e) == want).await;

    // The leader leaves: b takes over with a higher epoch.
    let a_epoch = epoch(&elected_a);
    a.leave().await;
    let elected_b = b.elected().await;
    assert!(epoch(&elected_b) > a_epoch, "{elected_b:?} vs {a_epoch}");
    assert_eq!(members(&elected_b), vec![b.key.clone()]);
    assert_eq!(dir.leader(&cluster).await.unwrap(), Some(b.key.clone()));
    b.leave().await;
    dir.close().await;
}

fn dependency(event: &ZkEvent, cluster: &str) -> Option<(Option<Vec<String>>, bool)> {
    let keys = |s: &Option<Pods>| s.as_ref().map(|p| p.keys().cloned().collect());
    match event {
        ZkEvent::Dependency(u) if u.cluster == cluster => Some((keys(&u.snapshot), u.has_pods)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_including_wildcards_and_late_clusters() {
    let zk = Zk::start().await;
    let ns = namespace();
    let web_full = format!("{ns}.web");
    let blue_full = format!("{ns}.cache-blue");

    // web exists and has committed a snapshot before lb starts.
    let mut web = Pod::start(zk.settings(), &ns, "web", None, &[]);
    let (web_epoch, web_members) = match web.elected().await {
        ZkEvent::Elected { epoch, members, .. } => (epoch, members),
        _ => unreachable!(),
    };
    web.handle
        .send(ZkCommand::Commit {
            epoch: web_epoch,
            round: 1,
            hash: "h-web".into(),
            snapshot: web_members.clone(),
        })
        .await
        .unwrap();
    web.expect("web committed", |e| {
        matches!(
            e,
            ZkEvent::Committed {
                round: 1,
                result: Ok(())
            }
        )
    })
    .await;

    let mut lb = Pod::start(
        zk.settings(),
        &ns,
        "lb",
        None,
        &["web", "cache-*", "/other.db"],
    );
    match lb.elected().await {
        ZkEvent::Elected { dependencies, .. } => {
            assert_eq!(dependencies.len(), 1, "{dependencies:?}");
            assert_eq!(dependencies[0].cluster, web_full);
            assert_eq!(dependencies[0].snapshot.as_ref(), Some(&web_members));
            assert!(dependencies[0].has_pods);
        }
        _ => unreachable!(),
    }

    // A cluster matching the wildcard appears later.
    let mut blue = Pod::start(zk.settings(), &ns, "cache-blue", None, &[]);
    let (blue_epoch, blue_members) = match blue.elected().await {
        ZkEvent::Elected { epoch, members, .. } => (epoch, members),
        _ => unreachable!(),
    };
    lb.expect("cache-blue appears with pods", |e| {
        dependency(e, &blue_full) == Some((None, true))
    })
    .await;
    blue.handle
        .send(ZkCommand::Commit {
            epoch: blue_epoch,
            round: 7,
            hash: "h-blue".into(),
            snapshot: blue_members.clone(),
        })
        .await
        .unwrap();
    let want = Some((Some(vec![blue.key.clone()]), true));
    lb.expect("cache-blue snapshot", |e| dependency(e, &blue_full) == want)
        .await;

    // web reconfigures: lb sees the new snapshot.
    let mut web2 = Pod::start(zk.settings(), &ns, "web", None, &[]);
    web2.registered().await;
    let both = web.expect("web members", |e| members(e).len() == 2).await;
    let ZkEvent::Members(both) = both else {
        unreachable!()
    };
    web.handle
        .send(ZkCommand::Commit {
            epoch: web_epoch,
            round: 2,
            hash: "h-web-2".into(),
            snapshot: both.clone(),
        })
        .await
        .unwrap();
    let want = Some((Some(both.keys().cloned().collect()), true));
    lb.expect("web's new snapshot", |e| dependency(e, &web_full) == want)
        .await;

    // cache-blue goes away: its ephemeral snapshot and its pods vanish.
    blue.leave().await;
    lb.expect("cache-blue gone", |e| {
        dependency(e, &blue_full) == Some((None, false))
    })
    .await;
    // Its node deleted altogether: nothing changes for lb beyond "no pods".
    let mark = lb.seen.len();
    zk.kazoo(
        "zk.delete(sys.argv[2], recursive=True)",
        &[&format!("/ochopod/clusters/{blue_full}")],
    )
    .await;
    // A barrier: a later change lb must see (web commits again). ZooKeeper notifies a session
    // in zxid order, so whatever the deletion caused reached lb before it.
    web.handle
        .send(ZkCommand::Commit {
            epoch: web_epoch,
            round: 3,
            hash: "h-web-3".into(),
            snapshot: web_members.clone(),
        })
        .await
        .unwrap();
    let want = Some((Some(vec![web.key.clone()]), true));
    lb.expect("web's third snapshot", |e| dependency(e, &web_full) == want)
        .await;
    let between = &lb.seen[mark..lb.seen.len() - 1];
    assert!(
        between
            .iter()
            .all(|e| dependency(e, &blue_full) == Some((None, false))),
        "the deletion changed more than \"no pods\" for lb: {between:#?}"
    );
    // lb never depended on itself or on clusters of other namespaces.
    assert!(lb
        .seen
        .iter()
        .all(|e| !matches!(e, ZkEvent::Dependency(u) if u.cluster.ends_with(".lb"))));
    lb.leave().await;
    web2.leave().await;
    web.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writes_fail_once_the_lock_is_gone() {
    let zk = Zk::start().await;
    let ns = namespace();
    let cluster = format!("{ns}.db");
    let dir = Directory::connect(&zk.settings()).await.unwrap();
    let mut a = Pod::start(zk.settings(), &ns, "db", None, &[]);
    let elected = a.elected().await;
    let members = match &elected {
        ZkEvent::Elected {
            members,
            committed_hash,
            ..
        } => {
            assert_eq!(committed_hash, &None);
            members.clone()
        }
        _ => unreachable!(),
    };
    a.handle
        .send(ZkCommand::Commit {
            epoch: epoch(&elected),
            round: 1,
            hash: "h1".into(),
            snapshot: members.clone(),
        })
        .await
        .unwrap();
    a.expect("commit 1", |e| {
        matches!(
            e,
            ZkEvent::Committed {
                round: 1,
                result: Ok(())
            }
        )
    })
    .await;
    assert_eq!(dir.hash(&cluster).await.unwrap().as_deref(), Some("h1"));
    assert_eq!(dir.snapshot(&cluster).await.unwrap(), Some(members.clone()));

    // Someone deletes the leader's lock node.
    zk.kazoo(
        "p = sys.argv[2]\nfor c in zk.get_children(p): zk.delete(p + '/' + c)",
        &[&format!("/ochopod/clusters/{cluster}/coordinator")],
    )
    .await;
    let mark = a.seen.len();
    a.handle
        .send(ZkCommand::Commit {
            epoch: epoch(&elected),
            round: 2,
            hash: "h2".into(),
            snapshot: Pods::new(),
        })
        .await
        .unwrap();
    // Either order: the commit fails on the fence (then Deposed), or the watch deposes first.
    a.expect_since(mark, "deposed", |e| matches!(e, ZkEvent::Deposed { .. }))
        .await;
    match a
        .expect_since(mark, "commit 2 answered", |e| {
            matches!(e, ZkEvent::Committed { round: 2, .. })
        })
        .await
    {
        ZkEvent::Committed { result, .. } => assert!(result.is_err(), "{result:?}"),
        _ => unreachable!(),
    }
    assert_eq!(dir.hash(&cluster).await.unwrap().as_deref(), Some("h1"));
    assert_eq!(dir.snapshot(&cluster).await.unwrap(), Some(members.clone()));

    // Alone in the cluster, it contends again and leads with a higher epoch; it sees the
    // committed hash and the snapshot it still owns.
    let again = a
        .expect_since(mark, "elected again", |e| {
            matches!(e, ZkEvent::Elected { .. })
        })
        .await;
    assert!(epoch(&again) > epoch(&elected));
    match &again {
        ZkEvent::Elected { committed_hash, .. } => {
            assert_eq!(committed_hash.as_deref(), Some("h1"));
        }
        _ => unreachable!(),
    }
    // A commit meant for the first term is refused even though this pod leads again.
    a.handle
        .send(ZkCommand::Commit {
            epoch: epoch(&elected),
            round: 4,
            hash: "h4".into(),
            snapshot: members.clone(),
        })
        .await
        .unwrap();
    match a
        .expect("commit 4 answered", |e| {
            matches!(e, ZkEvent::Committed { round: 4, .. })
        })
        .await
    {
        ZkEvent::Committed { result, .. } => {
            assert!(
                result.as_ref().unwrap_err().contains("stale epoch"),
                "{result:?}"
            )
        }
        _ => unreachable!(),
    }
    a.handle
        .send(ZkCommand::Commit {
            epoch: epoch(&again),
            round: 3,
            hash: "h3".into(),
            snapshot: members.clone(),
        })
        .await
        .unwrap();
    a.expect("commit 3", |e| {
        matches!(
            e,
            ZkEvent::Committed {
                round: 3,
                result: Ok(())
            }
        )
    })
    .await;
    assert_eq!(dir.hash(&cluster).await.unwrap().as_deref(), Some("h3"));
    a.leave().await;
    // The snapshot is ephemeral: gone with the leader's session; the hash stays.
    assert_eq!(dir.snapshot(&cluster).await.unwrap(), None);
    assert_eq!(dir.hash(&cluster).await.unwrap().as_deref(), Some("h3"));
    dir.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_registers_again_with_the_same_key_and_seq() {
    let zk = Zk::start().await;
    let proxy = Proxy::start(zk.port).await;
    let ns = namespace();
    let cluster = format!("{ns}.zk");
    let mut a = Pod::start(
        ZkSettings::new(proxy.addr(), common::SESSION),
        &ns,
        "zk",
        None,
        &[],
    );
    let (seq, node, _) = a.registered().await;
    let first = a.elected().await;
    let dir = Directory::connect(&zk.settings()).await.unwrap();

    proxy.block(true);
    a.expect("disconnected", |e| {
        e == &ZkEvent::Session(SessionState::Disconnected)
    })
    .await;
    // The server expires the session: the pod's node vanishes.
    until("the session expired on the server", || async {
        dir.pods(&cluster).await.unwrap().is_empty()
    })
    .await;
    proxy.block(false);
    a.expect("deposed", |e| matches!(e, ZkEvent::Deposed { .. }))
        .await;
    a.expect("expired", |e| e == &ZkEvent::Session(SessionState::Expired))
        .await;
    let (seq2, node2, after_expiry) = a.registered().await;
    assert!(after_expiry);
    assert_eq!(seq2, seq, "the first seq is kept");
    assert_ne!(node2, node);
    assert!(node2.starts_with(&a.key), "same key: {node2}");
    let pods = dir.pods(&cluster).await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!((pods[0].key.as_str(), pods[0].seq), (a.key.as_str(), seq));
    let second = a.elected().await;
    assert!(epoch(&second) > epoch(&first));
    a.leave().await;
    dir.close().await;
}

/// A leader whose connection drops and comes back (the same session, on a new connection, as
/// after a ZooKeeper member restarts or a short partition) still hears every later change: its
/// persistent watches (the cluster's pods, the dependencies, the clusters list) are set again on
/// the new connection. Found by scripts/chaos.sh: the leader read the cluster once on reconnection
/// and then never saw a membership change again, so a pod that joined later stayed unconfigured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_keeps_its_watches_across_a_reconnection() {
    let zk = Zk::start().await;
    let proxy = Proxy::start(zk.port).await;
    let ns = namespace();
    let dep = format!("{ns}.dep");
    let late = format!("{ns}.late");
    // A dependency with a pod before the leader starts.
    let mut d = Pod::start(zk.settings(), &ns, "dep", None, &[]);
    d.registered().await;
    // A session long enough to survive the cut: this is a reconnection, not an expiry.
    let mut a = Pod::start(
        ZkSettings::new(proxy.addr(), std::time::Duration::from_secs(30)),
        &ns,
        "db",
        None,
        &["dep", "late"],
    );
    match a.elected().await {
        ZkEvent::Elected {
            members: pods,
            dependencies,
            ..
        } => {
            assert_eq!(
                pods.keys().cloned().collect::<Vec<_>>(),
                vec![a.key.clone()]
            );
            assert_eq!(dependencies.len(), 1, "{dependencies:?}");
            assert!(dependencies[0].has_pods, "{dependencies:?}");
        }
        _ => unreachable!(),
    }

    proxy.block(true);
    a.expect("disconnected", |e| {
        e == &ZkEvent::Session(SessionState::Disconnected)
    })
    .await;
    proxy.block(false);
    // Connected is told once the leader has read everything again.
    a.expect("reconnected", |e| {
        e == &ZkEvent::Session(SessionState::Connected)
    })
    .await;
    assert!(
        !a.seen.iter().any(|e| matches!(
            e,
            ZkEvent::Deposed { .. } | ZkEvent::Session(SessionState::Expired)
        )),
        "the session must survive the cut: {:#?}",
        a.seen
    );

    // Every watch, after the reconnection. The cluster's pods: a pod joins.
    let mut b = Pod::start(zk.settings(), &ns, "db", None, &[]);
    b.registered().await;
    let want = sorted(vec![a.key.clone(), b.key.clone()]);
    a.expect("the new member", |e| {
        matches!(e, ZkEvent::Members(_)) && sorted(members(e)) == want
    })
    .await;
    // The clusters list: a dependency cluster appears.
    let mut l = Pod::start(zk.settings(), &ns, "late", None, &[]);
    l.registered().await;
    a.expect("the late dependency", |e| {
        matches!(dependency(e, &late), Some((_, true)))
    })
    .await;
    // A dependency's pods: its only pod leaves.
    d.leave().await;
    a.expect("the dependency emptied", |e| {
        matches!(dependency(e, &dep), Some((_, false)))
    })
    .await;
    // The cluster's pods again: the new member leaves.
    b.leave().await;
    let alone = vec![a.key.clone()];
    a.expect("the member gone", |e| {
        matches!(e, ZkEvent::Members(_)) && members(e) == alone
    })
    .await;
    l.leave().await;
    a.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_malformed_pods_are_skipped() {
    let zk = Zk::start().await;
    let ns = namespace();
    let p = format!("/ochopod/clusters/{ns}.web");
    zk.kazoo(
        "p = sys.argv[2]\n\
         zk.ensure_path(p + '/pods')\n\
         zk.create(p + '/pods/garbage', b'hello')\n\
         zk.create(p + '/pods/0f0f0f0f-0000-4000-8000-000000000000.', b'not json', sequence=True)\n\
         zk.create(p + '/pods/1f0f0f0f-0000-4000-8000-000000000000.', b'{\"cluster\": \"x\"}', sequence=True)",
        &[&p],
    )
    .await;
    let mut a = Pod::start(zk.settings(), &ns, "web", None, &[]);
    let elected = a.elected().await;
    assert_eq!(members(&elected), vec![a.key.clone()]);
    // It keeps working: a new pod (and another bad node) show up as they should.
    zk.kazoo(
        "zk.create(sys.argv[2] + '/pods/2f0f0f0f-0000-4000-8000-000000000000.', b'[]', sequence=True)",
        &[&p],
    )
    .await;
    let b = Pod::start(zk.settings(), &ns, "web", None, &[]);
    let want = sorted(vec![a.key.clone(), b.key.clone()]);
    a.expect("members with b", |e| members(e) == want).await;
    let dir = Directory::connect(&zk.settings()).await.unwrap();
    let keys: Vec<String> = dir
        .pods(&format!("{ns}.web"))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(sorted(keys), want);
    b.leave().await;
    a.leave().await;
    dir.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_lock_holders_and_ours_exclude_each_other() {
    let zk = Zk::start().await;
    let ns = namespace();
    let lock_dir = format!("/ochopod/clusters/{ns}.mixed/coordinator");

    // A kazoo holder blocks our contender, which acquires on release.
    let mut holder = zk.kazoo_process(
        "lock = zk.Lock(sys.argv[2], 'py-1x')\n\
         lock.acquire()\n\
         print('held')\n\
         sys.stdin.readline()\n\
         lock.release()\n\
         print('released')",
        &[&lock_dir],
    );
    assert_eq!(holder.line().await, "held");
    let mut a = Pod::start(zk.settings(), &ns, "mixed", None, &[]);
    a.registered().await;
    // Waiting for sure: our session watches kazoo's contender (it decided it does not hold the
    // lock; an Elected sent before that decision is already delivered).
    zk.until_queue_waits("our contender to wait behind kazoo's", &lock_dir)
        .await;
    assert!(!a
        .drain()
        .iter()
        .any(|e| matches!(e, ZkEvent::Elected { .. })));
    holder.say("release").await;
    assert_eq!(holder.line().await, "released");
    holder.wait().await;
    a.elected().await;

    // The reverse: a kazoo contender waits behind us and acquires when we leave.
    let mut waiter = zk.kazoo_process(
        "lock = zk.Lock(sys.argv[2], 'py-1x')\n\
         print('contending')\n\
         lock.acquire()\n\
         print('acquired')\n\
         lock.release()",
        &[&lock_dir],
    );
    assert_eq!(waiter.line().await, "contending");
    until("kazoo's contender waits behind ours", || async {
        let out = zk
            .kazoo("print(len(zk.get_children(sys.argv[2])))", &[&lock_dir])
            .await;
        out.trim() == "2"
    })
    .await;
    assert_eq!(
        waiter.try_line(),
        None,
        "kazoo must not hold the lock while we do"
    );
    // kazoo sees our key as the holder's identifier.
    let contenders = zk
        .kazoo(
            "print(json.dumps(zk.Lock(sys.argv[2]).contenders()))",
            &[&lock_dir],
        )
        .await;
    let contenders: Vec<String> = serde_json::from_str(contenders.trim()).unwrap();
    assert_eq!(contenders[0], a.key);
    a.leave().await;
    assert_eq!(waiter.line().await, "acquired");
    waiter.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_protects_our_nodes_and_chroot_is_honoured() {
    let zk = Zk::start().await;
    let ns = namespace();
    let settings = ZkSettings {
        connect: format!("zk://alice:s3cret@{}/chrooted", zk.addr()),
        session_timeout: common::SESSION,
        auth: None,
    };
    let mut a = Pod::start(settings.clone(), &ns, "web", None, &[]);
    let (_, node, _) = a.registered().await;
    a.elected().await;
    let node_path = format!("/chrooted/ochopod/clusters/{ns}.web/pods/{node}");
    // Anyone can read, nobody else can change or delete.
    let out = zk
        .kazoo(
            "from kazoo.exceptions import NoAuthError\n\
             data, _ = zk.get(sys.argv[2])\n\
             print('s3cret' in data.decode())\n\
             for op in (lambda: zk.delete(sys.argv[2]), lambda: zk.set(sys.argv[2], b'x')):\n    \
                 try:\n        op(); print('allowed')\n    \
                 except NoAuthError:\n        print('refused')",
            &[&node_path],
        )
        .await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["False", "refused", "refused"]
    );
    // The directory, with the same settings, sees it under the chroot.
    let dir = Directory::connect(&settings).await.unwrap();
    assert!(dir.clusters().await.unwrap().contains(&format!("{ns}.web")));
    assert!(dir.namespaces().await.unwrap().contains(&ns));
    assert_eq!(
        dir.leader(&format!("{ns}.web")).await.unwrap(),
        Some(a.key.clone())
    );
    // And nothing leaked outside the chroot.
    let outside = zk
        .kazoo(
            "print(zk.exists('/ochopod/clusters/' + sys.argv[2]) is None)",
            &[&format!("{ns}.web")],
        )
        .await;
    assert_eq!(outside.trim(), "True");
    a.leave().await;
    dir.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_feed_fires_on_changes() {
    let zk = Zk::start().await;
    let ns = namespace();
    let dir = Directory::connect(&zk.settings()).await.unwrap();
    let mut feed = dir.watch().await.unwrap();
    let a = Pod::start(zk.settings(), &ns, "web", None, &[]);
    let prefix = format!("/ochopod/clusters/{ns}.web/pods/{}", a.key);
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    loop {
        let path = tokio::time::timeout_at(deadline, feed.changed())
            .await
            .expect("the feed fired before the deadline")
            .unwrap();
        if path.starts_with(&prefix) {
            break;
        }
    }
    a.leave().await;
    dir.close().await;
    assert_eq!(
        ochopod_zk::cluster_path(&format!("{ns}.web")),
        format!("/ochopod/clusters/{ns}.web")
    );
}

/// Per session: (packets received, last client xid), from the server's `cons`. Pings do not
/// move the xid; every other request does.
async fn cons(port: u16) -> std::collections::BTreeMap<String, (u64, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"cons").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let field = |line: &str, name: &str| {
        line.split([',', '(', ')'])
            .find_map(|f| f.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    out.lines()
        .filter_map(|line| {
            let sid = field(line, "sid")?;
            let recved = field(line, "recved")?.parse().ok()?;
            Some((sid, (recved, field(line, "lcxid")?)))
        })
        .collect()
}

/// Waits until every session has sent at least `pings` more packets than in `before`.
async fn after_pings(
    port: u16,
    before: &std::collections::BTreeMap<String, (u64, String)>,
    pings: u64,
) -> std::collections::BTreeMap<String, (u64, String)> {
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    loop {
        let now = cons(port).await;
        if before
            .iter()
            .all(|(sid, (n, _))| now.get(sid).is_some_and(|(m, _)| *m >= n + pings))
        {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions stopped pinging"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_sends_nothing_but_pings() {
    let zk = Zk::start().await;
    let ns = namespace();
    let mut web: Vec<Pod> = (0..3)
        .map(|_| Pod::start(zk.settings(), &ns, "web", None, &[]))
        .collect();
    let mut lb = Pod::start(zk.settings(), &ns, "lb", None, &["web", "cache-*"]);
    lb.elected().await;
    let mut keys = Vec::new();
    for pod in &mut web {
        pod.registered().await;
        keys.push(pod.key.clone());
    }
    let keys = sorted(keys);
    // Settled: whoever leads web sees all three.
    let dir = Directory::connect(&zk.settings()).await.unwrap();
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    let leader = loop {
        if let Some(key) = dir.leader(&format!("{ns}.web")).await.unwrap() {
            break Some(key);
        }
        assert!(tokio::time::Instant::now() < deadline, "web has no leader");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    dir.close().await;
    let leader = leader.unwrap();
    let leader = web.iter_mut().find(|p| p.key == leader).unwrap();
    leader
        .expect_since(0, "all three", |e| members(e) == keys)
        .await;
    // The directory's session closes asynchronously on the server: wait until only the pods'
    // sessions are listed.
    let start = loop {
        let now = cons(zk.port).await;
        if now.len() == 4 {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected one session per pod: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Warm-up window (follower lock watches settle), then a measured window.
    let warm = after_pings(zk.port, &start, 3).await;
    let end = after_pings(zk.port, &warm, 3).await;
    for (sid, (_, xid)) in &warm {
        assert!(xid.starts_with("0x"), "cons output changed: {warm:?}");
        assert_eq!(
            &end[sid].1, xid,
            "session {sid} sent requests other than pings while idle"
        );
    }
    lb.leave().await;
    for pod in web {
        pod.leave().await;
    }
}
