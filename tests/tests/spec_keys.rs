//! Spec keys through real agents (each is also covered in the pure core's simulator): the
//! leader's `fan_out` (and the dropping of queued requests of a round that ended), `start =
//! false`, `sequential`, `full_shutdown`, the cluster `probe`, and SIGINT as a stop signal.
//!
//! Every check reads a record the pods' hooks or processes append to (a file per pod, or one
//! shared by the cluster with atomic appends), so nothing depends on catching a short window.

use ochopod_e2e::scenario::*;
use ochopod_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NS: &str = "keys";
const SETTLE: Duration = Duration::from_secs(120);

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn lines(path: &Path) -> Vec<String> {
    text(path).lines().map(str::to_string).collect()
}

fn keys_in_view(line: &str) -> BTreeSet<String> {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v.get("pods").and_then(Value::as_object).cloned())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// `can_configure`: appends the view it was given (one line) to `checks.jsonl`; while `hang`
/// exists it marks itself `hanging` and waits for `go`; then fails once if `deny` exists.
const CHECK_SH: &str = r#"v=$(cat)
printf '%s\n' "$v" | tr -d '\n' >> checks.jsonl
echo >> checks.jsonl
if [ -f hang ]; then
  echo $$ > hanging
  while [ ! -f go ]; do sleep 0.05; done
  rm -f hanging go
fi
if [ -f deny ]; then rm -f deny; echo "denied once" >&2; exit 1; fi
"#;

fn fan_out_pod(zk: &str, cluster: &str, hang: bool) -> anyhow::Result<PodSpec> {
    let mut s = sleeper(NS, cluster, zk)?;
    s.set("model", "fan_out", 1)
        .set("model", "control_timeout", 60.0)
        .set("hooks", "timeout", 60.0)
        .hook("can_configure", "sh check.sh")
        .file("check.sh", CHECK_SH);
    if hang {
        s.file("hang", "");
    }
    Ok(s)
}

/// With `fan_out = 1` the leader has one control request in flight: while one pod's check
/// hangs, no other pod hears of the round. A pod leaving ends the round; the requests still
/// queued behind the hung one are then dropped, never sent (no pod is ever checked with the
/// departed pod in its view once the hung check returns), and the next round configures the
/// survivors.
#[test]
fn fan_out_bounds_requests_in_flight_and_drops_the_queue_of_an_ended_round() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "fanout";
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let kz = Kazoo::new(&z)?;
    let mut agents: Vec<Agent> = (0..4)
        .map(|_| Agent::spawn(&fan_out_pod(&z, cluster, false)?).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let settled = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let leader = settled.leader;
    let marks: Vec<usize> = agents
        .iter()
        .map(|a| lines(&a.dir().join("checks.jsonl")).len())
        .collect();
    for a in &agents {
        std::fs::write(a.dir().join("hang"), "")?;
    }
    // A fifth pod joins: a round checks all five, one at a time.
    agents.push(Agent::spawn(&fan_out_pod(&z, cluster, true)?)?);
    let newcomer = agents[4].wait_info(SETTLE, "registered", |i| i.seq.is_some())?;
    let hung = wait_until(SETTLE, "one pod's check to hang", || {
        let h: Vec<usize> = (0..agents.len())
            .filter(|i| agents[*i].dir().join("hanging").exists())
            .collect();
        if h.is_empty() {
            Err(describe(&agents.iter().collect::<Vec<_>>()))
        } else {
            Ok(h)
        }
    })?;
    assert_eq!(hung.len(), 1, "one check in flight with fan_out = 1");
    let hung = hung[0];
    // A pod other than the leader and the hung one leaves (SIGKILL: its node goes with its
    // session); the leader aborts the round.
    let victim = (0..agents.len())
        .find(|i| *i != leader && *i != hung)
        .expect("a third pod");
    let victim_key = agents[victim].info()?.key;
    agents[victim].kill9()?;
    let aborted = agents[leader].wait_info(SETTLE, "the round to end", |i| {
        i.last_round
            .as_ref()
            .is_some_and(|r| r.outcome.contains(&victim_key) && r.outcome.contains("left"))
    })?;
    // All that time, one pod only heard of the round: the one whose check hangs.
    for (i, a) in agents.iter().enumerate() {
        let before = marks.get(i).copied().unwrap_or(0);
        let heard = lines(&a.dir().join("checks.jsonl")).len() - before;
        let want = usize::from(i == hung);
        assert_eq!(
            heard, want,
            "pod {i} got {heard} checks of the round (the hung one is {hung}): {aborted:?}"
        );
    }
    // Let the hung check return: what queued behind it belonged to the ended round.
    for (i, a) in agents.iter().enumerate() {
        if i != victim {
            std::fs::remove_file(a.dir().join("hang"))?;
        }
    }
    std::fs::write(agents[hung].dir().join("go"), "")?;
    let survivors: Vec<&Agent> = agents
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, a)| a)
        .collect();
    let after = wait_settled(&survivors, &kz, NS, cluster, SETTLE)?;
    assert!(!after.zk.pod_keys().contains(&victim_key));
    for (i, a) in agents.iter().enumerate().filter(|(i, _)| *i != victim) {
        let before = marks.get(i).copied().unwrap_or(0);
        let seen = lines(&a.dir().join("checks.jsonl"));
        let stale: Vec<BTreeSet<String>> = seen[before..]
            .iter()
            .map(|l| keys_in_view(l))
            .filter(|k| k.contains(&victim_key))
            .collect();
        let allowed = usize::from(i == hung);
        assert_eq!(
            stale.len(),
            allowed,
            "pod {i}: checks of the ended round sent after it ended (the newcomer is {}): {stale:?}",
            newcomer.key
        );
    }
    Ok(())
}

