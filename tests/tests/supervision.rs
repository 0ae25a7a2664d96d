//! How `ochopod run` supervises its sub-process (`docs/protocol.md#the-pod`), through the
//! real agent, observed from the outside only: `/info`, `/log`, `/control/*`, files the
//! sub-process and hooks write, and `/proc`.
//!
//! Each test runs one agent (a one-pod cluster: it leads itself, so `process: running` comes on
//! its own) against its own ZooKeeper, with small settings (grace 1 s, check_every 0.5-1 s,
//! restart_delay 0.2 s). Assertions are about the order of events; the only timing bounds are
//! loose lower bounds the agent must respect (it waits out `grace`, it never restarts before
//! half the backoff: each delay `d` is spread in `[d/2, d]`) and generous deadlines.

use ochopod_e2e::supervision::*;
use ochopod_e2e::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const NS: &str = "sup";

/// A one-pod spec with small timers; the test sets the process.
fn spec(zk: &ZkServer, cluster: &str) -> Result<PodSpec> {
    let mut s = PodSpec::new(NS, cluster, &zk.connect_string())?;
    s.set("model", "control_timeout", 30.0)
        .set("process", "grace", 1.0)
        .set("process", "check_every", 1.0)
        .set("process", "restart_delay", 0.2)
        .set("process", "restart_delay_max", 10.0)
        .set("hooks", "timeout", 10.0);
    Ok(s)
}

fn shell(s: &mut PodSpec, line: &str) {
    s.command(line).set("process", "shell", true);
}

/// Waits until the pod runs its process; returns `/info` (with the pid).
fn wait_running(agent: &Agent) -> Result<Info> {
    agent.wait_info(Duration::from_secs(60), "the process to run", |i| {
        i.process == "running" && i.pid.is_some()
    })
}

fn text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The file `name` in the agent's folder, once it holds something.
fn wait_file(agent: &Agent, name: &str) -> Result<String> {
    let path = agent.dir().join(name);
    wait_until(
        Duration::from_secs(30),
        &format!("{name} to be written"),
        || {
            let t = text(&path);
            if t.trim().is_empty() {
                Err(format!("empty | {}", agent.summary()))
            } else {
                Ok(t)
            }
        },
    )
}

/// What the sub-process sees, written as JSON into `seen.json` in its working directory.
const SEE_PY: &str = r#"
import json, os, sys, time
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink("/proc/self/fd/" + fd)
    except OSError:
        pass
seen = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "fds": fds}
with open("seen.json.tmp", "w") as f:
    json.dump(seen, f)
os.rename("seen.json.tmp", "seen.json")
time.sleep(600)
"#;

fn seen(agent: &Agent, cwd: &str) -> Result<Value> {
    let path = agent.dir().join(cwd).join("seen.json");
    wait_until(Duration::from_secs(60), "seen.json", || {
        serde_json::from_str::<Value>(&text(&path))
            .map_err(|e| format!("{e} | {}", agent.summary()))
    })
}

/// No descriptor beyond stdin/stdout/stderr leaks into the process (the control socket above
/// all).
fn assert_no_leaked_fds(seen: &Value) {
    let fds = seen["fds"].as_object().expect("fds");
    let extra: Vec<String> = fds
        .iter()
        .filter(|(fd, _)| !matches!(fd.as_str(), "0" | "1" | "2"))
        .map(|(fd, target)| format!("{fd} -> {target}"))
        .collect();
    assert!(extra.is_empty(), "leaked descriptors: {extra:?}");
}

