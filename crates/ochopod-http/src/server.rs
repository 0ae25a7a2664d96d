//! The control server: the [`Handler`] the runtime implements, the [`Router`] that validates
//! requests and calls it, and [`serve`], hyper-util's graceful accept loop around them.

use crate::{Error, ExecRequest};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ochopod_core::wire::{Epoch, Task, EPOCH_HEADER};
use serde_json::Value;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A handler's answer: an HTTP status code and a JSON body.
///
/// A non-2xx reply whose body is `null` is sent as `{"error": "<reason phrase>"}`; a code
/// outside 200..=599 is sent as a 500 naming the bad code.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// HTTP status code (200 ok, 406 soft failure, 409 stale epoch, 410 dead, 500 hook failure...).
    pub code: u16,
    /// JSON body.
    pub body: Value,
}

impl Reply {
    /// A 200 reply with `body`.
    pub fn ok(body: Value) -> Self {
        Reply { code: 200, body }
    }

    /// A reply `{"error": message}` with `code`.
    pub fn error(code: u16, message: impl Into<String>) -> Self {
        Reply {
            code,
            body: error_json(message.into()),
        }
    }

    /// Whether the code is 2xx. The client's acting calls ([`Client::control`],
    /// [`Client::signal`], [`Client::reset`], [`Client::exec`]) return every answer as a
    /// `Reply`, a failure too: check this before trusting the body.
    ///
    /// [`Client::control`]: crate::Client::control
    /// [`Client::signal`]: crate::Client::signal
    /// [`Client::reset`]: crate::Client::reset
    /// [`Client::exec`]: crate::Client::exec
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The reason of a failed reply: the body's `error` string, else the body as text; `None`
    /// for a 2xx reply.
    pub fn error_message(&self) -> Option<String> {
        if self.is_success() {
            return None;
        }
        Some(match self.body.get("error").and_then(Value::as_str) {
            Some(e) => e.to_string(),
            None => self.body.to_string(),
        })
    }
}

/// A validated `/control/<task>[/<timeout>]` request.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlRequest {
    /// The task.
    pub task: Task,
    /// The leader's epoch, from the [`EPOCH_HEADER`] header (absent for 1.x leaders and tools).
    pub epoch: Option<Epoch>,
    /// The timeout of the URL, when given; the server answers 408 once it passes, and the
    /// handler turns it into the pod machine's deadline on its own clock (a task still queued
    /// then is dropped, not run).
    pub timeout: Option<Duration>,
    /// The JSON body; `Null` when the body is empty.
    pub body: Value,
}

impl ControlRequest {
    /// The body typed for the task, as the pod machine takes it (see [`crate::control_input`]).
    pub fn input(&self) -> ochopod_core::pod::ControlInput {
        crate::control_input(self.task, self.body.clone())
    }
}

/// What the runtime provides to the control server.
///
/// The synchronous methods serve the read-only routes and must return quickly (no blocking, no
/// lock held for long): they are called on the connection's task for every request. The async
/// methods return futures that the server may drop (a control request that times out): run the
/// actual work in a task of your own and await its result.
pub trait Handler: Send + Sync + 'static {
    /// The `/info` document.
    fn info(&self) -> Value;
    /// The last lines of the pod log (`/log`).
    fn log(&self) -> Vec<String>;
    /// Liveness of the agent (`/healthz`: 200 when true, 503 otherwise).
    fn healthy(&self) -> bool;
    /// Readiness: configured and process running (`/readyz`: 200 when true, 503 otherwise).
    fn ready(&self) -> bool;
    /// Prometheus text exposition format (`/metrics`).
    fn metrics(&self) -> String;
    /// Runs a control task.
    fn control(&self, req: ControlRequest) -> BoxFuture<'static, Reply>;
    /// Drops the ZooKeeper session and registers again (`/reset`).
    fn reset(&self) -> BoxFuture<'static, Reply>;
    /// Runs a tool (`/exec`).
    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Reply>;
}

