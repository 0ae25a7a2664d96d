//! Throw-away ZooKeeper servers: a standalone [`ZkServer`] and a three-node [`Ensemble`].

use crate::error::{Error, Result};
use crate::ports::free_port;
use crate::util::{file_tail, run, workspace_root};
use crate::wait::wait_until;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tempfile::TempDir;

const JAR: &str = "/usr/share/java/zookeeper.jar";
/// Jars `scripts/zk.sh` puts on the class path beside the server jar (Debian's zookeeper 3.8).
const EXTRA_JARS: &[&str] = &[
    "slf4j-api",
    "slf4j-log4j12",
    "log4j-1.2",
    "netty-handler",
    "netty-transport",
    "netty-common",
    "netty-buffer",
    "netty-resolver",
    "netty-codec",
    "netty-transport-native-unix-common",
    "commons-cli",
    "jline",
    "metrics-core",
    "snappy-java",
    "commons-io",
    "jackson-databind",
    "jackson-core",
    "jackson-annotations",
    "audience-annotations",
];
const START_TIMEOUT: Duration = Duration::from_secs(90);

fn zk_sh() -> PathBuf {
    workspace_root().join("scripts/zk.sh")
}

/// Installs Debian's `zookeeper` (and Java) with `scripts/zk.sh install` when missing; once per
/// process, so parallel tests do not race on apt.
fn ensure_installed() -> Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    let have_java = Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !(Path::new(JAR).exists() && have_java) {
        run(Command::new("bash").arg(zk_sh()).arg("install"))?;
    }
    *done = true;
    Ok(())
}

/// Asks a server `srvr` and returns its `Mode:` (`standalone`, `leader`, `follower`), or `None`
/// while it does not serve requests (down, starting, or out of quorum).
fn server_mode(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"srvr").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_string())
}

/// A standalone ZooKeeper 3.8 on 127.0.0.1, started by `scripts/zk.sh` with a 100 ms tick (so
/// sessions may be as short as 200 ms) and its own data folder. Stopped on drop.
#[derive(Debug)]
pub struct ZkServer {
    dir: TempDir,
    port: u16,
    tick_ms: u32,
    pid: Option<u32>,
}

impl ZkServer {
    /// Starts a server on a free port with a 100 ms tick; returns once it serves requests.
    pub fn start() -> Result<Self> {
        Self::start_with_tick(100)
    }

