//! The project's own stand-ins for the parts of a platform that cannot run in a box: a
//! Kubernetes API server and the EC2 instance metadata service. Both run in the test process on
//! their own runtime thread and listen on one address (the box network's gateway), so the
//! agents in containers reach them as they would reach the real services; they answer exactly
//! the requests the bindings make, and record every request they got.
//!
//! - [`KubeApi`]: HTTPS with a certificate signed by a CA it generates, the bearer token checked
//!   on every request; serves Pods (`GET .../pods/NAME`), a Service's EndpointSlices (listed by
//!   `kubernetes.io/service-name`) and its Endpoints object; can be made to answer 403.
//! - [`Imds`]: IMDSv2 over HTTP (`PUT /latest/api/token` first, then `GET /latest/meta-data/...`
//!   with the token); each caller, by its source address, is answered for the host it runs on.

use crate::error::{Error, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls;

/// One answer: status and JSON (or text) body.
type Answer = (StatusCode, String);

/// What a stand-in was asked (method, path and query, peer address, authorised?).
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `PUT` ...
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    /// The caller's address (a container's, seen from the gateway).
    pub peer: IpAddr,
    /// The request carried the right credential (bearer token, IMDS session token).
    pub authorised: bool,
}

/// A stand-in's server: its own runtime (one worker thread), stopped on drop.
struct Server {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

type Handler = Arc<dyn Fn(&Method, &str, IpAddr, &hyper::HeaderMap, &[u8]) -> Answer + Send + Sync>;

impl Server {
    /// Serves `handler` on `bind:0`, over TLS when `tls` is given.
    fn start(
        bind: IpAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
    ) -> Result<Server> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting a stand-in's runtime", e))?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(SocketAddr::new(bind, 0)))
            .map_err(|e| Error::io(format!("binding a stand-in on {bind}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading a stand-in's address", e))?;
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        rt.spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let handler = handler.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let pq = parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.as_str().to_string())
                                    .unwrap_or_default();
                                let (code, text) =
                                    handler(&parts.method, &pq, peer.ip(), &parts.headers, &body);
                                let kind = if pq.starts_with("/latest/") {
                                    "text/plain"
                                } else {
                                    "application/json"
                                };
                                let mut resp = Response::builder()
                                    .status(code)
                                    .header("content-type", kind);
                                if pq == "/latest/api/token" {
                                    // IMDS sends the token's TTL back; aws-config requires it.
                                    let ttl = parts
                                        .headers
                                        .get("x-aws-ec2-metadata-token-ttl-seconds")
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("21600")
                                        .to_string();
                                    resp = resp.header("x-aws-ec2-metadata-token-ttl-seconds", ttl);
                                }
                                Ok::<_, Infallible>(
                                    resp.body(Full::new(Bytes::from(text))).unwrap_or_default(),
                                )
                            }
                        });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Ok(Server { addr, rt: Some(rt) })
    }
}

/// A Kubernetes `Status` reply.
fn status(code: u16, reason: &str, message: &str) -> Answer {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
}

/// One endpoint of a Service: an address and whether it is ready.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The pod's address.
    pub ip: String,
    /// Ready endpoints are the only ones a client should use.
    pub ready: bool,
}

#[derive(Default)]
struct KubeState {
    /// (namespace, name) -> Pod document.
    pods: BTreeMap<(String, String), Value>,
    /// (namespace, Service) -> (its ports as in the Service's spec, endpoints).
    services: BTreeMap<(String, String), (Vec<Value>, Vec<Endpoint>)>,
    /// Answer 403 to every authorised request (a service account without the RBAC).
    forbidden: bool,
    seen: Vec<Seen>,
}

/// The Kubernetes API server stand-in (see the module documentation).
pub struct KubeApi {
    server: Server,
    state: Arc<Mutex<KubeState>>,
    ca_pem: String,
    token: String,
}

