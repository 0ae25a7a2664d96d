//! What `PodBuilder::prepare` does before the reaper: the settings resolved against the
//! environment and the binding, the registration built, secrets and TLS files read.

use std::path::PathBuf;
use std::time::Duration;

use super::PodBuilder;
use crate::{runtime, state, Error, PodLog, Reaper, Registration};

/// A secret given inline (setting, then its variable) or as a file (setting, then its
/// variable): one of the two, the file read once and trimmed. Errors name the setting and the
/// file, never the secret.
fn secret(
    (name, inline, var): (&str, Option<String>, &str),
    (file_name, file, file_var): (&str, Option<PathBuf>, &str),
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, Error> {
    let inline = inline.filter(|v| !v.is_empty()).or_else(|| get(var));
    let file = file
        .filter(|f| !f.as_os_str().is_empty())
        .or_else(|| get(file_var).map(PathBuf::from));
    match (inline, file) {
        (Some(_), Some(_)) => Err(Error::Settings(format!(
            "{name} ({var}) and {file_name} ({file_var}) are both set: keep {file_name} only, \
             so the secret stays out of the command line and the environment"
        ))),
        (Some(v), None) => Ok(Some(v)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::Settings(format!(
                    "cannot read {file_name} {}: {} (give a readable file, or unset \
                     {file_name} and {file_var})",
                    path.display(),
                    e
                ))
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(Error::Settings(format!(
                    "{file_name} {} is empty: write the secret in it",
                    path.display()
                )));
            }
            Ok(Some(text.to_string()))
        }
    }
}

/// A boolean `ochopod_*` variable, as 1.x wrote them (`true`/`false`, also `1`/`0`,
/// `yes`/`no`, `on`/`off`, any case).
fn truthy(var: &str, value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::Settings(format!(
            "bad {var} {value:?}: use true or false"
        ))),
    }
}

