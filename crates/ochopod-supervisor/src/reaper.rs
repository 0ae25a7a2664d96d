//! The reaper: one per agent process; spawns every child and owns every exit status.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::WaitOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::command::{Child, CommandSpec, ExitStatus, Output, OutputMode, Program};
use crate::lifeline::{die_with_agent, on_spawner, Guard};
use crate::pod_log::LineSplitter;
use crate::{signal_group, Error, PodLog, Signal};

/// Most bytes kept per stream by [`OutputMode::Capture`] and [`Reaper::run`]; the rest is
/// read and dropped.
pub const CAPTURE_CAP: usize = 1024 * 1024;

/// The agent's only reaper. Cheap to clone: every clone is the same reaper.
///
/// It runs on its own thread (with its own small tokio runtime), so it outlives the runtimes
/// that use it; the pipe readers of [`OutputMode::Pipe`] and [`OutputMode::Capture`] run there
/// too. [`Reaper::spawn`] needs no runtime; [`Reaper::run`] needs one with time enabled.
#[derive(Clone, Debug)]
pub struct Reaper {
    /// Registered pids and where their status goes, and the group guard. Held while spawning
    /// and while reaping, so a status can never be reaped before its pid is registered, nor
    /// handed to a new process that reused the pid.
    table: Arc<Mutex<Table>>,
    /// The reaper thread's runtime.
    handle: Handle,
}

/// What the reaper and the spawners share, under one lock.
#[derive(Debug, Default)]
struct Table {
    /// Registered pids and where their status goes.
    waiters: HashMap<i32, watch::Sender<Option<ExitStatus>>>,
    /// The groups the group guard kills if the agent dies (see [`crate::lifeline`]).
    guard: Guard,
}

