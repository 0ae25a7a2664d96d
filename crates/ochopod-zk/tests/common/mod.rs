//! Test harness: a throw-away ZooKeeper per test (`scripts/zk.sh`, stopped on drop, even when
//! the test fails), kazoo as an independent client, a TCP proxy that can cut a client off, and
//! event waits with deadlines.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ochopod_core::Registration;
use ochopod_zk::{Coordinator, CoordinatorHandle, PodId, ZkEvent, ZkSettings};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

pub const DEADLINE: Duration = Duration::from_secs(30);
pub const SESSION: Duration = Duration::from_secs(2);

/// At most three servers at once per test binary: the machine is shared.
static SERVERS: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/zk.sh")
}

/// A throw-away ZooKeeper server, stopped when dropped.
pub struct Zk {
    pub port: u16,
    dir: tempfile::TempDir,
    _permit: OwnedSemaphorePermit,
}

impl Zk {
    pub async fn start() -> Zk {
        let permit = SERVERS
            .get_or_init(|| Arc::new(Semaphore::new(3)))
            .clone()
            .acquire_owned()
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .args(["0", "100"])
            .output()
            .await
            .expect("run scripts/zk.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "zk.sh start failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = stdout.split_whitespace().next().unwrap().parse().unwrap();
        Zk {
            port,
            dir,
            _permit: permit,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn settings(&self) -> ZkSettings {
        ZkSettings::new(self.addr(), SESSION)
    }

    /// Runs a kazoo script (`zk` is a started client, `P` the first extra argument) and returns
    /// its stdout; panics with stderr when it fails.
    pub async fn kazoo(&self, code: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(kazoo_script(code))
            .arg(self.addr())
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "kazoo script failed: {}\n{code}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether every contender of the lock under `lock_dir` but the first is waiting on its
    /// predecessor: its session holds a data watch on the contender just before it (ZooKeeper's
    /// own `wchp` list, the owners from each node's stat). Once it does, that contender has
    /// decided it does not hold the lock; it can only change its mind when the watch fires.
    /// Returns what it saw when the answer is no.
    pub async fn queue_waits(&self, lock_dir: &str) -> Result<(), String> {
        let out = self.kazoo(QUEUE_WAITS_PY, &[lock_dir]).await;
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON from the script");
        if v["ok"] == true {
            Ok(())
        } else {
            Err(v.to_string())
        }
    }

    /// Waits until [`Zk::queue_waits`] holds; panics with what it last saw.
    pub async fn until_queue_waits(&self, what: &str, lock_dir: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match self.queue_waits(lock_dir).await {
                Ok(()) => return,
                Err(seen) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "{what}: not true before the deadline; last saw {seen}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a long-running kazoo script; talk to it line by line.
    pub fn kazoo_process(&self, code: &str, args: &[&str]) -> Kazoo {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg("-c")
            .arg(kazoo_script(code))
            .arg(self.addr())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Kazoo {
            child,
            stdin,
            lines: rx,
        }
    }
}

impl Drop for Zk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// See [`Zk::queue_waits`]: prints `{"ok": bool, ...what it saw}`.
const QUEUE_WAITS_PY: &str = r#"
import re, socket
d = sys.argv[2]
kids = sorted((k for k in zk.get_children(d) if re.search(r'\d{10}$', k)), key=lambda k: k[-10:])
owners = [zk.exists(d + '/' + k).ephemeralOwner for k in kids]
host, port = sys.argv[1].rsplit(':', 1)
s = socket.create_connection((host, int(port)))
s.sendall(b'wchp')
raw = b''
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    raw += chunk
watchers, cur = {}, None
for line in raw.decode().splitlines():
    if line.startswith('/'):
        cur = line.strip()
        watchers[cur] = []
    elif cur and line.strip().startswith('0x'):
        watchers[cur].append(int(line.strip(), 16))
ok = len(kids) >= 2 and all(
    owners[i] in watchers.get(d + '/' + kids[i - 1], []) for i in range(1, len(kids)))
print(json.dumps({'ok': ok, 'contenders': kids, 'owners': [hex(o) for o in owners],
                  'watches': {k: [hex(x) for x in v] for k, v in watchers.items() if k.startswith(d)}}))
"#;

fn kazoo_script(code: &str) -> String {
    format!(
        "import sys, json, time\n\
         from kazoo.client import KazooClient\n\
         zk = KazooClient(hosts=sys.argv[1], timeout=10)\n\
         zk.start(timeout=20)\n\
         {code}\n\
         zk.stop()\n"
    )
}

/// A running kazoo script.
pub struct Kazoo {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Kazoo {
    /// Waits for the next line of output.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(DEADLINE, self.lines.recv())
            .await
            .expect("kazoo said nothing before the deadline")
            .expect("kazoo exited")
    }

    /// A line already printed, if any (does not wait).
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    pub async fn say(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    pub async fn wait(mut self) {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "kazoo script failed");
    }
}

/// A namespace no other test uses.
pub fn namespace() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

pub fn registration(namespace: &str, cluster: &str, ip: &str) -> Registration {
    Registration {
        cluster: cluster.into(),
        namespace: namespace.into(),
        binding: "local".into(),
        fwk: "local".into(),
        ip: ip.into(),
        port: "8080".into(),
        protocol: Some(ochopod_core::PROTOCOL),
        ..Default::default()
    }
}

/// A started coordinator, its events, and what it was started with.
pub struct Pod {
    pub key: String,
    pub handle: CoordinatorHandle,
    pub events: mpsc::Receiver<ZkEvent>,
    pub seen: Vec<ZkEvent>,
}

impl Pod {
    pub fn start(
        settings: ZkSettings,
        namespace: &str,
        cluster: &str,
        seq: Option<u64>,
        depends_on: &[&str],
    ) -> Pod {
        let key = uuid::Uuid::new_v4().to_string();
        let deps = depends_on
            .iter()
            .map(|d| ochopod_core::DependencyPattern::parse(d, namespace).unwrap())
            .collect();
        let (handle, events) = Coordinator::spawn(
            settings,
            PodId {
                namespace: namespace.into(),
                cluster: cluster.into(),
                key: key.clone(),
                seq,
            },
            registration(namespace, cluster, "127.0.0.1"),
            deps,
        )
        .unwrap();
        Pod {
            key,
            handle,
            events,
            seen: Vec::new(),
        }
    }

    /// Waits (with a deadline) for the first event matching `want`, keeping the ones skipped.
    pub async fn expect(&mut self, what: &str, mut want: impl FnMut(&ZkEvent) -> bool) -> ZkEvent {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    self.seen.push(event.clone());
                    if want(&event) {
                        return event;
                    }
                }
                Ok(None) => panic!("{what}: the coordinator stopped; seen {:#?}", self.seen),
                Err(_) => panic!(
                    "{what}: not seen before the deadline; seen {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Like [`Pod::expect`], but an event already seen since `mark` (an index into `seen`)
    /// counts too: for events whose order against others is not fixed.
    pub async fn expect_since(
        &mut self,
        mark: usize,
        what: &str,
        mut want: impl FnMut(&ZkEvent) -> bool,
    ) -> ZkEvent {
        if let Some(event) = self.seen[mark..].iter().find(|e| want(e)) {
            return event.clone();
        }
        self.expect(what, want).await
    }

    /// Events already delivered, without waiting.
    pub fn drain(&mut self) -> Vec<ZkEvent> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event.clone());
            out.push(event);
        }
        out
    }

    pub async fn registered(&mut self) -> (u64, String, bool) {
        match self
            .expect("registered", |e| matches!(e, ZkEvent::Registered { .. }))
            .await
        {
            ZkEvent::Registered {
                seq,
                node,
                after_expiry,
            } => (seq, node, after_expiry),
            _ => unreachable!(),
        }
    }

    pub async fn elected(&mut self) -> ZkEvent {
        self.expect("elected", |e| matches!(e, ZkEvent::Elected { .. }))
            .await
    }

    pub async fn leave(self) {
        tokio::time::timeout(DEADLINE, self.handle.leave())
            .await
            .expect("leave answered before the deadline")
            .expect("leave");
    }
}

/// Waits until `check` returns true, polling an independent observer (kazoo or a Directory)
/// with a deadline. Used only to observe ZooKeeper from outside, never the code under test.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not true before the deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy in front of ZooKeeper that can cut every client off (and refuse new ones).
pub struct Proxy {
    pub port: u16,
    blocked: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (blocked, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let mut rx = rx.clone();
                if *rx.borrow_and_update() {
                    continue; // dropped: refused
                }
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = rx.wait_for(|b| *b) => {}
                    }
                });
            }
        });
        Proxy {
            port,
            blocked,
            task,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn block(&self, blocked: bool) {
        self.blocked.send_replace(blocked);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
