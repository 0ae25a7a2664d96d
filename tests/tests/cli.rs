//! The operator CLI against a live three-pod cluster: every command's output is checked
//! against what the pods and ZooKeeper say (not just the exit code), and bad names give a
//! one-line reason and a non-zero exit. Pods that cannot be reached, or names that match several
//! pods, are registered by hand with kazoo, so the errors are certain rather than racy.

use ochopod_e2e::tools::{ochopod_cli, pod_nodes, wait_registered_again, Output};
use ochopod_e2e::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);
const CLI: Duration = Duration::from_secs(60);
const NS: &str = "cli";

fn cli(zk: &str, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--zk", zk]);
    ochopod_cli(&all, &[], CLI).expect("the ochopod command ran")
}

/// Exits 0; returns stdout.
fn ok(zk: &str, args: &[&str]) -> String {
    let out = cli(zk, args);
    assert!(
        out.success(),
        "{args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Fails with `code` and exactly one line on stderr mentioning `mentions`.
fn fails(zk: &str, args: &[&str], code: i32, mentions: &str) -> String {
    let out = cli(zk, args);
    assert_eq!(out.code(), Some(code), "{args:?}: {out:?}");
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
    assert!(err.starts_with("ochopod: "), "{err:?}");
    assert!(
        err.contains(mentions),
        "{err:?} should mention {mentions:?}"
    );
    err.to_string()
}

fn tool(spec: &mut PodSpec, name: &str, command: &str) {
    let mut t = toml::Table::new();
    t.insert("command".into(), command.into());
    spec.set("tools", name, toml::Value::Table(t));
}

fn view_txt(agent: &Agent) -> String {
    std::fs::read_to_string(agent.dir().join("view.txt")).unwrap_or_default()
}

/// A registration written by hand (as a 1.x pod or a dead host would leave it).
fn ghost(kz: &Kazoo, cluster: &str, key: &str, seq: u64, port: u16) -> anyhow::Result<()> {
    let (ns, cl) = cluster.split_once('.').expect("ns.cluster");
    let reg = json!({
        "cluster": cl, "namespace": ns, "binding": "local", "fwk": "local",
        "ip": "127.0.0.1", "public": "", "ports": { port.to_string(): port },
        "port": port.to_string(), "node": "ghost", "application": "ghost", "task": "ghost",
        "seq": seq, "zk": "", "status": "", "debug": "false", "local": "true", "start": "true"
    });
    kz.create(
        &format!("{}/pods/{key}.{seq:010}", Kazoo::cluster_path(ns, cl)),
        &reg.to_string(),
    )?;
    Ok(())
}

#[test]
fn operator_commands_against_a_live_cluster() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let zkc = zk.connect_string();
    let z = zkc.as_str();
    let mut agents = Vec::new();
    for _ in 0..3 {
        let mut spec = PodSpec::new(NS, "web", z)?;
        let mut env = toml::Table::new();
        env.insert("GREETING".into(), "pod {{ cluster.index }}".into());
        spec.set("process", "shell", true)
            .set("process", "grace", 2.0)
            .set("process", "env", toml::Value::Table(env))
            .set("model", "control_timeout", 20.0)
            .command("echo \"greeting: $GREETING\"; exec sleep 600")
            .template(
                "view.txt.j2",
                "{{ cluster.index }}/{{ cluster.size }} seq={{ cluster.seq }}\n",
                "view.txt",
            )
            .hook("signal", "sed s/ping/pong/");
        tool(
            &mut spec,
            "greet",
            "echo \"hi $1\"; cat data.txt; exit ${2:-0}",
        );
        agents.push(Agent::spawn(&spec)?);
    }
    let all: Vec<&Agent> = agents.iter().collect();
    // At rest: one clean leader (not `leader (configuring)`), the round committed, and so every
    // pod's `view.txt` rendered with the view of three (templates render during `on`, before
    // the commit).
    let kz = Kazoo::new(z)?;
    let settled = wait_settled(&all, &kz, NS, "web", WAIT)?;
    for a in &all {
        assert!(view_txt(a).contains("/3 "), "{:?}", view_txt(a));
    }
    let infos: BTreeMap<String, Info> = settled
        .infos
        .iter()
        .map(|i| (i.key.clone(), i.clone()))
        .collect();
    let keys: Vec<String> = infos.keys().cloned().collect(); // sorted = index order
    let leader = settled.leader_info().key.clone();
    let by_key: BTreeMap<String, &Agent> = all
        .iter()
        .zip(&settled.infos)
        .map(|(a, i)| (i.key.clone(), *a))
        .collect();

    // ls: a table of every pod, then the same as JSON.
    let table = ok(z, &["ls"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["CLUSTER", "#", "KEY", "INDEX", "IP", "PORTS", "STATE", "PROCESS", "STATUS"]
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (i, key) in keys.iter().enumerate() {
        let row: Vec<&str> = rows[i].split_whitespace().collect();
        let info = &infos[key];
        let port = by_key[key].port();
        assert_eq!(row[0], "cli.web", "{table}");
        // `#` is the seq (what cluster#N names); INDEX the place among the sorted keys.
        assert_eq!(row[1], info.seq.expect("seq").to_string(), "{table}");
        assert_eq!(row[2], &key[..8], "{table}");
        assert_eq!(row[3], i.to_string(), "{table}");
        assert_eq!(row[4], "127.0.0.1");
        assert_eq!(row[5], format!("{port}->{port}"), "{table}");
        let state = if *key == leader { "leader" } else { "follower" };
        assert_eq!((row[6], row[7]), (state, "running"), "{table}");
    }
    let listed: Value = serde_json::from_str(&ok(z, &["ls", "--json"]))?;
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 3);
    for (i, row) in listed.iter().enumerate() {
        assert_eq!(row["key"], keys[i].as_str());
        assert_eq!(row["index"], i);
        assert_eq!(row["cluster"], "cli.web");
        assert_eq!(row["seq"], json!(infos[&keys[i]].seq));
        assert_eq!(row["process"], "running");
    }
    assert_eq!(ok(z, &["ls", "web"]).lines().count(), 4, "pattern web");
    assert_eq!(ok(z, &["ls", "cli.*"]).lines().count(), 4, "pattern cli.*");
    assert_eq!(ok(z, &["ls", "nothing-here"]).trim(), "no pods");

    // info by key prefix and by cluster#seq.
    let follower = keys
        .iter()
        .find(|k| **k != leader)
        .expect("a follower")
        .clone();
    let fa = by_key[&follower];
    let info: Value = serde_json::from_str(&ok(z, &["info", &follower[..8], "--json"]))?;
    assert_eq!(info["key"], follower.as_str());
    assert_eq!(info["state"], "follower");
    for key in &keys {
        let seq = infos[key].seq.expect("seq");
        for name in [format!("cli.web#{seq}"), format!("web#{seq}")] {
            let v: Value = serde_json::from_str(&ok(z, &["info", &name, "--json"]))?;
            assert_eq!(v["key"], key.as_str(), "{name}");
        }
    }

    // info --view saves the view; render --view renders the spec's templates offline with it.
    let work = tempfile::tempdir()?;
    let view_path = work.path().join("view.json");
    let vp = view_path.to_str().expect("utf-8");
    let out = cli(z, &["info", &follower, "--view", vp]);
    assert!(out.success(), "{out:?}");
    assert!(out.stderr.contains("saved the cluster view"), "{out:?}");
    let view: Value = serde_json::from_str(&std::fs::read_to_string(&view_path)?)?;
    assert_eq!(view["key"], follower.as_str());
    assert_eq!(view["pods"].as_object().map(|p| p.len()), Some(3));
    let out_dir = work.path().join("out");
    let rendered = ochopod_cli(
        &[
            "render",
            "--spec",
            fa.spec_path().to_str().expect("utf-8"),
            "--view",
            vp,
            "--out",
            out_dir.to_str().expect("utf-8"),
        ],
        &[],
        CLI,
    )?
    .ok()?
    .stdout;
    assert!(rendered.contains("rendered view.txt.j2 ->"), "{rendered}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("view.txt"))?,
        view_txt(fa),
        "offline render = what the pod rendered"
    );

    // log: the process output, as lines and as JSON.
    let index = keys.iter().position(|k| *k == follower).expect("index");
    let greeting = format!("greeting: pod {index}");
    let log = ok(z, &["log", &follower]);
    assert!(log.lines().any(|l| l.contains(&greeting)), "{log}");
    let log_json: Value = serde_json::from_str(&ok(z, &["log", &follower, "--json"]))?;
    assert!(log_json
        .as_array()
        .expect("array")
        .iter()
        .any(|l| l.as_str().is_some_and(|l| l.contains(&greeting))));

    // signal --body: the hook's JSON reply.
    let reply: Value =
        serde_json::from_str(&ok(z, &["signal", &follower, "--body", r#"{"ping": 2}"#]))?;
    assert_eq!(reply, json!({"pong": 2}));
    fails(
        z,
        &["signal", &follower, "--body", "{nope"],
        2,
        "--body is not JSON",
    );

    // exec: arguments, an uploaded file, the tool's exit code.
    let data = work.path().join("data.txt");
    std::fs::write(&data, "uploaded line\n")?;
    let dp = data.to_str().expect("utf-8");
    let out = ok(z, &["exec", &follower, "greet", "bob", "--file", dp]);
    assert_eq!(out, "hi bob\nuploaded line\n");
    let out = cli(z, &["exec", &follower, "greet", "ann", "3", "--file", dp]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, "hi ann\nuploaded line\n");
    let out: Value = serde_json::from_str(&ok(
        z,
        &["exec", &follower, "greet", "x", "--file", dp, "--json"],
    ))?;
    assert_eq!(out, json!({"code": 0, "lines": ["hi x", "uploaded line"]}));

    // hash: the committed hash and the leader.
    let line = ok(z, &["hash", "cli.web"]);
    let (hash, who) = line
        .trim()
        .strip_prefix("cli.web hash=")
        .and_then(|r| r.split_once(" leader="))
        .unwrap_or_else(|| panic!("{line:?}"));
    assert_eq!(hash.len(), 64, "{line}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    assert_eq!(who, leader);
    let hj: Value = serde_json::from_str(&ok(z, &["hash", "cli.web", "--json"]))?;
    assert_eq!(
        hj,
        json!({"cluster": "cli.web", "hash": hash, "leader": leader})
    );
    assert_eq!(
        Kazoo::new(z)?
            .dump(&format!("{}/hash", Kazoo::cluster_path(NS, "web")))?
            .and_then(|n| n.data)
            .as_deref(),
        Some(hash),
        "the hash ZooKeeper holds"
    );

    // watch --count 1: one drawing of the table.
    let w = ok(z, &["watch", "--count", "1"]);
    assert!(w.starts_with("CLUSTER"), "{w}");
    assert_eq!(w.lines().last(), Some("--"), "{w}");
    assert_eq!(w.lines().filter(|l| l.starts_with("cli.web")).count(), 3);
    let wj: Value = serde_json::from_str(ok(z, &["watch", "--count", "1", "--json"]).trim())?;
    assert_eq!(wj.as_array().map(Vec::len), Some(3));

    // off / on / reset / kill on a follower.
    let pid = fa.info()?.pid;
    let out = ok(z, &["off", &follower]);
    assert!(out.starts_with(&format!("off {follower}: ok")), "{out}");
    assert_eq!(fa.info()?.process, "stopped");
    std::fs::remove_file(fa.dir().join("view.txt"))?;
    let out = ok(z, &["on", &follower]);
    assert!(out.starts_with(&format!("on {follower}: ok")), "{out}");
    let back = fa.wait_info(WAIT, "running again", |i| i.process == "running")?;
    assert_ne!(back.pid, pid);
    assert!(
        !fa.dir().join("view.txt").exists(),
        "an operator's on starts the last configuration again, without rendering"
    );
    let before = pod_nodes(&kz, NS, "web", &follower).map_err(anyhow::Error::msg)?;
    assert_eq!(before.len(), 1, "{before:?}");
    let out = ok(z, &["reset", &follower]);
    assert!(out.starts_with(&format!("reset {follower}: ok")), "{out}");
    assert!(out.contains("\"reset\":true"), "{out}");
    let seq = wait_registered_again(&kz, NS, "web", &follower, before[0].0, WAIT)?;
    assert_eq!(seq, before[0].1, "a reset keeps the seq");
    fa.wait_info(WAIT, "connected after reset", |i| i.zk == "connected")?;
    let out = ok(z, &["kill", &follower]);
    assert!(out.starts_with(&format!("kill {follower}: ok")), "{out}");
    assert_eq!(fa.info()?.process, "dead");
    fails(z, &["on", &follower], 1, "410");
    let row = ok(z, &["ls", "--json"]);
    let row: Value = serde_json::from_str(&row)?;
    let dead = row
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["key"] == follower.as_str())
        .expect("still registered");
    assert_eq!(dead["process"], "dead");
    Ok(())
}

#[test]
fn bad_names_and_unreachable_pods_give_one_line_and_a_code() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let zkc = zk.connect_string();
    let z = zkc.as_str();
    let kz = Kazoo::new(z)?;
    let closed = free_port()?; // nobody listens there
    let k1 = "aaaa0000-0000-4000-8000-000000000001";
    let k2 = "aaaa0000-0000-4000-8000-000000000002";
    let k3 = "bbbb0000-0000-4000-8000-000000000003";
    ghost(&kz, "cli.ghost", k1, 1, closed)?;
    ghost(&kz, "cli.ghost", k2, 2, closed)?;
    ghost(&kz, "other.ghost", k3, 3, closed)?;

    // Unreachable: exit 1, one line naming the pod.
    fails(z, &["info", k1], 1, &format!("pod {k1} is unreachable"));
    fails(z, &["log", k1], 1, "unreachable");
    fails(z, &["off", k1], 1, "unreachable");
    fails(z, &["signal", k1], 1, "unreachable");
    // ls still lists it, marked unreachable.
    let rows: Value = serde_json::from_str(&ok(z, &["ls", "--json"]))?;
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["state"] == "unreachable"), "{rows:?}");
    let table = ok(z, &["ls", "cli.*"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.lines().skip(1).all(|l| l.contains("unreachable")),
        "{table}"
    );

    // Ambiguous names: exit 2, one line naming the candidates.
    let err = fails(z, &["info", "aaaa"], 2, "ambiguous");
    assert!(err.contains(k1) && err.contains(k2), "{err}");
    let err = fails(z, &["info", "ghost#0"], 2, "ambiguous");
    assert!(
        err.contains("cli.ghost") && err.contains("other.ghost"),
        "{err}"
    );
    // Unknown names and bad seqs.
    fails(z, &["info", "zzzz"], 2, "no pod matches");
    fails(z, &["info", "cli.ghost#7"], 2, "no pod matches");
    fails(z, &["info", "ghost#x"], 2, "seq");
    // info names one pod: a glob reaching two is refused, naming them.
    let err = fails(z, &["info", "cli.ghost#*"], 2, "matches 2 pods");
    assert!(
        err.contains("cli.ghost#1") && err.contains("cli.ghost#2"),
        "{err}"
    );
    // A full name resolves despite the other namespace.
    let out = cli(z, &["info", "other.ghost#3"]);
    assert_eq!(out.code(), Some(1), "resolved, then unreachable: {out:?}");
    assert!(out.stderr.contains(k3), "{out:?}");

    // hash of a cluster without one; a malformed cluster name.
    assert_eq!(
        ok(z, &["hash", "cli.ghost"]).trim(),
        "cli.ghost hash=- leader=-"
    );
    let out = cli(z, &["hash", "nodot"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");

    // ZooKeeper unreachable: one line naming --zk.
    let nowhere = format!("127.0.0.1:{}", free_port()?);
    let out = ochopod_cli(&["ls", "--zk", &nowhere], &[], CLI)?;
    assert_ne!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("cannot reach ZooKeeper"), "{out:?}");
    // Said at once (no session timeout waited out), naming the host and why.
    assert!(
        out.stderr.contains(&nowhere) && out.stderr.contains("refused"),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn completions_for_bash() -> anyhow::Result<()> {
    let out = ochopod_cli(&["completions", "bash"], &[], CLI)?.ok()?;
    assert!(out.stdout.contains("_ochopod()"), "a bash function");
    assert!(out.stdout.contains("complete -F _ochopod"), "registered");
    for sub in [
        "run", "render", "ls", "info", "log", "signal", "exec", "hash", "watch",
    ] {
        assert!(out.stdout.contains(sub), "{sub} in the completions");
    }
    let out = ochopod_cli(&["completions", "tcsh"], &[], CLI)?;
    assert_eq!(out.code(), Some(2), "{out:?}");
    Ok(())
}

/// `ochopod run` whose control port another process holds exits 4, with one line in the words
/// of the spec and the flags (not the library's builder methods).
#[test]
fn a_taken_control_port_exits_4() -> anyhow::Result<()> {
    // The control plane listens before ZooKeeper is contacted: no server is needed.
    let mut spec = PodSpec::new(NS, "taken", "127.0.0.1:1")?;
    spec.command("sleep 600");
    // A port the kernel gives us and we hold: a port picked free and bound afterwards can be
    // taken in between by a test running beside this one.
    let held = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let port = held.local_addr()?.port();
    spec.set("pod", "port", i64::from(port));
    let dir = tempfile::tempdir()?;
    let path = spec.write_to(dir.path())?;
    let out = ochopod_cli(&["run", "--spec", &path.display().to_string()], &[], CLI)?;
    assert_eq!(out.code(), Some(4), "{out:?}");
    let err = out
        .stderr
        .lines()
        .find(|l| l.starts_with("ochopod: "))
        .unwrap_or_default();
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && err.contains("[pod] port")
            && !err.contains("PodBuilder"),
        "{out:?}"
    );
    drop(held);
    Ok(())
}

/// Runs `ochopod ARGS --zk Z` on a pseudo-terminal (util-linux `script`), typing `answer`.
fn on_a_terminal(zk: &str, args: &[&str], answer: &str) -> anyhow::Result<std::process::Output> {
    let bin = agent_binary()?;
    let mut line = format!("{} ", bin.display());
    for a in args.iter().chain(["--zk", zk].iter()) {
        line.push_str(&format!("'{a}' "));
    }
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("ochopod_zk")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(answer.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// `cluster#N` names the pod whose seq is N, for its whole life: after the cluster shrinks,
/// the same name still reaches the same pod (a position among the pods would shift). Globs
/// reach several pods; acting on more than one asks first on a terminal and, without one,
/// refuses unless `--yes`.
#[test]
fn pods_are_named_by_seq_and_globs_act_on_many_after_asking() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let zkc = zk.connect_string();
    let z = zkc.as_str();
    let mut agents = Vec::new();
    for _ in 0..3 {
        let mut spec = PodSpec::new(NS, "addr", z)?;
        spec.set("process", "shell", true)
            .set("process", "grace", 2.0)
            .set("model", "control_timeout", 20.0)
            .command("exec sleep 600");
        tool(&mut spec, "whoami", "echo \"tool ran\"");
        agents.push(Agent::spawn(&spec)?);
        // One at a time: seqs 0, 1, 2 in start order.
        let a = agents.last().expect("just pushed");
        a.wait_info(WAIT, "registered", |i| i.seq.is_some())?;
    }
    let kz = Kazoo::new(z)?;
    let all: Vec<&Agent> = agents.iter().collect();
    wait_settled(&all, &kz, NS, "addr", WAIT)?;
    let seq_of = |a: &Agent| a.info().map(|i| i.seq.expect("seq"));
    let seqs: Vec<u64> = agents.iter().map(seq_of).collect::<Result<_>>()?;

    // The pod of the smallest seq leaves: the others keep their names.
    let first = seqs
        .iter()
        .position(|s| *s == *seqs.iter().min().expect("3"))
        .expect("min");
    agents[first].sigterm()?;
    agents[first].wait_exit(WAIT)?;
    agents.remove(first);
    // The survivors settle (a new leader's round, if the leaver led) before anything is turned
    // off, so no round turns them on again behind the test's back.
    let rest: Vec<&Agent> = agents.iter().collect();
    wait_settled(&rest, &kz, NS, "addr", WAIT)?;
    wait_until(WAIT, "two pods listed", || {
        let rows: Value =
            serde_json::from_str(&ok(z, &["ls", "--json"])).map_err(|e| e.to_string())?;
        match rows.as_array().map(Vec::len) {
            Some(2) => Ok(()),
            n => Err(format!("{n:?} rows")),
        }
    })?;
    for a in &agents {
        let info = a.info()?;
        let seq = info.seq.expect("seq");
        for name in [
            format!("addr#{seq}"),
            format!("cli.addr#{seq}"),
            format!("cli.a*#{seq}"),
        ] {
            let v: Value = serde_json::from_str(&ok(z, &["info", &name, "--json"]))?;
            assert_eq!(
                v["key"],
                info.key.as_str(),
                "{name} names the pod of seq {seq}"
            );
        }
    }
    let gone = seqs.iter().min().expect("3").to_string();
    fails(z, &["info", &format!("addr#{gone}")], 2, "no pod matches");

    // Several pods without a terminal: refused unless --yes, nothing done.
    let err = fails(z, &["off", "addr#*"], 2, "--yes");
    assert!(err.contains("2 pods"), "{err}");
    for a in &agents {
        assert_eq!(a.info()?.process, "running", "nothing was turned off");
    }
    let out = ok(z, &["exec", "addr*", "whoami", "--yes"]);
    assert_eq!(out.matches("tool ran").count(), 2, "{out}");
    for a in &agents {
        let seq = a.info()?.seq.expect("seq");
        assert!(
            out.contains(&format!("- cli.addr#{seq} (exit code 0)")),
            "{out}"
        );
    }
    let out = ok(z, &["off", "cli.addr#*", "--yes"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    for a in &agents {
        a.wait_info(WAIT, "turned off", |i| i.process == "stopped")?;
    }

    // On a terminal: asked first; anything but yes does nothing, yes acts on every pod.
    let out = on_a_terminal(z, &["on", "addr#*"], "n\n")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("on 2 pods (cli.addr#"), "asked: {text:?}");
    assert_eq!(out.status.code(), Some(1), "{text:?}");
    assert!(text.contains("not confirmed"), "{text:?}");
    for a in &agents {
        assert_eq!(a.info()?.process, "stopped", "a no did nothing");
    }
    let out = on_a_terminal(z, &["on", "addr#*"], "y\n")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text:?}");
    for a in &agents {
        a.wait_info(WAIT, "on again", |i| i.process == "running")?;
    }
    // One pod needs no confirmation.
    let seq = agents[0].info()?.seq.expect("seq").to_string();
    ok(z, &["reset", &format!("addr#{seq}")]);
    Ok(())
}
