//! The typed control-plane client: one method per route, with connection reuse.

use crate::{Error, ExecRequest, Reply};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ochopod_core::wire::{Epoch, Info, Task, EPOCH_HEADER};
use serde_json::Value;
use std::time::Duration;

/// Largest reply body the client reads (16 MiB).
const MAX_REPLY: usize = 16 * 1024 * 1024;

/// A client of pods' control planes.
///
/// Cheap to clone (clones share one connection pool): idle connections are kept per pod for
/// 30 s and reused. Every call takes the pod's `ip:port` and a timeout covering the whole
/// exchange (connect, send, receive the full reply). When built with a token, routes that
/// need one (control, reset, exec) send `Authorization: Bearer <token>`.
#[derive(Clone, Debug)]
pub struct Client {
    http: Http,
    auth: Auth,
}

#[derive(Clone, Debug)]
enum Http {
    Plain(hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>),
    #[cfg(feature = "tls")]
    Tls(
        hyper_util::client::legacy::Client<
            hyper_rustls::HttpsConnector<HttpConnector>,
            Full<Bytes>,
        >,
    ),
}

impl Http {
    fn scheme(&self) -> &'static str {
        match self {
            Http::Plain(_) => "http",
            #[cfg(feature = "tls")]
            Http::Tls(_) => "https",
        }
    }

    async fn request(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        match self {
            Http::Plain(c) => c.request(req).await,
            #[cfg(feature = "tls")]
            Http::Tls(c) => c.request(req).await,
        }
    }
}

fn builder() -> hyper_util::client::legacy::Builder {
    let mut b = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    b
}

fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

#[derive(Clone, Debug)]
enum Auth {
    None,
    Bearer(HeaderValue),
    Invalid(String),
}

impl Client {
    /// A client sending `token` (when `Some` and not empty) on the routes that need it.
    ///
    /// A token that cannot be an HTTP header value (control characters) makes those calls
    /// fail with [`Error::Token`].
    pub fn new(token: Option<String>) -> Self {
        Client {
            http: Http::Plain(builder().build(connector())),
            auth: Self::auth(token),
        }
    }

    /// A client sending `token` as [`Client::new`] does, speaking TLS to every pod when `tls`
    /// is given (feature `tls`): the pods' certificates must be signed by its CA, and it
    /// presents its own certificate to pods that ask for one (mutual TLS). The certificate
    /// files are read again when they change.
    ///
    /// Fails with [`Error::Tls`] when a file cannot be used or the feature is off.
    pub fn with_tls(token: Option<String>, tls: Option<&crate::ClientTls>) -> Result<Self, Error> {
        let Some(tls) = tls else {
            return Ok(Self::new(token));
        };
        #[cfg(feature = "tls")]
        {
            let cfg = crate::tls::imp::client_config(tls)?;
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(cfg)
                .https_only();
            let b = match &tls.server_name {
                Some(name) => {
                    let name =
                        rustls_pki_types::ServerName::try_from(name.clone()).map_err(|_| {
                            Error::Tls(format!(
                                "bad TLS server name {name:?}: give a DNS name or an IP address"
                            ))
                        })?;
                    b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
                }
                None => b,
            };
            let mut http = connector();
            http.enforce_http(false);
            let https = b.enable_http1().wrap_connector(http);
            Ok(Client {
                http: Http::Tls(builder().build(https)),
                auth: Self::auth(token),
            })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = tls;
            Err(Error::Tls(crate::tls::imp::MISSING.to_string()))
        }
    }