#[test]
fn argv_shell_and_split_commands_see_cwd_and_env() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let agent_env = [("SUP_FROM_AGENT", "agent"), ("SUP_OVERRIDE", "agent")];

    // argv: arguments are passed as they are (spaces, `$`, `;` untouched).
    let mut a = spec(&zk, "argv")?;
    a.set(
        "process",
        "argv",
        vec!["python3", "../see.py", "two words", "$HOME", ";"],
    )
    .set("process", "cwd", "work-a")
    .set("process", "env", {
        let mut t = toml::Table::new();
        t.insert(
            "SUP_GREETING".into(),
            "hello {{ cluster.index }}/{{ cluster.size }}".into(),
        );
        t.insert("SUP_OVERRIDE".into(), "spec".into());
        toml::Value::Table(t)
    })
    .file("see.py", SEE_PY)
    .file("work-a/.keep", "");
    // command without shell: split on spaces, no shell expansion.
    let mut c = spec(&zk, "split")?;
    c.command("python3 see.py $HOME ; x").file("see.py", SEE_PY);
    // shell: expansions, arithmetic, `;`, in cwd.
    let mut s = spec(&zk, "shell")?;
    shell(
        &mut s,
        "echo \"$(pwd)|$SUP_GREETING|$SUP_FROM_AGENT|$SUP_OVERRIDE|$((6*7))\" > seen.txt; exec sleep 600",
    );
    s.set("process", "cwd", "work-s")
        .set("process", "env", {
            let mut t = toml::Table::new();
            t.insert("SUP_GREETING".into(), "hi".into());
            t.insert("SUP_OVERRIDE".into(), "spec".into());
            toml::Value::Table(t)
        })
        .file("work-s/.keep", "");

    let aa = Agent::spawn_env(&a, &agent_env)?;
    let ca = Agent::spawn_env(&c, &agent_env)?;
    let sa = Agent::spawn_env(&s, &agent_env)?;

    let seen_a = seen(&aa, "work-a")?;
    assert_eq!(
        seen_a["argv"],
        serde_json::json!(["two words", "$HOME", ";"]),
        "argv is passed untouched"
    );
    let work_a = aa.dir().join("work-a").canonicalize()?;
    assert_eq!(
        seen_a["cwd"].as_str(),
        work_a.to_str(),
        "cwd is relative to the spec"
    );
    let env = &seen_a["env"];
    assert_eq!(env["SUP_GREETING"], "hello 0/1", "env values are templates");
    assert_eq!(
        env["SUP_FROM_AGENT"], "agent",
        "the agent's environment is inherited"
    );
    assert_eq!(
        env["SUP_OVERRIDE"], "spec",
        "[process] env overrides the agent's"
    );
    let reg: Value = serde_json::from_str(env["ochopod"].as_str().expect("ochopod is set"))?;
    assert_eq!(reg["cluster"], "argv");
    assert_eq!(reg["namespace"], NS);
    assert_no_leaked_fds(&seen_a);
    let info = wait_running(&aa)?;
    assert_eq!(
        info.pid
            .map(|p| cmdline(p).unwrap_or_default().contains("see.py")),
        Some(true)
    );

    let seen_c = seen(&ca, ".")?;
    assert_eq!(
        seen_c["argv"],
        serde_json::json!(["$HOME", ";", "x"]),
        "a command without `shell` is split on spaces, not interpreted"
    );
    let dir_c = ca.dir().canonicalize()?;
    assert_eq!(
        seen_c["cwd"].as_str(),
        dir_c.to_str(),
        "cwd defaults to the spec's folder"
    );
    assert_no_leaked_fds(&seen_c);

    let line = wait_file(&sa, "work-s/seen.txt")?;
    let work_s = sa.dir().join("work-s").canonicalize()?;
    assert_eq!(
        line.trim(),
        format!("{}|hi|agent|spec|42", work_s.display()),
        "the shell line runs in cwd with the merged environment"
    );
    Ok(())
}

