//! The lifeline: nothing the agent starts outlives it, even when the agent is SIGKILLed.
//!
//! Two mechanisms, because neither covers everything alone:
//!
//! * **Parent-death signal.** Every child is forked by one long-lived thread (the spawner) and
//!   sets `PR_SET_PDEATHSIG = SIGKILL` before it execs, so the kernel kills it the moment the
//!   agent dies. The kernel ties that signal to the *thread* that forked the child, which is
//!   why no short-lived thread (a tokio blocking thread, say) may fork: the child would die
//!   with that thread. It reaches only the child itself, not what the child started.
//! * **The group guard.** A `/bin/sh` started once per agent, in a process group of its own,
//!   reads from a pipe whose only writer is the agent: `+PGID` for each group the agent
//!   starts, `-PGID` once that group is empty. When the agent dies, for whatever reason, the
//!   pipe's last writer is gone: the guard reads end-of-file, SIGKILLs every group still on
//!   its list, and exits. So a shell's children and a server's workers follow their leader.
//!
//! Limits, stated plainly:
//! * A process that leaves its group (`setsid`, `setpgid`, a daemon that double-forks into a
//!   new session) is followed by neither mechanism.
//! * `exec` of a set-user-ID, set-group-ID or file-capability program clears the parent-death
//!   signal; the guard still kills its group.
//! * If the guard itself is killed first, only the parent-death signal of each group leader
//!   remains. The agent starts a new guard (and hands it every live group) at its next spawn
//!   when it finds the old one gone.
//! * It is SIGKILL, with no grace and no `tear_down` hook: an agent that is killed outright
//!   cannot run them, and the point is that nothing survives it.
//! * An ended group is struck off the list when the agent next reaps a child. A group that
//!   empties without the agent noticing stays listed until then; if the agent dies inside that
//!   window and the kernel has reused the number for a new group, the guard kills that group.
//! * A process a `soft` tear-down left running is left running only while the agent lives: it
//!   is still in a listed group when the agent exits.
//! * As PID 1 (in a container) the agent starts no guard: when PID 1 dies the kernel kills
//!   every process of its PID namespace.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::signals::group_alive;

/// The guard's script: collect groups from stdin, kill the ones left at end-of-file.
const GUARD_SCRIPT: &str = r#"trap '' INT HUP QUIT PIPE
g=' '
while IFS= read -r l; do
  case $l in
    +*) g="$g${l#+} " ;;
    -*) p=${l#-}; case $g in *" $p "*) g="${g%% $p *} ${g#* $p }" ;; esac ;;
  esac
done
for p in $g; do kill -s KILL -- "-$p" 2>/dev/null; done
"#;

/// The marker in the guard's command line (`ps` shows it; tests find the guard by it).
pub(crate) const GUARD_MARK: &str = "ochopod-group-guard";

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the spawner thread (started on first use) and returns its result.
pub(crate) fn on_spawner<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> R {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("ochopod-spawner".into())
            .spawn(move || {
                // Lives as long as the process: the parent-death signal of every child is
                // tied to it.
                while let Ok(job) = rx.recv() {
                    job();
                }
            });
        if let Err(e) = started {
            tracing::error!(
                "cannot start the spawner thread ({e}): children are forked by the calling thread"
            );
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let job = Box::new(move || {
        let _ = reply_tx.send(job());
    });
    let sent = sender.lock().unwrap_or_else(|p| p.into_inner()).send(job);
    match sent {
        Ok(()) => match reply_rx.recv() {
            Ok(result) => result,
            // The job panicked on the spawner thread: the thread is gone with it.
            Err(_) => panic!("the spawner thread died while starting a process"),
        },
        // No spawner thread: fork from here (the parent-death signal then follows this thread).
        Err(mpsc::SendError(job)) => {
            job();
            reply_rx
                .recv()
                .unwrap_or_else(|_| panic!("a process start failed without an answer"))
        }
    }
}

/// Arms `cmd` so its process dies with the agent: SIGKILL as parent-death signal, and an
/// immediate exit if the agent died before the signal was armed.
#[allow(unsafe_code)]
pub(crate) fn die_with_agent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let agent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec, where only async-signal-safe calls are
    // allowed: it makes two system calls (prctl, getppid) and allocates nothing (an
    // `io::Error` from a raw errno holds no heap data).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != agent {
                // The agent died between fork and prctl: its death signal was never armed.
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}

/// The agent's side of the group guard: its pipe and the groups it lists.
#[derive(Debug, Default)]
pub(crate) struct Guard {
    pipe: Option<ChildStdin>,
    groups: BTreeSet<u32>,
}

impl Guard {
    /// Lists group `pgid` with the guard (starting the guard if there is none).
    pub(crate) fn follow(&mut self, pgid: u32) {
        if nix::unistd::getpid().as_raw() == 1 {
            return;
        }
        self.groups.insert(pgid);
        if !self.send(&format!("+{pgid}\n")) {
            // No guard, or it died: a new one gets every live group.
            self.restart();
        }
    }

    /// Strikes every group that has no process left off the list.
    pub(crate) fn forget_ended(&mut self) {
        let ended: Vec<u32> = self
            .groups
            .iter()
            .copied()
            .filter(|pgid| !group_alive(*pgid))
            .collect();
        for pgid in ended {
            self.groups.remove(&pgid);
            self.send(&format!("-{pgid}\n"));
        }
    }

    fn send(&mut self, line: &str) -> bool {
        let Some(pipe) = &mut self.pipe else {
            return false;
        };
        match pipe.write_all(line.as_bytes()) {
            Ok(()) => true,
            // A guard that stopped reading (SIGSTOPped?) must not block the agent's spawns.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::warn!("the group guard does not read its pipe: {line:?} not sent");
                true
            }
            Err(e) => {
                tracing::warn!("the group guard is gone ({e}): starting a new one");
                self.pipe = None;
                false
            }
        }
    }

    fn restart(&mut self) {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(GUARD_SCRIPT)
            .arg(GUARD_MARK)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::debug!(pid = child.id(), "group guard started");
                self.pipe = child.stdin.take();
                if let Some(pipe) = &self.pipe {
                    use nix::fcntl::{fcntl, FcntlArg, OFlag};
                    let _ = fcntl(pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
                }
                // Never std's Child::wait: the reaper reaps the guard like any orphan.
                drop(child);
                let all: String = self.groups.iter().map(|g| format!("+{g}\n")).collect();
                self.send(&all);
            }
            Err(e) => tracing::warn!(
                "cannot start the group guard (/bin/sh): {e}; processes started by this agent \
                 may outlive it"
            ),
        }
    }
}
