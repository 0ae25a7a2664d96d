//! `scripts/demo.sh`, the README's first command, run as a terminal runs it: in a process group
//! of its own (a foreground job) that Ctrl-C signals as a whole. Whether its output goes
//! straight to a file or through a pipe whose reader dies of the same Ctrl-C (`| tee log`),
//! nothing it started may be left running: no ZooKeeper, no agent, no web server.
//!
//! Each run gets its own folder and free ports (`DEMO_DIR`, `DEMO_CONTROL_PORTS`,
//! `DEMO_WEB_PORTS`) and the harness's agent binary (`OCHOPOD_BIN`).

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use ochopod_e2e::supervision::cmdline;
use ochopod_e2e::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Every live process that belongs to the demo in `dir`: its command line names the folder
/// (ZooKeeper, the agents) or it works inside it (the web servers).
fn leftovers(dir: &Path) -> Vec<(u32, String)> {
    let dir = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let state = ochopod_e2e::supervision::proc_state(pid)?;
            if state == 'Z' {
                return None;
            }
            let line = cmdline(pid).unwrap_or_default();
            let cwd = std::fs::read_link(e.path().join("cwd"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (line.contains(&dir) || cwd.starts_with(&dir)).then_some((pid, line))
        })
        .collect()
}

/// Starts `line` (a bash command line run from the workspace root) as a foreground job would
/// run: leader of its own process group, SIGINT at its default (whatever the test runner's is).
/// Returns the job and the pods' web ports (pod0's first).
fn start_job(line: &str, dir: &Path) -> anyhow::Result<(Child, Vec<u16>)> {
    let ports =
        || -> anyhow::Result<Vec<u16>> { Ok((0..3).map(|_| free_port()).collect::<Result<_>>()?) };
    let list = |ports: &[u16]| -> String {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let web = ports()?;
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); \
         os.execvp('bash', ['bash', '-c', sys.argv[1]])",
        line,
    ])
    .current_dir(workspace_root())
    .env("DEMO_DIR", dir)
    .env("DEMO_CONTROL_PORTS", list(&ports()?))
    .env("DEMO_WEB_PORTS", list(&web))
    .env("OCHOPOD_BIN", agent_binary()?)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    Ok((cmd.spawn()?, web))
}

/// Waits until the demo's output (in `log`) shows the live view.
fn wait_live(log: &Path, job: &mut Child) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(240), "the demo's live view", || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("live view") {
            return Ok(());
        }
        if let Ok(Some(status)) = job.try_wait() {
            return Err(format!("the demo ended ({status}): {text}"));
        }
        Err(text)
    })?;
    Ok(())
}

/// Ctrl-C to the job, then every process of the demo must end and the script with them.
fn ctrl_c_leaves_nothing(job: &mut Child, dir: &Path) -> anyhow::Result<()> {
    let before = leftovers(dir);
    assert!(
        before.len() >= 7,
        "ZooKeeper, 3 agents and 3 web servers run before Ctrl-C: {before:?}"
    );
    killpg(Pid::from_raw(job.id() as i32), Signal::SIGINT)?;
    wait_until(
        Duration::from_secs(90),
        "the demo to stop everything",
        || {
            let left = leftovers(dir);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still running: {left:?}"))
            }
        },
    )?;
    wait_until(Duration::from_secs(30), "the script to end", || {
        job.try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "running".to_string())
    })?;
    Ok(())
}

