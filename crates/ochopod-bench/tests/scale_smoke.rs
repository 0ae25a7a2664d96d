//! The scale scenario in miniature: 6 real agents in 2 clusters (one depending on the other)
//! through a cold start, an idle window, a ZooKeeper restart shorter than the session timeout
//! and one longer. The harness fails when a promise breaks: a cluster not configured (again),
//! a cluster reconfigured or a process restarted by the short restart, a session that survived
//! the long one, an agent that died. Timings are printed, never asserted.

use serde_json::Value;
use std::process::Command;

#[test]
#[ignore = "failed once in 3 runs beside a CPU hog on a machine at load 22; run it with --ignored until that is understood"]
fn six_agents_in_two_clusters_survive_both_zookeeper_restarts() {
    let bin = ochopod_e2e::agent_binary().expect("the agent binary");
    let work = tempfile::tempdir().expect("temp dir");
    let json = work.path().join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ochopod-bench"))
        .arg("--bin")
        .arg(&bin)
        .arg("--work")
        .arg(work.path().join("run"))
        .arg("--json")
        .arg(&json)
        .args([
            "--only",
            "scale",
            "--scale-agents",
            "6",
            "--scale-clusters",
            "2",
            // Long enough for a ZooKeeper stop + start on a loaded machine (6-13 s seen at
            // load 24-35): the short restart must fit in it to count.
            "--scale-session-timeout",
            "10",
            "--scale-idle-secs",
            "2",
        ])
        .output()
        .expect("run ochopod-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ochopod-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON");
    let metric = |name: &str| -> f64 {
        report["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .find(|m| m["name"].as_str().is_some_and(|n| n.contains(name)))
            .and_then(|m| m["median"].as_f64())
            .unwrap_or_else(|| panic!("no figure {name:?} in the report:\n{stdout}"))
    };
    // Every cluster came back after the long restart and no session outlived it.
    assert!(
        metric("ZooKeeper up -> every cluster configured again") > 0.0,
        "{stdout}"
    );
    assert_eq!(metric("sessions that survived"), 0.0, "{stdout}");
    // The short restart changed nothing (when it was short enough to count: a note says
    // otherwise, and then these figures are left unjudged).
    let short_enough = !report["notes"].as_array().expect("notes").iter().any(|n| {
        n.as_str()
            .is_some_and(|n| n.contains("not shorter than the session timeout"))
    });
    if short_enough {
        assert_eq!(
            metric("short restart: clusters that reconfigured"),
            0.0,
            "{stdout}"
        );
        assert_eq!(
            metric("short restart: processes restarted"),
            0.0,
            "{stdout}"
        );
    }
    println!("{stdout}");
}
