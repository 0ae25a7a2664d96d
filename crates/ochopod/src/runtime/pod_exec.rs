//! The pod executor: carries out the pod machine's actions (replies, hooks, the sub-process).

use crate::lifecycle::Lifecycle;
use ochopod_core::pod::{Hook, HookInput, PodAction, Process, StepResult};
use ochopod_core::ClusterView;
use ochopod_supervisor::{CommandSpec, OutputMode};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

use super::{Driver, Msg};

impl<L: Lifecycle> Driver<L> {
    pub(super) fn do_pod(&mut self, action: PodAction) {
        let now = crate::clock::now();
        match action {
            PodAction::Reply { id, outcome } => {
                if let Some(w) = self.waiters.remove(&id) {
                    let _ = w.send(ochopod_http::outcome_reply(outcome));
                }
            }
            PodAction::ShutDown => {
                // The process is down after SIGTERM: the agent stops.
                self.done = true;
            }
            PodAction::Hook { hook, view, input } => {
                let l = Arc::clone(&self.lifecycle);
                let tx = self.tx.clone();
                let pid = self.pod.pid().unwrap_or(0);
                tokio::spawn(async move {
                    let r = run_hook(&*l, hook, view, input, pid).await;
                    // A failed check is logged with its count once the pod machine has it.
                    match &r {
                        Err(e) if hook != Hook::SanityCheck => {
                            warn!("{} failed -> {e}", hook_name(hook));
                        }
                        _ => {}
                    }
                    let _ = tx.send(Msg::Step(StepResult::Hook(r)));
                });
            }
            PodAction::Configure { view } => {
                info!(
                    "configuring pod {}/{} (seq {})",
                    view.index + 1,
                    view.size,
                    view.seq
                );
                let l = Arc::clone(&self.lifecycle);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let r = l.configure(&view).await;
                    let _ = tx.send(Msg::Configured(r));
                });
            }
            PodAction::Spawn => {
                let result = self.spawn();
                self.pod.handle_result(now, StepResult::Spawned(result));
            }
            PodAction::Terminate => {
                let Some(pid) = self.pod.pid() else { return };
                let l = Arc::clone(&self.lifecycle);
                tokio::spawn(async move {
                    match l.tear_down(pid).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = ochopod_supervisor::signal_group(pid, nix_signal("SIGTERM"));
                        }
                        Err(e) => {
                            warn!("tear_down hook failed ({e}); sending SIGTERM");
                            let _ = ochopod_supervisor::signal_group(pid, nix_signal("SIGTERM"));
                        }
                    }
                });
            }
            PodAction::Kill => {
                if let Some(pid) = self.pod.pid() {
                    warn!(pid, "grace ran out: SIGKILL to the process group");
                    let _ = ochopod_supervisor::signal_group(pid, nix_signal("SIGKILL"));
                }
            }
            PodAction::Exit { code } => {
                warn!("circuit breaker tripped with on_give_up = \"exit\": the agent exits");
                self.exit_code = code;
                let _ = self.tx.send(Msg::Shutdown);
            }
        }
    }

    pub(super) fn spawn(&mut self) -> Result<u32, String> {
        let Some(cmd) = self.command.clone() else {
            return Err("no configured command".to_string());
        };
        let mut env = self.settings.env.clone();
        let mut reg = self.settings.registration.clone();
        reg.seq = self.seq.or(reg.seq);
        reg.scrub_secrets();
        env.insert("ochopod".to_string(), reg.to_json());
        env.extend(cmd.env.clone());
        let spec = CommandSpec {
            program: cmd.program.clone(),
            cwd: cmd.cwd.clone(),
            env,
            output: if self.settings.pipe {
                OutputMode::Pipe(self.shared.log.clone())
            } else {
                OutputMode::Inherit
            },
        };
        let mut child = self.reaper.spawn(&spec).map_err(|e| e.to_string())?;
        let pid = child.pid();
        self.logged.starts += 1;
        info!(
            "started <{}> as pid {pid} (start #{})",
            cmd.program, self.logged.starts
        );
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Msg::Exit {
                pid,
                code: status.code(),
                how: status.to_string(),
                group_gone: false,
            });
        });
        Ok(pid)
    }

    /// The process `pid` (the leader of its process group) ended. During a tear-down the
    /// tear-down is over only once the rest of its group is gone too (a `sh -c 'app; ...'`
    /// shell dies at SIGTERM before its app): the exit is fed to the pod machine then, or at
    /// the latest a little after the grace (the machine SIGKILLs the group at the grace while
    /// the pid is still current, or, when soft, gives up on it then).
    pub(super) fn on_exit(
        &mut self,
        now: Instant,
        pid: u32,
        code: Option<i32>,
        how: String,
        group_gone: bool,
    ) {
        if !group_gone
            && self.pod.pid() == Some(pid)
            && self.pod.process() == Process::Terminating
            && ochopod_supervisor::group_alive(pid)
        {
            let tx = self.tx.clone();
            let bound = self.settings.process.grace + Duration::from_secs(5);
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + bound;
                while ochopod_supervisor::group_alive(pid) && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = tx.send(Msg::Exit {
                    pid,
                    code,
                    how,
                    group_gone: true,
                });
            });
            return;
        }
        if self.pod.process() == Process::Running {
            warn!("pid {pid} died ({how})");
        } else {
            info!("pid {pid} ended ({how})");
        }
        self.pod.handle_exit(now, pid, code);
    }
}

/// A hook's name as the spec writes it.
fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Initialize => "initialize",
        Hook::CanConfigure => "can_configure",
        Hook::Configured => "configured",
        Hook::Reload => "reload",
        Hook::Finalize => "finalize",
        Hook::Signal => "signal",
        Hook::SanityCheck => "sanity check",
        Hook::Plan => "plan",
    }
}

async fn run_hook<L: Lifecycle>(
    l: &L,
    hook: Hook,
    view: Option<Arc<ClusterView>>,
    input: HookInput,
    pid: u32,
) -> Result<Value, String> {
    let need_view = || -> Result<Arc<ClusterView>, String> {
        view.clone()
            .ok_or_else(|| format!("internal error: {hook:?} without a cluster view"))
    };
    let r = match hook {
        Hook::Initialize => l.initialize(&*need_view()?).await.map(|_| Value::Null),
        Hook::CanConfigure => l.can_configure(&*need_view()?).await.map(|_| Value::Null),
        Hook::Configured => l.configured(&*need_view()?).await.map(|_| Value::Null),
        Hook::Reload => l.reload(&*need_view()?).await.map(|_| Value::Null),
        Hook::Finalize => l.finalize().await.map(|_| Value::Null),
        Hook::Signal => match input {
            HookInput::Opaque(body) => l.signal(body).await,
            _ => l.signal(Value::Null).await,
        },
        Hook::SanityCheck => l.sanity_check(pid).await.map(|m| m.unwrap_or(Value::Null)),
        Hook::Plan => match input {
            HookInput::Plan(decision) => {
                Ok(crate::plan::answer(decision, l.plan(&*need_view()?).await))
            }
            _ => Err(crate::Failure(format!(
                "internal error: {hook:?} without the machine's decision"
            ))),
        },
    };
    r.map_err(|e| e.0)
}

fn nix_signal(name: &str) -> ochopod_supervisor::Signal {
    match name {
        "SIGKILL" => ochopod_supervisor::Signal::SIGKILL,
        _ => ochopod_supervisor::Signal::SIGTERM,
    }
}