/// Settings of the control server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Shared token required (`Authorization: Bearer <token>`) by `/control/*`, `/reset` and
    /// `/exec`. `None` or an empty string: no token required.
    pub token: Option<String>,
    /// Largest accepted request body, in bytes (default 4 MiB); larger bodies get 413.
    pub max_body: usize,
    /// How long a graceful shutdown waits for open requests before dropping their connections
    /// (default 5 s).
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open waiting for the next request (default 30 s).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body once its headers are in (default
    /// 30 s); slower bodies get `408` and the connection is closed.
    pub body_read_timeout: Duration,
    /// A body the server refuses (too large, or a request refused before its body is read) is
    /// read and discarded before the answer, so a client still sending it (Python's urllib
    /// sends the whole body before reading) reads the answer instead of a broken pipe, as
    /// nginx's lingering close does. Bounded: at most this many bytes in all (default 16 MiB;
    /// a body declared larger is not read at all), for at most
    /// [`ServerConfig::drain_timeout`]; the connection is closed after the answer either way.
    pub drain_max: usize,
    /// How long discarding a refused body may take (default 5 s).
    pub drain_timeout: Duration,
    /// Connections served at once (default 512). Beyond, a new connection is answered `503`
    /// and closed at once, so slow or idle clients cannot hold the control port; every
    /// connection is bounded in time by the read timeouts above.
    pub max_connections: usize,
    /// TLS (default none: plain HTTP). Needs the `tls` feature.
    pub tls: Option<crate::ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            max_body: 4 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            drain_max: 16 * 1024 * 1024,
            drain_timeout: Duration::from_secs(5),
            max_connections: 512,
            tls: None,
        }
    }
}

/// Marks a request whose connection presented a client certificate the server verified.
///
/// [`serve`] inserts it in the request's extensions; with a client CA
/// ([`ServerTls::client_ca`](crate::ServerTls::client_ca)) the [`Router`] refuses the acting
/// routes (403) to requests without it. A runtime embedding the router in its own TLS server
/// inserts it the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCertified;

/// The header of 1.x's `/exec`: the tool's command line, `TOOL ARG ARG`.
pub const SHELL_HEADER: &str = "x-shell";

/// Longest timeout accepted in `/control/<task>/<timeout>`, in seconds (one day).
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

const ROUTES: &str =
    "/info, /log, /healthz, /readyz, /metrics, /reset, /exec, /control/<task>[/<timeout>]";

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static PROMETHEUS: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
static GET_POST: HeaderValue = HeaderValue::from_static("GET, POST");
static POST: HeaderValue = HeaderValue::from_static("POST");
static BEARER: HeaderValue = HeaderValue::from_static("Bearer");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Info,
    Log,
    Healthz,
    Readyz,
    Metrics,
    Reset,
    Exec,
    Control {
        task: &'a str,
        timeout: Option<&'a str>,
    },
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        let path = path.strip_prefix('/')?;
        let path = path.strip_suffix('/').unwrap_or(path);
        Some(match path {
            "info" => Route::Info,
            "log" => Route::Log,
            "healthz" => Route::Healthz,
            "readyz" => Route::Readyz,
            "metrics" => Route::Metrics,
            "reset" => Route::Reset,
            "exec" => Route::Exec,
            _ => {
                let rest = path.strip_prefix("control/")?;
                let mut parts = rest.split('/');
                let task = parts.next().filter(|t| !t.is_empty())?;
                let timeout = parts.next();
                if parts.next().is_some() {
                    return None;
                }
                Route::Control { task, timeout }
            }
        })
    }

    fn read_only(self) -> bool {
        matches!(
            self,
            Route::Info | Route::Log | Route::Healthz | Route::Readyz | Route::Metrics
        )
    }
}

/// The request router: validates a request, calls the [`Handler`] and builds the response.
///
/// [`serve`] runs it on every connection; it is public so a runtime can embed the control
/// plane in its own server, and so tests can drive it without sockets. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    handler: Arc<dyn Handler>,
    token: Option<Box<[u8]>>,
    max_body: usize,
    body_read_timeout: Duration,
    drain_max: usize,
    drain_timeout: Duration,
    /// Acting routes need [`PeerCertified`].
    mtls: bool,
}

