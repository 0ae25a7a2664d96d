//! The kubernetes binding's real in-cluster path (service-account token, CA and namespace files,
//! the kube client over TLS) against a local HTTPS server that serves the fixture documents of
//! `tests/fixtures/kubernetes/` with a certificate made here.
#![cfg(feature = "kubernetes")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ochopod_bindings::{discover, Environment, Error, Explicit, Options};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls;

const WEB_POD: &str = "web-6d8f7c9b5d-x2kqp";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.test-token";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubernetes")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// What the fixture API server serves and what it saw.
#[derive(Default)]
struct State {
    /// Reads of the web pod answered with the pending document before the running one.
    pending_reads: usize,
    /// EndpointSlices may not be listed (403), so the binding falls back to Endpoints.
    slices_forbidden: bool,
    /// (path and query, Authorization header) of every request.
    seen: Vec<(String, String)>,
    web_reads: usize,
}

struct ApiServer {
    port: u16,
    state: Arc<Mutex<State>>,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16, reason: &str, message: &str) -> (StatusCode, String) {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), body.to_string())
}

fn route(state: &Mutex<State>, req: &Request<hyper::body::Incoming>) -> (StatusCode, String) {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut st = state.lock().unwrap();
    st.seen.push((pq.clone(), auth.clone()));
    if auth != format!("Bearer {TOKEN}") {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let path = req.uri().path();
    let query = req
        .uri()
        .query()
        .unwrap_or_default()
        .replace("%2F", "/")
        .replace("%3D", "=");
    match path {
        p if p == format!("/api/v1/namespaces/demo/pods/{WEB_POD}") => {
            st.web_reads += 1;
            if st.web_reads <= st.pending_reads {
                (StatusCode::OK, fixture("pod-pending.json"))
            } else {
                (StatusCode::OK, fixture("pod-running.json"))
            }
        }
        "/api/v1/namespaces/demo/pods/kafka-1" => (
            StatusCode::OK,
            fixture("pod-statefulset-two-containers.json"),
        ),
        "/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices" => {
            if st.slices_forbidden {
                return status(
                    403,
                    "Forbidden",
                    "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:demo:ochopod\" cannot list resource",
                );
            }
            let items = if query.contains("labelSelector=kubernetes.io/service-name=zookeeper") {
                vec![serde_json::from_str::<serde_json::Value>(&fixture(
                    "endpointslice-zookeeper.json",
                ))
                .unwrap()]
            } else {
                vec![]
            };
            let list = serde_json::json!({
                "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": "47010"}, "items": items,
            });
            (StatusCode::OK, list.to_string())
        }
        "/api/v1/namespaces/demo/endpoints/zookeeper" => {
            (StatusCode::OK, fixture("endpoints-zookeeper.json"))
        }
        other => status(404, "NotFound", &format!("{other} not found")),
    }
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and the TLS server.
async fn api_server(state: State) -> ApiServer {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fixture-cluster-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "kubernetes.default.svc".to_string(),
    ])
    .unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let server_cert = params.signed_by(&server_key, &ca).unwrap();

    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server_cert.der().clone(), ca.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(state));
    let shared = state.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let state = shared.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let (code, body) = route(&state, &req);
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(code)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    ApiServer {
        port,
        state,
        ca_pem: ca.pem(),
        task,
    }
}

/// A service-account directory as the kubelet mounts it.
fn service_account(ca_pem: &str, token: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), token).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
    std::fs::write(dir.path().join("namespace"), "demo").unwrap();
    dir
}