    fn auth(token: Option<String>) -> Auth {
        match token.filter(|t| !t.is_empty()) {
            None => Auth::None,
            Some(t) => match HeaderValue::from_str(&format!("Bearer {t}")) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Auth::Bearer(v)
                }
                Err(_) => Auth::Invalid(
                    "the token contains characters not allowed in an HTTP header; use printable \
                     ASCII"
                        .to_string(),
                ),
            },
        }
    }

    /// `POST /control/<task>[/<timeout_secs>]` with the leader's epoch and a pre-serialized
    /// JSON body (empty for none). `timeout_secs == 0` leaves the timeout out of the URL.
    ///
    /// Any status code is a [`Reply`] (the leader reads 406, 408, 409, 410, 500 ...), so `Ok`
    /// does not mean the task succeeded: check [`Reply::is_success`]. A body that is not JSON
    /// is returned as a JSON string.
    pub async fn control(
        &self,
        addr: &str,
        task: Task,
        timeout_secs: u64,
        epoch: Option<Epoch>,
        body: Bytes,
        request_timeout: Duration,
    ) -> Result<Reply, Error> {
        let path = if timeout_secs == 0 {
            format!("/control/{task}")
        } else {
            format!("/control/{task}/{timeout_secs}")
        };
        let (code, bytes) = self
            .send(
                addr,
                Method::POST,
                &path,
                true,
                epoch,
                body,
                request_timeout,
            )
            .await?;
        Ok(to_reply(code, &bytes))
    }

    /// Sends one control task to many pods, at most `concurrency` at a time (1 = one after the
    /// other, in order), reusing connections. Returns one result per target, in input order;
    /// as with [`Client::control`], each `Ok` may hold a failed [`Reply`].
    #[allow(clippy::too_many_arguments)]
    pub async fn control_all<K>(
        &self,
        targets: impl IntoIterator<Item = (K, String)>,
        task: Task,
        timeout_secs: u64,
        epoch: Option<Epoch>,
        body: Bytes,
        request_timeout: Duration,
        concurrency: usize,
    ) -> Vec<(K, Result<Reply, Error>)> {
        futures::stream::iter(targets)
            .map(|(key, addr)| {
                let body = body.clone();
                async move {
                    let r = self
                        .control(&addr, task, timeout_secs, epoch, body, request_timeout)
                        .await;
                    (key, r)
                }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await
    }

    /// `GET /info`, as JSON. A non-2xx answer is [`Error::Status`].
    pub async fn info(&self, addr: &str, timeout: Duration) -> Result<Value, Error> {
        let bytes = self.read_only(addr, "/info", timeout).await?;
        decode(addr, "/info", &bytes)
    }

    /// `GET /info`, decoded into the wire type [`Info`].
    pub async fn pod_info(&self, addr: &str, timeout: Duration) -> Result<Info, Error> {
        let bytes = self.read_only(addr, "/info", timeout).await?;
        decode(addr, "/info", &bytes)
    }

    /// `GET /log`: the last lines of the pod log.
    pub async fn log(&self, addr: &str, timeout: Duration) -> Result<Vec<String>, Error> {
        let bytes = self.read_only(addr, "/log", timeout).await?;
        decode(addr, "/log", &bytes)
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self, addr: &str, timeout: Duration) -> Result<String, Error> {
        let bytes = self.read_only(addr, "/metrics", timeout).await?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::Decode {
            addr: addr.to_string(),
            route: "/metrics".to_string(),
            reason: "not UTF-8 text".to_string(),
        })
    }

    /// `GET /healthz`: `true` on 200, `false` on 503.
    pub async fn healthz(&self, addr: &str, timeout: Duration) -> Result<bool, Error> {
        self.probe(addr, "/healthz", timeout).await
    }

    /// `GET /readyz`: `true` on 200, `false` on 503.
    pub async fn readyz(&self, addr: &str, timeout: Duration) -> Result<bool, Error> {
        self.probe(addr, "/readyz", timeout).await
    }

    /// `POST /reset`: the pod drops its ZooKeeper session and registers again.
    ///
    /// Any status code is a [`Reply`] (a 401 for a missing token too): check
    /// [`Reply::is_success`].
    pub async fn reset(&self, addr: &str, timeout: Duration) -> Result<Reply, Error> {
        let (code, bytes) = self
            .send(
                addr,
                Method::POST,
                "/reset",
                true,
                None,
                Bytes::new(),
                timeout,
            )
            .await?;
        Ok(to_reply(code, &bytes))
    }

    /// `POST /control/signal/<timeout>` with `body`: runs the pod's signal hook.
    ///
    /// The pod answers 408 once `timeout` passes; the client waits 1.25 x `timeout` for it.
    ///
    /// Any status code is a [`Reply`]: a failed hook answers 500 and a dead pod 410, and both
    /// come back as `Ok`. Check [`Reply::is_success`] (or [`Reply::error_message`]).
    pub async fn signal(
        &self,
        addr: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        let path = format!("/control/signal/{}", timeout.as_secs_f64());
        let body = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        let (code, bytes) = self
            .send(
                addr,
                Method::POST,
                &path,
                true,
                None,
                body,
                timeout.mul_f64(1.25),
            )
            .await?;
        Ok(to_reply(code, &bytes))
    }

    /// `POST /exec`: runs one of the pod's tools with arguments and uploaded files.
    ///
    /// Any status code is a [`Reply`] (an unknown tool answers 404): check
    /// [`Reply::is_success`]. The tool's own exit code is the body's `code`.
    pub async fn exec(
        &self,
        addr: &str,
        req: &ExecRequest,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        req.validate()?;
        let body = Bytes::from(req.to_json());
        let (code, bytes) = self
            .send(addr, Method::POST, "/exec", true, None, body, timeout)
            .await?;
        Ok(to_reply(code, &bytes))
    }

    async fn probe(&self, addr: &str, route: &str, timeout: Duration) -> Result<bool, Error> {
        let (code, bytes) = self
            .send(addr, Method::GET, route, false, None, Bytes::new(), timeout)
            .await?;
        match code {
            StatusCode::OK => Ok(true),
            StatusCode::SERVICE_UNAVAILABLE => Ok(false),
            other => Err(status_error(addr, route, other, &bytes)),
        }
    }

    async fn read_only(&self, addr: &str, route: &str, timeout: Duration) -> Result<Bytes, Error> {
        let (code, bytes) = self
            .send(addr, Method::GET, route, false, None, Bytes::new(), timeout)
            .await?;
        if code.is_success() {
            Ok(bytes)
        } else {
            Err(status_error(addr, route, code, &bytes))
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        addr: &str,
        method: Method,
        route: &str,
        auth: bool,
        epoch: Option<Epoch>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), Error> {
        let uri = uri(self.http.scheme(), addr, route)?;
        let mut builder = Request::builder().method(method).uri(uri);
        if auth {
            match &self.auth {
                Auth::None => {}
                Auth::Bearer(v) => builder = builder.header(header::AUTHORIZATION, v.clone()),
                Auth::Invalid(why) => return Err(Error::Token(why.clone())),
            }
        }
        if let Some(epoch) = epoch {
            builder = builder.header(EPOCH_HEADER, epoch.to_string());
        }
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let req = builder.body(Full::new(body)).map_err(|e| Error::Address {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| Error::Transport {
                addr: addr.to_string(),
                route: route.to_string(),
                reason: explain(self.http.scheme(), chain(&e)),
                source: Box::new(e),
            })?;
            let code = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_REPLY)
                .collect()
                .await
                .map_err(|e| Error::Decode {
                    addr: addr.to_string(),
                    route: route.to_string(),
                    reason: format!("reading the body failed: {e}"),
                })?
                .to_bytes();
            Ok((code, bytes))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    addr: addr.to_string(),
                    route: route.to_string(),
                    after: timeout,
                })
            })
    }
}