/// `off` on a process that ignores SIGTERM: `terminating` while the grace runs, then SIGKILL
/// (or, with `soft`, the process is left alone).
fn off_with_sigterm_ignored(soft: bool) -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, if soft { "soft" } else { "hard" })?;
    s.set("process", "grace", 1.5).set("process", "soft", soft);
    shell(&mut s, "trap '' TERM; while :; do sleep 0.1; done");
    let agent = Agent::spawn(&s)?;
    let pid = wait_running(&agent)?.pid.expect("pid");

    let started = Instant::now();
    let (reply, terminating) = std::thread::scope(|scope| {
        let off = scope.spawn(|| agent.control("off", None, None));
        let terminating = agent.wait_info(Duration::from_secs(10), "terminating", |i| {
            i.process == "terminating"
        });
        let alive_while_terminating = pid_alive(pid);
        let reply = off.join().expect("off thread");
        (reply, terminating.map(|i| (i, alive_while_terminating)))
    });
    let took = started.elapsed();
    let reply = reply?;
    let (info, alive_while_terminating) = terminating?;
    assert_eq!(info.pid, Some(pid), "/info keeps the pid while terminating");
    assert!(
        alive_while_terminating,
        "SIGTERM is ignored: alive during the grace"
    );
    assert_eq!(reply.status, 200, "off: {:?}", reply.body);
    assert!(
        took >= Duration::from_millis(1200),
        "off answered after {took:?}, before the 1.5 s grace ran out"
    );
    let after = agent.info()?;
    assert_eq!(after.process, "stopped");
    assert_eq!(after.pid, None);
    if soft {
        assert!(pid_alive(pid), "soft: the process is never SIGKILLed");
        assert!(
            after
                .last_failure
                .as_deref()
                .is_some_and(|f| f.contains("soft")),
            "{after:?}"
        );
        // Still alive a while later: nothing kills it behind our back.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(pid_alive(pid), "soft: still alive after the grace");
    } else {
        assert_eq!(
            proc_state(pid),
            None,
            "SIGKILLed and reaped before off answered"
        );
        wait_until(
            Duration::from_secs(10),
            "the whole group to be gone",
            || {
                let left = agent.descendants();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            },
        )?;
        assert!(agent.zombie_children().is_empty());
    }
    Ok(())
}

#[test]
fn a_process_ignoring_sigterm_is_sigkilled_after_grace() -> anyhow::Result<()> {
    off_with_sigterm_ignored(false)
}

#[test]
fn a_soft_process_ignoring_sigterm_is_left_alone() -> anyhow::Result<()> {
    off_with_sigterm_ignored(true)
}

/// The group leader dies at SIGTERM while another member of its group ignores it (a shell
/// whose app outlives it): `off` is over only once the whole group is gone, the straggler
/// being SIGKILLed at the grace, so a restart never runs beside the old process.
#[test]
fn a_group_member_outliving_its_leader_is_sigkilled_at_the_grace() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "straggler")?;
    s.set("process", "grace", 1.5);
    shell(
        &mut s,
        "(trap '' TERM; exec sleep 600) & echo $! > straggler.pid; exec sleep 600",
    );
    let agent = Agent::spawn(&s)?;
    let leader = wait_running(&agent)?.pid.expect("pid");
    let straggler: u32 = wait_file(&agent, "straggler.pid")?.trim().parse()?;
    assert_ne!(straggler, leader);
    assert!(pid_alive(straggler), "the straggler runs");

    let started = Instant::now();
    let reply = agent.control("off", None, None)?;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "off: {:?}", reply.body);
    assert!(
        took >= Duration::from_millis(1200),
        "off answered after {took:?}: before the 1.5 s grace, with the straggler alive"
    );
    assert!(!pid_alive(leader), "the leader died of SIGTERM");
    assert_eq!(
        proc_state(straggler),
        None,
        "the straggler was SIGKILLed and reaped before off answered"
    );
    let after = agent.info()?;
    assert_eq!((after.process.as_str(), after.pid), ("stopped", None));
    assert!(agent.zombie_children().is_empty());
    Ok(())
}

