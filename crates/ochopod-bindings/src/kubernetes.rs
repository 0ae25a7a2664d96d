//! `kubernetes` and `kubernetes-ec2`: the pod's own object and the ZooKeeper Service's endpoints,
//! read through the kube client with the in-cluster configuration (API server from
//! `KUBERNETES_SERVICE_HOST`/`PORT` of the given environment; token, CA and namespace from the
//! service-account directory of [`Options`](crate::Options)).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::{Client, Config};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::facts::{Ctx, Facts, Platform};
use crate::zk::{ZkAddress, DEFAULT_ZK_PORT};
use crate::Error;

const RBAC_FIX: &str = "grant the pod's service account `get` on pods (and `get` on endpoints, \
                        `list` on endpointslices for zk_service): see docs/deploy/kubernetes/rbac.yaml";

pub(crate) struct Kubernetes {
    pub(crate) ec2: bool,
}

impl Platform for Kubernetes {
    fn name(&self) -> &'static str {
        if self.ec2 {
            "kubernetes-ec2"
        } else {
            "kubernetes"
        }
    }

    async fn facts(&self, ctx: &Ctx<'_>) -> Result<Facts, Error> {
        let name = self.name();
        let (client, namespace) = client(name, ctx).await?;
        let pod_name = ctx.var("POD_NAME").or_else(|| ctx.var("HOSTNAME")).ok_or_else(|| {
            Error::missing(
                name,
                "neither POD_NAME nor HOSTNAME is set",
                "add POD_NAME from the downward API (fieldRef metadata.name) to the container's env",
            )
        })?;
        let pod = wait_for_pod_ip(name, &client, &namespace, pod_name, ctx).await?;
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let mut ports = BTreeMap::new();
        for container in &spec.containers {
            for port in container.ports.iter().flatten() {
                if let Ok(p) = u16::try_from(port.container_port) {
                    ports.insert(p.to_string(), p);
                }
            }
        }
        let zk = match (&ctx.zk_service, ctx.zk_given) {
            (Some(service), false) => {
                let zk = zk_from_service(name, &client, &namespace, service).await?;
                Some((zk, format!("the endpoints of Service {service}")))
            }
            _ => None,
        };
        let mut facts = Facts {
            ip: status.pod_ip.clone(),
            public: None,
            node: spec
                .node_name
                .clone()
                .or(status.host_ip.clone())
                .unwrap_or_default(),
            application: application(&pod),
            task: pod_name.to_string(),
            ports,
            zk,
        };
        if self.ec2 {
            // The pod keeps its own podIP (the instance's address is the node's); the public
            // address and the node (instance id) come from the instance metadata.
            let instance = crate::instance::ec2_instance(name, ctx).await?;
            facts.public = instance.public_ipv4;
            facts.node = instance.instance_id;
        }
        Ok(facts)
    }
}

/// The in-cluster client, built from the given environment and service-account directory.
async fn client(name: &'static str, ctx: &Ctx<'_>) -> Result<(Client, String), Error> {
    let host = ctx.var("KUBERNETES_SERVICE_HOST").ok_or_else(|| {
        Error::missing(
            name,
            "KUBERNETES_SERVICE_HOST is not set",
            "run the pod in Kubernetes (the kubelet sets it and KUBERNETES_SERVICE_PORT), or choose another binding",
        )
    })?;
    let port = ctx.var("KUBERNETES_SERVICE_PORT").unwrap_or("443");
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!("https://{host}:{port}");
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| {
        Error::platform(
            name,
            format!("KUBERNETES_SERVICE_HOST/PORT make no URL ({url})"),
            &e,
            "check KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT",
        )
    })?;
    let dir = &ctx.opts.service_account_dir;
    let sa_fix = format!(
        "mount the service-account token (automountServiceAccountToken: true) at {}",
        dir.display()
    );
    let token_file = dir.join("token");
    let token = read(name, &token_file, &sa_fix).await?;
    if token.trim().is_empty() {
        return Err(Error::missing(
            name,
            format!("{} is empty", token_file.display()),
            sa_fix,
        ));
    }
    let ca_file = dir.join("ca.crt");
    let ca = read(name, &ca_file, &sa_fix).await?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(ca.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect();
    if certs.is_empty() {
        return Err(Error::missing(
            name,
            format!("{} holds no PEM certificate", ca_file.display()),
            sa_fix,
        ));
    }
    let namespace = match ctx.var("POD_NAMESPACE") {
        Some(ns) => ns.to_string(),
        None => read(name, &dir.join("namespace"), &sa_fix)
            .await?
            .trim()
            .to_string(),
    };
    let mut config = Config::new(uri);
    config.default_namespace = namespace.clone();
    config.root_cert = Some(certs);
    config.connect_timeout = Some(ctx.opts.api_timeout);
    config.read_timeout = Some(ctx.opts.api_timeout);
    config.write_timeout = Some(ctx.opts.api_timeout);
    if token.trim() == token {
        // kube re-reads the file, so a rotated (bound) token keeps working.
        config.auth_info.token_file = Some(token_file.to_string_lossy().into_owned());
    } else {
        // kube would send the whitespace along; the kubelet never writes any, people do.
        config.auth_info.token = Some(token.trim().to_string().into());
    }
    let client = Client::try_from(config).map_err(|e| {
        Error::platform(
            name,
            format!("cannot make a client for {url}"),
            &e,
            sa_fix.clone(),
        )
    })?;
    Ok((client, namespace))
}

async fn read(name: &'static str, path: &Path, fix: &str) -> Result<String, Error> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|e| Error::platform(name, format!("cannot read {}", path.display()), &e, fix))
}

