//! Operating clusters on real agents: the sanity check's numbers as Prometheus gauges.

use ochopod_e2e::scenario::*;
use ochopod_e2e::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// `/metrics` as text.
fn metrics(agent: &Agent) -> String {
    match agent.get("/metrics") {
        Ok(r) if r.status == 200 => r.body.as_str().unwrap_or_default().to_string(),
        Ok(r) => format!("status {}", r.status),
        Err(e) => e.to_string(),
    }
}

/// The value of the sample line `<name>{<labels>}` in `text`, when there is one.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Counts its calls and reports the count, a flag, a nested number and a string.
const CHECK_SH: &str = r#"n=$(cat calls 2>/dev/null || echo 0); n=$((n+1)); echo $n > calls
echo "{\"calls\": $n, \"healthy\": true, \"disk\": {\"free-mb\": 512.5}, \"role\": \"leader\"}"
"#;

#[test]
fn sanity_check_numbers_are_gauges_with_the_pod_labels() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut s = sleeper("ops", "gauges", &zk.connect_string())?;
    s.set("process", "check_every", 0.5)
        .hook("sanity_check", "sh check.sh")
        .file("check.sh", CHECK_SH);
    let agent = Agent::spawn(&s)?;
    let key = agent
        .wait_info(WAIT, "the pod to run", |i| i.pid.is_some())?
        .key;
    let labels = format!(r#"{{namespace="ops",cluster="gauges",key="{key}"}}"#);

    // The count grows check after check, and each scrape shows the last one.
    let first = wait_until(WAIT, "the check's count as a gauge", || {
        let m = metrics(&agent);
        sample(&m, &format!("ochopod_check_calls{labels}"))
            .filter(|n| *n >= 1.0)
            .ok_or(m)
    })?;
    let later = wait_until(WAIT, "a later check's count", || {
        let m = metrics(&agent);
        sample(&m, &format!("ochopod_check_calls{labels}"))
            .filter(|n| *n > first)
            .ok_or(m)
    })?;
    assert!(later > first);
    let m = metrics(&agent);
    assert_eq!(
        sample(&m, &format!("ochopod_check_healthy{labels}")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("ochopod_check_disk_free_mb{labels}")),
        Some(512.5),
        "{m}"
    );
    assert!(m.contains("# TYPE ochopod_check_calls gauge"), "{m}");
    assert!(
        !m.contains("ochopod_check_role"),
        "a string is no gauge: {m}"
    );

    // As `/info` shows no metrics while the process is down, no gauges either.
    let off = agent.control("off", None, None)?;
    assert_eq!(off.status, 200, "{:?}", off.body);
    wait_until(WAIT, "the gauges to go with the process", || {
        let m = metrics(&agent);
        (m.contains("ochopod_process_running 0") && !m.contains("ochopod_check_"))
            .then_some(())
            .ok_or(m)
    })?;
    Ok(())
}

fn cli(zk: &str, args: &[&str]) -> ochopod_e2e::tools::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--zk", zk]);
    ochopod_e2e::tools::ochopod_cli(&all, &[], Duration::from_secs(60))
        .expect("the ochopod command ran")
}