impl KubeApi {
    /// Starts it on `bind` (the box network's gateway) with a new CA, a server certificate for
    /// that address and `kubernetes.default.svc`, and a random bearer token.
    pub fn start(bind: &str) -> Result<KubeApi> {
        let ip: IpAddr = bind
            .parse()
            .map_err(|e| Error::Usage(format!("KubeApi::start({bind:?}): {e}")))?;
        let tls_err =
            |e: &dyn std::fmt::Display| Error::Usage(format!("the API server's TLS: {e}"));
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err(&e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ochopod-box-cluster-ca");
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(|e| tls_err(&e))?)
                .map_err(|e| tls_err(&e))?;
        let key = KeyPair::generate().map_err(|e| tls_err(&e))?;
        let mut params =
            CertificateParams::new(vec![bind.to_string(), "kubernetes.default.svc".to_string()])
                .map_err(|e| tls_err(&e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let cert = params.signed_by(&key, &ca).map_err(|e| tls_err(&e))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .map_err(|e| tls_err(&e))?;
        let token = format!("box-token-{}", uuid_ish());
        let state = Arc::new(Mutex::new(KubeState::default()));
        let shared = state.clone();
        let want = format!("Bearer {token}");
        let handler: Handler = Arc::new(move |method, pq, peer, headers, _body| {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
            st.seen.push(Seen {
                method: method.to_string(),
                path: pq.to_string(),
                peer,
                authorised: auth == want,
            });
            if auth != want {
                return status(401, "Unauthorized", "Unauthorized");
            }
            if st.forbidden {
                return status(
                    403,
                    "Forbidden",
                    "forbidden: User \"system:serviceaccount:demo:ochopod\" cannot get this resource",
                );
            }
            if method != Method::GET {
                return status(405, "MethodNotAllowed", "only GET is served here");
            }
            kube_route(&st, pq)
        });
        let server = Server::start(ip, Some(Arc::new(config)), handler)?;
        Ok(KubeApi {
            server,
            state,
            ca_pem: ca.pem(),
            token,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The cluster CA (PEM), as the kubelet mounts it in `ca.crt`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The service account's bearer token, as the kubelet mounts it in `token`.
    pub fn token(&self) -> &str {
        &self.token
    }

    fn state(&self) -> std::sync::MutexGuard<'_, KubeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a Pod document (namespace and name from its metadata).
    pub fn put_pod(&self, pod: Value) {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.state().pods.insert((ns, name), pod);
    }

    /// Removes a Pod (the pod was deleted).
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.state()
            .pods
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Sets a Service's ports (as in its spec) and endpoints.
    pub fn set_service(
        &self,
        namespace: &str,
        name: &str,
        ports: Vec<Value>,
        endpoints: Vec<Endpoint>,
    ) {
        self.state().services.insert(
            (namespace.to_string(), name.to_string()),
            (ports, endpoints),
        );
    }

    /// From now on, every authorised request is answered 403 (or no longer, with `false`).
    pub fn set_forbidden(&self, forbidden: bool) {
        self.state().forbidden = forbidden;
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }
}

fn kube_route(st: &KubeState, pq: &str) -> Answer {
    let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
    let query = query.replace("%2F", "/").replace("%3D", "=");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name] => {
            match st.pods.get(&(ns.to_string(), name.to_string())) {
                Some(pod) => (StatusCode::OK, pod.to_string()),
                None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
            }
        }
        ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices"] => {
            let service = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("labelSelector=kubernetes.io/service-name="));
            let items: Vec<Value> = match service.and_then(|svc| {
                st.services
                    .get(&(ns.to_string(), svc.to_string()))
                    .map(|s| (svc, s))
            }) {
                Some((svc, (ports, endpoints))) => vec![json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": format!("{svc}-box01"),
                        "namespace": ns,
                        "labels": {"kubernetes.io/service-name": svc},
                    },
                    "addressType": "IPv4",
                    "ports": ports.iter().map(|p| json!({
                        "name": p["name"], "port": p.get("targetPort").unwrap_or(&p["port"]), "protocol": p["protocol"],
                    })).collect::<Vec<_>>(),
                    "endpoints": endpoints.iter().map(|e| json!({
                        "addresses": [e.ip], "conditions": {"ready": e.ready, "serving": e.ready},
                    })).collect::<Vec<_>>(),
                })],
                None => vec![],
            };
            let list = json!({
                "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": "1"}, "items": items,
            });
            (StatusCode::OK, list.to_string())
        }
        ["api", "v1", "namespaces", ns, "endpoints", svc] => {
            match st.services.get(&(ns.to_string(), svc.to_string())) {
                Some((ports, endpoints)) => {
                    let addr = |ready: bool| -> Vec<Value> {
                        endpoints
                            .iter()
                            .filter(|e| e.ready == ready)
                            .map(|e| json!({"ip": e.ip}))
                            .collect()
                    };
                    let mut subset = json!({
                        "ports": ports.iter().map(|p| json!({
                            "name": p["name"], "port": p.get("targetPort").unwrap_or(&p["port"]), "protocol": p["protocol"],
                        })).collect::<Vec<_>>(),
                    });
                    if !addr(true).is_empty() {
                        subset["addresses"] = Value::Array(addr(true));
                    }
                    if !addr(false).is_empty() {
                        subset["notReadyAddresses"] = Value::Array(addr(false));
                    }
                    let doc = json!({
                        "kind": "Endpoints", "apiVersion": "v1",
                        "metadata": {"name": svc, "namespace": ns},
                        "subsets": [subset],
                    });
                    (StatusCode::OK, doc.to_string())
                }
                None => status(404, "NotFound", &format!("endpoints \"{svc}\" not found")),
            }
        }
        _ => status(
            404,
            "NotFound",
            &format!("{path} is not served by this stand-in"),
        ),
    }
}

