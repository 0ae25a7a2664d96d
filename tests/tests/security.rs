//! The control plane secured on live agents: a cluster that forms and reconfigures over mutual
//! TLS, clients refused (no certificate, another CA, an expired certificate, plain HTTP) with a
//! clear error and no change, and a certificate rotated without a restart. Certificates are made
//! here with rcgen.

use ochopod_e2e::*;
use ochopod_http::{Client, ClientTls, Task};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::path::{Path, PathBuf};
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
