//! The control plane secured on live agents: a cluster that forms and reconfigures over mutual
//! TLS, clients refused (no certificate, another CA, an expired certificate, plain HTTP) with a
//! clear error and no change, and a certificate rotated without a restart. Certificates are made
//! here with rcgen. ZooKeeper credentials end to end: a cluster whose nodes only holders of its
//! credential may change (checked by kazoo as an independent client), an agent with another
//! credential refused at start; and no secret (token, TLS key, ZooKeeper credential) in `/info`,
//! the registration, the logs, the agent's command line or the error messages.

use ochopod_e2e::tools::ochopod_cli;
use ochopod_e2e::*;
use ochopod_http::{Client, ClientTls, Task};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const CALL: Duration = Duration::from_secs(10);

/// A CA that signs pod and operator certificates into a folder.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: &'static str,
}

impl Ca {
    fn new(dir: &Path, name: &'static str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), issuer.pem()).unwrap();
        Ca {
            issuer,
            dir: dir.to_path_buf(),
            name,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// Signs a certificate for `names` (server and client use) into `<file>.pem` and
    /// `<file>.key`; `expired` makes one whose validity ended in 2001.
    fn sign(&self, file: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        // Written aside then renamed, as a certificate manager does: never half a file.
        for (path, text) in [(&c, cert.pem()), (&k, key.serialize_pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        (c, k)
    }

    fn client(&self, cert: Option<(PathBuf, PathBuf)>, server_name: Option<&str>) -> Client {
        let (cert, key) = cert.unzip();
        let tls = ClientTls {
            ca: self.ca_file(),
            cert,
            key,
            server_name: server_name.map(str::to_string),
        };
        Client::with_tls(None, Some(&tls)).expect("client TLS")
    }
}

fn secure_spec(zk: &ZkServer, cluster: &str, ca: &Ca, open_read_only: bool) -> PodSpec {
    let (cert, key) = ca.sign("pod", &["127.0.0.1", "pod.ochopod"], false);
    let mut spec = PodSpec::new("sec", cluster, &zk.connect_string()).unwrap();
    spec.set("pod", "tls_cert", cert.to_str().unwrap())
        .set("pod", "tls_key", key.to_str().unwrap())
        .set("pod", "tls_ca", ca.ca_file().to_str().unwrap())
        .set("pod", "tls_open_read_only", open_read_only)
        .set("process", "grace", 2.0)
        .command("sleep 600");
    spec
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn addr(agent: &Agent) -> String {
    format!("127.0.0.1:{}", agent.port())
}

/// Waits until every agent runs its process, one of them leads, and the leader's last round
/// configured all of them (the leader reached each over TLS).
fn wait_secure_cluster(rt: &tokio::runtime::Runtime, client: &Client, agents: &[&Agent]) -> usize {
    wait_until(
        WAIT,
        &format!("{} pods configured over TLS", agents.len()),
        || {
            let mut infos = Vec::new();
            for a in agents {
                infos.push(
                    rt.block_on(client.pod_info(&addr(a), CALL))
                        .map_err(|e| format!("{e} | {}", a.log_tail(800)))?,
                );
            }
            let leaders: Vec<usize> = (0..infos.len())
                .filter(|i| infos[*i].state == "leader")
                .collect();
            let running = infos
                .iter()
                .all(|i| i.process == "running" && i.seq.is_some());
            let round_ok = leaders.len() == 1
                && infos[leaders[0]]
                    .last_round
                    .as_ref()
                    .is_some_and(|r| r.answers.len() == agents.len() && r.outcome == "ok");
            if running && round_ok {
                Ok(leaders[0])
            } else {
                Err(format!(
                    "{:?}",
                    infos
                        .iter()
                        .map(|i| (i.state.clone(), i.process.clone(), i.last_round.clone()))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .unwrap()
}

#[test]
fn a_cluster_forms_and_reconfigures_over_mutual_tls() {
    let zk = ZkServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "cluster-ca");
    let rt = rt();
    let operator = ca.client(Some(ca.sign("operator", &["operator"], false)), None);
    let mut agents = Vec::new();
    for _ in 0..2 {
        agents.push(Agent::spawn(secure_spec(&zk, "mtls", &ca, true)).unwrap());
    }
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_secure_cluster(&rt, &operator, &refs);
    // A third pod: the leader reconfigures the cluster, every call over mutual TLS.
    agents.push(Agent::spawn(secure_spec(&zk, "mtls", &ca, true)).unwrap());
    let refs: Vec<&Agent> = agents.iter().collect();
    let leader = wait_secure_cluster(&rt, &operator, &refs);
    let follower = (leader + 1) % agents.len();
    // Read-only routes are open to a TLS client without a certificate; acting ones are not.
    let anonymous = ca.client(None, None);
    let target = addr(&agents[follower]);
    let before = rt.block_on(anonymous.pod_info(&target, CALL)).unwrap();
    assert_eq!(before.process, "running");
    let r = rt
        .block_on(anonymous.control(&target, Task::Off, 5, None, Default::default(), CALL))
        .unwrap();
    assert_eq!(r.code, 403, "{r:?}");
    let msg = r.error_message().unwrap();
    assert!(msg.contains("client certificate"), "{msg}");
    let after = rt.block_on(operator.pod_info(&target, CALL)).unwrap();
    assert_eq!(
        (after.process, after.pid),
        ("running".to_string(), before.pid)
    );
    // The operator's certificate is enough to act.
    let r = rt
        .block_on(operator.signal(&target, &serde_json::json!({}), CALL))
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    // A plain-HTTP client is told to use https.
    let plain = agents[follower].get("/info").unwrap();
    assert_eq!(plain.status, 400, "{plain:?}");
    assert!(plain.body.to_string().contains("https"), "{plain:?}");
}

#[test]
fn clients_without_a_valid_certificate_are_refused_and_change_nothing() {
    let zk = ZkServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "cluster-ca");
    let other = Ca::new(tmp.path(), "other-ca");
    let rt = rt();
    let agent = Agent::spawn(secure_spec(&zk, "refuse", &ca, false)).unwrap();
    let operator = ca.client(Some(ca.sign("operator", &["operator"], false)), None);
    let target = addr(&agent);
    let before = wait_secure_cluster(&rt, &operator, &[&agent]);
    assert_eq!(before, 0);
    let pid = rt.block_on(operator.pod_info(&target, CALL)).unwrap().pid;
    // The clients a pod must refuse, each trusting the pod's CA, and what the error says.
    let intruders = [
        (
            "no certificate",
            ca.client(None, None),
            "client certificate",
        ),
        (
            "another CA's certificate",
            // It trusts the cluster's CA for the server but signs with its own.
            {
                let (c, k) = other.sign("intruder", &["intruder"], false);
                ca.client(Some((c, k)), None)
            },
            "refused this client's certificate",
        ),
        (
            "an expired certificate",
            ca.client(Some(ca.sign("expired", &["expired"], true)), None),
            "refused this client's certificate",
        ),
    ];
    for (what, client, says) in &intruders {
        for task in [Task::Off, Task::Kill] {
            let err = rt
                .block_on(client.control(&target, task, 5, None, Default::default(), CALL))
                .expect_err(what);
            let text = err.to_string();
            assert!(text.contains(says), "{what}: {text}");
        }
        let err = rt.block_on(client.pod_info(&target, CALL)).expect_err(what);
        assert!(err.to_string().contains(says), "{what}: {err}");
    }
    // A client that does not trust the pod's certificate stops before sending anything.
    let wary = other.client(None, None);
    let err = rt.block_on(wary.pod_info(&target, CALL)).unwrap_err();
    assert!(
        err.to_string().contains("not one this client trusts"),
        "{err}"
    );
    // Nothing changed: the same process runs.
    let info = rt.block_on(operator.pod_info(&target, CALL)).unwrap();
    assert_eq!((info.process.as_str(), info.pid), ("running", pid));
    assert!(agent.is_alive());
}

#[test]
fn a_rotated_certificate_is_picked_up_without_a_restart() {
    let zk = ZkServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "cluster-ca");
    let rt = rt();
    let agent = Agent::spawn(secure_spec(&zk, "rotate", &ca, false)).unwrap();
    let operator = ca.client(Some(ca.sign("operator", &["operator"], false)), None);
    wait_secure_cluster(&rt, &operator, &[&agent]);
    let pid = agent.pid();
    // A client expecting the name only the rotated certificate carries.
    let strict = ca.client(
        Some(ca.sign("operator", &["operator"], false)),
        Some("rotated.ochopod"),
    );
    let target = addr(&agent);
    let err = rt.block_on(strict.pod_info(&target, CALL)).unwrap_err();
    assert!(
        err.to_string().contains("not one this client trusts"),
        "{err}"
    );
    // The files are replaced in place (same paths); the agent serves the new certificate.
    ca.sign("pod", &["127.0.0.1", "rotated.ochopod"], false);
    wait_until(WAIT, "the rotated certificate is served", || {
        rt.block_on(strict.pod_info(&target, CALL))
            .map_err(|e| e.to_string())
    })
    .unwrap();
    assert_eq!(agent.pid(), pid, "the agent was not restarted");
}

/// Writes a secret into `dir/name` (mode 0600, as a secret manager mounts it).
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Every node at or below `path`, as kazoo authenticated with `auth` (`user:password`, or
/// nobody) finds it when it tries to change it: `{path: {"read", "acl", "set", "create",
/// "delete"}}` (see tests/py/zkacl.py).
fn foreign_writes(zk: &ZkServer, path: &str, auth: Option<&str>) -> serde_json::Value {
    ensure_python_deps().unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(workspace_root().join("tests/py/zkacl.py"))
        .args(["--hosts", &zk.connect_string(), path])
        .stdin(Stdio::null())
        .env_remove("ZKACL_AUTH");
    if let Some(auth) = auth {
        cmd.env("ZKACL_AUTH", auth);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "zkacl.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The agent's exit code once it stopped, and the last line it printed.
fn failed_start(agent: &Agent) -> (Option<i32>, String) {
    let status = agent.wait_exit(WAIT).unwrap();
    let log = std::fs::read_to_string(agent.log_path()).unwrap();
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    (status.code(), last.to_string())
}

#[test]
fn a_zookeeper_credential_keeps_every_other_client_from_changing_the_cluster() {
    let zk = ZkServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cred = secret_file(tmp.path(), "zk-auth", "digest:ops:correct-horse");
    let wrong = secret_file(tmp.path(), "zk-auth-wrong", "digest:ops:battery-staple");
    let spec = |auth: Option<&Path>| {
        let mut spec = PodSpec::new("zsec", "guarded", &zk.connect_string()).unwrap();
        spec.set("process", "grace", 2.0).command("sleep 600");
        if let Some(auth) = auth {
            spec.set("pod", "zk_auth_file", auth.to_str().unwrap());
        }
        spec
    };
    let a = Agent::spawn(spec(Some(&cred))).unwrap();
    let b = Agent::spawn(spec(Some(&cred))).unwrap();
    let kz = Kazoo::new(&zk.connect_string()).unwrap();
    let settled = wait_settled(&[&a, &b], &kz, "zsec", "guarded", WAIT).unwrap();
    let p = "/ochopod/clusters/zsec.guarded";
    wait_until(WAIT, "the leader recorded its round", || {
        kz.dump(&format!("{p}/history"))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no history yet".to_string())
    })
    .unwrap();
    // The CLI with the credential (from a file) pauses the cluster: one more node, P/pause.
    let zk_flag = zk.connect_string();
    let with = |args: &[&str], auth: Option<&Path>| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--zk", &zk_flag]);
        if let Some(auth) = auth {
            all.extend(["--zk-auth-file", auth.to_str().unwrap()]);
        }
        ochopod_cli(&all, &[], WAIT).unwrap()
    };
    let out = with(&["pause", "zsec.guarded", "--reason", "audit"], Some(&cred));
    assert!(out.success(), "{out:?}");
    // Without the credential, or with another one, the CLI cannot resume it: exit code 5 and
    // the fix named.
    for auth in [None, Some(wrong.as_path())] {
        let out = with(&["resume", "zsec.guarded"], auth);
        assert_eq!(out.code(), Some(5), "{out:?}");
        assert!(out.stderr.contains("zk_auth_file"), "{out:?}");
    }
    // Every node, as kazoo sees it with another credential and with none: readable, and every
    // change refused by ZooKeeper.
    for auth in [Some("ops:battery-staple"), Some("mallory:x"), None] {
        let nodes = foreign_writes(&zk, p, auth);
        let nodes = nodes.as_object().unwrap();
        let rel: Vec<String> = nodes
            .keys()
            .map(|k| k.strip_prefix(p).unwrap_or(k).to_string())
            .collect();
        for must in [
            "",
            "/pods",
            "/coordinator",
            "/snapshot",
            "/hash",
            "/history",
            "/pause",
        ] {
            assert!(rel.iter().any(|r| r == must), "{must} missing in {rel:?}");
        }
        assert_eq!(
            rel.iter().filter(|r| r.starts_with("/pods/")).count(),
            2,
            "{rel:?}"
        );
        assert!(
            rel.iter().any(|r| r.starts_with("/coordinator/")),
            "{rel:?}"
        );
        for (path, node) in nodes {
            assert_eq!(node["read"], "ok", "{auth:?} {path}: {node}");
            let acl = node["acl"].to_string();
            assert!(
                acl.contains("world:anyone:r\"") && acl.contains("digest:ops:"),
                "{path}: {acl}"
            );
            for op in ["set", "create", "delete"] {
                if path == p && op == "delete" {
                    continue;
                }
                assert_eq!(node[op], "NoAuthError", "{auth:?} {op} {path}: {node}");
            }
        }
    }
    // An agent with another credential, or with none, stops at start: exit code 5, one line
    // naming the fix.
    for auth in [Some(wrong.as_path()), None] {
        let intruder = Agent::spawn(spec(auth)).unwrap();
        let (code, last) = failed_start(&intruder);
        assert_eq!(code, Some(5), "{auth:?}: {}", intruder.log_tail(2000));
        assert!(
            last.starts_with("ochopod: cluster zsec.guarded: ZooKeeper refused")
                && last.contains("zk_auth_file"),
            "{auth:?}: {last}"
        );
    }
    // Nothing changed: the same two pods, the same leader, still paused; then resumed by the
    // credential's holder.
    let now = ClusterZk::read(&kz, "zsec", "guarded").unwrap();
    assert_eq!(now.pod_keys(), settled.zk.pod_keys());
    assert_eq!(now.holder_session(), settled.zk.holder_session());
    assert!(kz.dump(&format!("{p}/pause")).unwrap().is_some());
    let out = with(&["resume", "zsec.guarded"], Some(&cred));
    assert!(out.success(), "{out:?}");
    assert!(kz.dump(&format!("{p}/pause")).unwrap().is_none());
}

#[test]
fn secrets_stay_out_of_info_registration_logs_command_lines_and_errors() {
    let zk = ZkServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "cluster-ca");
    let token = "tok-5f1d2c9e8a7b";
    let zk_password = "zkpw-3c4b5a69";
    let token_file = secret_file(tmp.path(), "token", token);
    let zk_auth = secret_file(tmp.path(), "zk-auth", &format!("digest:ops:{zk_password}"));
    let spec = || {
        let mut spec = secure_spec(&zk, "leak", &ca, false);
        spec.set("pod", "token_file", token_file.to_str().unwrap())
            .set("pod", "zk_auth_file", zk_auth.to_str().unwrap());
        spec
    };
    // Debug logs: the most the agent ever says.
    let debug = [("ochopod_debug", "true")];
    let a = Agent::spawn_env(spec(), &debug).unwrap();
    let b = Agent::spawn_env(spec(), &debug).unwrap();
    let rt = rt();
    let operator_cert = ca.sign("operator", &["operator"], false);
    let tls = ClientTls {
        ca: ca.ca_file(),
        cert: Some(operator_cert.0.clone()),
        key: Some(operator_cert.1.clone()),
        server_name: None,
    };
    let operator = Client::with_tls(Some(token.to_string()), Some(&tls)).unwrap();
    let leader = wait_secure_cluster(&rt, &operator, &[&a, &b]);
    let agents = [&a, &b];
    let mut haystack: Vec<(String, String)> = Vec::new();
    // A signal with the token works; with a wrong one it is refused (the reply is kept).
    let target = addr(agents[1 - leader]);
    let r = rt
        .block_on(operator.signal(&target, &serde_json::json!({}), CALL))
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    let wrong = Client::with_tls(Some("not-the-token".into()), Some(&tls)).unwrap();
    let r = rt
        .block_on(wrong.control(&target, Task::Off, 5, None, Default::default(), CALL))
        .unwrap();
    assert!(!r.is_success(), "{r:?}");
    haystack.push(("a refused call's reply".into(), format!("{r:?}")));
    for (i, agent) in agents.iter().enumerate() {
        let info = rt.block_on(operator.info(&addr(agent), CALL)).unwrap();
        haystack.push((format!("/info of pod {i}"), info.to_string()));
        let log = rt.block_on(operator.log(&addr(agent), CALL)).unwrap();
        haystack.push((format!("/log of pod {i}"), log.join("\n")));
        let pid = agent.pid().unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        haystack.push((
            format!("/proc/{pid}/cmdline of agent {i}"),
            String::from_utf8_lossy(&cmdline).replace('\0', " "),
        ));
        let child = rt
            .block_on(operator.pod_info(&addr(agent), CALL))
            .unwrap()
            .pid
            .unwrap();
        let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap();
        haystack.push((
            format!("the environment of pod {i}'s process"),
            String::from_utf8_lossy(&environ).replace('\0', "\n"),
        ));
    }
    // Everything in ZooKeeper: registrations, lock contenders, snapshot, hash, history.
    let kz = Kazoo::new(&zk.connect_string()).unwrap();
    let mut nodes = vec![kz.dump("/ochopod").unwrap().unwrap()];
    while let Some(node) = nodes.pop() {
        haystack.push((node.path.clone(), node.data.clone().unwrap_or_default()));
        nodes.extend(node.children);
    }
    // The operator's CLI, given everything in files.
    let zk_flag = zk.connect_string();
    let ca_file = ca.ca_file();
    let cli = [
        "--zk",
        &zk_flag,
        "--zk-auth-file",
        zk_auth.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
        "--tls-ca",
        ca_file.to_str().unwrap(),
        "--tls-cert",
        operator_cert.0.to_str().unwrap(),
        "--tls-key",
        operator_cert.1.to_str().unwrap(),
    ];
    for args in [vec!["ls", "--json"], vec!["history", "sec.leak"]] {
        let mut all = args.clone();
        all.extend(cli);
        let out = ochopod_cli(&all, &[], WAIT).unwrap();
        haystack.push((format!("ochopod {args:?}"), format!("{out:?}")));
    }
    // Errors: the agent with both an inline token and a token file, and the agent whose
    // ZooKeeper credential has the wrong password.
    let mut both = spec();
    both.set("pod", "token", token);
    let both = Agent::spawn(both).unwrap();
    let (code, last) = failed_start(&both);
    assert_eq!(code, Some(2), "{last}");
    assert!(last.contains("token_file"), "{last}");
    let bad_auth = secret_file(tmp.path(), "zk-auth-bad", "digest:ops:zkpw-wrong-77");
    let mut wrong_zk = spec();
    wrong_zk.set("pod", "zk_auth_file", bad_auth.to_str().unwrap());
    let wrong_zk = Agent::spawn(wrong_zk).unwrap();
    let (code, last) = failed_start(&wrong_zk);
    assert_eq!(code, Some(5), "{last}");
    for agent in [&a, &b, &both, &wrong_zk] {
        let log = std::fs::read_to_string(agent.log_path()).unwrap();
        assert!(!log.is_empty());
        haystack.push((agent.log_path().display().to_string(), log));
    }
    // The needles: the token, the ZooKeeper password (right and wrong), every line of every
    // private key.
    let mut needles = vec![
        token.to_string(),
        zk_password.to_string(),
        "zkpw-wrong-77".to_string(),
        "PRIVATE KEY".to_string(),
    ];
    for key in [tmp.path().join("pod.key"), operator_cert.1.clone()] {
        let pem = std::fs::read_to_string(key).unwrap();
        needles.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 16)
                .map(str::to_string),
        );
    }
    assert!(needles.len() > 5);
    for (place, text) in &haystack {
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "a secret ({}...) shows in {place}",
                &needle[..6]
            );
        }
    }
}
