//! Two copies of the docs' example pod against a real ZooKeeper, observed with the docs'
//! example tool and `ochopod-http`'s client, as a tooling team would run them.

use ochopod_e2e::{free_port, wait_until, ZkServer};
use ochopod_http::{Client, Info};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// One `web` process (the docs' example pod), SIGTERMed then SIGKILLed on drop.
struct Web {
    child: Child,
    control: u16,
    host_port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Web {
    fn spawn(root: &Path, name: &str, zk: &str, token: Option<&str>) -> Web {
        let dir = root.join(name);
        let log = root.join(format!("{name}.log"));
        let control = free_port().expect("a control port");
        let host_port = free_port().expect("a host port");
        let out = File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_web"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env("ochopod_zk", zk)
            .env("ochopod_binding", "local")
            .env("ochopod_port", control.to_string())
            .env("PORT_9000", host_port.to_string())
            .env("WEB_DIR", &dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out);
        if let Some(t) = token {
            cmd.env("ochopod_token", t);
        }
        let child = cmd.spawn().expect("the web example starts");
        Web {
            child,
            control,
            host_port,
            dir,
            log,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.control)
    }

    fn cluster_txt(&self) -> String {
        std::fs::read_to_string(self.dir.join("cluster.txt")).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the agent's own exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.child.wait().expect("wait for the agent")
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..100 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn info(rt: &tokio::runtime::Runtime, client: &Client, web: &Web) -> Result<Info, String> {
    rt.block_on(client.pod_info(&web.addr(), Duration::from_secs(5)))
        .map_err(|e| e.to_string())
}

fn pods_tool(zk: &str, cluster: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pods"))
        .args([zk, cluster])
        .output()
        .expect("the pods example runs")
}

/// The docs' pod implements only `configure`; when a second pod joins, the first one's rendered
/// file follows (the default `reload` runs `configure` again) while its process keeps running.
#[test]
fn the_first_pod_is_reconfigured_when_the_second_joins() {
    let zk = ZkServer::start().expect("ZooKeeper");
    let root = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = Client::new(None);

    let first = Web::spawn(root.path(), "first", &zk.connect_string(), None);
    let running = wait_until(WAIT, "the first pod to run alone", || {
        let i = info(&rt, &client, &first)?;
        let text = first.cluster_txt();
        match i.pid {
            Some(pid) if i.process == "running" && text.starts_with("index 0 of 1\n") => {
                Ok((i, pid))
            }
            _ => Err(format!(
                "/info {i:?}; cluster.txt {text:?}; log {}",
                first.log()
            )),
        }
    })
    .expect("one pod configured");
    let (first_info, first_pid) = running;

    let second = Web::spawn(root.path(), "second", &zk.connect_string(), None);
    let second_info = wait_until(WAIT, "both pods to say they are 2", || {
        let (a, b) = (first.cluster_txt(), second.cluster_txt());
        let i = info(&rt, &client, &second)?;
        let both = a.contains(" of 2\n") && b.contains(" of 2\n") && i.process == "running";
        if both {
            Ok(i)
        } else {
            Err(format!(
                "first {a:?}, second {b:?}, second /info {i:?}; first log {}",
                first.log()
            ))
        }
    })
    .expect("the first pod re-configured when the second joined");

    // Each file names its own place, and the peers by their host ports.
    let (a, b) = (first.cluster_txt(), second.cluster_txt());
    let mut indexes = [a.lines().next().unwrap(), b.lines().next().unwrap()];
    indexes.sort();
    assert_eq!(indexes, ["index 0 of 2", "index 1 of 2"], "{a:?} {b:?}");
    for text in [&a, &b] {
        for web in [&first, &second] {
            let peer = format!("127.0.0.1:{}", web.host_port);
            assert!(text.contains(&peer), "{text:?} lacks {peer}");
        }
    }
    // Reloaded, not restarted: the first pod's server is the one it started alone.
    let now = info(&rt, &client, &first).expect("first /info");
    assert_eq!(
        now.pid,
        Some(first_pid),
        "the first pod's process was restarted"
    );
    assert_eq!(now.process, "running");

    // The docs' tool lists both pods with their pids.
    let out = pods_tool(&zk.connect_string(), "demo.web");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for (key, pid) in [
        (&first_info.key, first_pid),
        (&second_info.key, second_info.pid.expect("second pid")),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(key.as_str()))
            .unwrap_or_else(|| panic!("the tool does not list {key}: {text}"));
        assert!(
            line.contains("process \"running\"") && line.contains(&format!("pid {pid}")),
            "{line}"
        );
    }
    assert_eq!(text.lines().count(), 2, "{text}");

    assert_eq!(second.stop().code(), Some(0));
    assert_eq!(first.stop().code(), Some(0));
}

/// A round that fails (the second pod wants another token: 401) is logged at WARN by the
/// leader, through the subscriber the docs' example installs.
#[test]
fn a_failed_round_is_logged_at_warn() {
    let zk = ZkServer::start().expect("ZooKeeper");
    let root = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = Client::new(Some("one".into()));
    let first = Web::spawn(root.path(), "first", &zk.connect_string(), Some("one"));
    wait_until(WAIT, "the first pod to run alone", || {
        let i = info(&rt, &client, &first)?;
        if i.process == "running" && i.state == "leader" {
            Ok(())
        } else {
            Err(format!("{i:?}"))
        }
    })
    .expect("one pod configured");
    let second = Web::spawn(root.path(), "second", &zk.connect_string(), Some("two"));
    let line = wait_until(WAIT, "the leader to log a failed round", || {
        let log = first.log();
        log.lines()
            .find(|l| l.contains("configuration round failed"))
            .map(str::to_string)
            .ok_or_else(|| format!("first log: {log}"))
    })
    .expect("a failed round in the leader's log");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("401"), "{line}");
    drop(second);
}