/// Checks each pod got since `marks` (a pod past the end of `marks` counts from zero).
fn checks_since(agents: &[Agent], marks: &[usize]) -> Vec<usize> {
    agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let before = marks.get(i).copied().unwrap_or(0);
            lines(&a.dir().join("checks.jsonl")).len() - before
        })
        .collect()
}

/// The round's end comes from a reply (the hung check fails): the requests queued behind it
/// are dropped all the same, since its fan-out permit is released only once the leader has
/// acted on the failure. Each pod but the failing one is then checked once, by the next round.
#[test]
fn a_failed_reply_drops_what_queued_behind_it() -> anyhow::Result<()> {
    let _one = serial();
    let cluster = "fanfail";
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let kz = Kazoo::new(&z)?;
    let mut agents: Vec<Agent> = (0..4)
        .map(|_| Agent::spawn(&fan_out_pod(&z, cluster, false)?).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let settled = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let leader = settled.leader;
    let marks: Vec<usize> = checks_since(&agents, &[]);
    for a in &agents {
        std::fs::write(a.dir().join("hang"), "")?;
    }
    agents.push(Agent::spawn(&fan_out_pod(&z, cluster, true)?)?);
    let hung = wait_until(SETTLE, "one pod's check to hang", || {
        (0..agents.len())
            .find(|i| agents[*i].dir().join("hanging").exists())
            .ok_or_else(|| describe(&agents.iter().collect::<Vec<_>>()))
    })?;
    for a in &agents {
        std::fs::remove_file(a.dir().join("hang"))?;
    }
    std::fs::write(agents[hung].dir().join("deny"), "")?;
    std::fs::write(agents[hung].dir().join("go"), "")?;
    let all: Vec<&Agent> = agents.iter().collect();
    let after = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert!(
        !agents[hung].dir().join("deny").exists(),
        "the hung check failed once"
    );
    let got = checks_since(&agents, &marks);
    let want: Vec<usize> = (0..agents.len())
        .map(|i| 1 + usize::from(i == hung))
        .collect();
    assert_eq!(
        got,
        want,
        "checks per pod since the round began (pod {hung} hung then failed; leader {leader}): \
         {:?}",
        after.leader_info().last_round
    );
    Ok(())
}

#[test]
fn a_bad_ochopod_fan_out_is_refused_with_the_fix() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    for bad in ["0", "many", "-2"] {
        let s = sleeper(NS, "badfan", &zk.connect_string())?;
        let agent = Agent::spawn_env(&s, &[("ochopod_fan_out", bad)])?;
        let status = agent.wait_exit(Duration::from_secs(60))?;
        assert_eq!(status.code(), Some(2), "{bad}: {}", agent.log_tail(2000));
        let log = agent.log_tail(4000);
        assert!(
            log.contains("ochopod_fan_out") && log.contains("1 or more"),
            "{bad}: {log}"
        );
    }
    // The spec's key wins over the environment.
    let mut s = sleeper(NS, "badfan", &zk.connect_string())?;
    s.set("model", "fan_out", 2);
    let agent = Agent::spawn_env(&s, &[("ochopod_fan_out", "many")])?;
    agent.wait_info(SETTLE, "running", |i| i.process == "running")?;
    Ok(())
}

