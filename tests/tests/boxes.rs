//! The shipped agent image on a platform in a box: Docker containers given what Kubernetes or
//! Marathon on Mesos gives a pod of the deploy examples (`docs/deploy/`, read from the files),
//! with the project's own stand-ins for the parts that cannot run here (a Kubernetes API server,
//! the EC2 instance metadata service; `tests/src/stand_ins.rs`). What is real: the image that
//! `scripts/docker-build.sh` builds, its agent and bindings, ZooKeeper, Docker's networking and
//! published ports, the probes' HTTP.
//!
//! - Kubernetes: ZooKeeper found through the `zookeeper` Service's endpoints, pods registered
//!   with their podIP, the Deployment configured and scaled 3 -> 5 -> 2, the manifest's readiness
//!   path non-200 for a pod that is not configured or is dead.
//! - Marathon (BRIDGE, host ports published on the Mesos agent's address) across two agents
//!   (hosts), plain and `-ec2`: pods reach each other on `HOST:<host port>` and render each
//!   other's remapped ports (two tasks on different hosts even share their host ports); a
//!   killed container's survivors are reconfigured; with `-ec2`, the metadata stand-in tells
//!   each host its own private ip and instance id.
//! - Bad input: the shipped binary exits 2 with one error line naming the fix.
//!
//! The scenarios run one at a time and share the images (built once per test process).

use ochopod_e2e::boxes::{etc_mesos, Deployment, MarathonApp, Service};
use ochopod_e2e::docker::{ensure_images, http_get, http_status, Container, Network};
use ochopod_e2e::stand_ins::{Endpoint, Imds, Instance, KubeApi};
use ochopod_e2e::{free_port, wait_until, Error, Info, Kazoo, Result};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

const MINUTE: Duration = Duration::from_secs(60);
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The pods' image content, as a user's image FROM ochopod/agent would COPY it: a web server on
/// 9000 serving the cluster as this pod sees it, one member per line with the address and
/// ports the others reach it at. Namespace, cluster, binding and ZooKeeper come from the
/// platform (env, files, APIs), as in the deploy examples.
const SPEC: &str = r#"
[pod]
port = 8080
session_timeout = 4.0

[model]
damper = 0.5
control_timeout = 15.0

[process]
command = "python3 -m http.server 9000 --bind 0.0.0.0 --directory /etc/ochopod"
grace = 3.0

[[templates]]
source = "members.txt.j2"
target = "/etc/ochopod/members.txt"
"#;

const MEMBERS: &str = r#"{{ cluster.size }}
{% for key, pod in cluster.pods|items %}{{ pod.ip }}:{{ pod.ports["9000"] }} control={{ pod.ports["8080"] }} node={{ pod.node }} task={{ pod.task }}
{% endfor %}"#;

/// The files every pod image carries (`docker cp`, before the container starts).
fn image_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/etc/ochopod/pod.toml", SPEC),
        ("/etc/ochopod/members.txt.j2", MEMBERS),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn env_opts(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .flat_map(|(k, v)| ["-e".to_string(), format!("{k}={v}")])
        .collect()
}

fn with_logs(e: Error, pods: &[&Container]) -> Error {
    let logs: Vec<String> = pods
        .iter()
        .map(|c| format!("--- {}:\n{}", c.name(), c.logs()))
        .collect();
    Error::Usage(format!("{e}\n{}", logs.join("\n")))
}

/// The pod's `/info` at `addr` (`ip:port`).
fn info_at(addr: &str) -> std::result::Result<Info, String> {
    let url = format!("http://{addr}/info");
    let text = http_get(&url).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))
}

/// One member line as the template renders it.
fn member_line(ip: &str, port: u16, control: u16, node: &str, task: &str) -> String {
    format!("{ip}:{port} control={control} node={node} task={task}")
}

