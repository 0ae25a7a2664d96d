//! The agent's own signals, delivered as events instead of killing it.

use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::getpid;
use ochopod_supervisor::{agent_signals, AgentSignal, Error, Signal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_and_forwardable_signals_arrive_as_events() {
    let mut events = agent_signals().unwrap();
    let cases = [
        (Signal::SIGUSR1, AgentSignal::Forward(Signal::SIGUSR1)),
        (Signal::SIGUSR2, AgentSignal::Forward(Signal::SIGUSR2)),
        (Signal::SIGHUP, AgentSignal::Forward(Signal::SIGHUP)),
        (Signal::SIGQUIT, AgentSignal::Forward(Signal::SIGQUIT)),
        (Signal::SIGINT, AgentSignal::Terminate),
        (Signal::SIGTERM, AgentSignal::Terminate),
    ];
    for (sig, want) in cases {
        kill(getpid(), sig).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap_or_else(|_| panic!("{sig} never arrived"));
        assert_eq!(got, Some(want), "{sig}");
    }
}

#[test]
fn agent_signals_needs_a_runtime() {
    let err = agent_signals().unwrap_err();
    assert!(matches!(err, Error::NoRuntime { .. }), "{err:?}");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