/// A short random hex string (token and uid material; not a secret of any real system).
fn uuid_ish() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", h.finish())
}

/// What the instance metadata service says about one host (EC2 instance).
#[derive(Clone, Debug)]
pub struct Instance {
    /// `local-ipv4`.
    pub private_ip: String,
    /// `public-ipv4` (`None`: 404, as in a private subnet).
    pub public_ip: Option<String>,
    /// `instance-id`.
    pub instance_id: String,
}

#[derive(Default)]
struct ImdsState {
    /// Caller address -> the host (instance) it runs on.
    hosts: BTreeMap<IpAddr, Instance>,
    /// Session tokens handed out, with the caller they were handed to.
    tokens: BTreeMap<String, IpAddr>,
    seen: Vec<Seen>,
}

/// The EC2 instance metadata stand-in (see the module documentation).
pub struct Imds {
    server: Server,
    state: Arc<Mutex<ImdsState>>,
}

impl Imds {
    /// Starts it on `bind` (the box network's gateway).
    pub fn start(bind: &str) -> Result<Imds> {
        let ip: IpAddr = bind
            .parse()
            .map_err(|e| Error::Usage(format!("Imds::start({bind:?}): {e}")))?;
        let state = Arc::new(Mutex::new(ImdsState::default()));
        let shared = state.clone();
        let handler: Handler = Arc::new(move |method, pq, peer, headers, _body| {
            let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
            let text = |code: StatusCode, body: &str| (code, body.to_string());
            if pq == "/latest/api/token" {
                st.seen.push(Seen {
                    method: method.to_string(),
                    path: pq.to_string(),
                    peer,
                    authorised: true,
                });
                if method != Method::PUT {
                    return text(StatusCode::METHOD_NOT_ALLOWED, "");
                }
                if headers
                    .get("x-aws-ec2-metadata-token-ttl-seconds")
                    .is_none()
                {
                    return text(StatusCode::BAD_REQUEST, "");
                }
                let token = format!("imds-{}", uuid_ish());
                st.tokens.insert(token.clone(), peer);
                return text(StatusCode::OK, &token);
            }
            let token = headers
                .get("x-aws-ec2-metadata-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let authorised = st.tokens.get(token) == Some(&peer);
            st.seen.push(Seen {
                method: method.to_string(),
                path: pq.to_string(),
                peer,
                authorised,
            });
            if !authorised {
                // IMDSv2 only: no (or someone else's) token is 401.
                return text(StatusCode::UNAUTHORIZED, "");
            }
            let Some(host) = st.hosts.get(&peer) else {
                return text(StatusCode::NOT_FOUND, "");
            };
            match pq.strip_prefix("/latest/meta-data/") {
                Some("local-ipv4") => text(StatusCode::OK, &host.private_ip),
                Some("instance-id") => text(StatusCode::OK, &host.instance_id),
                Some("public-ipv4") => match &host.public_ip {
                    Some(ip) => text(StatusCode::OK, ip),
                    None => text(StatusCode::NOT_FOUND, ""),
                },
                _ => text(StatusCode::NOT_FOUND, ""),
            }
        });
        let server = Server::start(ip, None, handler)?;
        Ok(Imds { server, state })
    }

    /// Its URL (`AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Callers from `caller` (a container's address) run on `host`.
    pub fn place(&self, caller: &str, host: Instance) -> Result<()> {
        let ip: IpAddr = caller
            .parse()
            .map_err(|e| Error::Usage(format!("Imds::place({caller:?}): {e}")))?;
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hosts
            .insert(ip, host);
        Ok(())
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .clone()
    }
}