static INSTALLED: Mutex<Option<Reaper>> = Mutex::new(None);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Reaper {
    /// Installs the process's reaper, or returns it if it is installed already.
    ///
    /// When the agent is not PID 1 it becomes a child subreaper, so orphaned grandchildren are
    /// reparented to it. Descriptors the agent inherited (besides 0, 1 and 2) are marked
    /// close-on-exec, so children never see them. From then on every child of the process is reaped by this reaper: see
    /// the crate documentation for what that forbids.
    pub fn install() -> Result<Reaper, Error> {
        let mut installed = lock(&INSTALLED);
        if let Some(reaper) = &*installed {
            return Ok(reaper.clone());
        }
        if nix::unistd::getpid().as_raw() != 1 {
            nix::sys::prctl::set_child_subreaper(true).map_err(Error::Subreaper)?;
        }
        close_inherited_on_exec();
        let table = Arc::new(Mutex::new(Table::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_table = Arc::clone(&table);
        std::thread::Builder::new()
            .name("ochopod-reaper".into())
            .spawn(move || reaper_thread(thread_table, ready_tx))
            .map_err(Error::ReaperStart)?;
        let handle = ready_rx
            .recv()
            .map_err(|_| Error::ReaperStart(std::io::Error::other("the reaper thread died")))?
            .map_err(Error::ReaperStart)?;
        let reaper = Reaper { table, handle };
        *installed = Some(reaper.clone());
        tracing::debug!(
            subreaper = nix::unistd::getpid().as_raw() != 1,
            "reaper installed"
        );
        Ok(reaper)
    }

    /// Starts a process in its own process group, with exactly `spec.env` as its environment,
    /// stdin on `/dev/null`, and none of the agent's file descriptors besides 0, 1 and 2.
    pub fn spawn(&self, spec: &CommandSpec) -> Result<Child, Error> {
        self.start(spec, None, spec.output.clone().into())
    }

    /// Runs a hook, probe or tool to completion: `stdin` is written to it then closed (`None`:
    /// stdin is `/dev/null`), its stdout and stderr are captured (and also piped into the pod
    /// log when `spec.output` is [`OutputMode::Pipe`]). After `timeout` its whole process group is SIGKILLed and
    /// [`Error::Timeout`] names the command. Dropping the future kills the group too.
    ///
    /// A non-zero exit is not an error here: look at [`Output::status`].
    pub async fn run(
        &self,
        spec: &CommandSpec,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output, Error> {
        let tee = match &spec.output {
            OutputMode::Pipe(log) => Some(log.clone()),
            _ => None,
        };
        let mut child = self.start(spec, stdin, Sink::Capture(tee))?;
        let pid = child.pid;
        let mut guard = KillOnDrop(Some(pid));
        let status = tokio::time::timeout(timeout, child.wait()).await;
        guard.0 = None;
        match status {
            Ok(_) => Ok(child.output().await),
            Err(_) => {
                tracing::warn!(pid, command = %child.command, ?timeout, "timed out: killing its process group");
                if let Err(e) = signal_group(pid, Signal::SIGKILL) {
                    tracing::warn!(pid, "cannot kill the timed-out group: {e}");
                }
                child.wait().await;
                Err(Error::Timeout {
                    command: child.command.clone(),
                    after: timeout,
                })
            }
        }
    }

    fn start(
        &self,
        spec: &CommandSpec,
        stdin: Option<Vec<u8>>,
        output: Sink,
    ) -> Result<Child, Error> {
        let command_text = spec.program.to_string();
        let mut cmd = match &spec.program {
            Program::Argv(argv) => match argv.split_first() {
                Some((program, args)) if !program.is_empty() => {
                    let mut cmd = Command::new(program);
                    cmd.args(args);
                    cmd
                }
                _ => return Err(Error::EmptyArgv),
            },
            Program::Shell(line) => {
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c").arg(line);
                cmd
            }
        };
        cmd.env_clear().envs(&spec.env).process_group(0);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let (out, err) = match &output {
            Sink::Pipe(_) | Sink::Capture(_) => (Stdio::piped(), Stdio::piped()),
            Sink::Inherit => (Stdio::inherit(), Stdio::inherit()),
            Sink::Null => (Stdio::null(), Stdio::null()),
        };
        cmd.stdout(out).stderr(err);

        // Spawn and register under the table lock: the reaper thread cannot reap this pid
        // (nor std's own wait after a failed exec) before its status has somewhere to go.
        let (status_tx, status_rx) = watch::channel(None);
        // Forked by the spawner thread, which lives as long as the agent: the child's
        // parent-death signal is tied to the thread that forked it.
        die_with_agent(&mut cmd);
        let mut std_child = {
            let mut table = lock(&self.table);
            let std_child = on_spawner(move || cmd.spawn()).map_err(|source| Error::Spawn {
                command: command_text.clone(),
                cwd: spec.cwd.clone(),
                source,
            })?;
            table.waiters.insert(std_child.id() as i32, status_tx);
            table.guard.follow(std_child.id());
            std_child
        };
        let pid = std_child.id();
        let stdin_fd = std_child.stdin.take().map(OwnedFd::from);
        let stdout_fd = std_child.stdout.take().map(OwnedFd::from);
        let stderr_fd = std_child.stderr.take().map(OwnedFd::from);
        // Never std's Child::wait: the reaper owns the status. Dropping it does not wait.
        drop(std_child);
        tracing::debug!(pid, command = %command_text, "spawned");

        if let (Some(fd), Some(bytes)) = (stdin_fd, stdin) {
            self.handle.spawn(write_stdin(fd, bytes, pid));
        }
        let mut captured = None;
        if let (Some(out), Some(err)) = (stdout_fd, stderr_fd) {
            match output {
                Sink::Pipe(log) => {
                    self.handle
                        .spawn(forward(out, LineSplitter::new(log.clone(), pid)));
                    self.handle.spawn(forward(err, LineSplitter::new(log, pid)));
                }
                Sink::Capture(tee) => {
                    let splitter = |log: &Option<PodLog>| {
                        log.as_ref().map(|log| LineSplitter::new(log.clone(), pid))
                    };
                    let out = self
                        .handle
                        .spawn(capture(out, status_rx.clone(), splitter(&tee)));
                    let err = self
                        .handle
                        .spawn(capture(err, status_rx.clone(), splitter(&tee)));
                    captured = Some((out, err));
                }
                Sink::Inherit | Sink::Null => {}
            }
        }
        Ok(Child {
            pid,
            command: command_text,
            status: status_rx,
            captured,
        })
    }
}

/// Where output goes, internally: [`OutputMode`] plus capture-and-tee for [`Reaper::run`].
enum Sink {
    Pipe(PodLog),
    Capture(Option<PodLog>),
    Inherit,
    Null,
}

impl From<OutputMode> for Sink {
    fn from(mode: OutputMode) -> Sink {
        match mode {
            OutputMode::Pipe(log) => Sink::Pipe(log),
            OutputMode::Capture => Sink::Capture(None),
            OutputMode::Inherit => Sink::Inherit,
            OutputMode::Null => Sink::Null,
        }
    }
}

/// Marks every descriptor above 2 close-on-exec. Ours are already (std, tokio and nix open
/// everything with `O_CLOEXEC`); this catches the ones the agent inherited from whoever started
/// it, so children never see them.
#[allow(unsafe_code)]
fn close_inherited_on_exec() {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::fd::BorrowedFd;
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return tracing::warn!(
            "cannot list /proc/self/fd: inherited descriptors may leak to children"
        );
    };
    let fds: Vec<i32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for raw in fds {
        // SAFETY: `raw` was open a moment ago and the borrow lasts for two fcntl calls. If
        // another thread closed it meanwhile, fcntl fails with EBADF or flags whatever reused
        // the number as close-on-exec, which is what we want for every descriptor anyway.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let Ok(bits) = fcntl(fd, FcntlArg::F_GETFD) else {
            continue; // the directory listing's own descriptor, closed by now
        };
        let flags = FdFlag::from_bits_truncate(bits);
        if !flags.contains(FdFlag::FD_CLOEXEC) {
            tracing::debug!(fd = raw, "inherited descriptor marked close-on-exec");
            let _ = fcntl(fd, FcntlArg::F_SETFD(flags | FdFlag::FD_CLOEXEC));
        }
    }
}

/// Kills a process group unless disarmed (a `run` future dropped midway).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = signal_group(pid, Signal::SIGKILL);
        }
    }
}

