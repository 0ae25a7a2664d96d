//! Every type the public signatures name is reachable through the crate a tooling team
//! depends on: `ochopod` for a pod, `ochopod-zk` and `ochopod-http` for a tool. This file
//! compiles with those three dependencies only (see Cargo.toml), which is the check.

use std::time::Duration;

/// Names a pod's code meets, all from `ochopod`.
#[allow(dead_code)]
type PodNames = (
    ochopod::Program,
    ochopod::bindings::Explicit,
    ochopod::bindings::Options,
    ochopod::bindings::Error,
    ochopod::supervisor::Error,
    ochopod::supervisor::CommandSpec,
    ochopod::supervisor::Child,
    ochopod::supervisor::Output,
    ochopod::supervisor::OutputMode,
    ochopod::view::Error,
    ochopod::serde_json::Value,
    ochopod::ControlBody,
    ochopod::Pods,
    ochopod::Dependencies,
    ochopod::Registration,
    ochopod::ClusterView,
    ochopod::ModelSettings,
    ochopod::ProcessSettings,
    ochopod::GiveUp,
);

/// Names a tool's code meets, from `ochopod-zk` and `ochopod-http`.
#[allow(dead_code)]
type ToolNames = (
    ochopod_zk::Pods,
    ochopod_zk::Registration,
    ochopod_http::Info,
    ochopod_http::Task,
    ochopod_http::Epoch,
    ochopod_http::Bytes,
    ochopod_http::serde_json::Value,
    ochopod_http::Reply,
);

#[test]
fn a_process_command_is_built_from_facade_types() {
    let cmd = ochopod::ProcessCommand::shell("echo hi").env("A", "1");
    assert_eq!(cmd.program, ochopod::Program::Shell("echo hi".into()));
    let timeout: Duration = ochopod::ModelSettings::default().control_timeout;
    assert_eq!(timeout, Duration::from_secs(90));
}