#[test]
fn a_crash_loop_backs_off_trips_the_breaker_and_restarts_on_on() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "crash")?;
    s.set("process", "checks", 3);
    // Each run stamps its start, then its exit just before exiting: the agent sees the exit
    // after that stamp, so the next start comes at least the backoff after it, however slow
    // the machine (a start-to-start gap would also carry the variable fork/exec latency).
    shell(
        &mut s,
        "date +%s.%N >> starts; date +%s.%N >> exits; exit 1",
    );
    let agent = Agent::spawn(&s)?;
    let starts_file = agent.dir().join("starts");

    let tripped = agent.wait_info(Duration::from_secs(60), "the circuit breaker", |i| {
        i.process == "stopped"
            && i.last_failure
                .as_deref()
                .is_some_and(|f| f.contains("circuit breaker"))
    })?;
    assert_eq!(
        tripped.failed_checks, 3,
        "one failure per check, tripped at `checks`: {tripped:?}"
    );
    assert_eq!(tripped.pid, None);
    let starts = read_numbers(&starts_file);
    assert!(
        starts.len() >= 4,
        "a crash loop of several starts: {starts:?}"
    );
    let exits = read_numbers(&agent.dir().join("exits"));
    // Exit k is followed by start k + 1 (the last exit has no start after it: the breaker).
    let gaps: Vec<f64> = exits.iter().zip(&starts[1..]).map(|(e, s)| s - e).collect();
    assert_eq!(gaps.len(), starts.len() - 1, "{starts:?} {exits:?}");
    // Restart at once, then after restart_delay doubling, 0.2, 0.4, 0.8..., each spread in
    // [d/2, d] by the agent's jitter: never before half of it.
    for (k, gap) in gaps.iter().enumerate().skip(1) {
        let floor = 0.1 * f64::from(1u32 << (k - 1));
        assert!(
            *gap >= floor - 0.001,
            "restart {k} came {gap:.3} s after the previous exit, before half its backoff ({floor} s): {gaps:?}"
        );
    }

    // Off for good: no more starts.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        read_numbers(&starts_file).len(),
        starts.len(),
        "restarted after the breaker"
    );
    assert_eq!(agent.info()?.process, "stopped");

    // An operator's `on` restarts it.
    let reply = agent.control("on", None, Some(&operator_body(&tripped)))?;
    assert_eq!(reply.status, 200, "on: {:?}", reply.body);
    assert!(
        reply.body["pid"].is_u64(),
        "on answers the new pid: {:?}",
        reply.body
    );
    wait_until(Duration::from_secs(10), "a start after on", || {
        let n = read_numbers(&starts_file).len();
        if n > starts.len() {
            Ok(())
        } else {
            Err(format!("{n} starts"))
        }
    })?;
    Ok(())
}

#[test]
fn exit_0_makes_the_pod_dead_and_control_gets_410() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "done")?;
    shell(&mut s, "echo ran >> ran; sleep 0.3; exit 0");
    s.hook("finalize", "echo finalized > finalized");
    let agent = Agent::spawn(&s)?;
    let dead = agent.wait_info(Duration::from_secs(60), "the pod to die", |i| {
        i.process == "dead"
    })?;
    assert_eq!(dead.pid, None);
    assert!(
        dead.last_failure
            .as_deref()
            .is_some_and(|f| f.contains("code 0")),
        "{dead:?}"
    );
    assert_eq!(
        wait_file(&agent, "finalized")?.trim(),
        "finalized",
        "finalize ran"
    );
    assert_eq!(
        text(&agent.dir().join("ran")).lines().count(),
        1,
        "never restarted"
    );
    let body = operator_body(&dead);
    for task in ["check", "on", "off", "ok", "kill", "signal"] {
        let needs_body = matches!(task, "check" | "on" | "ok");
        let reply = agent.control(task, None, needs_body.then_some(&body))?;
        assert_eq!(reply.status, 410, "{task} on a dead pod: {:?}", reply.body);
    }
    assert_eq!(agent.info()?.process, "dead", "/info still answers");
    Ok(())
}

/// Counts its calls, fails (exit 1, reason on stderr) while `fail` exists, prints metrics;
/// each call appends `ok` or `fail` to `outcomes` (the record of every check, in order).
const SANITY_SH: &str = r#"n=$(cat calls 2>/dev/null || echo 0); n=$((n+1)); echo $n > calls
if [ -f fail ]; then echo fail >> outcomes; echo "told to fail" >&2; exit 1; fi
echo ok >> outcomes
echo "{\"calls\": $n, \"healthy\": true}"
"#;