/// Waits until every pod (its members.txt at `url`) serves exactly `want`, every pod runs and
/// exactly one leads with a clean configuration (`infos` addresses).
fn wait_views(pods: &[(String, String)], want: &BTreeSet<String>) -> Result<()> {
    wait_until(
        2 * MINUTE,
        "every pod configured with the same, right view",
        || {
            let mut leaders = 0;
            for (info_addr, members_url) in pods {
                let info = info_at(info_addr)?;
                if info.process != "running" {
                    return Err(format!("{info_addr}: process {}", info.process));
                }
                if info.state.starts_with("leader") {
                    if info.state != "leader" || info.pending_ms.is_some() {
                        return Err(format!("{info_addr}: leader is {}", info.state));
                    }
                    leaders += 1;
                }
                let body = http_get(members_url).map_err(|e| e.to_string())?;
                let mut lines = body.lines();
                let size = lines.next().unwrap_or_default().trim().to_string();
                let seen: BTreeSet<String> = lines
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                if size != want.len().to_string() || &seen != want {
                    return Err(format!(
                        "{members_url}: size {size}, {seen:?}; want {want:?}"
                    ));
                }
            }
            if leaders == 1 {
                Ok(())
            } else {
                Err(format!("{leaders} leaders"))
            }
        },
    )
}

// ------------------------------------------------------------------------------------------
// Kubernetes

/// One replica of the Deployment: its container, Pod name and node.
struct KubePod {
    container: Container,
    name: String,
    node: String,
    /// The service-account folder mounted in the container (kept while it runs).
    _service_account: tempfile::TempDir,
}

impl KubePod {
    fn info_addr(&self) -> String {
        format!("{}:8080", self.container.ip())
    }
    fn members_url(&self) -> String {
        format!("http://{}:9000/members.txt", self.container.ip())
    }
    fn line(&self) -> String {
        member_line(self.container.ip(), 9000, 8080, &self.node, &self.name)
    }
}

const HASH: &str = "7b9c4d5f8";