impl Router {
    /// A router calling `handler` with the limits and token of `config`.
    pub fn new(handler: Arc<dyn Handler>, config: &ServerConfig) -> Self {
        let token = config
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| t.as_bytes().into());
        Router {
            inner: Arc::new(RouterInner {
                handler,
                token,
                max_body: config.max_body,
                body_read_timeout: config.body_read_timeout,
                drain_max: config.drain_max,
                drain_timeout: config.drain_timeout,
                mtls: config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            }),
        }
    }

    /// Answers one request. Never panics, even when the handler does (that is a 500).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let body = std::pin::pin!(body);
        let path = parts.uri.path();
        let Some(route) = Route::parse(path) else {
            let resp = error(
                StatusCode::NOT_FOUND,
                format!("no route {path:?}: use one of {ROUTES}"),
            );
            return self.refuse(&parts.headers, body, resp).await;
        };
        let method_ok =
            parts.method == Method::POST || (route.read_only() && parts.method == Method::GET);
        if !method_ok {
            let allow = if route.read_only() { &GET_POST } else { &POST };
            let mut resp = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {} is not allowed on {path}: use {}",
                    parts.method,
                    allow.to_str().unwrap_or("POST")
                ),
            );
            resp.headers_mut().insert(header::ALLOW, allow.clone());
            return self.refuse(&parts.headers, body, resp).await;
        }
        if !route.read_only()
            && self.inner.mtls
            && parts.extensions.get::<PeerCertified>().is_none()
        {
            let resp = error(
                StatusCode::FORBIDDEN,
                format!(
                    "{path} needs a client certificate signed by the cluster's CA and this \
                     connection presented none: give the caller one (ochopod_tls_cert and \
                     ochopod_tls_key, or --tls-cert and --tls-key)"
                ),
            );
            return self.refuse(&parts.headers, body, resp).await;
        }
        if !route.read_only() && !self.authorized(&parts.headers) {
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                format!("{path} needs the pod's token: send `Authorization: Bearer <token>`"),
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, BEARER.clone());
            return self.refuse(&parts.headers, body, resp).await;
        }
        let bytes = match self.read_body(&parts.headers, body).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let h = &self.inner.handler;
        match route {
            Route::Info => match guard_sync(|| h.info()) {
                Some(v) => json(StatusCode::OK, &v),
                None => panicked("/info"),
            },
            Route::Log => match guard_sync(|| h.log()) {
                Some(lines) => json(StatusCode::OK, &lines),
                None => panicked("/log"),
            },
            Route::Healthz => match guard_sync(|| h.healthy()) {
                Some(true) => json(StatusCode::OK, &serde_json::json!({"healthy": true})),
                Some(false) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"healthy": false, "error": "the agent is not healthy"}),
                ),
                None => panicked("/healthz"),
            },
            Route::Readyz => match guard_sync(|| h.ready()) {
                Some(true) => json(StatusCode::OK, &serde_json::json!({"ready": true})),
                Some(false) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({
                        "ready": false,
                        "error": "not ready: the pod is not configured or its process is not running"
                    }),
                ),
                None => panicked("/readyz"),
            },
            Route::Metrics => match guard_sync(|| h.metrics()) {
                Some(text) => {
                    let mut resp = Response::new(Full::new(Bytes::from(text)));
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, PROMETHEUS.clone());
                    resp
                }
                None => panicked("/metrics"),
            },
            Route::Reset => reply(guard_async(|| h.reset()).await),
            Route::Exec => match parts.headers.get(SHELL_HEADER) {
                Some(line) => self.exec_1x(line, &parts.headers, &bytes).await,
                None => match ExecRequest::from_json(&bytes) {
                    Ok(req) => reply(guard_async(|| h.exec(req)).await),
                    Err(msg) => error(StatusCode::BAD_REQUEST, msg),
                },
            },
            Route::Control { task, timeout } => {
                match control_request(task, timeout, &parts.headers, &bytes) {
                    Ok(req) => self.control(req).await,
                    Err(msg) => error(StatusCode::BAD_REQUEST, msg),
                }
            }
        }
    }

    /// `/exec` in the 1.x form: an unknown tool is 404 `{}`; anything else is 200
    /// `{"code": N, "stdout": [lines]}`, a refused upload or a failed run included (code 1 and
    /// the reason as the only line), as 1.x answers.
    async fn exec_1x(
        &self,
        line: &HeaderValue,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response<Full<Bytes>> {
        let line = String::from_utf8_lossy(line.as_bytes());
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let failed = |why: String| {
            json(
                StatusCode::OK,
                &serde_json::json!({ "code": 1, "stdout": [why] }),
            )
        };
        let req = match ExecRequest::from_shell(&line, content_type, body) {
            Ok(req) => req,
            Err(why) => return failed(why),
        };
        let h = &self.inner.handler;
        let r = guard_async(|| h.exec(req)).await;
        match r.code {
            200 => json(
                StatusCode::OK,
                &serde_json::json!({
                    "code": r.body.get("code").cloned().unwrap_or(Value::from(1)),
                    "stdout": r.body.get("lines").cloned().unwrap_or(Value::Array(vec![])),
                }),
            ),
            404 => json(StatusCode::NOT_FOUND, &serde_json::json!({})),
            _ => failed(
                r.body
                    .get("error")
                    .and_then(Value::as_str)
                    .map_or_else(|| r.body.to_string(), str::to_string),
            ),
        }
    }

    async fn control(&self, req: ControlRequest) -> Response<Full<Bytes>> {
        let h = &self.inner.handler;
        let task = req.task;
        match req.timeout {
            None => reply(guard_async(|| h.control(req)).await),
            Some(t) => match tokio::time::timeout(t, guard_async(|| h.control(req))).await {
                Ok(r) => reply(r),
                Err(_) => error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "control task `{task}` did not complete within {}s (a task that had not \
                         started is dropped)",
                        t.as_secs_f64()
                    ),
                ),
            },
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.inner.token else {
            return true;
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
        else {
            return false;
        };
        constant_time_eq(given, expected)
    }

    /// Reads the whole body: at most `max_body` bytes (`413` beyond, the rest discarded
    /// first), within `body_read_timeout` (`408`).
    async fn read_body<B>(
        &self,
        headers: &HeaderMap,
        mut body: Pin<&mut B>,
    ) -> Result<Bytes, Response<Full<Bytes>>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let max = self.inner.max_body;
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the {max} bytes this pod accepts"),
            )
        };
        if body.is_end_stream() {
            return Ok(Bytes::new());
        }
        if declared_length(headers).is_some_and(|n| n > max as u64) {
            return Err(self.refuse(headers, body, too_large()).await);
        }
        enum Cut {
            Over(u64),
            Bad(String),
        }
        let read = async {
            let mut buf: Vec<u8> = Vec::new();
            loop {
                match body.frame().await {
                    None => return Ok(Bytes::from(buf)),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            if buf.len() + data.len() > max {
                                return Err(Cut::Over((buf.len() + data.len()) as u64));
                            }
                            buf.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => return Err(Cut::Bad(e.into().to_string())),
                }
            }
        };
        match tokio::time::timeout(self.inner.body_read_timeout, read).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(Cut::Over(seen))) => {
                let drained = self.drain(headers, body, seen).await;
                Err(closing(too_large(), drained))
            }
            Ok(Err(Cut::Bad(e))) => Err(closing(
                error(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                ),
                false,
            )),
            Err(_) => Err(closing(
                error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {:?}: send it at once",
                        self.inner.body_read_timeout
                    ),
                ),
                false,
            )),
        }
    }

    /// Answers `resp` to a request whose body will not be used: the body is discarded first
    /// (see [`ServerConfig::drain_max`]), then the connection closes.
    async fn refuse<B>(
        &self,
        headers: &HeaderMap,
        body: Pin<&mut B>,
        resp: Response<Full<Bytes>>,
    ) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
    {
        if body.is_end_stream() {
            return resp;
        }
        let drained = self.drain(headers, body, 0).await;
        closing(resp, drained)
    }

    /// Reads and discards the rest of `body` (`seen` bytes of it already read), within the
    /// bounds of [`ServerConfig::drain_max`] and [`ServerConfig::drain_timeout`]. Not for a
    /// client that waits for `100 Continue`: it has not sent the body, and is told at once.
    /// Returns whether the body was read to its end.
    async fn drain<B>(&self, headers: &HeaderMap, mut body: Pin<&mut B>, seen: u64) -> bool
    where
        B: Body<Data = Bytes>,
    {
        let limit = self.inner.drain_max as u64;
        let expects_continue = headers
            .get(header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects_continue || declared_length(headers).is_some_and(|n| n > limit) {
            return false;
        }
        let mut total = seen;
        let discard = async {
            loop {
                match body.frame().await {
                    None => return true,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            total += data.len() as u64;
                            if total > limit {
                                return false;
                            }
                        }
                    }
                    Some(Err(_)) => return false,
                }
            }
        };
        let done = tokio::time::timeout(self.inner.drain_timeout, discard)
            .await
            .unwrap_or(false);
        if !done {
            tracing::debug!(
                read = total,
                "a refused request body was not read to its end: closing"
            );
        }
        done
    }
}

