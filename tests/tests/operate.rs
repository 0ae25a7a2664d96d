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