#[test]
fn sanity_metrics_show_in_info_and_failures_trip_the_breaker() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "sanity")?;
    s.set("process", "check_every", 0.5)
        .set("process", "checks", 3)
        .command("sleep 600")
        .hook("sanity_check", "sh sanity.sh")
        .file("sanity.sh", SANITY_SH);
    let agent = Agent::spawn(&s)?;
    let pid = wait_running(&agent)?.pid.expect("pid");

    let with_metrics = agent.wait_info(Duration::from_secs(30), "metrics in /info", |i| {
        i.metrics["healthy"] == true && i.metrics["calls"].as_u64().is_some_and(|n| n >= 2)
    })?;
    assert_eq!(with_metrics.failed_checks, 0);
    assert_eq!(with_metrics.pid, Some(pid));

    std::fs::write(agent.dir().join("fail"), "")?;
    let off = agent.wait_info(
        Duration::from_secs(30),
        "the breaker to turn the pod off",
        |i| i.process == "stopped",
    )?;
    // The hook's own record: the breaker tripped on the third failure in a row, counted one by
    // one (no check ran after it, none was skipped).
    let outcomes = text(&agent.dir().join("outcomes"));
    let outcomes: Vec<&str> = outcomes.lines().collect();
    let fails = outcomes.iter().rev().take_while(|o| **o == "fail").count();
    assert_eq!(fails, 3, "three failures in a row, then off: {outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == "fail").count(),
        3,
        "{outcomes:?}"
    );
    assert_eq!(off.failed_checks, 3, "{off:?}");
    assert!(
        off.last_failure
            .as_deref()
            .is_some_and(|f| f.contains("circuit breaker")),
        "{off:?}"
    );
    assert_eq!(off.pid, None);
    assert_eq!(
        off.metrics,
        serde_json::json!({}),
        "as in 1.x, no metrics while the process is down"
    );
    wait_until(
        Duration::from_secs(10),
        "the process to be gone",
        || match proc_state(pid) {
            None => Ok(()),
            Some(s) => Err(format!("state {s}")),
        },
    )?;
    Ok(())
}

#[test]
fn hook_failure_reason_shows_before_the_breaker() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "reason")?;
    s.set("process", "check_every", 0.5)
        .set("process", "checks", 1000)
        .command("sleep 600")
        .hook("sanity_check", "sh sanity.sh")
        .file("sanity.sh", SANITY_SH)
        .file("fail", "");
    let agent = Agent::spawn(&s)?;
    let info = agent.wait_info(Duration::from_secs(30), "two failed checks", |i| {
        i.failed_checks >= 2
    })?;
    assert_eq!(
        info.process, "running",
        "below `checks`, the pod keeps running"
    );
    let why = info.last_failure.unwrap_or_default();
    assert!(
        why.contains("told to fail"),
        "the hook's stderr is the reason: {why}"
    );
    Ok(())
}

#[test]
fn piped_output_reaches_the_log_which_stays_under_32_kib() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "pipe")?;
    s.set("process", "pipe", true);
    // ~150 KiB of stdout, one stderr line, then a marker; then idle.
    shell(
        &mut s,
        "echo first-line; i=0; while [ $i -lt 3000 ]; do \
         echo \"line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); done; \
         echo on-stderr >&2; echo last-line; exec sleep 600",
    );
    let agent = Agent::spawn(&s)?;
    let mut max = 0;
    let lines = wait_until_with(
        Duration::from_secs(60),
        Duration::from_millis(20),
        "last-line in /log",
        || {
            let lines = log_lines(&agent).map_err(|e| e.to_string())?;
            max = max.max(log_bytes(&lines));
            // Process lines are `pid N : line` (the agent's own lines quote the command).
            if lines.iter().any(|l| l.contains(" : last-line")) {
                Ok(lines)
            } else {
                Err(format!("{} lines", lines.len()))
            }
        },
    )?;
    assert!(max <= 32 * 1024, "the log reached {max} bytes");
    let bytes = log_bytes(&lines);
    assert!(bytes <= 32 * 1024, "{bytes} bytes");
    assert!(
        bytes > 24 * 1024,
        "the log keeps about 32 KiB, not less: {bytes}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(" : first-line")),
        "the oldest lines were dropped"
    );
    assert!(
        lines.iter().any(|l| l.contains(" : on-stderr")),
        "stderr is piped too"
    );
    assert!(lines.iter().any(|l| l.contains("line 2999 ")));
    let pid = wait_running(&agent)?.pid.expect("pid");
    let last = lines
        .iter()
        .find(|l| l.contains(" : last-line"))
        .expect("found");
    assert!(
        last.contains(&pid.to_string()),
        "lines carry the pid {pid}: {last}"
    );
    // Line order is kept.
    let n = |k: usize| lines.iter().position(|l| l.contains(&format!("line {k} ")));
    assert!(n(2990) < n(2999), "in order");
    Ok(())
}