fn control_request(
    task: &str,
    timeout: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ControlRequest, String> {
    let task: Task = task
        .parse()
        .map_err(|e: ochopod_core::Error| e.to_string())?;
    let timeout = timeout.map(parse_timeout).transpose()?;
    let epoch = match headers.get(EPOCH_HEADER) {
        None => None,
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                format!("bad {EPOCH_HEADER} header: not ASCII; expected `<czxid>-<seq>`")
            })?;
            Some(s.parse::<Epoch>().map_err(|e| e.to_string())?)
        }
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| format!("malformed JSON body for control task `{task}`: {e}"))?
    };
    Ok(ControlRequest {
        task,
        epoch,
        timeout,
        body,
    })
}

fn parse_timeout(raw: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "bad timeout {raw:?} in /control/<task>/<timeout>: use seconds between 0 and \
             {MAX_TIMEOUT_SECS}, integer or decimal (e.g. 5 or 2.5)"
        )
    };
    let simple = !raw.is_empty()
        && raw.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && raw.bytes().any(|b| b.is_ascii_digit());
    if !simple {
        return Err(bad());
    }
    let secs: f64 = raw.parse().map_err(|_| bad())?;
    if !(0.0..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Compares in time that depends only on the lengths, never on where the bytes differ.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    diff == 0
}

