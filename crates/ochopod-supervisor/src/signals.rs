//! Signals: to process groups, and the agent's own.

use nix::errno::Errno;
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::{Error, Signal};

/// Sends `sig` to every process of group `pgid` (a [`crate::Child`]'s pid).
///
/// A group that no longer exists is not an error (there is nothing left to signal). Group 0,
/// group 1 and the agent's own group are refused: signalling them would hit the agent itself.
pub fn signal_group(pgid: u32, sig: Signal) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidGroup { pgid, reason };
    let raw = i32::try_from(pgid).map_err(|_| invalid("not a process group id"))?;
    if raw <= 1 {
        return Err(invalid("groups 0 and 1 are the agent's own or init's"));
    }
    let group = Pid::from_raw(raw);
    if group == nix::unistd::getpgrp() {
        return Err(invalid("it is the agent's own process group"));
    }
    match nix::sys::signal::killpg(group, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(Error::Signal {
            pgid,
            signal: sig,
            source,
        }),
    }
}

/// Whether process group `pgid` still has a member (zombies included, until reaped). A group
/// that is not ours to check (0, 1, the agent's own) reads as empty.
pub fn group_alive(pgid: u32) -> bool {
    match i32::try_from(pgid) {
        Ok(raw) if raw > 1 && Pid::from_raw(raw) != nix::unistd::getpgrp() => {
            // Signal 0 checks existence and permission without sending anything.
            !matches!(
                nix::sys::signal::killpg(Pid::from_raw(raw), None),
                Err(Errno::ESRCH)
            )
        }
        _ => false,
    }
}

/// A signal the agent received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentSignal {
    /// SIGTERM or SIGINT: leave the cluster, tear the process down, exit 0.
    Terminate,
    /// SIGHUP, SIGUSR1, SIGUSR2 or SIGQUIT: forward it to the sub-process's group.
    Forward(Signal),
}

/// Starts listening for SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 and SIGQUIT (tokio handlers:
/// from now on none of them ends the agent by itself) and delivers them in order of arrival
/// per signal; several deliveries of one signal may coalesce into one.
///
/// Must be called inside a tokio runtime with signals enabled; the forwarding tasks live on
/// that runtime and stop when the receiver is dropped.
pub fn agent_signals() -> Result<mpsc::Receiver<AgentSignal>, Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
        what: "agent_signals()",
    })?;
    let wanted = [
        (Signal::SIGTERM, AgentSignal::Terminate),
        (Signal::SIGINT, AgentSignal::Terminate),
        (Signal::SIGHUP, AgentSignal::Forward(Signal::SIGHUP)),
        (Signal::SIGUSR1, AgentSignal::Forward(Signal::SIGUSR1)),
        (Signal::SIGUSR2, AgentSignal::Forward(Signal::SIGUSR2)),
        (Signal::SIGQUIT, AgentSignal::Forward(Signal::SIGQUIT)),
    ];
    let mut streams = Vec::with_capacity(wanted.len());
    for (sig, event) in wanted {
        let stream =
            signal(SignalKind::from_raw(sig as i32)).map_err(|source| Error::SignalHandler {
                signal: sig,
                source,
            })?;
        streams.push((stream, event));
    }
    let (tx, rx) = mpsc::channel(16);
    for (mut stream, event) in streams {
        let tx = tx.clone();
        runtime.spawn(async move {
            while stream.recv().await.is_some() {
                tracing::debug!(?event, "agent signal");
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(rx)
}