#[test]
fn orphans_are_reaped_while_hooks_keep_their_exit_codes() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "reap")?;
    // Every 0.2 s the process orphans a `sleep 1` (its shell exits at once); the orphan is
    // re-parented to the agent (a child subreaper), which must reap it.
    shell(
        &mut s,
        "while :; do sh -c 'sleep 1 & echo $! >> orphans'; sleep 0.2; done",
    );
    s.hook("can_configure", "test ! -f deny");
    let agent = Agent::spawn(&s)?;
    let info = wait_running(&agent)?;
    let me = agent.pid().expect("agent pid");
    let orphans = || -> Vec<u32> {
        read_numbers(&agent.dir().join("orphans"))
            .into_iter()
            .map(|p| p as u32)
            .collect()
    };
    // Proof the agent is their reaper: a live orphan is seen re-parented to it.
    wait_until(
        Duration::from_secs(30),
        "an orphan re-parented to the agent",
        || {
            let seen: Vec<(u32, Option<u32>)> =
                orphans().into_iter().map(|p| (p, parent_pid(p))).collect();
            if seen.iter().any(|(_, pp)| *pp == Some(me)) {
                Ok(())
            } else {
                Err(format!("agent {me}; orphans and parents: {seen:?}"))
            }
        },
    )?;
    let body = operator_body(&info);
    let deny = agent.dir().join("deny");
    // Checks run while orphans come and go (about 5 a second), until a dozen of each.
    let mut round = 0;
    while round < 12 || orphans().len() < 12 {
        assert!(
            round < 1000,
            "no dozen orphans after {round} checks: {:?}",
            orphans()
        );
        round += 1;
        let denied = round % 2 == 1;
        if denied {
            std::fs::write(&deny, "")?;
        } else if deny.exists() {
            std::fs::remove_file(&deny)?;
        }
        let reply = agent.control("check", None, Some(&body))?;
        let want = if denied { 406 } else { 200 };
        assert_eq!(
            reply.status, want,
            "check {round} (deny={denied}): {:?}",
            reply.body
        );
    }
    let made = orphans();
    assert!(made.len() >= 12, "orphans were made: {made:?}");
    // Every orphan older than the last few is gone for good: reaped, no zombie left.
    let older: Vec<u32> = made[..made.len() - 6].to_vec();
    wait_until(Duration::from_secs(10), "every orphan reaped", || {
        let left: Vec<(u32, char)> = older
            .iter()
            .filter_map(|p| proc_state(*p).map(|s| (*p, s)))
            // A pid the kernel gave to someone else since is not our orphan.
            .filter(|(p, s)| *s == 'Z' || cmdline(*p).as_deref() == Some("sleep 1"))
            .collect();
        let zombies = agent.zombie_children();
        if left.is_empty() && zombies.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "left {left:?}, zombie children of {me}: {zombies:?}"
            ))
        }
    })?;
    assert_eq!(agent.info()?.process, "running");
    Ok(())
}