fn guard_sync<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).ok()
}

async fn guard_async(make: impl FnOnce() -> BoxFuture<'static, Reply>) -> Reply {
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(make)) {
        Ok(fut) => fut,
        Err(_) => return panic_reply(),
    };
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| panic_reply())
}

fn panic_reply() -> Reply {
    tracing::error!("control handler panicked");
    Reply::error(
        500,
        "internal error: the pod's handler panicked (see the pod log)",
    )
}

fn panicked(route: &str) -> Response<Full<Bytes>> {
    tracing::error!(route, "handler panicked");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: the pod's handler panicked on {route} (see the pod log)"),
    )
}

fn error_json(message: String) -> Value {
    let mut map = serde_json::Map::with_capacity(1);
    map.insert("error".to_string(), Value::String(message));
    Value::Object(map)
}

/// The `Content-Length` a request declares, if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// `resp` with `Connection: close`: the request's body was not used, so the connection is not
/// reused. `drained` says whether that body was read to its end (logged only).
fn closing(mut resp: Response<Full<Bytes>>, drained: bool) -> Response<Full<Bytes>> {
    let _ = drained;
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
fn error(code: StatusCode, message: String) -> Response<Full<Bytes>> {
    json(code, &error_json(message))
}

fn json<T: serde::Serialize + ?Sized>(code: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "reply does not serialize");
        br#"{"error":"internal error: the reply does not serialize"}"#.to_vec()
    });
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, JSON.clone());
    resp
}

fn reply(r: Reply) -> Response<Full<Bytes>> {
    let Some(code) = StatusCode::from_u16(r.code)
        .ok()
        .filter(|c| (200..=599).contains(&c.as_u16()))
    else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "internal error: the pod's handler replied with invalid status {}",
                r.code
            ),
        );
    };
    if !code.is_success() && r.body.is_null() {
        let reason = code.canonical_reason().unwrap_or("error").to_string();
        return error(code, reason);
    }
    json(code, &r.body)
}

