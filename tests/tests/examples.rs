//! The examples run against a live local cluster: `broker` (a pod written in Rust with
//! the library API: its id is its seq and never changes, its peers come from `grep`) and
//! `cluster-health` (a tool on `ochopod-zk` and `ochopod-http` that prints every cluster's hash
//! and leader and fails when a configuration stays pending).

use ochopod_e2e::tools::{example_binary, run_binary, Service};
use ochopod_e2e::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// `METHOD path` on 127.0.0.1:port (HTTP/1.0, fresh connection): status and body, or why not.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no reply")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("bad status line")?;
    Ok((status, body.to_string()))
}

/// One broker: its process, control port and broker port.
struct Broker {
    service: Service,
    control: u16,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(zk: &str) -> anyhow::Result<Broker> {
        let control = free_port()?;
        let port = free_port()?;
        let dir = tempfile::Builder::new()
            .prefix("ochopod-broker-")
            .tempdir()?;
        let service = Service::spawn(
            &example_binary("broker")?,
            &[],
            &[
                ("ochopod_zk", zk),
                ("ochopod_binding", "local"),
                ("ochopod_namespace", "ex"),
                ("ochopod_port", &control.to_string()),
                ("PORT_9092", &port.to_string()),
                ("ochopod_state_dir", "state"),
                ("BROKER_DIR", "data"),
                ("BROKER_GRACE", "2"),
                // Three failed checks turn the pod off: at 1 s, a python slow to start
                // listening on a loaded machine tripped the breaker before it was up.
                ("BROKER_CHECK_EVERY", "4"),
            ],
            Some(dir.path()),
        )?;
        Ok(Broker {
            service,
            control,
            port,
            _dir: dir,
        })
    }