#[test]
fn hung_hooks_time_out() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "hung")?;
    s.set("hooks", "timeout", 1.0)
        .set("process", "check_every", 0.5)
        .set("process", "checks", 1000)
        .command("sleep 600")
        // They hang once `hang` exists (the leader's own first round must pass).
        .hook(
            "can_configure",
            "if [ -f hang ]; then echo $$ > hung.pid; exec sleep 100; fi",
        )
        .hook("sanity_check", "if [ -f hang ]; then exec sleep 100; fi");
    let agent = Agent::spawn(&s)?;
    let info = wait_running(&agent)?;
    std::fs::write(agent.dir().join("hang"), "")?;
    let started = Instant::now();
    let reply = agent.control("check", None, Some(&operator_body(&info)))?;
    let took = started.elapsed();
    assert_eq!(reply.status, 406, "{:?}", reply.body);
    let msg = reply.body["error"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("can_configure"),
        "the reply names the hook: {msg}"
    );
    assert!(
        msg.contains("did not finish within 1s"),
        "the hook timed out (not failed nor was waited out): {msg}"
    );
    assert!(
        took >= Duration::from_millis(800),
        "answered before the timeout: {took:?}"
    );
    let hung: u32 = wait_file(&agent, "hung.pid")?.trim().parse()?;
    wait_until(
        Duration::from_secs(10),
        "the hung hook to be killed",
        || match proc_state(hung) {
            None => Ok(()),
            Some(s) => Err(format!("{hung} is {s}: {:?}", cmdline(hung))),
        },
    )?;
    // A hung sanity check fails (it never blocks the pod): failures pile up, the pod answers.
    let later = agent.wait_info(
        Duration::from_secs(30),
        "two timed-out sanity checks",
        |i| i.failed_checks >= 2,
    )?;
    assert_eq!(later.process, "running");
    let reply = agent.control("off", None, None)?;
    assert_eq!(
        reply.status, 200,
        "the control queue is not blocked: {:?}",
        reply.body
    );
    Ok(())
}

#[test]
fn hup_usr1_usr2_quit_to_the_agent_reach_the_process_group() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "signals")?;
    shell(
        &mut s,
        "for sig in HUP USR1 USR2 QUIT; do trap \"echo $sig >> got\" $sig; done; \
         while :; do sleep 0.1; done",
    );
    let agent = Agent::spawn(&s)?;
    let info = wait_running(&agent)?;
    let got = agent.dir().join("got");
    let sent = [
        (nix::sys::signal::Signal::SIGHUP, "HUP"),
        (nix::sys::signal::Signal::SIGUSR1, "USR1"),
        (nix::sys::signal::Signal::SIGUSR2, "USR2"),
        (nix::sys::signal::Signal::SIGQUIT, "QUIT"),
    ];
    for (k, (sig, name)) in sent.iter().enumerate() {
        agent.signal(*sig)?;
        wait_until(
            Duration::from_secs(10),
            &format!("{name} forwarded"),
            || {
                let lines: Vec<String> = text(&got).lines().map(str::to_string).collect();
                if lines.len() > k {
                    Ok(())
                } else {
                    Err(format!("got {lines:?} | {}", agent.summary()))
                }
            },
        )?;
    }
    let names: Vec<String> = text(&got).lines().map(str::to_string).collect();
    assert_eq!(
        names,
        vec!["HUP", "USR1", "USR2", "QUIT"],
        "in order, once each"
    );
    assert!(agent.is_alive(), "none of them ends the agent");
    let now = agent.info()?;
    assert_eq!(
        (now.process.as_str(), now.pid),
        ("running", info.pid),
        "nor the process"
    );
    Ok(())
}

#[test]
fn the_tear_down_hook_replaces_sigterm() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "teardown")?;
    s.set("process", "grace", 30.0);
    // SIGTERM is ignored: only the hook's SIGINT stops it, well before the 30 s grace.
    shell(
        &mut s,
        "trap '' TERM; trap 'echo INT > stopped-by; exit 0' INT; while :; do sleep 0.1; done",
    );
    s.hook(
        "tear_down",
        "python3 -c 'import json,os,signal,sys; os.killpg(json.load(sys.stdin)[\"pid\"], signal.SIGINT)'",
    );
    let agent = Agent::spawn(&s)?;
    let pid = wait_running(&agent)?.pid.expect("pid");
    let reply = agent.control("off", None, None)?;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // The hook's SIGINT stopped it: it wrote `stopped-by` on the way out (a SIGKILL when the
    // grace ran out would leave no file), and the agent never had to escalate.
    assert_eq!(wait_file(&agent, "stopped-by")?.trim(), "INT");
    let log = std::fs::read_to_string(agent.log_path())?;
    assert!(!log.contains("grace ran out"), "{log}");
    assert_eq!(proc_state(pid), None);
    assert_eq!(agent.info()?.process, "stopped");
    Ok(())
}

