//! Docker for the container suites: the project's images (built by `scripts/docker-build.sh`),
//! private networks with a coordination ZooKeeper, and containers removed on drop.
//!
//! Everything a suite creates carries the label `ochopod.e2e.owner=<pid of the test process>`:
//! a [`Network`] removes its containers and itself on drop (also when a test panics), and
//! [`Network::create`] first removes what a killed test process left behind.

use crate::agent::agent_binary;
use crate::error::{Error, Result};
use crate::util::{run, tail, workspace_root};
use ochopod_core::wire::Info;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const OWNER: &str = "ochopod.e2e.owner";

/// Runs `docker ARGS`; returns its stdout, trimmed.
pub fn docker(args: &[&str]) -> Result<String> {
    run(Command::new("docker").args(args).stdin(Stdio::null())).map(|s| s.trim().to_string())
}

/// Builds the images once per test process (`scripts/docker-build.sh` with this build's agent
/// binary; the base root filesystem comes from its cache when the recipe did not change).
///
/// Fails with a clear message when Docker is missing or its daemon is unreachable.
pub fn ensure_images() -> Result<()> {
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_images().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Usage)
}

fn build_images() -> Result<()> {
    docker(&["info", "--format", "{{.ServerVersion}}"]).map_err(|e| {
        Error::Usage(format!(
            "the container suite needs a running Docker engine (`docker info` failed: {e}); \
             install docker.io and start dockerd"
        ))
    })?;
    let bin = agent_binary()?;
    let script = workspace_root().join("scripts/docker-build.sh");
    eprintln!("ochopod-e2e: building the images: {}", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .env("OCHOPOD_BIN", &bin)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}", tail(&log, 3000));
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("OCHOPOD_BIN={} {}", bin.display(), script.display()),
            status: out.status.to_string(),
            output: tail(&log, 4000).to_string(),
        });
    }
    Ok(())
}

/// A private Docker network with an explicit /24 subnet (so a container can get its address back
/// after a `docker network disconnect`), removed with its containers on drop.
#[derive(Debug)]
pub struct Network {
    name: String,
    prefix: String,
    next_host: AtomicU32,
}