/// Folder `podN` holds the pod that `ochopod ls` numbers N: the pod serving the web port given
/// to folder N has seq N, and its rendered members.txt calls it #N.
fn pod_n_is_number_n(demo: &Path, web: &[u16]) -> anyhow::Result<()> {
    let zk_port = std::fs::read_to_string(demo.join("zk/zk.port"))?;
    let zk = format!("127.0.0.1:{}", zk_port.trim());
    let out = tools::ochopod_cli(
        &["ls", "demo.web", "--zk", &zk, "--json"],
        &[],
        Duration::from_secs(60),
    )?
    .ok()?;
    let rows: serde_json::Value = serde_json::from_str(&out.stdout)?;
    for (n, port) in web.iter().enumerate() {
        assert!(demo.join(format!("pod{n}")).is_dir(), "folder pod{n}");
        let row = rows
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r["ports"]["9000"].as_u64() == Some(u64::from(*port)))
            })
            .ok_or_else(|| anyhow::anyhow!("no pod serves port {port}: {rows}"))?;
        assert_eq!(
            row["seq"], n,
            "pod{n} (web port {port}) is not #{n}: {rows}"
        );
        let members = std::fs::read_to_string(demo.join(format!("pod{n}/www/members.txt")))?;
        let header = members.lines().next().unwrap_or("");
        assert!(
            header.ends_with(&format!("seen by pod #{n}")),
            "pod{n}'s members.txt numbers it #{n}: {members}"
        );
    }
    Ok(())
}

/// `scripts/demo.sh | tee log`: tee dies of the Ctrl-C before the script cleans up.
#[test]
fn ctrl_c_of_the_demo_piped_into_tee_stops_everything() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("ochopod-demo-").tempdir()?;
    let log = dir.path().join("out.log");
    let line = format!("scripts/demo.sh 2>&1 | tee {} >/dev/null", log.display());
    let (mut job, _) = start_job(&line, &dir.path().join("demo"))?;
    let result = wait_live(&log, &mut job)
        .and_then(|()| ctrl_c_leaves_nothing(&mut job, &dir.path().join("demo")));
    if result.is_err() {
        let _ = killpg(Pid::from_raw(job.id() as i32), Signal::SIGKILL);
        let _ = job.wait();
    }
    result
}

/// Plain `scripts/demo.sh` (output to a file here): Ctrl-C stops everything, the script says
/// so, and bash reports no killed job (`line 79: ... Killed`) along the way, not even for a pod
/// killed with `kill -9` as the demo suggests.
#[test]
fn ctrl_c_of_the_demo_stops_everything_quietly() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("ochopod-demo-").tempdir()?;
    let log = dir.path().join("out.log");
    let line = format!("scripts/demo.sh > {} 2>&1", log.display());
    let demo = dir.path().join("demo");
    let (mut job, web) = start_job(&line, &demo)?;
    let result = wait_live(&log, &mut job).and_then(|()| {
        pod_n_is_number_n(&demo, &web)?;
        // The demo's suggestion: kill -9 one agent.
        let agent = leftovers(&demo)
            .into_iter()
            .find(|(_, line)| line.contains(" run ") && line.contains("pod1"))
            .map(|(pid, _)| pid)
            .ok_or_else(|| anyhow::anyhow!("pod1's agent: {:?}", leftovers(&demo)))?;
        nix::sys::signal::kill(Pid::from_raw(agent as i32), Signal::SIGKILL)?;
        wait_until(
            Duration::from_secs(30),
            "pod1's web server to follow",
            || {
                let web: Vec<_> = leftovers(&demo)
                    .into_iter()
                    .filter(|(_, l)| l.contains("http.server"))
                    .collect();
                if web.len() == 2 {
                    Ok(())
                } else {
                    Err(format!("{web:?}"))
                }
            },
        )?;
        let before = leftovers(&demo);
        killpg(Pid::from_raw(job.id() as i32), Signal::SIGINT)?;
        wait_until(
            Duration::from_secs(90),
            "the demo to stop everything",
            || {
                let left = leftovers(&demo);
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still running: {left:?} (before: {before:?})"))
                }
            },
        )?;
        wait_until(Duration::from_secs(30), "the script to end", || {
            job.try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "running".to_string())
        })?;
        let text = std::fs::read_to_string(&log)?;
        assert!(text.contains("stopped"), "{text}");
        assert!(
            !text.contains("Killed"),
            "bash reported a killed job:\n{text}"
        );
        Ok(())
    });
    if result.is_err() {
        let _ = killpg(Pid::from_raw(job.id() as i32), Signal::SIGKILL);
        let _ = job.wait();
    }
    result
}