fn opts(sa: &Path, pod_ip_timeout: Duration) -> Options {
    Options {
        service_account_dir: sa.to_path_buf(),
        pod_ip_timeout,
        retry_every: Duration::from_millis(50),
        api_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

fn env(server: &ApiServer, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()),
        ("KUBERNETES_SERVICE_PORT", server.port.to_string()),
        (
            "KUBERNETES_PORT",
            format!("tcp://127.0.0.1:{}", server.port),
        ),
        ("ochopod_cluster", "web".to_string()),
        ("ochopod_namespace", "demo".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn run(
    explicit: &Explicit,
    env: &BTreeMap<String, String>,
    opts: &Options,
) -> Result<Environment, Error> {
    discover(explicit, env, opts).await
}

#[tokio::test]
async fn pending_pod_is_read_again_until_it_has_an_ip() {
    let server = api_server(State {
        pending_reads: 2,
        ..State::default()
    })
    .await;
    let sa = service_account(&server.ca_pem, &format!("{TOKEN}\n"));
    // Namespace from the service-account file, pod name from HOSTNAME; binding picked by auto.
    let env = env(
        &server,
        &[("HOSTNAME", WEB_POD), ("ochopod_zk_service", "zookeeper")],
    );
    let found = run(
        &Explicit::default(),
        &env,
        &opts(sa.path(), Duration::from_secs(20)),
    )
    .await
    .unwrap();
    assert_eq!(found.binding, "kubernetes");
    assert_eq!(found.ip, "10.244.1.23");
    assert_eq!(found.public, "");
    assert_eq!(found.node, "ip-10-0-1-17.ec2.internal");
    assert_eq!(
        found.application, "web",
        "ReplicaSet web-6d8f7c9b5d belongs to Deployment web"
    );
    assert_eq!(found.task, WEB_POD);
    assert_eq!(
        found.ports,
        BTreeMap::from([("8080".into(), 8080), ("9000".into(), 9000)])
    );
    assert_eq!(
        found.zk.as_deref(),
        Some("10.244.1.11:2181,10.244.2.12:2181"),
        "ready endpoints only"
    );
    assert!(!found.settings.contains_key("zk_service"));

    let st = server.state.lock().unwrap();
    assert_eq!(st.web_reads, 3, "two pending reads, then the running pod");
    assert!(
        st.seen
            .iter()
            .all(|(_, auth)| auth == &format!("Bearer {TOKEN}")),
        "{:?}",
        st.seen
    );
    assert!(
        st.seen
            .iter()
            .any(|(pq, _)| pq
                .starts_with("/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices?"))
    );
    assert!(
        !st.seen.iter().any(|(pq, _)| pq.contains("/endpoints/")),
        "slices answered: no Endpoints read"
    );
}

#[tokio::test]
async fn statefulset_pod_with_two_containers_and_endpoints_fallback() {
    let server = api_server(State {
        slices_forbidden: true,
        ..State::default()
    })
    .await;
    let sa = service_account(&server.ca_pem, TOKEN);
    let env = env(
        &server,
        &[
            ("POD_NAME", "kafka-1"),
            ("POD_NAMESPACE", "demo"),
            ("HOSTNAME", "kafka-1"),
        ],
    );
    let explicit = Explicit {
        binding: Some("kubernetes".into()),
        zk_service: Some("demo/zookeeper".into()),
        ..Default::default()
    };
    let found = run(&explicit, &env, &opts(sa.path(), Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(found.application, "kafka");
    assert_eq!(found.task, "kafka-1");
    assert_eq!(found.ip, "10.244.2.41");
    assert_eq!(found.node, "ip-10-0-2-9.ec2.internal");
    assert_eq!(
        found.ports,
        BTreeMap::from([
            ("5556".into(), 5556),
            ("8080".into(), 8080),
            ("9092".into(), 9092)
        ]),
        "ports of both containers, identity mapping"
    );
    assert_eq!(
        found.zk.as_deref(),
        Some("10.244.1.11:2181,10.244.2.12:2181")
    );
    let st = server.state.lock().unwrap();
    assert!(
        st.seen
            .iter()
            .any(|(pq, _)| pq == "/api/v1/namespaces/demo/endpoints/zookeeper"),
        "{:?}",
        st.seen
    );
}

#[tokio::test]
async fn given_zookeeper_skips_the_service_lookup() {
    let server = api_server(State::default()).await;
    let sa = service_account(&server.ca_pem, TOKEN);
    let env = env(
        &server,
        &[
            ("POD_NAME", WEB_POD),
            ("ochopod_zk", "zk-0.zk:2181/ochopod"),
            ("ochopod_zk_service", "zookeeper"),
        ],
    );
    let found = run(
        &Explicit::default(),
        &env,
        &opts(sa.path(), Duration::from_secs(20)),
    )
    .await
    .unwrap();
    assert_eq!(found.zk.as_deref(), Some("zk-0.zk:2181/ochopod"));
    assert_eq!(found.application, "web");
    let st = server.state.lock().unwrap();
    assert!(
        st.seen.iter().all(|(pq, _)| pq.contains("/pods/")),
        "{:?}",
        st.seen
    );
}

#[tokio::test]
async fn pod_that_never_gets_an_ip_is_a_one_line_error() {
    let server = api_server(State {
        pending_reads: usize::MAX,
        ..State::default()
    })
    .await;
    let sa = service_account(&server.ca_pem, TOKEN);
    let env = env(&server, &[("POD_NAME", WEB_POD)]);
    let err = run(
        &Explicit::default(),
        &env,
        &opts(sa.path(), Duration::from_millis(600)),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.starts_with(&format!(
            "kubernetes binding: pod demo/{WEB_POD} got no IP within 600ms ("
        )),
        "{err}"
    );
    assert!(err.contains("phase Pending"), "{err}");
    assert!(err.contains("kubectl describe pod"), "{err}");
    assert!(
        server.state.lock().unwrap().web_reads >= 2,
        "read more than once before giving up"
    );
}

#[tokio::test]
async fn wrong_token_and_missing_files_say_what_to_fix() {
    let server = api_server(State::default()).await;
    let sa = service_account(&server.ca_pem, "not-the-token");
    let vars = env(&server, &[("POD_NAME", WEB_POD)]);
    let err = run(
        &Explicit::default(),
        &vars,
        &opts(sa.path(), Duration::from_secs(5)),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "kubernetes binding: cannot read pod demo/{WEB_POD}: HTTP 401"
        )),
        "{err}"
    );
    assert!(err.contains("rbac.yaml"), "{err}");

    std::fs::remove_file(sa.path().join("token")).unwrap();
    let err = run(
        &Explicit::default(),
        &vars,
        &opts(sa.path(), Duration::from_secs(5)),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("kubernetes binding: cannot read "), "{err}");
    assert!(
        err.contains("/token: ") && err.contains("automountServiceAccountToken"),
        "{err}"
    );

    let mut no_api = vars.clone();
    no_api.remove("KUBERNETES_SERVICE_HOST");
    let explicit = Explicit {
        binding: Some("kubernetes".into()),
        ..Default::default()
    };
    let err = run(&explicit, &no_api, &opts(sa.path(), Duration::from_secs(5)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("kubernetes binding: KUBERNETES_SERVICE_HOST is not set;"),
        "{err}"
    );

    let sa = service_account(&server.ca_pem, TOKEN);
    let env = env(
        &server,
        &[("POD_NAME", "web-gone"), ("POD_NAMESPACE", "demo")],
    );
    let err = run(
        &Explicit::default(),
        &env,
        &opts(sa.path(), Duration::from_secs(5)),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("kubernetes binding: cannot read pod demo/web-gone: HTTP 404 NotFound"),
        "{err}"
    );
    assert!(err.contains("POD_NAME"), "{err}");
}

#[tokio::test]
async fn a_foreign_certificate_is_refused() {
    let server = api_server(State::default()).await;
    let other = api_server(State::default()).await;
    // The CA of another cluster: TLS must fail, and the error says so after the bounded wait.
    let sa = service_account(&other.ca_pem, TOKEN);
    let env = env(&server, &[("POD_NAME", WEB_POD)]);
    let err = run(
        &Explicit::default(),
        &env,
        &opts(sa.path(), Duration::from_millis(300)),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "kubernetes binding: pod demo/{WEB_POD} got no IP within 300ms"
        )),
        "{err}"
    );
    assert!(err.contains("the API server did not answer"), "{err}");
    assert_eq!(
        server.state.lock().unwrap().seen.len(),
        0,
        "no request got through TLS"
    );
}