impl Network {
    /// Creates a network named `ochopod-e2e-<pid>-<tag>` on the first free 10.213.x.0/24.
    pub fn create(tag: &str) -> Result<Network> {
        sweep_leftovers();
        let name = format!("ochopod-e2e-{}-{tag}", std::process::id());
        let owner = format!("{OWNER}={}", std::process::id());
        let _ = docker(&["network", "rm", &name]);
        let start = (std::process::id() as usize * 7) % 240;
        let mut last = String::new();
        for k in 0..240 {
            let third = 10 + (start + k) % 240;
            let prefix = format!("10.213.{third}");
            let subnet = format!("{prefix}.0/24");
            let gateway = format!("{prefix}.1");
            match docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--gateway",
                &gateway,
                "--label",
                &owner,
                &name,
            ]) {
                Ok(_) => {
                    return Ok(Network {
                        name,
                        prefix,
                        next_host: AtomicU32::new(10),
                    })
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Usage(format!(
            "no free 10.213.x.0/24 subnet for a docker network; last error: {last}"
        )))
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn next_ip(&self) -> String {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        format!("{}.{host}", self.prefix)
    }

    /// An address of this network that no container has (or will be given): for a stand-in
    /// that must name an address which answers nothing.
    pub fn spare_ip(&self) -> String {
        format!("{}.250", self.prefix)
    }

    /// The network's gateway: the machine itself as the containers reach it. Stand-ins that
    /// run in the test process listen there; Docker publishes ports there (`-p GATEWAY:H:C`).
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Another address of this machine on the network's bridge (`<prefix>.<n>`, `n` in 2..=9,
    /// below every container's): a second "host" the containers reach as they reach the
    /// gateway, where Docker publishes ports just as well (`-p ADDR:H:C`, served by its proxy).
    /// For boxes with several hosts (Mesos agents) on one machine. Needs root (`ip addr add`);
    /// the address goes with the network's bridge.
    pub fn add_host_address(&self, n: u8) -> Result<String> {
        if !(2..=9).contains(&n) {
            return Err(Error::Usage(format!(
                "add_host_address({n}): take 2..=9 (the gateway is .1, containers .10 up)"
            )));
        }
        let id = docker(&["network", "inspect", "-f", "{{.Id}}", &self.name])?;
        let bridge = format!("br-{}", id.get(..12).unwrap_or(&id));
        let addr = format!("{}.{n}", self.prefix);
        run(Command::new("ip")
            .args(["addr", "add", &format!("{addr}/32"), "dev", &bridge])
            .stdin(Stdio::null()))
        .map_err(|e| {
            Error::Usage(format!(
                "adding the host address {addr} to {bridge} failed (the box needs root and \
                 iproute2's `ip`): {e}"
            ))
        })?;
        Ok(addr)
    }

    /// Starts a detached container on this network at the next free address.
    ///
    /// `name` is suffixed to the network's name (and is the hostname); `opts` are more
    /// `docker run` options (`-e`, `-v`, `--entrypoint` ...); `args` follow the image (for the
    /// project's images: flags of `ochopod run`).
    pub fn run(&self, name: &str, image: &str, opts: &[&str], args: &[&str]) -> Result<Container> {
        self.run_with_files(name, image, opts, args, &[])
    }

    /// [`Network::run`] with files copied into the container before it starts (`docker cp`,
    /// so it also works with a remote Docker daemon): `(path in the container, content)`,
    /// e.g. `("/etc/ochopod/pod.toml", spec)`.
    pub fn run_with_files(
        &self,
        name: &str,
        image: &str,
        opts: &[&str],
        args: &[&str],
        files: &[(&str, &str)],
    ) -> Result<Container> {
        let container = self.create_container(name, image, opts, args, files)?;
        docker(&["start", &container.name])?;
        Ok(container)
    }

    /// [`Network::run_with_files`] without the start: the container exists with its address
    /// and files; [`Container::start`] starts it.
    pub fn create_container(
        &self,
        name: &str,
        image: &str,
        opts: &[&str],
        args: &[&str],
        files: &[(&str, &str)],
    ) -> Result<Container> {
        let full = format!("{}-{name}", self.name);
        let ip = self.next_ip();
        let owner = format!("{OWNER}={}", std::process::id());
        let net_label = format!("ochopod.e2e.network={}", self.name);
        let mut argv: Vec<&str> = vec![
            "create",
            "--name",
            &full,
            "--hostname",
            name,
            "--network",
            &self.name,
            "--ip",
            &ip,
            "--label",
            &owner,
            "--label",
            &net_label,
            "-e",
            "RUST_LOG=info",
        ];
        argv.extend_from_slice(opts);
        argv.push(image);
        argv.extend_from_slice(args);
        docker(&argv)?;
        let container = Container {
            name: full,
            hostname: name.to_string(),
            ip,
            network: self.name.clone(),
        };
        if !files.is_empty() {
            let dir = tempfile::tempdir().map_err(|e| Error::io("making a temporary folder", e))?;
            for (i, (path, content)) in files.iter().enumerate() {
                let local = dir.path().join(i.to_string());
                std::fs::write(&local, content)
                    .map_err(|e| Error::io(format!("writing {}", local.display()), e))?;
                let target = format!("{}:{path}", container.name);
                docker(&["cp", &local.to_string_lossy(), &target])?;
            }
        }
        Ok(container)
    }

    /// Starts the coordination ZooKeeper (the `ochopod/zookeeper` image in standalone mode,
    /// tick 200 ms) and waits until it serves.
    pub fn coordination_zk(&self) -> Result<Container> {
        let zk = self.run(
            "zk",
            "ochopod/zookeeper:latest",
            &["--entrypoint", "/usr/local/bin/zk-run.sh"],
            &["standalone", "200"],
        )?;
        let addr = format!("{}:2181", zk.ip);
        crate::wait::wait_until(
            Duration::from_secs(60),
            "the coordination ZooKeeper",
            || {
                four_letter(&addr, "ruok").and_then(|r| {
                    if r == "imok" {
                        Ok(())
                    } else {
                        Err(format!("ruok answered {r:?}"))
                    }
                })
            },
        )
        .map_err(|e| Error::Usage(format!("{e}; its log: {}", zk.logs())))?;
        Ok(zk)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        remove_labelled(&format!("ochopod.e2e.network={}", self.name));
        let _ = docker(&["network", "rm", &self.name]);
    }
}

fn remove_labelled(label: &str) {
    let filter = format!("label={label}");
    if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut argv = vec!["rm", "-f", "-v"];
            argv.extend(ids);
            let _ = docker(&argv);
        }
    }
}