/// One line for a kube error: the API's own status when there is one.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        other => crate::error::chain(other),
    }
}

fn api_error(name: &'static str, what: String, e: &kube::Error, fix: &str) -> Error {
    Error::Platform {
        binding: name,
        what,
        cause: describe(e),
        fix: fix.to_string(),
    }
}

/// Reads the pod until it has a `podIP`, for at most `pod_ip_timeout`.
async fn wait_for_pod_ip(
    name: &'static str,
    client: &Client,
    namespace: &str,
    pod_name: &str,
    ctx: &Ctx<'_>,
) -> Result<Pod, Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + ctx.opts.pod_ip_timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match api.get(pod_name).await {
            Ok(pod) => {
                if pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .is_some_and(|ip| !ip.is_empty())
                {
                    tracing::info!(
                        binding = name,
                        pod = pod_name,
                        attempts,
                        "pod has its podIP"
                    );
                    return Ok(pod);
                }
                let phase = pod
                    .status
                    .and_then(|s| s.phase)
                    .unwrap_or_else(|| "unknown".into());
                tracing::debug!(binding = name, pod = pod_name, %phase, "pod has no podIP yet");
                format!("it is still without a podIP (phase {phase})")
            }
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 || s.code == 404 => {
                let e = kube::Error::Api(s);
                let fix = if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    "set POD_NAME and POD_NAMESPACE from the downward API (fieldRef metadata.name, metadata.namespace)"
                } else {
                    RBAC_FIX
                };
                return Err(api_error(
                    name,
                    format!("cannot read pod {namespace}/{pod_name}"),
                    &e,
                    fix,
                ));
            }
            Err(e) => format!("the API server did not answer ({})", describe(&e)),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::missing(
                name,
                format!(
                    "pod {namespace}/{pod_name} got no IP within {:?} ({attempts} reads; {last})",
                    ctx.opts.pod_ip_timeout
                ),
                "check the pod with `kubectl describe pod`, or raise the wait for its IP",
            ));
        }
        tokio::time::sleep(ctx.opts.retry_every.min(deadline - now)).await;
    }
}

/// The application: the controlling owner, with a ReplicaSet named after its Deployment.
fn application(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    let Some(owner) = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(owners.first())
    else {
        return meta.name.clone().unwrap_or_default();
    };
    if owner.kind == "ReplicaSet" {
        let hash = meta
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"));
        if let Some(deployment) = hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
            return deployment.to_string();
        }
    }
    owner.name.clone()
}

/// The ZooKeeper ensemble as the ready endpoints of a Service (`name` or `namespace/name`):
/// its EndpointSlices, or its Endpoints object when slices cannot be listed.
async fn zk_from_service(
    name: &'static str,
    client: &Client,
    own_namespace: &str,
    service: &str,
) -> Result<ZkAddress, Error> {
    let (ns, svc) = service.split_once('/').unwrap_or((own_namespace, service));
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let selector = format!("kubernetes.io/service-name={svc}");
    let mut hosts = Vec::new();
    let mut via = "EndpointSlices";
    match slices.list(&ListParams::default().labels(&selector)).await {
        Ok(list) if !list.items.is_empty() => {
            for slice in list.items {
                let port = pick_port(
                    slice
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| Some((p.name.as_deref(), p.port?))),
                );
                for ep in slice.endpoints {
                    if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    hosts.extend(ep.addresses.iter().map(|a| format!("{a}:{port}")));
                }
            }
        }
        Ok(_) | Err(kube::Error::Api(_)) => {
            via = "Endpoints";
            let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
            let endpoints = api.get(svc).await.map_err(|e| {
                api_error(
                    name,
                    format!("cannot read the endpoints of ZooKeeper Service {ns}/{svc}"),
                    &e,
                    "check zk_service (ochopod_zk_service) names the ZooKeeper Service, and the RBAC in docs/deploy/kubernetes/rbac.yaml",
                )
            })?;
            for subset in endpoints.subsets.into_iter().flatten() {
                let port = pick_port(
                    subset
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| (p.name.as_deref(), p.port)),
                );
                hosts.extend(
                    subset
                        .addresses
                        .iter()
                        .flatten()
                        .map(|a| format!("{}:{port}", a.ip)),
                );
            }
        }
        Err(e) => {
            return Err(api_error(
                name,
                format!("cannot list the EndpointSlices of ZooKeeper Service {ns}/{svc}"),
                &e,
                "check that the API server is reachable",
            ))
        }
    }
    if hosts.is_empty() {
        return Err(Error::missing(
            name,
            format!("ZooKeeper Service {ns}/{svc} has no ready endpoints"),
            "check that the ZooKeeper pods are ready and the Service's selector matches them, or set ochopod_zk",
        ));
    }
    hosts.sort();
    hosts.dedup();
    tracing::info!(binding = name, service = %format!("{ns}/{svc}"), via, hosts = ?hosts, "ZooKeeper from a Service");
    Ok(ZkAddress {
        hosts,
        chroot: None,
        auth: None,
    })
}

/// The client port: the one named `client`, else 2181 when listed, else the only one, else 2181.
fn pick_port<'a>(ports: impl Iterator<Item = (Option<&'a str>, i32)>) -> i32 {
    let ports: Vec<_> = ports.collect();
    let default = i32::from(DEFAULT_ZK_PORT);
    if let Some((_, p)) = ports.iter().find(|(n, _)| *n == Some("client")) {
        return *p;
    }
    if ports.iter().any(|(_, p)| *p == default) {
        return default;
    }
    match ports.as_slice() {
        [(_, p)] => *p,
        _ => default,
    }
}
