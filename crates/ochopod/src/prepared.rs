//! `PreparedPod`: a pod whose environment is known, ready to run.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{runtime, Error, Lifecycle, PodLog, Reaper, Registration};

/// A pod whose environment is known: its registration can be read (e.g. to hand it to hooks)
/// before it runs.
pub struct PreparedPod {
    pub(crate) settings: runtime::RuntimeSettings,
    pub(crate) reaper: Reaper,
    pub(crate) log: PodLog,
}

impl PreparedPod {
    /// The registration the pod will publish (seq not known yet).
    pub fn registration(&self) -> &Registration {
        &self.settings.registration
    }

    /// The pod's key.
    pub fn key(&self) -> &str {
        &self.settings.key
    }

    /// The environment handed to the sub-process and hooks: the agent's, plus `ochopod` (the
    /// registration JSON, secrets removed).
    pub fn process_env(&self) -> BTreeMap<String, String> {
        let mut env = self.settings.env.clone();
        // The agent's secrets are not the process's.
        for secret in ["ochopod_token", "ochopod_zk_auth"] {
            env.remove(secret);
        }
        env.insert("ochopod".to_string(), self.settings.registration.to_json());
        env
    }

    /// The process-wide reaper.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// The pod log (last 32 KiB, served by `/log`).
    pub fn log(&self) -> &PodLog {
        &self.log
    }

    /// Runs the pod until it stops; returns the agent's exit code. When ZooKeeper answers and
    /// refuses this pod's credential for its cluster's nodes, fails at once with
    /// [`Error::ZkDenied`] (retrying cannot help); when it does not answer yet, the coordinator
    /// keeps trying as usual.
    pub async fn run<L: Lifecycle>(self, lifecycle: L) -> Result<i32, Error> {
        let cluster = self.settings.registration.full_cluster();
        match ochopod_zk::check_access(&self.settings.zk, &cluster).await {
            Ok(ochopod_zk::Access::Granted) => {}
            Ok(ochopod_zk::Access::Unknown(why)) => {
                tracing::debug!(%why, "ZooKeeper access not checked before starting");
            }
            Err(denied @ ochopod_zk::Error::Denied { .. }) => {
                return Err(Error::ZkDenied { cluster, denied })
            }
            Err(e) => tracing::debug!(error = %e, "ZooKeeper access not checked before starting"),
        }
        runtime::run(self.settings, Arc::new(lifecycle), self.reaper, self.log).await
    }
}