/// Removes containers and networks left by test processes that no longer run.
fn sweep_leftovers() {
    static ONCE: Mutex<bool> = Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    *done = true;
    let fmt = format!("{{{{.ID}}}} {{{{.Label \"{OWNER}\"}}}}");
    let dead = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
    };
    if let Ok(out) = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={OWNER}"),
        "--format",
        &fmt,
    ]) {
        for line in out.lines() {
            if let Some((id, pid)) = line.split_once(' ') {
                if dead(pid) {
                    let _ = docker(&["rm", "-f", "-v", id]);
                }
            }
        }
    }
    let fmt = format!("{{{{.ID}}}} {{{{.Label \"{OWNER}\"}}}}");
    if let Ok(out) = docker(&[
        "network",
        "ls",
        "--filter",
        &format!("label={OWNER}"),
        "--format",
        &fmt,
    ]) {
        for line in out.lines() {
            if let Some((id, pid)) = line.split_once(' ') {
                if dead(pid) {
                    let _ = docker(&["network", "rm", id]);
                }
            }
        }
    }
}

/// Sends a ZooKeeper four-letter command (`ruok`, `mntr`, `srvr`) to `addr`; returns the reply.
pub fn four_letter(addr: &str, cmd: &str) -> std::result::Result<String, String> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    s.write_all(cmd.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("{addr}: {e}"))?;
    Ok(out.trim().to_string())
}

/// One container started by a [`Network`] (removed with the network).
#[derive(Clone, Debug)]
pub struct Container {
    name: String,
    hostname: String,
    ip: String,
    network: String,
}

impl Container {
    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its hostname (the short name given to [`Network::run`]; the pod's `node`).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Its address on the network.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// `docker exec CONTAINER ARGS`; stdout, trimmed.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["exec", self.name.as_str()];
        argv.extend_from_slice(args);
        docker(&argv)
    }

    /// `docker inspect -f FORMAT`.
    pub fn inspect(&self, format: &str) -> Result<String> {
        docker(&["inspect", "-f", format, &self.name])
    }

    /// True while the container runs.
    pub fn running(&self) -> Result<bool> {
        Ok(self.inspect("{{.State.Running}}")? == "true")
    }

    /// The last lines of its output (for failure messages; empty when unreadable).
    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "60", &self.name])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(docker logs failed: {e})"),
        }
    }

    /// `docker start` (a container made by [`Network::create_container`]).
    pub fn start(&self) -> Result<()> {
        docker(&["start", &self.name]).map(drop)
    }

    /// Waits for the container to exit; its exit code and its whole output (stdout, stderr).
    pub fn wait_exit(&self) -> Result<(i32, String, String)> {
        let code = docker(&["wait", &self.name])?;
        let code = code.parse::<i32>().map_err(|_| Error::Payload {
            from: format!("docker wait {}", self.name),
            why: format!("not an exit code: {code:?}"),
        })?;
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("running docker logs", e))?;
        Ok((
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `docker kill` (SIGKILL to the whole container).
    pub fn kill(&self) -> Result<()> {
        docker(&["kill", &self.name]).map(drop)
    }

    /// Starts `docker stop -t SECS` in the background; the caller waits on the child.
    pub fn stop_in_background(&self, secs: u32) -> Result<std::process::Child> {
        Command::new("docker")
            .args(["stop", "-t", &secs.to_string(), &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("starting docker stop", e))
    }

    /// `docker stop -t SECS`.
    pub fn stop(&self, secs: u32) -> Result<()> {
        docker(&["stop", "-t", &secs.to_string(), &self.name]).map(drop)
    }

    /// Takes the container off its network (`docker network disconnect`).
    pub fn disconnect(&self) -> Result<()> {
        docker(&["network", "disconnect", &self.network, &self.name]).map(drop)
    }

    /// Puts it back on its network with the same address.
    pub fn reconnect(&self) -> Result<()> {
        docker(&[
            "network",
            "connect",
            "--ip",
            &self.ip,
            &self.network,
            &self.name,
        ])
        .map(drop)
    }

    /// The pod's `/info` on its control port 8080.
    pub fn info(&self) -> Result<Info> {
        let url = format!("http://{}:8080/info", self.ip);
        let text = http_get(&url)?;
        serde_json::from_str(&text).map_err(|e| Error::Payload {
            from: url,
            why: format!("not an /info reply ({e}): {text}"),
        })
    }
}

/// GET `url` with a 5 s timeout; the body of a 2xx reply.
pub fn http_get(url: &str) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .max_idle_connections(0)
        .build()
        .into();
    let http = |why: String| Error::Http {
        url: url.to_string(),
        why,
    };
    let mut resp = agent.get(url).call().map_err(|e| http(e.to_string()))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| http(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(http(format!("status {status}: {text}")));
    }
    Ok(text)
}

/// GET `url` with a 5 s timeout; the status code, whatever it is (a probe's view).
pub fn http_status(url: &str) -> Result<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .max_idle_connections(0)
        .build()
        .into();
    let resp = agent.get(url).call().map_err(|e| Error::Http {
        url: url.to_string(),
        why: e.to_string(),
    })?;
    Ok(resp.status().as_u16())
}
