//! Spec -> settings, in one place: what each section of the spec sets, and the library's
//! defaults ([`ModelSettings::default`], [`ProcessSettings::default`], the builder's) for what
//! it leaves out. `ochopod run` adds its flags on top; the `ochopod_*` variables are resolved
//! after both, by [`PodBuilder`](crate::PodBuilder).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Spec, SpecError};
use crate::{GiveUp, ModelSettings, PodConfig, ProcessSettings};

fn secs(v: Option<f64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_secs_f64)
}

/// A boolean `ochopod_*` variable (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).
fn env_flag(env: &BTreeMap<String, String>, var: &str) -> Result<Option<bool>, SpecError> {
    match env.get(var).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(SpecError(format!("bad {var} {v:?}: use true or false"))),
        },
    }
}

impl Spec {
    /// A path of the spec (relative to its folder); empty means unset.
    fn spec_path(&self, v: &Option<String>) -> Option<std::path::PathBuf> {
        v.as_deref().filter(|d| !d.is_empty()).map(|d| self.path(d))
    }

    /// The identity and coordination settings of `[pod]` and `[ports]` (paths relative to the
    /// spec's folder, empty strings unset); what it leaves `None` falls back, in the builder, to
    /// its `ochopod_*` variable, then to the binding, then to the default.
    pub fn pod_config(&self) -> PodConfig {
        let p = &self.pod;
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        PodConfig {
            namespace: p.namespace.clone(),
            cluster: p.cluster.clone(),
            explicit: crate::bindings::Explicit {
                binding: p.binding.clone(),
                zk: nonempty(&p.zk),
                zk_service: nonempty(&p.zk_service),
                port: p.port,
                ports: self.ports.clone(),
                ..Default::default()
            },
            session_timeout: p.session_timeout.map(Duration::from_secs_f64),
            zk_auth: nonempty(&p.zk_auth),
            zk_auth_file: self.spec_path(&p.zk_auth_file),
            state_dir: self.spec_path(&p.state_dir),
            token: nonempty(&p.token),
            token_file: self.spec_path(&p.token_file),
            tls_cert: self.spec_path(&p.tls_cert),
            tls_key: self.spec_path(&p.tls_key),
            tls_ca: self.spec_path(&p.tls_ca),
            tls_server_name: nonempty(&p.tls_server_name),
            tls_open_read_only: p.tls_open_read_only,
            start: p.start,
            pipe: self.process.pipe,
            binding_options: None,
        }
    }