/// Serves the control plane on `listener` until `shutdown` completes.
///
/// hyper-util's graceful pattern: accept connections (TCP_NODELAY, HTTP/1.1 keep-alive) until
/// `shutdown` resolves, backing off on accept errors (e.g. out of file descriptors); then stop
/// accepting, let open requests finish and close idle connections, and drop whatever is still
/// open after [`ServerConfig::shutdown_timeout`].
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let local = listener.local_addr()?;
    #[cfg(feature = "tls")]
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(crate::tls::imp::server_state(t)?)),
        None => None,
    };
    #[cfg(not(feature = "tls"))]
    if config.tls.is_some() {
        return Err(Error::Tls(crate::tls::imp::MISSING.to_string()));
    }
    let router = Router::new(handler, &config);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(
        config
            .max_connections
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let mut backoff = Duration::ZERO;
    tracing::info!(%local, tls = config.tls.is_some(), "control plane listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(ok) => ok,
                    Err(e) => {
                        backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                        tracing::warn!(error = %e, ?backoff, "accept failed");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(backoff) => continue,
                        }
                    }
                };
                backoff = Duration::ZERO;
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, max = config.max_connections, "too many connections: answering 503");
                    conns.spawn(busy(stream));
                    continue;
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "TCP_NODELAY not set");
                }
                let router = router.clone();
                #[cfg(feature = "tls")]
                if let Some(tls) = &tls {
                    let cfg = tls.current();
                    let (http, watcher) = (http.clone(), graceful.watcher());
                    let handshake = config.header_read_timeout;
                    conns.spawn(async move {
                        let _slot = slot;
                        let Some((stream, certified)) = tls_accept(stream, cfg, handshake, peer).await
                        else {
                            return;
                        };
                        let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                            let router = router.clone();
                            if certified {
                                req.extensions_mut().insert(PeerCertified);
                            }
                            async move { Ok::<_, Infallible>(router.handle(req).await) }
                        });
                        let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), svc));
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                    continue;
                }
                let svc = hyper::service::service_fn(move |req| {
                    let router = router.clone();
                    async move { Ok::<_, Infallible>(router.handle(req).await) }
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                conns.spawn(async move {
                    let _slot = slot;
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let open = conns.len();
    tracing::info!(%local, open, "control plane shutting down");
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            %local,
            timeout = ?config.shutdown_timeout,
            "connections still open after the shutdown timeout are dropped"
        );
    }
    conns.shutdown().await;
    Ok(())
}

/// Answers a connection over [`ServerConfig::max_connections`]: `503` and close, after
/// reading what the client sent meanwhile (at most 64 KiB, for at most 1 s) so that it reads
/// the answer rather than a reset.
async fn busy(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = br#"{"error":"too many connections to this pod's control port: retry shortly"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        body.len()
    );
    let linger = async {
        // The request's head first (as far as it comes), then the answer, then what follows.
        let mut buf = [0u8; 8192];
        let mut read = 0usize;
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(body).await.is_err()
        {
            return;
        }
        let _ = stream.shutdown().await;
        while read < 64 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}

/// The TLS handshake of one connection: the stream and whether the client presented a verified
/// certificate, or `None` when the handshake failed (logged). A client speaking plain HTTP gets
/// a plain 400 saying to use `https`.
#[cfg(feature = "tls")]
async fn tls_accept(
    mut stream: tokio::net::TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    timeout: Duration,
    peer: std::net::SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, bool)> {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    // Every TLS connection opens with a handshake record (content type 22).
    if first[0] != 22 {
        let body = br#"{"error": "this pod's control plane speaks TLS only: use https:// (ochopod_tls_ca or --tls-ca)"}"#;
        let head = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(body).await;
        let _ = stream.shutdown().await;
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let certified = tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            Some((tls, certified))
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(Route::parse("/info"), Some(Route::Info));
        assert_eq!(Route::parse("/info/"), Some(Route::Info));
        assert_eq!(
            Route::parse("/control/on/5"),
            Some(Route::Control {
                task: "on",
                timeout: Some("5")
            })
        );
        assert_eq!(
            Route::parse("/control/x"),
            Some(Route::Control {
                task: "x",
                timeout: None
            })
        );
        for bad in [
            "",
            "/",
            "info",
            "/control",
            "/control/",
            "/control/on/5/6",
            "/infox",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
        for bad in ["", ".", "-1", "1e3", "inf", "NaN", "1.2.3", "86401", " 5"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert_eq!(bearer_token(b"Bearer  xyz "), Some(&b"xyz"[..]));
        assert_eq!(bearer_token(b"bearer xyz"), Some(&b"xyz"[..]));
        assert_eq!(bearer_token(b"Basic xyz"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
    }
}