/// The rounds `ochopod history CLUSTER --json` shows.
fn rounds(zk: &str, cluster: &str) -> Vec<serde_json::Value> {
    let out = cli(zk, &["history", cluster, "--json"]);
    if out.stderr.contains("no cluster matches") {
        return Vec::new(); // not registered yet
    }
    assert!(out.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("history --json is JSON");
    v["rounds"].as_array().cloned().unwrap_or_default()
}

/// The process notes when it started (ns); the check fails until 2 s after that, then passes.
/// Every check appends `<name> fail|pass <ns>` to `$EVENTS`.
const DELAYED_CHECK_SH: &str = r#"now=$(date +%s%N); started=$(cat started)
if [ $((now - started)) -lt 2000000000 ]; then
  echo "$(cat name) fail $now" >> "$EVENTS"; echo "warming up" >&2; exit 1
fi
echo "$(cat name) pass $now" >> "$EVENTS"; echo '{"warm": 1}'
"#;

#[test]
fn a_gated_round_waits_for_each_pods_check_and_fails_on_one_that_never_passes() -> anyhow::Result<()>
{
    let _one = serial();
    let zk = ZkServer::start()?;
    let zs = zk.connect_string();
    let events_dir = tempfile::tempdir()?;
    let events = events_dir.path().join("events");
    let spec = |name: &str, check: &str| -> anyhow::Result<PodSpec> {
        let mut s = sleeper("ops", "gated", &zs)?;
        s.set("model", "sequential", true)
            .set("model", "gate", true)
            .set("model", "gate_every", 0.25)
            .set("model", "gate_timeout", 6.0)
            .set("model", "damper", 1.0)
            // The periodic check stays out of the way: only the gate runs it.
            .set("process", "check_every", 600.0)
            .set("process", "shell", true)
            .command("date +%s%N > started; exec sleep 3600")
            .hook("sanity_check", check)
            .file("check.sh", DELAYED_CHECK_SH)
            .file("name", name);
        Ok(s)
    };
    let env = [("EVENTS", events.to_str().expect("utf-8 path"))];
    let a = Agent::spawn_env(&spec("a", "sh check.sh")?, &env)?;
    let b = Agent::spawn_env(&spec("b", "sh check.sh")?, &env)?;

    // Both configured, and a round with both committed.
    let both = wait_until(WAIT, "a committed round with both pods", || {
        rounds(&zs, "ops.gated")
            .into_iter()
            .find(|r| r["outcome"] == "ok" && r["pods"].as_array().is_some_and(|p| p.len() == 2))
            .ok_or_else(|| format!("{}\n{}", a.summary(), b.summary()))
    })?;
    let started = |agent: &Agent| -> u128 {
        std::fs::read_to_string(agent.dir().join("started"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .expect("the process noted its start")
    };
    let (sa, sb) = (started(&a), started(&b));
    // Configured one after the other, the second only once the first one's check passed, 2 s
    // after its start (without the gate, both start within the same instant).
    let gap = sa.abs_diff(sb);
    assert!(gap >= 2_000_000_000, "starts {gap} ns apart: {both}");
    let log = std::fs::read_to_string(&events)?;
    for name in ["a", "b"] {
        let mine: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.split(' ').nth(1).unwrap_or(""))
            .collect();
        // Its checks fail for 2 s after its start, then pass (how many fail first depends on
        // how soon the gate's first check runs, which a loaded machine delays: not counted).
        let first_pass = mine.iter().position(|o| *o == "pass");
        assert!(
            first_pass.is_some() && mine[..first_pass.unwrap_or(0)].iter().all(|o| *o == "fail"),
            "{name}: its check passed, and only failed before: {log}"
        );
    }
    let (first, second) = if sa < sb { ("a", sb) } else { ("b", sa) };
    let passed: u128 = log
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{first} pass ")))
        .and_then(|t| t.trim().parse().ok())
        .expect("the first pod passed");
    assert!(
        passed <= second,
        "the second pod started only after the first one's check passed: {log}"
    );

    // A pod whose check never passes: the round fails with why, in the history and the
    // leader's /info.
    let c = Agent::spawn(&spec("c", r#"echo "not ready: disk full" >&2; exit 1"#)?)?;
    let failed = wait_until(WAIT, "the round to fail on the gate", || {
        rounds(&zs, "ops.gated")
            .into_iter()
            .find(|r| {
                r["outcome"]
                    .as_str()
                    .is_some_and(|o| o.contains("did not pass within 6 s"))
            })
            .ok_or_else(|| c.summary())
    })?;
    let outcome = failed["outcome"].as_str().unwrap_or_default();
    let c_key = c.info()?.key;
    assert!(
        outcome.contains(&c_key) && outcome.contains("not ready: disk full"),
        "{failed}"
    );
    let text = cli(&zs, &["history", "ops.gated"]);
    assert!(text.stdout.contains("did not pass within 6 s"), "{text:?}");
    let leader = [&a, &b, &c]
        .into_iter()
        .find(|x| x.info().is_ok_and(|i| is_leader(&i)))
        .expect("a leader");
    let info = leader.wait_info(WAIT, "the failure in the leader's /info", |i| {
        i.round_failure
            .as_deref()
            .is_some_and(|f| f.contains("not ready: disk full"))
    })?;
    assert!(info.round_failure.unwrap().contains(&c_key));
    Ok(())
}

/// `ochopod plan CLUSTER --json`.
fn plan(zk: &str, cluster: &str) -> serde_json::Value {
    let out = cli(zk, &["plan", cluster, "--json"]);
    if out.stderr.contains("no cluster matches") {
        return serde_json::json!({ "error": out.stderr }); // not registered yet
    }
    assert!(out.success(), "{out:?}");
    serde_json::from_str(&out.stdout).expect("plan --json is JSON")
}

/// The row of pod `key` in a plan.
fn row<'a>(plan: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    plan["pods"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["key"] == key))
        .unwrap_or_else(|| panic!("no row for {key} in {plan}"))
}

const MEMBERS_J2: &str = "size={{ cluster.size }}\n{% for key, pod in cluster.pods|items %}member {{ key }}\n{% endfor %}";

#[test]
fn plan_shows_the_next_round_per_pod_without_doing_it() -> anyhow::Result<()> {
    let _one = serial();
    let zk = ZkServer::start()?;
    let zs = zk.connect_string();
    let spec = |strict: bool| -> anyhow::Result<PodSpec> {
        let mut s = sleeper("ops", "planned", &zs)?;
        s.set("process", "strict", strict)
            .template("members.cfg.j2", MEMBERS_J2, "members.cfg");
        if !strict {
            s.hook("reload", "echo reloaded >> reloads");
        }
        Ok(s)
    };
    let strict = Agent::spawn(&spec(true)?)?;
    let loose = Agent::spawn(&spec(false)?)?;
    let ks = strict.wait_info(WAIT, "the strict pod up", |_| true)?.key;
    let kl = loose.wait_info(WAIT, "the other pod up", |_| true)?.key;
    let settled = wait_until(WAIT, "both pods configured, nothing pending", || {
        let p = plan(&zs, "ops.planned");
        (p["pending"] == false && p["pods"].as_array().is_some_and(|r| r.len() == 2))
            .then_some(p.clone())
            .ok_or_else(|| p.to_string())
    })?;
    assert_eq!(row(&settled, &ks)["would"], "restart", "{settled}");
    assert!(row(&settled, &ks)["why"]
        .as_str()
        .unwrap()
        .contains("strict"));
    assert_eq!(row(&settled, &kl)["would"], "reload", "{settled}");
    assert!(
        row(&settled, &kl)["why"]
            .as_str()
            .unwrap()
            .contains("no rendered file changes"),
        "{settled}"
    );

    // Paused, a newcomer (a 1.x pod) waits: the plan shows what resuming will do.
    assert!(cli(&zs, &["pause", "ops.planned"]).success());
    wait_until(WAIT, "the leader to see the pause", || {
        [&strict, &loose]
            .iter()
            .any(|a| a.info().is_ok_and(|i| i.state.contains("paused")))
            .then_some(())
            .ok_or_else(|| "not paused yet".to_string())
    })?;
    let (pid_s, pid_l) = (strict.info()?.pid, loose.info()?.pid);
    let on_disk = std::fs::read_to_string(loose.dir().join("members.cfg"))?;
    // The pods may have reloaded already (one configured before the other joined).
    let reloads = |a: &Agent| std::fs::read_to_string(a.dir().join("reloads")).unwrap_or_default();
    let reloaded = reloads(&loose);
    let old = ochopod_e2e::interop::Pod1x::spawn(&zs, "ops", "planned", false)?;
    let k1 = old.key().to_string();
    let next = wait_until(WAIT, "the plan to show the newcomer", || {
        let p = plan(&zs, "ops.planned");
        (p["joining"] == serde_json::json!([k1.clone()]))
            .then_some(p.clone())
            .ok_or_else(|| p.to_string())
    })?;
    assert_eq!(next["pending"], true, "{next}");
    assert_eq!(next["leaving"], serde_json::json!([]), "{next}");
    assert_eq!(row(&next, &k1)["would"], "unknown (1.x)", "{next}");
    let s = row(&next, &ks);
    assert_eq!(s["would"], "restart", "{next}");
    let l = row(&next, &kl);
    assert_eq!(l["would"], "reload", "{next}");
    assert!(
        l["why"].as_str().unwrap().contains("the reload hook runs"),
        "{next}"
    );
    for r in [s, l] {
        let f = &r["files"][0];
        assert_eq!(f["changed"], true, "{next}");
        assert!(f["path"].as_str().unwrap().ends_with("members.cfg"), "{f}");
        let diff = f["diff"].as_str().unwrap();
        assert!(diff.contains("-size=2\n+size=3\n"), "{diff}");
        assert!(diff.contains(&format!("+member {k1}\n")), "{diff}");
    }
    let text = cli(&zs, &["plan", "ops.planned"]);
    assert!(text.success(), "{text:?}");
    for needle in [
        "a round is pending",
        "unknown (1.x)",
        "restart: strict",
        "+member",
        &format!("+ {} joins", &k1[..8]),
    ] {
        assert!(text.stdout.contains(needle), "{needle}: {}", text.stdout);
    }
    // No side effect: same processes, same files, no reload.
    assert_eq!(strict.info()?.pid, pid_s);
    assert_eq!(loose.info()?.pid, pid_l);
    assert_eq!(
        std::fs::read_to_string(loose.dir().join("members.cfg"))?,
        on_disk
    );
    assert_eq!(reloads(&loose), reloaded);

    // Resumed, the round does what the plan said: the strict pod restarts, the other reloads.
    assert!(cli(&zs, &["resume", "ops.planned"]).success());
    wait_until(WAIT, "the round to configure the newcomer", || {
        let p = plan(&zs, "ops.planned");
        (p["pending"] == false)
            .then_some(())
            .ok_or_else(|| p.to_string())
    })?;
    let restarted = strict.wait_info(WAIT, "the strict pod to restart", |i| {
        i.pid.is_some() && i.pid != pid_s
    })?;
    assert!(restarted.pid.is_some());
    assert_eq!(
        loose.info()?.pid,
        pid_l,
        "the non-strict pod kept its process"
    );
    wait_until(WAIT, "the reload hook", || {
        (reloads(&loose).len() > reloaded.len())
            .then_some(())
            .ok_or_else(|| "no reload yet".to_string())
    })?;
    Ok(())
}