/// `start = false` (spec) and `ochopod_start=false` (environment): the leader's rounds
/// configure the pods (templates rendered, snapshot committed) without starting their
/// processes; an operator's empty `on` starts one.
#[test]
fn start_false_configures_without_starting_until_an_operator_on() -> anyhow::Result<()> {
    let cluster = "nostart";
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let kz = Kazoo::new(&z)?;
    let pod = |from_spec: bool| -> anyhow::Result<Agent> {
        let mut s = sleeper(NS, cluster, &z)?;
        s.set("process", "shell", true)
            .command("echo started >> starts; exec sleep 3600")
            .template("view.txt.j2", "{{ cluster.size }}\n", "view.txt");
        Ok(if from_spec {
            s.set("pod", "start", false);
            Agent::spawn(&s)?
        } else {
            Agent::spawn_env(&s, &[("ochopod_start", "false")])?
        })
    };
    let agents = [pod(true)?, pod(false)?];
    let all: Vec<&Agent> = agents.iter().collect();
    let keys: BTreeSet<String> = all
        .iter()
        .map(|a| {
            a.wait_info(SETTLE, "registered", |i| i.seq.is_some())
                .map(|i| i.key)
        })
        .collect::<Result<_>>()?;
    wait_until_with(
        SETTLE,
        Duration::from_millis(300),
        "both configured, not started",
        || {
            let z = ClusterZk::read(&kz, NS, cluster)?;
            let rendered = all.iter().all(|a| text(&a.dir().join("view.txt")) == "2\n");
            if z.snapshot_keys() == keys && z.hash.is_some() && rendered {
                Ok(())
            } else {
                Err(format!(
                    "snapshot={:?} | {}",
                    z.snapshot_keys(),
                    describe(&all)
                ))
            }
        },
    )?;
    for a in &all {
        let i = a.info()?;
        assert_eq!((i.process.as_str(), i.pid), ("stopped", None), "{i:?}");
        assert!(!a.dir().join("starts").exists(), "the process never ran");
    }
    // An operator's empty `on` (`ochopod on`) starts the first one.
    let reply = agents[0].control("on", None, None)?;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let running = agents[0].wait_info(SETTLE, "running", |i| i.process == "running")?;
    assert!(running.pid.is_some());
    let starts = agents[0].dir().join("starts");
    wait_until(SETTLE, "the process to say it started", || {
        let l = lines(&starts);
        if l.is_empty() {
            Err(agents[0].summary())
        } else {
            Ok(())
        }
    })?;
    assert_eq!(lines(&starts), ["started"], "started once");
    assert_eq!(agents[1].info()?.process, "stopped");
    Ok(())
}

/// A shared folder for the hooks and processes of one cluster, with its record file.
struct Shared {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Shared {
    fn new() -> anyhow::Result<Shared> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        Ok(Shared { _dir: dir, path })
    }