#[test]
fn built_in_probes_are_sanity_checks() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let http = free_port()?;
    let mut s = spec(&zk, "probe")?;
    // Ten failed checks in a row trip the breaker: a python slow to start under load (over
    // 1 s) must not trip it before it serves.
    s.set("process", "check_every", 0.5)
        .set("process", "checks", 10)
        .port(9000, http)
        // A template, as every probe: the pod's own host port.
        .set(
            "process",
            "probe_http",
            "http://127.0.0.1:{{ cluster.pod.ports[\"9000\"] }}/ok.txt",
        )
        .command(&format!(
            "python3 -u -m http.server {http} --bind 127.0.0.1 --directory www"
        ))
        .file("www/ok.txt", "ok");
    let agent = Agent::spawn(&s)?;
    wait_running(&agent)?;
    // Checks pass: the server logs them (piped into /log) and nothing fails.
    wait_until(Duration::from_secs(30), "two probes answered 200", || {
        let lines = log_lines(&agent).map_err(|e| e.to_string())?;
        let ok = lines
            .iter()
            .filter(|l| l.contains("GET /ok.txt") && l.contains(" 200 "))
            .count();
        if ok >= 2 {
            Ok(())
        } else {
            Err(format!("{ok} | {}", agent.summary()))
        }
    })?;
    assert_eq!(agent.info()?.failed_checks, 0);
    std::fs::remove_file(agent.dir().join("www/ok.txt"))?;
    let off = agent.wait_info(Duration::from_secs(60), "the breaker", |i| {
        i.process == "stopped"
    })?;
    assert!(
        off.last_failure
            .as_deref()
            .is_some_and(|f| f.contains("circuit breaker")),
        "{off:?}"
    );
    let lines = log_lines(&agent)?;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("GET /ok.txt") && l.contains(" 404 ")),
        "the failing probe was a real GET"
    );

    // probe_tcp on a port nobody listens on fails from the start.
    let closed = free_port()?;
    let mut t = spec(&zk, "probetcp")?;
    t.set("process", "check_every", 0.5)
        .set("process", "checks", 2)
        .set("process", "probe_tcp", format!("127.0.0.1:{closed}"))
        .command("sleep 600");
    let tcp = Agent::spawn(&t)?;
    let off = tcp.wait_info(Duration::from_secs(30), "the breaker", |i| {
        i.process == "stopped" && i.failed_checks >= 2
    })?;
    assert!(
        off.last_failure
            .as_deref()
            .is_some_and(|f| f.contains("circuit breaker")),
        "{off:?}"
    );
    Ok(())
}

#[test]
fn hooks_that_leave_a_background_child_still_end_with_their_own_status() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = spec(&zk, "daemonize")?;
    // The background `sleep` keeps the hooks' stdout and stderr open long after they exit.
    s.set("hooks", "timeout", 20.0)
        .set("process", "check_every", 0.5)
        .command("sleep 600")
        .hook("can_configure", "sleep 30 & test ! -f deny")
        .hook("sanity_check", "sleep 30 & echo '{\"bg\": 1}'");
    let agent = Agent::spawn(&s)?;
    let info = wait_running(&agent)?;
    let body = operator_body(&info);
    for (deny, want) in [(false, 200), (true, 406)] {
        if deny {
            std::fs::write(agent.dir().join("deny"), "")?;
        }
        let reply = agent.control("check", None, Some(&body))?;
        assert_eq!(reply.status, want, "deny={deny}: {:?}", reply.body);
        // Waiting for the background child (30 s) would have hit the 20 s hook timeout.
        assert!(
            !reply.body.to_string().contains("did not finish"),
            "check waited for the background child: {:?}",
            reply.body
        );
    }
    let with = agent.wait_info(Duration::from_secs(15), "the hook's metrics", |i| {
        i.metrics["bg"] == 1
    })?;
    assert_eq!(with.failed_checks, 0);
    Ok(())
}