fn reaper_thread(
    table: Arc<Mutex<Table>>,
    ready: std::sync::mpsc::Sender<std::io::Result<Handle>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let mut sigchld = match signal(SignalKind::child()) {
            Ok(sigchld) => sigchld,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(Handle::current()));
        loop {
            // SIGCHLDs coalesce: reap until nothing is left, every time.
            reap_all(&table);
            if sigchld.recv().await.is_none() {
                tracing::error!("SIGCHLD stream closed: the reaper stops");
                return;
            }
        }
    });
}

fn reap_all(table: &Mutex<Table>) {
    let mut table = lock(table);
    let mut reaped = false;
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, raw))) => {
                let pid = pid.as_raw_nonzero().get();
                let status = if let Some(code) = raw.exit_status() {
                    ExitStatus::Code(code)
                } else if let Some(sig) = raw.terminating_signal() {
                    ExitStatus::Signaled(sig)
                } else {
                    // Stopped/continued are only reported when asked for; never here.
                    continue;
                };
                match table.waiters.remove(&pid) {
                    Some(waiter) => {
                        tracing::debug!(pid, %status, "reaped");
                        waiter.send_replace(Some(status));
                    }
                    None => tracing::debug!(pid, %status, "reaped an orphan"),
                }
                reaped = true;
            }
            Ok(None) | Err(Errno::CHILD) => {
                if reaped {
                    table.guard.forget_ended();
                }
                return;
            }
            Err(Errno::INTR) => continue,
            Err(e) => {
                tracing::warn!("waitpid(-1) failed: {e}");
                return;
            }
        }
    }
}

async fn write_stdin(fd: OwnedFd, bytes: Vec<u8>, pid: u32) {
    let result = async {
        let mut tx = pipe::Sender::from_owned_fd(fd)?;
        tx.write_all(&bytes).await
    }
    .await;
    match result {
        Ok(()) => {}
        // The child did not read it all: its business.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => tracing::debug!(pid, "cannot write stdin: {e}"),
    }
}

/// Copies a pipe into the pod log until EOF (processes left behind included).
async fn forward(fd: OwnedFd, mut lines: LineSplitter) {
    let mut rx = match pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => return tracing::warn!("cannot read a child's output: {e}"),
    };
    let mut chunk = vec![0u8; 8192];
    loop {
        match rx.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => lines.feed(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!("output pipe: {e}");
                break;
            }
        }
    }
    lines.finish();
}

/// Collects a pipe until EOF, or until the child ended and what it wrote is drained (so a
/// process it left behind holding the pipe cannot hold us up).
async fn capture(
    fd: OwnedFd,
    mut exited: watch::Receiver<Option<ExitStatus>>,
    mut tee: Option<LineSplitter>,
) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut keep = |bytes: &[u8], tee: &mut Option<LineSplitter>| {
        let room = CAPTURE_CAP.saturating_sub(kept.len());
        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if let Some(tee) = tee {
            tee.feed(bytes);
        }
    };
    let mut rx = match pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!("cannot read a child's output: {e}");
            return kept;
        }
    };
    let mut chunk = vec![0u8; 8192];
    loop {
        tokio::select! {
            read = rx.read(&mut chunk) => match read {
                Ok(0) => break,
                Ok(n) => keep(&chunk[..n], &mut tee),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("output pipe: {e}");
                    break;
                }
            },
            _ = exited.wait_for(Option::is_some) => {
                // Everything the child wrote before it ended is in the pipe now: read it
                // straight from the (non-blocking) fd until it is empty.
                loop {
                    match nix::unistd::read(&rx, &mut chunk) {
                        Ok(0) => break,
                        Ok(n) => keep(&chunk[..n], &mut tee),
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => break, // EAGAIN: drained
                    }
                }
                break;
            }
        }
    }
    if let Some(tee) = &mut tee {
        tee.finish();
    }
    kept
}