    fn info(&self) -> Result<Value, String> {
        let (code, body) = http(self.control, "GET", "/info", "")?;
        if code != 200 {
            return Err(format!("/info {code}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| e.to_string())
    }

    /// `broker.properties` as the broker serves it, as key -> value.
    fn properties(&self) -> Result<Vec<(String, String)>, String> {
        let (code, body) = http(self.port, "GET", "/broker.properties", "")?;
        if code != 200 {
            return Err(format!("broker.properties {code}"));
        }
        Ok(body
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    fn prop(&self, key: &str) -> Result<String, String> {
        self.properties()?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("no {key}"))
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn describe(&self) -> String {
        format!(
            "{}: {:?} / {:?} / log {}",
            self.port,
            self.properties(),
            self.info()
                .map(|i| (i["process"].clone(), i["seq"].clone())),
            self.service.log_tail(400)
        )
    }
}

/// Waits until every broker serves `peers` = exactly `want` and runs.
fn wait_peers(brokers: &[&Broker], want: &[&Broker]) -> Result<()> {
    let want: BTreeSet<String> = want.iter().map(|b| b.addr()).collect();
    wait_until(WAIT, &format!("every broker to list {want:?}"), || {
        for b in brokers {
            let peers: BTreeSet<String> = b
                .prop("peers")
                .map(|p| p.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            if peers != want {
                return Err(b.describe());
            }
        }
        Ok(())
    })
}

fn id_and_seq(b: &Broker) -> (u64, u64) {
    let id = b
        .prop("broker.id")
        .expect("broker.id")
        .parse()
        .expect("a number");
    let seq = b.info().expect("/info")["seq"].as_u64().expect("seq");
    (id, seq)
}

#[test]
fn broker_id_is_its_seq_and_never_changes() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let a = Broker::start(&z)?;
    let b = Broker::start(&z)?;
    wait_peers(&[&a, &b], &[&a, &b])?;
    let (id_a, seq_a) = id_and_seq(&a);
    let (id_b, seq_b) = id_and_seq(&b);
    assert_eq!((id_a, id_b), (seq_a, seq_b), "broker.id = cluster.seq");
    assert_ne!(id_a, id_b);
    let info = a.info().map_err(anyhow::Error::msg)?;
    assert_eq!(info["cluster"], "ex.broker", "cluster defaults to broker");
    assert_eq!(a.prop("listeners").map_err(anyhow::Error::msg)?, a.addr());
    // The sanity check reports the id as the pod's metric; signal returns what it runs with.
    wait_until(WAIT, "the broker_id metric", || {
        let i = a.info()?;
        if i["metrics"]["broker_id"] == id_a {
            Ok(())
        } else {
            Err(i.to_string())
        }
    })?;
    let (code, reply) =
        http(a.control, "POST", "/control/signal", "{}").map_err(anyhow::Error::msg)?;
    assert_eq!(code, 200, "{reply}");
    let reply: Value = serde_json::from_str(&reply)?;
    assert_eq!(reply["id"], id_a);
    assert_eq!(reply["listen"], a.addr());

    // A third broker joins: peers grow in place, ids and processes stay.
    let pids = (
        a.info().unwrap()["pid"].clone(),
        b.info().unwrap()["pid"].clone(),
    );
    let mut c = Broker::start(&z)?;
    wait_peers(&[&a, &b, &c], &[&a, &b, &c])?;
    assert_eq!(id_and_seq(&a).0, id_a);
    assert_eq!(id_and_seq(&b).0, id_b);
    let (id_c, _) = id_and_seq(&c);
    assert!(![id_a, id_b].contains(&id_c));
    assert_eq!(
        (
            a.info().unwrap()["pid"].clone(),
            b.info().unwrap()["pid"].clone()
        ),
        pids,
        "membership changes reload the brokers, never restart them"
    );

    // It dies hard; the others drop it; it comes back from its state dir with the same id.
    c.service.kill9()?;
    c.service.kill_descendants();
    wait_peers(&[&a, &b], &[&a, &b])?;
    c.service.respawn()?;
    wait_peers(&[&a, &b, &c], &[&a, &b, &c])?;
    let (again, seq_again) = id_and_seq(&c);
    assert_eq!(again, id_c, "the id survives a restart of the container");
    assert_eq!(seq_again, id_c);
    assert_eq!(id_and_seq(&a).0, id_a);

    // SIGTERM: it leaves the cluster and exits 0.
    c.service.signal(nix::sys::signal::Signal::SIGTERM)?;
    let status = c.service.wait_exit(WAIT)?;
    assert_eq!(status.code(), Some(0), "{}", c.service.log_tail(800));
    wait_peers(&[&a, &b], &[&a, &b])?;
    Ok(())
}

#[test]
fn broker_refuses_bad_settings_with_a_clear_error() -> anyhow::Result<()> {
    let out = run_binary(
        &example_binary("broker")?,
        &[],
        &[("BROKER_PORT", "ninety"), ("ochopod_zk", "127.0.0.1:1")],
        Duration::from_secs(30),
    )?;
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("BROKER_PORT=\"ninety\""), "{out:?}");
    Ok(())
}

fn cluster_health(z: &str, args: &[&str]) -> anyhow::Result<tools::Output> {
    let mut all = vec!["--zk", z];
    all.extend(args);
    Ok(run_binary(
        &example_binary("cluster-health")?,
        &all,
        &[],
        Duration::from_secs(60),
    )?)
}

/// `ns.cl hash=H leader=L pods=N pending=P` -> (H, L, N, P).
fn health_line<'a>(stdout: &'a str, cluster: &str) -> (&'a str, &'a str, &'a str, &'a str) {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(cluster))
        .unwrap_or_else(|| panic!("no line for {cluster}: {stdout}"));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    (
        field("hash="),
        field("leader="),
        field("pods="),
        field("pending="),
    )
}

#[test]
fn cluster_health_prints_hashes_and_leaders_and_fails_on_a_stuck_cluster() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let spec = |cluster: &str| -> anyhow::Result<PodSpec> {
        let mut s = PodSpec::new("ex", cluster, &z)?;
        s.command("sleep 600").set("process", "grace", 2.0);
        Ok(s)
    };
    let healthy: Vec<Agent> = (0..2)
        .map(|_| Agent::spawn(&spec("healthy")?).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    for a in &healthy {
        a.wait_info(WAIT, "running", |i| i.process == "running")?;
    }
    let refs: Vec<&Agent> = healthy.iter().collect();
    let leader = wait_until(WAIT, "a clean leader", || {
        let infos = infos_by_key(&refs);
        infos
            .values()
            .find(|i| i.state == "leader" && i.pending_ms.is_none() && i.last_round.is_some())
            .map(|i| i.key.clone())
            .ok_or_else(|| describe(&refs))
    })?;
    let out = cluster_health(&z, &["--max-pending", "5"])?;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let (hash, who, pods, pending) = health_line(&out.stdout, "ex.healthy");
    let stored = Kazoo::new(&z)?
        .dump(&format!("{}/hash", Kazoo::cluster_path("ex", "healthy")))?
        .and_then(|n| n.data)
        .expect("a committed hash");
    assert_eq!(hash, stored);
    assert_eq!((who, pods, pending), (leader.as_str(), "2", "-"));

    // A cluster whose pods refuse to be configured stays pending.
    let mut s = spec("stuck")?;
    s.hook("can_configure", "echo not yet >&2; exit 1");
    let stuck = Agent::spawn(&s)?;
    let info = stuck.wait_info(WAIT, "pending for over 1.5 s", |i| {
        i.pending_ms.is_some_and(|p| p > 1500)
    })?;
    let out = cluster_health(&z, &["--max-pending", "1"])?;
    assert_eq!(out.code(), Some(1), "{out:?}");
    let (hash, who, pods, pending) = health_line(&out.stdout, "ex.stuck");
    assert_eq!((hash, who, pods), ("-", info.key.as_str(), "1"));
    let secs: f64 = pending.trim_end_matches('s').parse()?;
    assert!(secs > 1.0, "{pending}");
    assert_eq!(health_line(&out.stdout, "ex.healthy").1, leader);
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "only the stuck cluster: {err}");
    assert!(
        err.starts_with("cluster-health: ex.stuck: configuration pending for"),
        "{err}"
    );
    assert!(err.contains("over --max-pending 1"), "{err}");
    // A looser bound passes.
    let out = cluster_health(&z, &["--max-pending=3600"])?;
    assert_eq!(out.code(), Some(0), "{out:?}");

    // Bad flags: exit 2 with the reason.
    let out = cluster_health(&z, &["--max-pending", "soon"])?;
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("\"soon\" is not a number"), "{out:?}");
    let out = cluster_health(&z, &["--bogus"])?;
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("usage:"), "{out:?}");
    Ok(())
}
