//! The workspace's other binaries as black boxes: `ochopod` operator commands run to
//! completion ([`ochopod_cli`]), the example binaries of `ochopod-examples`
//! ([`example_binary`]), and long-running processes the harness cleans up ([`Service`]).

use crate::agent::agent_binary;
use crate::error::{Error, Result};
use crate::util::{file_tail, run, workspace_root};
use crate::wait::wait_until_with;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tempfile::TempDir;

/// Environment tag put on every [`Service`] (inherited by its sub-processes), so the harness
/// finds and kills them all on drop, orphans included.
const TAG: &str = "OCHOPOD_E2E_SERVICE";

/// What a command printed and how it exited.
#[derive(Clone, Debug)]
pub struct Output {
    /// The command line, for failure messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// True on exit code 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Fails unless the command exited 0, with everything it printed.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::Command {
                command: self.command.clone(),
                status: self.status.to_string(),
                output: format!("stdout: {}\nstderr: {}", self.stdout, self.stderr),
            })
        }
    }
}

/// Runs `bin args...` with extra `env`, stdin closed, and waits for it at most `timeout`
/// (killed after that, which is an error naming the command).
pub fn run_binary(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Output> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("ochopod_zk")
        .env_remove("ochopod_token");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let command = format!("{} {}", bin.display(), args.join(" "));
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {command}"), e))?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let waited = wait_until_with(timeout, Duration::from_millis(20), &command, || match child
        .try_wait()
    {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err("still running".to_string()),
        Err(e) => Err(e.to_string()),
    });
    let status = match waited {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    Ok(Output {
        command,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs an `ochopod` command (the binary the agents run, see [`agent_binary`]) with `args`,
/// e.g. `ochopod_cli(&["ls", "--zk", zk], &[], timeout)`. `ochopod_zk` and `ochopod_token` of
/// the test's own environment are not passed on; give them in `env` when wanted.
pub fn ochopod_cli(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Result<Output> {
    run_binary(&agent_binary()?, args, env, timeout)
}

/// `<target>/<profile>` of the running test executable.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("locating the test binary", e))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Usage(format!("cannot find the target dir of {}", exe.display())))
}

/// The example binary `name` (`broker`, `cluster-health`) of the `ochopod-examples` package.
///
/// Built once per test binary with `cargo build -p ochopod-examples` into the test's own target
/// dir and profile (the way [`agent_binary`] builds the agent), unless `OCHOPOD_E2E_NO_BUILD`
/// is set.
pub fn example_binary(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let dir = profile_dir().map_err(|e| e.to_string())?;
            if std::env::var_os(crate::agent::NO_BUILD).is_none() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut cmd = Command::new(cargo);
                cmd.args(["build", "-p", "ochopod-examples", "--manifest-path"])
                    .arg(workspace_root().join("Cargo.toml"));
                if let Some(target) = dir.parent() {
                    cmd.arg("--target-dir").arg(target);
                }
                match dir.file_name().and_then(|n| n.to_str()) {
                    Some("debug") | None => {}
                    Some(profile) => {
                        cmd.args(["--profile", profile]);
                    }
                }
                eprintln!("ochopod-e2e: building the examples: {cmd:?}");
                run(&mut cmd).map_err(|e| e.to_string())?;
            }
            Ok(dir)
        })
        .clone()
        .map_err(|why| Error::MissingBinary {
            path: PathBuf::from(name),
            why: format!("building ochopod-examples failed: {why}"),
        })?;
    let bin = dir.join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Error::MissingBinary {
            path: bin,
            why: "no such file after `cargo build -p ochopod-examples`".to_string(),
        })
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A long-running process (e.g. the `broker` example) with its output in `<dir>/service.log`;
/// on drop it is SIGKILLed, and so is every process it started (found by an environment tag).
#[derive(Debug)]
pub struct Service {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    _tmp: Option<TempDir>,
    tag: String,
    child: Mutex<Option<Child>>,
    exit: Mutex<Option<ExitStatus>>,
}

