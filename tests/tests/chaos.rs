//! A short seeded run of `scripts/chaos.sh`: agents in containers, a 3-node ZooKeeper ensemble in
//! containers, faults of every kind (kills, freezes, partitions of agents and of ZooKeeper
//! members, ZooKeeper restarts, slow pods), and the invariants checked after every step. The long
//! run is the same script with more minutes (its figures: RELIABILITY.md).
//!
//! The seed and the length are fixed so CI replays the same plan of faults every time;
//! `OCHOPOD_CHAOS_SEED` and `OCHOPOD_CHAOS_MINUTES` override them to explore.

use ochopod_e2e::docker::ensure_images;
use ochopod_e2e::{agent_binary, workspace_root};
use serde_json::Value;
use std::process::Command;

#[test]
fn a_short_seeded_chaos_run_keeps_every_invariant() -> anyhow::Result<()> {
    ensure_images()?;
    let seed = std::env::var("OCHOPOD_CHAOS_SEED").unwrap_or_else(|_| "1207".into());
    let minutes = std::env::var("OCHOPOD_CHAOS_MINUTES").unwrap_or_else(|_| "2".into());
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("chaos.json");
    let status = Command::new("bash")
        .arg(workspace_root().join("scripts/chaos.sh"))
        .args(["--minutes", &minutes, "--seed", &seed, "--json"])
        .arg(&json)
        .env("OCHOPOD_BIN", agent_binary()?)
        // ensure_images built them with this binary.
        .env("OCHOPOD_CHAOS_NO_BUILD", "1")
        .status()?;
    let figures: Value = serde_json::from_str(&std::fs::read_to_string(&json).map_err(|e| {
        anyhow::anyhow!("scripts/chaos.sh ({status}) wrote no figures to {json:?}: {e}")
    })?)?;
    assert_eq!(
        figures["error"],
        Value::Null,
        "the environment failed: {figures:#}"
    );
    assert_eq!(
        figures["violations"],
        serde_json::json!([]),
        "invariant violations (replay: scripts/chaos.sh --minutes {minutes} --seed {seed})"
    );
    assert!(status.success(), "scripts/chaos.sh exited {status}");
    // The run did something: faults were injected and every invariant was checked.
    let faults: u64 = figures["faults"]
        .as_object()
        .map(|f| f.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert!(faults >= 5, "only {faults} faults: {figures:#}");
    for check in ["settled", "one_writer", "seq", "zombies", "one_writer_log"] {
        let passed = figures["checks"][check][0].as_u64().unwrap_or(0);
        assert!(passed > 0, "the check {check} never ran: {figures:#}");
    }
    Ok(())
}