/// Adds the fix to the TLS failures a pod's refusal shows up as.
fn explain(scheme: &str, reason: String) -> String {
    if scheme != "https" {
        return reason;
    }
    let hint = if reason.contains("CertificateRequired") {
        "the pod asks for a client certificate: give one signed by the cluster's CA \
         (--tls-cert and --tls-key, or ochopod_tls_cert and ochopod_tls_key)"
    } else if reason.contains("alert") {
        "the pod refused this client's certificate (expired, or not signed by the cluster's \
         CA): give a valid one signed by the cluster's CA"
    } else if reason.contains("invalid peer certificate") {
        "the pod's certificate is not one this client trusts: check the CA file (--tls-ca or \
         ochopod_tls_ca) and the name the certificate carries (--tls-server-name)"
    } else if reason.contains("corrupt message") || reason.contains("InvalidContentType") {
        "the pod does not speak TLS: use its plain-HTTP address without --tls-ca"
    } else {
        return reason;
    };
    format!("{reason} ({hint})")
}

fn uri(scheme: &str, addr: &str, route: &str) -> Result<Uri, Error> {
    let bad = |reason: &str| Error::Address {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let authority: Authority = addr.parse().map_err(|_| bad("not a host:port"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials are not allowed in the address"));
    }
    if authority.port_u16().is_none() {
        return Err(bad("the port is missing"));
    }
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(route)
        .build()
        .map_err(|e| bad(&e.to_string()))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn to_reply(code: StatusCode, bytes: &[u8]) -> Reply {
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    };
    Reply {
        code: code.as_u16(),
        body,
    }
}

fn status_error(addr: &str, route: &str, code: StatusCode, bytes: &[u8]) -> Error {
    let error = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => match map.get("error") {
            Some(Value::String(s)) => s.clone(),
            _ => Value::Object(map).to_string(),
        },
        _ => String::from_utf8_lossy(bytes).into_owned(),
    };
    Error::Status {
        addr: addr.to_string(),
        route: route.to_string(),
        code: code.as_u16(),
        error,
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    addr: &str,
    route: &str,
    bytes: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode {
        addr: addr.to_string(),
        route: route.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            uri("http", "127.0.0.1:8080", "/info").unwrap().to_string(),
            "http://127.0.0.1:8080/info"
        );
        for (bad, why) in [
            ("127.0.0.1", "port is missing"),
            ("u:p@1.2.3.4:80", "credentials"),
            ("1.2.3.4:80/x", "not a host:port"),
            ("", "not a host:port"),
        ] {
            let err = uri("http", bad, "/info").unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn replies_decode_leniently() {
        assert_eq!(to_reply(StatusCode::OK, b"").body, Value::Null);
        assert_eq!(to_reply(StatusCode::OK, b"{\"a\":1}").body["a"], 1);
        assert_eq!(to_reply(StatusCode::GONE, b"dead").body, "dead");
        assert_eq!(to_reply(StatusCode::GONE, b"dead").code, 410);
    }
}