impl Service {
    /// Starts `bin args...` with extra `env` in `dir` (a fresh temporary folder when `None`).
    pub fn spawn(
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        dir: Option<&Path>,
    ) -> Result<Service> {
        let (tmp, dir) = match dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("ochopod-service-")
                    .tempdir()
                    .map_err(|e| Error::io("creating a service folder", e))?;
                let d = tmp.path().to_path_buf();
                (Some(tmp), d)
            }
        };
        let mut s = Service {
            bin: bin.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
            _tmp: tmp,
            tag: format!(
                "{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::SeqCst)
            ),
            child: Mutex::new(None),
            exit: Mutex::new(None),
        };
        s.respawn()?;
        Ok(s)
    }

    /// Starts the process again (after it exited or was killed), same folder and environment.
    pub fn respawn(&mut self) -> Result<()> {
        if self.is_alive() {
            return Err(Error::Usage(format!(
                "{} still runs: kill it before respawning",
                self.bin.display()
            )));
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| Error::io("opening service.log", e))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::io("opening service.log", e))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .env(TAG, &self.tag)
            .env("RUST_BACKTRACE", "1")
            .env_remove("ochopod_zk")
            .env_remove("ochopod_cluster")
            .env_remove("ochopod_namespace");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", self.bin.display()), e))?;
        *lock(&self.exit) = None;
        *lock(&self.child) = Some(child);
        Ok(())
    }

    /// The process's folder (its working directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/service.log`: stdout and stderr, across respawns.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("service.log")
    }

    /// The last `max` bytes of the log.
    pub fn log_tail(&self, max: usize) -> String {
        file_tail(&self.log_path(), max)
    }

    /// The exit status once it exited (reaps it), `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            let mut child = lock(&self.child);
            if let Some(c) = child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    *exit = Some(status);
                    *child = None;
                }
            }
        }
        *exit
    }

    /// True while the process exists.
    pub fn is_alive(&self) -> bool {
        lock(&self.child).is_some() && self.exit_status().is_none()
    }

    /// The process id of its latest spawn.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(Child::id)
    }

    /// Sends `sig` to the process (not to what it started).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::Usage(format!("{} is not running", self.bin.display())))?;
        kill(Pid::from_raw(pid as i32), sig)
            .map_err(|e| Error::io(format!("sending {sig} to {pid}"), e.into()))
    }

    /// Waits until the process exits and returns its status.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        wait_until_with(
            timeout,
            Duration::from_millis(50),
            &format!("{} to exit", self.bin.display()),
            || {
                self.exit_status()
                    .ok_or_else(|| format!("still running; log: {}", self.log_tail(800)))
            },
        )
    }

    /// SIGKILL and wait until the process is gone (what it started lives on until
    /// [`Service::kill_descendants`] or drop).
    pub fn kill9(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.wait_exit(Duration::from_secs(10)).map(drop)
    }

    /// Pids of the live processes it started (tagged), orphans included.
    pub fn descendants(&self) -> Vec<u32> {
        let me = self.pid();
        tagged(&self.tag)
            .into_iter()
            .filter(|p| Some(*p) != me)
            .collect()
    }

    /// SIGKILLs every process it started (e.g. the orphans of a SIGKILLed agent).
    pub fn kill_descendants(&self) {
        for _ in 0..3 {
            let pids = self.descendants();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for _ in 0..3 {
            let pids = tagged(&self.tag);
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Pids of live (non-zombie) processes whose environment holds `TAG=<tag>`.
fn tagged(tag: &str) -> Vec<u32> {
    let needle = format!("{TAG}={tag}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let environ = fs::read(e.path().join("environ")).ok()?;
            if !environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                return None;
            }
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            (!rest.trim_start().starts_with('Z')).then_some(pid)
        })
        .collect()
}

/// The pod nodes of `key` under `ns.cl/pods`: (ephemeral owner = session, payload seq).
pub fn pod_nodes(
    kz: &crate::Kazoo,
    ns: &str,
    cl: &str,
    key: &str,
) -> std::result::Result<Vec<(i64, serde_json::Value)>, String> {
    let pods = kz
        .dump(&format!("{}/pods", crate::Kazoo::cluster_path(ns, cl)))
        .map_err(|e| e.to_string())?
        .ok_or("no pods node")?;
    Ok(pods
        .children
        .iter()
        .filter(|n| n.name.starts_with(&format!("{key}.")))
        .map(|n| {
            (
                n.ephemeral_owner,
                n.json().map(|v| v["seq"].clone()).unwrap_or_default(),
            )
        })
        .collect())
}

/// Waits until `key` is registered again under a session other than `old_session`; returns
/// the new registration's seq.
pub fn wait_registered_again(
    kz: &crate::Kazoo,
    ns: &str,
    cl: &str,
    key: &str,
    old_session: i64,
    timeout: Duration,
) -> Result<serde_json::Value> {
    crate::wait_until(
        timeout,
        &format!("{key} registered under a new session"),
        || {
            let nodes = pod_nodes(kz, ns, cl, key)?;
            match nodes.as_slice() {
                [(owner, seq)] if *owner != old_session => Ok(seq.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_binary_captures_output_and_code() {
        let out = run_binary(
            Path::new("/bin/sh"),
            &["-c", "echo out; echo err >&2; exit 3"],
            &[("X", "1")],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(out.ok().is_err());
    }

    #[test]
    fn run_binary_kills_on_timeout() {
        let err = run_binary(
            Path::new("/bin/sleep"),
            &["30"],
            &[],
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[test]
    fn service_children_are_killed_on_drop() {
        let s =
            Service::spawn(Path::new("/bin/sh"), &["-c", "sleep 300 & wait"], &[], None).unwrap();
        let kids = wait_until_with(
            Duration::from_secs(10),
            Duration::from_millis(20),
            "the child sleep",
            || {
                let d = s.descendants();
                if d.is_empty() {
                    Err("none yet".to_string())
                } else {
                    Ok(d)
                }
            },
        )
        .unwrap();
        drop(s);
        for k in kids {
            assert!(
                !Path::new(&format!("/proc/{k}")).exists()
                    || fs::read_to_string(format!("/proc/{k}/stat"))
                        .map(|s| s.contains(") Z"))
                        .unwrap_or(true),
                "{k} survived the drop"
            );
        }
    }
}