    /// Starts a server with the given `tickTime` in milliseconds.
    pub fn start_with_tick(tick_ms: u32) -> Result<Self> {
        ensure_installed()?;
        let dir = tempfile::Builder::new()
            .prefix("ochopod-zk-")
            .tempdir()
            .map_err(|e| Error::io("creating a ZooKeeper data folder", e))?;
        let mut zk = ZkServer {
            dir,
            port: free_port()?,
            tick_ms,
            pid: None,
        };
        zk.start_again()?;
        Ok(zk)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, the connection string agents use.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The JVM's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The server's folder (`zoo.cfg`, `data/`, `server.out`, `zookeeper.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// True while the server answers `srvr`.
    pub fn is_serving(&self) -> bool {
        server_mode(self.port).is_some()
    }

    /// Stops the server (`scripts/zk.sh stop`); its data stays for [`ZkServer::start_again`].
    pub fn stop(&mut self) -> Result<()> {
        if self.pid.take().is_some() {
            run(Command::new("bash")
                .arg(zk_sh())
                .arg("stop")
                .arg(self.dir.path()))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same data (no-op when running).
    pub fn start_again(&mut self) -> Result<()> {
        if self.pid.is_some() {
            return Ok(());
        }
        let out = run(Command::new("bash")
            .arg(zk_sh())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .arg(self.tick_ms.to_string()))?;
        let mut words = out.split_whitespace();
        let (port, pid) = (words.next(), words.next());
        let pid = pid.and_then(|p| p.parse().ok());
        if port != Some(self.port.to_string().as_str()) || pid.is_none() {
            return Err(Error::Payload {
                from: "scripts/zk.sh start".into(),
                why: format!(
                    "expected \"{} PID\", got {out:?}; see {}",
                    self.port,
                    self.dir.path().join("server.out").display()
                ),
            });
        }
        self.pid = pid;
        Ok(())
    }

    /// Stops then starts the server on the same port, keeping its data (sessions survive when
    /// the server is back within their timeout, as with a real restart).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            if self.stop().is_err() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// One member of an [`Ensemble`].
#[derive(Debug)]
struct Member {
    dir: PathBuf,
    client: u16,
    child: Option<Child>,
}

impl Member {
    fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut cp = format!("{}:{JAR}", self.dir.display());
        for jar in EXTRA_JARS {
            let path = format!("/usr/share/java/{jar}.jar");
            if Path::new(&path).exists() {
                cp.push(':');
                cp.push_str(&path);
            }
        }
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.out"))
            .map_err(|e| Error::io("opening server.out", e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("opening server.out", e))?;
        let child = Command::new("java")
            .arg("-Xmx256m")
            .arg(format!("-Dzk.log.dir={}", self.dir.display()))
            .arg(format!(
                "-Dlog4j.configuration=file:{}/log4j.properties",
                self.dir.display()
            ))
            .arg("-Dzookeeper.jmx.log4j.disable=true")
            .arg("-cp")
            .arg(cp)
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::io("starting java for a ZooKeeper ensemble member", e))?;
        self.child = Some(child);
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = wait_until(
            Duration::from_secs(10),
            "ZooKeeper member to exit",
            || match child.try_wait() {
                Ok(Some(_)) => Ok(()),
                _ => Err("still running".into()),
            },
        );
        if exited.is_err() {
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| Error::io("waiting for a killed ZooKeeper member", e))?;
        }
        Ok(())
    }
}

/// Three ZooKeeper servers in one quorum on loopback, each with its own folder and ports, each
/// stoppable and restartable on its own. Stopped on drop.
#[derive(Debug)]
pub struct Ensemble {
    _dir: TempDir,
    members: Vec<Member>,
}

impl Ensemble {
    /// Starts three members (tick 100 ms) and returns once all three serve in one quorum.
    pub fn start() -> Result<Self> {
        ensure_installed()?;
        let dir = tempfile::Builder::new()
            .prefix("ochopod-ensemble-")
            .tempdir()
            .map_err(|e| Error::io("creating the ensemble folder", e))?;
        let tick = 100;
        let mut servers = String::new();
        let mut members = Vec::new();
        for id in 1..=3 {
            let (client, peer, election) = (free_port()?, free_port()?, free_port()?);
            servers.push_str(&format!("server.{id}=127.0.0.1:{peer}:{election}\n"));
            members.push((id, client));
        }
        let mut out = Vec::new();
        for (id, client) in members {
            let mdir = dir.path().join(format!("zk{id}"));
            fs::create_dir_all(mdir.join("data"))
                .map_err(|e| Error::io("creating a member's data folder", e))?;
            fs::write(mdir.join("data/myid"), format!("{id}\n"))
                .map_err(|e| Error::io("writing myid", e))?;
            let cfg = format!(
                "tickTime={tick}\ninitLimit=100\nsyncLimit=50\ndataDir={data}\nclientPort={client}\n\
                 clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nminSessionTimeout={min}\n\
                 maxSessionTimeout=60000\n4lw.commands.whitelist=*\nadmin.enableServer=false\n\
                 quorumListenOnAllIPs=false\n{servers}",
                data = mdir.join("data").display(),
                min = tick * 2,
            );
            fs::write(mdir.join("zoo.cfg"), cfg).map_err(|e| Error::io("writing zoo.cfg", e))?;
            fs::write(
                mdir.join("log4j.properties"),
                "log4j.rootLogger=WARN, FILE\nlog4j.appender.FILE=org.apache.log4j.FileAppender\n\
                 log4j.appender.FILE.File=${zk.log.dir}/zookeeper.log\n\
                 log4j.appender.FILE.layout=org.apache.log4j.PatternLayout\n\
                 log4j.appender.FILE.layout.ConversionPattern=%d %p %c{1}: %m%n\n",
            )
            .map_err(|e| Error::io("writing log4j.properties", e))?;
            out.push(Member {
                dir: mdir,
                client,
                child: None,
            });
        }
        let mut ensemble = Ensemble {
            _dir: dir,
            members: out,
        };
        for m in &mut ensemble.members {
            m.spawn()?;
        }
        for i in 0..3 {
            ensemble.wait_serving(i, START_TIMEOUT)?;
        }
        Ok(ensemble)
    }

    /// Number of members (3).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: an ensemble has members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `127.0.0.1:a,127.0.0.1:b,127.0.0.1:c`.
    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client port of member `i` (0-based).
    pub fn port(&self, i: usize) -> u16 {
        self.members[i].client
    }

    /// Member `i`'s role (`leader`, `follower`) while it serves, `None` otherwise.
    pub fn mode(&self, i: usize) -> Option<String> {
        server_mode(self.members[i].client)
    }

    /// Member `i`'s folder (config, data, logs).
    pub fn dir(&self, i: usize) -> &Path {
        &self.members[i].dir
    }

    /// Stops member `i` (SIGTERM, then SIGKILL after 10 s); its data stays.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        self.members[i].stop()
    }

    /// Starts member `i` again with its config and data (does not wait; see
    /// [`Ensemble::wait_serving`]).
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        self.members[i].spawn()
    }

    /// Waits until member `i` serves requests as part of a quorum.
    pub fn wait_serving(&self, i: usize, timeout: Duration) -> Result<()> {
        let m = &self.members[i];
        wait_until(
            timeout,
            &format!("ensemble member {i} (port {}) to serve", m.client),
            || match server_mode(m.client) {
                Some(mode) if mode == "leader" || mode == "follower" => Ok(()),
                other => Err(format!(
                    "mode {other:?}; server.out: {}",
                    file_tail(&m.dir.join("server.out"), 400)
                )),
            },
        )
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(child) = m.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