    fn p(&self, name: &str) -> String {
        self.path.join(name).to_string_lossy().into_owned()
    }

    fn record(&self) -> Vec<String> {
        lines(&self.path.join("record"))
    }
}

/// `sequential = true`: the leader sends each step to one pod at a time, in key order. Each
/// pod's `can_configure` holds a shared lock folder (`mkdir` is atomic) for a while: a second
/// check arriving meanwhile records an overlap.
#[test]
fn sequential_sends_one_request_at_a_time_in_key_order() -> anyhow::Result<()> {
    let cluster = "seq";
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let kz = Kazoo::new(&z)?;
    let shared = Shared::new()?;
    let hook = format!(
        "if mkdir {lock}; then :; else echo overlap >> {overlaps}; fi; \
         echo \"$(cat label)\" >> {record}; sleep 0.3; rmdir {lock} 2>/dev/null; true",
        lock = shared.p("inflight"),
        overlaps = shared.p("overlaps"),
        record = shared.p("record"),
    );
    let agents: Vec<Agent> = (0..3)
        .map(|n| -> anyhow::Result<Agent> {
            let mut s = sleeper(NS, cluster, &z)?;
            s.set("model", "sequential", true)
                .hook("can_configure", &hook)
                .file("label", &n.to_string());
            Ok(Agent::spawn(&s)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let settled = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    assert_eq!(
        text(&shared.path.join("overlaps")),
        "",
        "two checks at once"
    );
    // The committed round checked the three pods, in key order.
    let label_of: BTreeMap<String, String> = settled
        .infos
        .iter()
        .enumerate()
        .map(|(n, i)| (i.key.clone(), n.to_string()))
        .collect();
    let in_key_order: Vec<String> = label_of.values().cloned().collect();
    let record = shared.record();
    assert!(
        record.len() >= 3 && record[record.len() - 3..] == in_key_order[..],
        "the last round's checks {record:?}, key order {in_key_order:?}"
    );
    Ok(())
}

/// `full_shutdown = true`: a round turns every pod off before turning any on, so a member
/// joining restarts every running process (without it a membership change restarts nobody).
/// The processes append `start N` / `stop N` to one shared record.
#[test]
fn full_shutdown_stops_every_pod_before_starting_any() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let kz = Kazoo::new(&z)?;
    for full in [true, false] {
        let cluster = if full { "full" } else { "partial" };
        let shared = Shared::new()?;
        let record = shared.p("record");
        let pod = |n: usize| -> anyhow::Result<Agent> {
            let mut s = sleeper(NS, cluster, &z)?;
            s.set("model", "full_shutdown", full)
                .set("process", "shell", true)
                .command(&format!(
                    "echo start {n} >> {record}; \
                     trap 'echo stop {n} >> {record}; exit 0' TERM; \
                     while :; do sleep 0.1; done"
                ));
            Ok(Agent::spawn(&s)?)
        };
        let mut agents = vec![pod(0)?, pod(1)?];
        let two: Vec<&Agent> = agents.iter().collect();
        wait_settled(&two, &kz, NS, cluster, SETTLE)?;
        let mark = shared.record().len();
        agents.push(pod(2)?);
        let three: Vec<&Agent> = agents.iter().collect();
        wait_settled(&three, &kz, NS, cluster, SETTLE)?;
        // Stops are recorded before the processes exit, so before the commit; a start is
        // recorded by the process itself, once running: wait for the starts.
        let starts = if full { 3 } else { 1 };
        let round = wait_until(SETTLE, "the processes to record their starts", || {
            let round: Vec<String> = shared.record()[mark..].to_vec();
            if round.iter().filter(|l| l.starts_with("start")).count() >= starts {
                Ok(round)
            } else {
                Err(format!("{round:?}"))
            }
        })?;
        if full {
            let stops: BTreeSet<&str> = round[..2].iter().map(String::as_str).collect();
            assert_eq!(
                stops,
                BTreeSet::from(["stop 0", "stop 1"]),
                "every running pod off first: {round:?}"
            );
            let starts: BTreeSet<&str> = round[2..].iter().map(String::as_str).collect();
            assert_eq!(
                starts,
                BTreeSet::from(["start 0", "start 1", "start 2"]),
                "then every pod on: {round:?}"
            );
            assert_eq!(round.len(), 5, "{round:?}");
        } else {
            assert_eq!(round, ["start 2"], "only the newcomer starts: {round:?}");
        }
    }
    Ok(())
}

/// `[model] probe` with `probe_every`: the leader runs it while the cluster is clean; its
/// trimmed stdout is the leader's `status`, a failure shows as `* <why>`.
#[test]
fn the_cluster_probe_sets_the_leaders_status() -> anyhow::Result<()> {
    let cluster = "probe";
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let kz = Kazoo::new(&z)?;
    let shared = Shared::new()?;
    let status = shared.path.join("status");
    std::fs::write(&status, "  all good \n")?;
    let agents: Vec<Agent> = (0..2)
        .map(|_| -> anyhow::Result<Agent> {
            let mut s = sleeper(NS, cluster, &z)?;
            s.set("model", "probe", format!("cat {}", status.display()))
                .set("model", "probe_every", 0.5);
            Ok(Agent::spawn(&s)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let leader = wait_settled(&all, &kz, NS, cluster, SETTLE)?.leader;
    let l = &agents[leader];
    l.wait_info(SETTLE, "the probe's stdout", |i| i.status == "all good")?;
    std::fs::write(&status, "degraded\n")?;
    l.wait_info(SETTLE, "the probe's new stdout", |i| i.status == "degraded")?;
    std::fs::remove_file(&status)?;
    let failed = l.wait_info(SETTLE, "the probe's failure", |i| {
        i.status.starts_with("* ")
    })?;
    assert!(failed.status.contains("No such file"), "{failed:?}");
    for (i, a) in agents.iter().enumerate().filter(|(i, _)| *i != leader) {
        assert_eq!(a.info()?.status, "", "follower {i} runs no probe");
    }
    Ok(())
}

/// SIGINT stops the agent like SIGTERM: it leaves the cluster (the other pod leads and
/// configures itself alone), tears the process down with SIGTERM (SIGINT is not forwarded), and
/// exits 0.
#[test]
fn sigint_stops_the_agent_gracefully() -> anyhow::Result<()> {
    let cluster = "sigint";
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let kz = Kazoo::new(&z)?;
    let agents: Vec<Agent> = (0..2)
        .map(|_| -> anyhow::Result<Agent> {
            let mut s = sleeper(NS, cluster, &z)?;
            s.set("process", "shell", true).command(
                "trap 'echo INT >> got; exit 0' INT; trap 'echo TERM >> got; exit 0' TERM; \
                 while :; do sleep 0.1; done",
            );
            Ok(Agent::spawn(&s)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<&Agent> = agents.iter().collect();
    let settled = wait_settled(&all, &kz, NS, cluster, SETTLE)?;
    let (gone, stays) = (settled.leader, settled.follower());
    let gone_key = settled.infos[gone].key.clone();
    agents[gone].signal(nix::sys::signal::Signal::SIGINT)?;
    let status = agents[gone].wait_exit(SETTLE)?;
    assert_eq!(status.code(), Some(0), "{}", agents[gone].log_tail(2000));
    assert_eq!(lines(&agents[gone].dir().join("got")), ["TERM"]);
    let log = std::fs::read_to_string(agents[gone].log_path())?;
    assert!(log.contains("left the cluster"), "{log}");
    let alone = wait_settled(&[&agents[stays]], &kz, NS, cluster, SETTLE)?;
    assert!(!alone.zk.pod_keys().contains(&gone_key));
    Ok(())
}