/// The kubelet's part for replica `i`: the Pod object (Pending, then Running with the
/// container's own address), the container with the manifest's env (downward API resolved),
/// the in-cluster variables, the service-account files at the standard path and the
/// manifest's args; hostname = pod name.
fn start_kube_pod(
    (net, api, dep, gateway): (&Network, &KubeApi, &Deployment, &str),
    i: usize,
    extra_env: &[(&str, &str)],
    extra_args: &[&str],
    service_account: bool,
) -> Result<KubePod> {
    let name = format!("{}-{HASH}-bx{i:03}", dep.name);
    let node = format!("box-node-{}", i % 2 + 1);
    api.put_pod(dep.pod(&name, HASH, &node, None, gateway));
    let port = api.addr().port().to_string();
    let mut env = dep.env(&name, &node)?;
    env.extend(
        [
            ("KUBERNETES_SERVICE_HOST", gateway.to_string()),
            ("KUBERNETES_SERVICE_PORT", port.clone()),
            ("KUBERNETES_SERVICE_PORT_HTTPS", port.clone()),
            ("KUBERNETES_PORT", format!("tcp://{gateway}:{port}")),
            ("KUBERNETES_PORT_443_TCP", format!("tcp://{gateway}:{port}")),
            ("KUBERNETES_PORT_443_TCP_ADDR", gateway.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut opts = env_opts(&env);
    let mut args: Vec<&str> = dep.args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra_args);
    // The service account's token, CA and namespace, mounted read-only as the kubelet does.
    let sa = tempfile::tempdir().map_err(|e| Error::Usage(format!("a temporary folder: {e}")))?;
    if service_account {
        for (file, content) in [
            ("token", api.token()),
            ("ca.crt", api.ca_pem()),
            ("namespace", dep.namespace.as_str()),
        ] {
            std::fs::write(sa.path().join(file), content)
                .map_err(|e| Error::Usage(format!("writing {file}: {e}")))?;
        }
        opts.push("-v".into());
        opts.push(format!("{}:{SA_DIR}:ro", sa.path().display()));
    }
    let container = net.create_container(
        &name,
        "ochopod/agent:latest",
        &strs(&opts),
        &args,
        &image_files(),
    )?;
    container.start()?;
    // The sandbox has its address: the API server now reports it (the agent polls until then).
    // A container that already exited (a bad-input case) has none any more.
    let ip = container.inspect(&format!(
        "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
        net.name()
    ))?;
    let ip = if ip.is_empty() {
        container.ip().to_string()
    } else {
        assert_eq!(ip, container.ip(), "docker gave the address asked for");
        ip
    };
    api.put_pod(dep.pod(&name, HASH, &node, Some(&ip), gateway));
    Ok(KubePod {
        container,
        name,
        node,
        _service_account: sa,
    })
}

#[test]
fn kubernetes_box_runs_the_web_deployment_and_scales_it() -> Result<()> {
    let _one = serial();
    ensure_images()?;
    let dep = Deployment::web()?;
    let svc = Service::zookeeper()?;
    assert_eq!(
        dep.container_ports(),
        [8080, 9000],
        "the box serves the manifest's control and web ports"
    );
    let net = Network::create("k8s")?;
    let gateway = net.gateway();
    let zk = net.coordination_zk()?;
    let api = KubeApi::start(&gateway)?;
    // The Service's endpoints: the ZooKeeper container, ready, and one that is not ready (an
    // address nobody answers at: a client that used it would never connect).
    api.set_service(
        &svc.namespace,
        &svc.name,
        svc.ports.clone(),
        vec![
            Endpoint {
                ip: zk.ip().to_string(),
                ready: true,
            },
            Endpoint {
                ip: net.spare_ip(),
                ready: false,
            },
        ],
    );
    let kazoo = Kazoo::new(&format!("{}:2181", zk.ip()))?;

    let mut pods: Vec<KubePod> = Vec::new();
    let check = |pods: &[KubePod]| -> Result<()> {
        let addrs: Vec<(String, String)> = pods
            .iter()
            .map(|p| (p.info_addr(), p.members_url()))
            .collect();
        let want: BTreeSet<String> = pods.iter().map(KubePod::line).collect();
        let refs: Vec<&Container> = pods.iter().map(|p| &p.container).collect();
        wait_views(&addrs, &want).map_err(|e| with_logs(e, &refs))?;
        for p in pods {
            let info = info_at(&p.info_addr()).map_err(Error::Usage)?;
            let r = &info.registration;
            assert_eq!(r.binding, "kubernetes", "{r:?}");
            assert_eq!(r.ip, p.container.ip(), "registered with its podIP");
            assert_eq!(r.node, p.node, "node = the Pod's nodeName");
            assert_eq!(r.application, dep.name, "ReplicaSet -> its Deployment");
            assert_eq!(r.task, p.name);
            assert_eq!(r.namespace, dep.namespace);
            assert_eq!(
                info.registration.zk,
                format!("{}:2181", zk.ip()),
                "ZooKeeper from the Service"
            );
            // The kubelet's probes, as the manifest writes them.
            let probe = |path: &str, port: u16| {
                http_status(&format!("http://{}:{port}{path}", p.container.ip()))
            };
            assert_eq!(probe(&dep.readiness.path, dep.readiness.port)?, 200);
            assert_eq!(probe(&dep.liveness.path, dep.liveness.port)?, 200);
        }
        // ZooKeeper holds exactly these pods, each with its podIP.
        let path = format!("{}/pods", Kazoo::cluster_path(&dep.namespace, "web"));
        let nodes = kazoo.dump(&path)?.map(|n| n.children).unwrap_or_default();
        let ips: BTreeSet<String> = nodes
            .iter()
            .filter_map(|n| n.data.as_deref())
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|v| v["ip"].as_str().map(str::to_string))
            .collect();
        let want: BTreeSet<String> = pods.iter().map(|p| p.container.ip().to_string()).collect();
        assert_eq!(ips, want, "the pods in ZooKeeper");
        Ok(())
    };

    // 3 replicas.
    for i in 1..=3 {
        pods.push(start_kube_pod(
            (&net, &api, &dep, &gateway),
            i,
            &[],
            &[],
            true,
        )?);
    }
    check(&pods)?;
    // The API server saw only authorised reads: each pod's own object, and the Service's
    // EndpointSlices (no fallback to Endpoints while slices answer).
    let seen = api.seen();
    assert!(seen.iter().all(|s| s.authorised), "{seen:?}");
    for p in &pods {
        let own = format!("/api/v1/namespaces/{}/pods/{}", dep.namespace, p.name);
        assert!(
            seen.iter()
                .any(|s| s.path == own && s.peer.to_string() == p.container.ip()),
            "{} never read its Pod: {seen:?}",
            p.name
        );
    }
    assert!(seen
        .iter()
        .any(|s| s.path.contains("/endpointslices?") && s.path.contains(&svc.name)));

    // Scale to 5.
    for i in 4..=5 {
        pods.push(start_kube_pod(
            (&net, &api, &dep, &gateway),
            i,
            &[],
            &[],
            true,
        )?);
    }
    check(&pods)?;

    // Scale to 2: the kubelet stops three containers (SIGTERM) and their Pods go.
    let gone: Vec<KubePod> = pods.drain(0..3).collect();
    let mut stops = Vec::new();
    for p in &gone {
        stops.push(p.container.stop_in_background(10)?);
    }
    for mut s in stops {
        let _ = s.wait();
    }
    for p in &gone {
        api.delete_pod(&dep.namespace, &p.name);
    }
    check(&pods)?;

    // Readiness: a pod that is not configured answers non-200 on the readiness path while it is
    // alive on the liveness path. This one leads a cluster of its own, registered at an address
    // nobody answers at, so its leader (itself) cannot configure it: each round fails.
    let spare = net.spare_ip();
    let waiting = start_kube_pod(
        (&net, &api, &dep, &gateway),
        9,
        &[
            ("ochopod_cluster", "web-unreached"),
            ("ochopod_ip", spare.as_str()),
        ],
        &[],
        true,
    )?;
    let url = |p: &KubePod, probe: &ochopod_e2e::boxes::Probe| {
        format!("http://{}:{}{}", p.container.ip(), probe.port, probe.path)
    };
    wait_until(MINUTE, "the unreached pod's first round to fail", || {
        let info = info_at(&waiting.info_addr())?;
        if info.state.starts_with("leader") && info.round_failure.is_some() {
            Ok(())
        } else {
            Err(format!("{info:?}"))
        }
    })
    .map_err(|e| with_logs(e, &[&waiting.container]))?;
    assert_eq!(http_status(&url(&waiting, &dep.liveness))?, 200);
    let code = http_status(&url(&waiting, &dep.readiness))?;
    assert_ne!(code, 200, "an unconfigured pod must not be ready");
    // A dead pod (its process torn down for good by the operator) is alive but not ready.
    let victim = &pods[0];
    let key = info_at(&victim.info_addr()).map_err(Error::Usage)?.key;
    zk.exec(&[
        "ochopod",
        "kill",
        &key,
        "--zk",
        &format!("{}:2181", zk.ip()),
    ])?;
    wait_until(
        MINUTE,
        "the killed pod's readiness to fail",
        || match http_status(&url(victim, &dep.readiness)) {
            Ok(200) => Err("still 200".to_string()),
            Ok(code) => Ok(code),
            Err(e) => Err(e.to_string()),
        },
    )
    .map_err(|e| with_logs(e, &[&victim.container]))?;
    assert_eq!(
        http_status(&url(victim, &dep.liveness))?,
        200,
        "the agent lives on"
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Marathon on Mesos

/// One task of the app: its container, task id, the Mesos agent (host) it runs on and its host
/// ports (control, web).
struct Task {
    container: Container,
    task_id: String,
    host: String,
    ports: Vec<u16>,
}

/// Starts task `i` of `app` the way Marathon's executor does on the Mesos agent `host` (an
/// address of this machine on the box network): BRIDGE, each mapping's host port published on
/// the agent's address (`ports`, or free ones when empty), the executor's env, the app's
/// volumes (the agent's `/etc/mesos` from `etc_mesos`).
#[allow(clippy::too_many_arguments)]
fn start_task(
    net: &Network,
    app: &MarathonApp,
    host: &str,
    etc_mesos: &std::path::Path,
    i: usize,
    ports: &[u16],
    extra_env: &[(&str, &str)],
    imds: Option<(&Imds, &Instance)>,
) -> Result<Task> {
    let task_id = format!(
        "{}.box{i:04}-c79e-11e8-9d5a-0242ac110004",
        app.id().trim_start_matches('/').replace('/', "_")
    );
    let ports: Vec<u16> = if ports.is_empty() {
        app.port_mappings()
            .iter()
            .map(|_| free_port())
            .collect::<Result<_>>()?
    } else {
        ports.to_vec()
    };
    let mut env = app.task_env(&task_id, host, &ports);
    for (k, v) in extra_env {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    let mut opts = env_opts(&env);
    for ((container_port, _), host_port) in app.port_mappings().iter().zip(&ports) {
        opts.push("-p".into());
        opts.push(format!("{host}:{host_port}:{container_port}"));
    }
    for (host_path, container_path, ro) in app.volumes() {
        // The one host path the box provides is the Mesos agent's /etc/mesos.
        assert_eq!(
            host_path, "/etc/mesos",
            "the box has no host path {host_path}"
        );
        opts.push("-v".into());
        opts.push(format!(
            "{}:{container_path}{}",
            etc_mesos.display(),
            if ro { ":ro" } else { "" }
        ));
    }
    let args = app.args();
    let container = net.create_container(
        &format!("task{i}"),
        "ochopod/agent:latest",
        &strs(&opts),
        &strs(&args),
        &image_files(),
    )?;
    if let Some((imds, instance)) = imds {
        imds.place(container.ip(), instance.clone())?;
    }
    container.start()?;
    Ok(Task {
        container,
        task_id,
        host: host.to_string(),
        ports,
    })
}

#[test]
fn marathon_box_remaps_ports_across_two_hosts_and_survives_a_kill() -> Result<()> {
    let _one = serial();
    ensure_images()?;
    let app = MarathonApp::web()?;
    assert_eq!(
        app.port_mappings().iter().map(|m| m.0).collect::<Vec<_>>(),
        [8080, 9000]
    );
    let net = Network::create("mesos")?;
    // Two Mesos agents: the box network's gateway and a second address of this machine on the
    // same bridge. Each publishes its tasks' host ports on its own address, as each agent of a
    // real cluster does on its own.
    let hosts = [net.gateway(), net.add_host_address(2)?];
    let zk = net.coordination_zk()?;
    // The Mesos agents' /etc/mesos: its zk file names the ensemble (with Mesos's chroot).
    let etc_mesos = etc_mesos(&format!("zk://{}:2181/mesos", zk.ip()))?;
    let (health_path, health_port) = app.health_check().expect("web.json has a health check");
    let (ready_path, ready_port) = app
        .readiness_check()
        .expect("web.json has a readiness check");
    let host_port = |t: &Task, container_port: u16| -> u16 {
        let i = app
            .port_mappings()
            .iter()
            .position(|m| m.0 == container_port)
            .expect("a mapped port");
        t.ports[i]
    };
    let control = |t: &Task| format!("{}:{}", t.host, host_port(t, 8080));
    let members = |t: &Task| format!("http://{}:{}/members.txt", t.host, host_port(t, 9000));
    // Everything through HOST:<host port>, as another host would see the pods; `node` and
    // `ip` are the given values (HOST, or what the metadata says of the task's host).
    let check = |tasks: &[Task], node_and_ip: &dyn Fn(&Task) -> (String, String)| -> Result<()> {
        let addrs: Vec<(String, String)> = tasks.iter().map(|t| (control(t), members(t))).collect();
        let want: BTreeSet<String> = tasks
            .iter()
            .map(|t| {
                let (node, ip) = node_and_ip(t);
                member_line(
                    &ip,
                    host_port(t, 9000),
                    host_port(t, 8080),
                    &node,
                    &t.task_id,
                )
            })
            .collect();
        let refs: Vec<&Container> = tasks.iter().map(|t| &t.container).collect();
        wait_views(&addrs, &want).map_err(|e| with_logs(e, &refs))?;
        for t in tasks {
            let info = info_at(&control(t)).map_err(Error::Usage)?;
            let r = &info.registration;
            assert_eq!(r.application, app.id().trim_start_matches('/'));
            assert_eq!(r.task, t.task_id);
            assert_eq!((r.node.clone(), r.ip.clone()), node_and_ip(t));
            assert_eq!(
                info.registration.zk,
                format!("{}:2181", zk.ip()),
                "from the agent's /etc/mesos/zk"
            );
            for (path, port) in [(&health_path, health_port), (&ready_path, ready_port)] {
                let url = format!("http://{}:{}{path}", t.host, host_port(t, port));
                assert_eq!(http_status(&url)?, 200, "{url}");
            }
        }
        // A pod reaches every pod of the other host on HOST:<its host port>, from inside its
        // container, and finds itself in that pod's view.
        for a in tasks {
            for b in tasks.iter().filter(|b| b.host != a.host) {
                let url = members(b);
                let got = a.container.exec(&[
                    "python3",
                    "-c",
                    &format!("import urllib.request; print(urllib.request.urlopen('{url}', timeout=5).read().decode())"),
                ])?;
                assert!(got.contains(&a.task_id), "{} read {url}: {got}", a.task_id);
            }
        }
        Ok(())
    };

    // Task 1 on the first host and task 2 on the second get the same host ports: only HOST
    // tells them apart. Task 3 runs on the second host too.
    let shared: Vec<u16> = app
        .port_mappings()
        .iter()
        .map(|_| free_port())
        .collect::<Result<_>>()?;
    let placement: [(usize, &str, &[u16]); 3] = [
        (1, &hosts[0], &shared),
        (2, &hosts[1], &shared),
        (3, &hosts[1], &[]),
    ];
    let mut tasks: Vec<Task> = placement
        .iter()
        .map(|(i, host, ports)| {
            start_task(&net, &app, host, etc_mesos.path(), *i, ports, &[], None)
        })
        .collect::<Result<_>>()?;
    let plain = |t: &Task| (t.host.clone(), t.host.clone());
    check(&tasks, &plain)?;
    for t in &tasks {
        let info = info_at(&control(t)).map_err(Error::Usage)?;
        assert_eq!(info.registration.binding, "marathon");
    }

    // A container dies (task 2, on the second host): the survivors, one on each host, are
    // reconfigured without it.
    tasks.remove(1).container.kill()?;
    check(&tasks, &plain)?;

    // marathon-ec2 on both agents: ip, public ip and node from the instance metadata, which
    // answers each host (by its containers' addresses) with its own instance.
    let imds = Imds::start(&hosts[0])?;
    let instances = [
        Instance {
            private_ip: hosts[0].clone(),
            public_ip: Some(net.spare_ip()),
            instance_id: "i-0b0x5eed0000c0de1".to_string(),
        },
        Instance {
            private_ip: hosts[1].clone(),
            public_ip: None,
            instance_id: "i-0b0x5eed0000c0de2".to_string(),
        },
    ];
    let endpoint = imds.endpoint();
    let ec2_env = [
        ("ochopod_binding", "marathon-ec2"),
        ("ochopod_cluster", "web-ec2"),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str()),
    ];
    let ec2: Vec<Task> = [(11, 0), (12, 1)]
        .iter()
        .map(|&(i, h)| {
            start_task(
                &net,
                &app,
                &hosts[h],
                etc_mesos.path(),
                i,
                &[],
                &ec2_env,
                Some((&imds, &instances[h])),
            )
        })
        .collect::<Result<_>>()?;
    let instance_of = |t: &Task| {
        instances
            .iter()
            .find(|i| i.private_ip == t.host)
            .expect("every host has an instance")
    };
    check(&ec2, &|t: &Task| {
        let i = instance_of(t);
        (i.instance_id.clone(), i.private_ip.clone())
    })?;
    for t in &ec2 {
        let info = info_at(&control(t)).map_err(Error::Usage)?;
        let r = &info.registration;
        assert_eq!(r.binding, "marathon-ec2");
        assert_eq!(
            r.public,
            instance_of(t).public_ip.clone().unwrap_or_default()
        );
        // IMDSv2: a session token first, then the reads with it, from this container.
        let seen: Vec<_> = imds
            .seen()
            .into_iter()
            .filter(|s| s.peer.to_string() == t.container.ip())
            .collect();
        assert_eq!(
            seen.first().map(|s| (s.method.as_str(), s.path.as_str())),
            Some(("PUT", "/latest/api/token")),
            "{seen:?}"
        );
        assert!(seen.iter().all(|s| s.authorised), "{seen:?}");
        assert!(seen
            .iter()
            .any(|s| s.path == "/latest/meta-data/instance-id"));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Bad input through the shipped binary

/// Runs a container to its end; asserts exit code 2 and exactly one error line, the last one
/// on stderr, holding every needle. Returns that line.
fn fails_with(c: &Container, needles: &[&str]) -> Result<String> {
    let (code, stdout, stderr) = c.wait_exit()?;
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ochopod: "))
        .collect();
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(
        code,
        2,
        "{}: exit {code}; stderr:\n{stderr}\nstdout:\n{stdout}",
        c.name()
    );
    assert_eq!(
        errors.len(),
        1,
        "{}: one error line; stderr:\n{stderr}",
        c.name()
    );
    assert_eq!(
        errors[0],
        last,
        "{}: the error ends the output:\n{stderr}",
        c.name()
    );
    for needle in needles {
        assert!(
            last.contains(needle),
            "{}: {last:?} lacks {needle:?}",
            c.name()
        );
    }
    Ok(last.to_string())
}

#[test]
fn bad_platform_input_exits_2_with_one_line_naming_the_fix() -> Result<()> {
    let _one = serial();
    ensure_images()?;
    let dep = Deployment::web()?;
    let svc = Service::zookeeper()?;
    let app = MarathonApp::web()?;
    let net = Network::create("bad")?;
    let gateway = net.gateway();
    // Every case fails before ZooKeeper is needed; the containers run side by side.
    let api = KubeApi::start(&gateway)?;
    let forbidding = KubeApi::start(&gateway)?;
    forbidding.set_forbidden(true);
    api.set_service(
        &svc.namespace,
        &svc.name,
        svc.ports.clone(),
        vec![Endpoint {
            ip: net.spare_ip(),
            ready: false,
        }],
    );
    let no_token = start_kube_pod((&net, &api, &dep, &gateway), 1, &[], &[], false)?;
    let forbidden = start_kube_pod((&net, &forbidding, &dep, &gateway), 2, &[], &[], true)?;
    let no_endpoints = start_kube_pod((&net, &api, &dep, &gateway), 3, &[], &[], true)?;

    let bad_zk = etc_mesos("zookeeper-1:2181")?;
    let malformed = start_task(&net, &app, &gateway, bad_zk.path(), 4, &[], &[], None)?;
    let good_zk = etc_mesos(&format!("zk://{}:2181/mesos", net.spare_ip()))?;
    // Nothing listens at this address of the box network: the metadata service is unreachable.
    let nowhere = format!("http://{}:80", net.spare_ip());
    let no_imds = start_task(
        &net,
        &app,
        &gateway,
        good_zk.path(),
        5,
        &[],
        &[
            ("ochopod_binding", "marathon-ec2"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", nowhere.as_str()),
        ],
        None,
    )?;

    let lines = [
        fails_with(
            &no_token.container,
            &[
                "kubernetes binding: cannot read /var/run/secrets/kubernetes.io/serviceaccount/token",
                "automountServiceAccountToken: true",
            ],
        )?,
        fails_with(
            &forbidden.container,
            &["HTTP 403 Forbidden", "grant the pod's service account `get` on pods", "rbac.yaml"],
        )?,
        fails_with(
            &no_endpoints.container,
            &[
                &format!("ZooKeeper Service {}/{} has no ready endpoints", svc.namespace, svc.name),
                "check that the ZooKeeper pods are ready",
            ],
        )?,
        fails_with(
            &malformed.container,
            &[
                "marathon binding: /etc/mesos/zk holds \"zookeeper-1:2181\", not a zk:// URL",
                "zk://host:2181",
            ],
        )?,
        fails_with(
            &no_imds.container,
            &[
                "marathon-ec2 binding: cannot read local-ipv4 from the EC2 instance metadata service",
                "run on EC2 with IMDSv2 enabled",
            ],
        )?,
    ];
    for line in lines {
        eprintln!("{line}");
    }
    Ok(())
}