    /// The leader's settings: each key `[model]` sets, [`ModelSettings::default`] for the
    /// others; `ochopod_fan_out` and `ochopod_gate` in `env` stand in for `fan_out` and `gate`
    /// when `[model]` does not set them.
    pub fn model_settings(
        &self,
        env: &BTreeMap<String, String>,
    ) -> Result<ModelSettings, SpecError> {
        let m = &self.model;
        let d = ModelSettings::default();
        let fan_out = match (m.fan_out, env.get("ochopod_fan_out")) {
            (Some(n), _) => usize::try_from(n).unwrap_or(usize::MAX),
            (None, Some(v)) => match v.trim().parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(SpecError(format!(
                        "ochopod_fan_out = {v:?}: give how many control requests the leader \
                         may have in flight at once, a whole number of 1 or more (or set \
                         [model] fan_out in the spec)"
                    )))
                }
            },
            (None, None) => d.fan_out,
        };
        let gate = match m.gate {
            Some(g) => g,
            None => env_flag(env, "ochopod_gate")?.unwrap_or(d.gate),
        };
        if gate && m.sequential != Some(true) {
            return Err(SpecError(
                "ochopod_gate is set but [model] sequential is not true: the gate holds the next \
                 pod until the last one's sanity check passes, so set sequential = true (or \
                 unset ochopod_gate)"
                    .into(),
            ));
        }
        Ok(ModelSettings {
            damper: secs(m.damper, d.damper),
            probe_every: secs(m.probe_every, d.probe_every),
            depends_on: m.depends_on.clone().unwrap_or(d.depends_on),
            full_shutdown: m.full_shutdown.unwrap_or(d.full_shutdown),
            sequential: m.sequential.unwrap_or(d.sequential),
            control_timeout: secs(m.control_timeout, d.control_timeout),
            has_probe: m.probe.as_deref().is_some_and(|c| !c.trim().is_empty()),
            fan_out,
            gate,
            gate_every: secs(m.gate_every, d.gate_every),
            gate_timeout: secs(m.gate_timeout, d.gate_timeout),
            dependency_wait: secs(m.dependency_wait, d.dependency_wait),
            ..d
        })
    }

    /// The process settings: each key `[process]` sets, [`ProcessSettings::default`] for the
    /// others (`[pod] start` is in [`Spec::pod_config`], so that `ochopod_start` can stand in
    /// for it); a `reload` hook makes a dependency change reload rather than restart.
    pub fn process_settings(&self) -> ProcessSettings {
        let pr = &self.process;
        let d = ProcessSettings::default();
        ProcessSettings {
            strict: pr.strict.unwrap_or(d.strict),
            grace: secs(pr.grace, d.grace),
            soft: pr.soft.unwrap_or(d.soft),
            checks: pr.checks.unwrap_or(d.checks),
            check_every: secs(pr.check_every, d.check_every),
            restart_delay: secs(pr.restart_delay, d.restart_delay),
            restart_delay_max: secs(pr.restart_delay_max, d.restart_delay_max),
            reload_dependencies: self
                .hooks
                .reload
                .as_deref()
                .is_some_and(|r| !r.trim().is_empty()),
            on_give_up: if pr.on_give_up.as_deref() == Some("exit") {
                GiveUp::Exit
            } else {
                GiveUp::Off
            },
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Spec {
        Spec::parse(text, "test.toml", std::path::PathBuf::from("/specs")).unwrap()
    }

    #[test]
    fn an_empty_spec_gives_the_library_defaults() {
        let s = spec("");
        assert_eq!(
            s.model_settings(&BTreeMap::new()).unwrap(),
            ModelSettings::default()
        );
        assert_eq!(s.process_settings(), ProcessSettings::default());
        let c = s.pod_config();
        assert_eq!((c.cluster, c.start, c.pipe), (None, None, None));
    }

    #[test]
    fn keys_set_settings_and_env_stands_in_for_fan_out_and_gate() {
        let s = spec(
            "[pod]\ncluster = \"web\"\nstart = false\nstate_dir = \"state\"\n\
             [model]\ndamper = 2.5\nsequential = true\n\
             [process]\ngrace = 3\nchecks = 5\non_give_up = \"exit\"\n",
        );
        let env: BTreeMap<String, String> = [("ochopod_fan_out", "4"), ("ochopod_gate", "yes")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let m = s.model_settings(&env).unwrap();
        assert_eq!(m.damper, Duration::from_millis(2500));
        assert_eq!((m.fan_out, m.gate, m.sequential), (4, true, true));
        assert_eq!(m.control_timeout, ModelSettings::default().control_timeout);
        let p = s.process_settings();
        assert_eq!(
            (p.grace, p.checks, p.on_give_up),
            (Duration::from_secs(3), 5, GiveUp::Exit)
        );
        let c = s.pod_config();
        assert_eq!(c.start, Some(false));
        assert_eq!(c.state_dir, Some(std::path::PathBuf::from("/specs/state")));
        let bad: BTreeMap<String, String> =
            [("ochopod_fan_out".to_string(), "0".to_string())].into();
        let err = s.model_settings(&bad).unwrap_err().to_string();
        assert!(
            err.contains("ochopod_fan_out") && err.contains("1 or more"),
            "{err}"
        );
    }
}