impl PodBuilder {
    /// Everything `prepare` does but install the reaper.
    pub(super) async fn resolve(
        self,
    ) -> Result<(runtime::RuntimeSettings, Option<Reaper>, Option<PodLog>), Error> {
        if !self.conflicts.is_empty() {
            return Err(Error::Settings(self.conflicts.join("; ")));
        }
        let env = &self.env;
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let mut process = self.process.clone();
        process.start = match (self.config.start, get("ochopod_start")) {
            (Some(start), _) => start,
            (None, Some(v)) => truthy("ochopod_start", &v)?,
            (None, None) => process.start,
        };
        let options = self.config.binding_options.clone().unwrap_or_default();
        let found = ochopod_bindings::discover(&self.config.explicit, env, &options).await?;
        let namespace = self
            .config
            .namespace
            .clone()
            .or_else(|| get("ochopod_namespace"))
            .unwrap_or_else(|| "default".to_string());
        let cluster = self
            .config
            .cluster
            .clone()
            .or_else(|| get("ochopod_cluster"))
            .ok_or(Error::MissingCluster)?;
        for (what, name) in [("namespace", &namespace), ("cluster", &cluster)] {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::Settings(format!(
                    "bad {what} name {name:?}: use letters, digits, '-' and '_' only"
                )));
            }
        }
        let zk_hosts = found.require_zk()?.to_string();
        let zk_auth = secret(
            ("zk_auth", self.config.zk_auth.clone(), "ochopod_zk_auth"),
            (
                "zk_auth_file",
                self.config.zk_auth_file.clone(),
                "ochopod_zk_auth_file",
            ),
            &get,
        )?
        .or_else(|| {
            found
                .zk_auth
                .as_ref()
                .map(|(u, p)| format!("digest:{u}:{p}"))
        });
        let state_dir = self
            .config
            .state_dir
            .clone()
            .or_else(|| get("ochopod_state_dir").map(PathBuf::from));
        let (key, seq) = match &state_dir {
            Some(dir) => match state::load(dir).map_err(Error::Settings)? {
                Some((k, s)) => (k, s),
                None => (uuid::Uuid::new_v4().to_string(), None),
            },
            None => (uuid::Uuid::new_v4().to_string(), None),
        };
        let token = secret(
            ("token", self.config.token.clone(), "ochopod_token"),
            (
                "token_file",
                self.config.token_file.clone(),
                "ochopod_token_file",
            ),
            &get,
        )?;
        let tls = self.tls(&get)?;
        let debug = get("ochopod_debug").unwrap_or_else(|| "false".to_string());
        let mut registration = Registration {
            cluster,
            namespace,
            binding: found.binding.clone(),
            fwk: found.binding.clone(),
            ip: found.ip.clone(),
            public: found.public.clone(),
            ports: found.ports.clone(),
            port: found.control_port.to_string(),
            node: found.node.clone(),
            application: found.application.clone(),
            task: found.task.clone(),
            seq,
            zk: zk_hosts.clone(),
            protocol: Some(ochopod_core::PROTOCOL),
            extra: Default::default(),
        };
        registration
            .extra
            .insert("status".to_string(), serde_json::Value::from(""));
        registration
            .extra
            .insert("debug".to_string(), serde_json::Value::from(debug));
        registration.extra.insert(
            "local".to_string(),
            serde_json::Value::from(if found.binding == "local" {
                "true"
            } else {
                "false"
            }),
        );
        // Whether the control plane speaks TLS: a leader that does not (or does) says so
        // instead of failing its calls without a reason.
        registration.extra.insert(
            "tls".to_string(),
            serde_json::Value::from(if tls.is_some() { "true" } else { "false" }),
        );
        registration.extra.insert(
            "start".to_string(),
            serde_json::Value::from(process.start.to_string()),
        );
        for (k, v) in &found.settings {
            if matches!(
                k.as_str(),
                "cluster" | "namespace" | "debug" | "local" | "start"
            ) || ochopod_bindings::is_secret(k)
            {
                continue;
            }
            registration
                .extra
                .entry(k.clone())
                .or_insert_with(|| serde_json::Value::from(v.clone()));
        }
        registration.scrub_secrets();
        // Without NAT (the local binding) the agent listens on the host port itself.
        let control_host_port = registration.host_port(found.control_port);
        let listen = if found.binding == "local" {
            std::net::SocketAddr::from(([127, 0, 0, 1], control_host_port))
        } else {
            std::net::SocketAddr::from(([0, 0, 0, 0], found.control_port))
        };
        let session_timeout = self
            .config
            .session_timeout
            .unwrap_or(Duration::from_secs(5));
        if self.model.control_timeout <= process.grace {
            tracing::warn!(
                control_timeout = self.model.control_timeout.as_secs_f64(),
                grace = process.grace.as_secs_f64(),
                "control_timeout should exceed the process grace: an `on` may include a tear-down"
            );
        }
        let settings = runtime::RuntimeSettings {
            key,
            seq,
            state_dir,
            registration,
            zk: ochopod_zk::ZkSettings {
                connect: zk_hosts,
                session_timeout,
                auth: zk_auth,
            },
            listen,
            token,
            tls,
            model: self.model,
            process,
            pipe: self.config.pipe.unwrap_or(true),
            env: self.env,
        };
        Ok((settings, self.reaper, self.log))
    }

    /// The control plane's TLS, from the settings and `ochopod_tls_*`: all of cert, key and CA,
    /// or none; every file is read once here so a bad one fails at start.
    fn tls(
        &self,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<(ochopod_http::ServerTls, ochopod_http::ClientTls)>, Error> {
        let c = &self.config;
        let path = |v: &Option<PathBuf>, k: &str| v.clone().or_else(|| get(k).map(PathBuf::from));
        let cert = path(&c.tls_cert, "ochopod_tls_cert");
        let key = path(&c.tls_key, "ochopod_tls_key");
        let ca = path(&c.tls_ca, "ochopod_tls_ca");
        let server_name = c
            .tls_server_name
            .clone()
            .or_else(|| get("ochopod_tls_server_name"));
        let open = match c.tls_open_read_only {
            Some(b) => b,
            None => match get("ochopod_tls_open_read_only") {
                Some(v) => truthy("ochopod_tls_open_read_only", &v)?,
                None => false,
            },
        };
        let (cert, key, ca) = match (cert, key, ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), "tls_cert (ochopod_tls_cert)"),
                    (key.is_none(), "tls_key (ochopod_tls_key)"),
                    (ca.is_none(), "tls_ca (ochopod_tls_ca)"),
                ]
                .into_iter()
                .filter_map(|(m, n)| m.then_some(n))
                .collect();
                return Err(Error::Settings(format!(
                    "TLS needs the pod's certificate, its key and the cluster's CA: {} missing",
                    missing.join(", ")
                )));
            }
        };
        let server = ochopod_http::ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: Some(ca.clone()),
            open_read_only: open,
        };
        let client = ochopod_http::ClientTls {
            ca,
            cert: Some(cert),
            key: Some(key),
            server_name,
        };
        server
            .check()
            .and_then(|()| client.check())
            .map_err(|e| Error::Settings(e.to_string()))?;
        Ok(Some((server, client)))
    }
}
