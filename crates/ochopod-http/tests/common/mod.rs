//! Test harness: a scripted [`Handler`], a real server on a loopback port, and a raw HTTP/1.1
//! connection for requests the typed client would never send.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use ochopod_core::wire::Info;
use ochopod_http::{ControlRequest, ExecRequest, Handler, Reply, ServerConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

/// A handler scripted by the control body:
/// `{"hold": true}` waits until the test releases the gate, `{"code": N}` replies N,
/// `{"null": true}` replies with a null body, `{"panic": true}` panics.
pub struct TestHandler {
    pub unhealthy: AtomicBool,
    pub unready: AtomicBool,
    pub controls: Mutex<Vec<ControlRequest>>,
    pub resets: AtomicUsize,
    pub execs: Mutex<Vec<ExecRequest>>,
    pub gate: Arc<Semaphore>,
}

impl TestHandler {
    pub fn new() -> Arc<Self> {
        Arc::new(TestHandler {
            unhealthy: AtomicBool::new(false),
            unready: AtomicBool::new(false),
            controls: Mutex::new(Vec::new()),
            resets: AtomicUsize::new(0),
            execs: Mutex::new(Vec::new()),
            gate: Arc::new(Semaphore::new(0)),
        })
    }

    pub fn control_count(&self) -> usize {
        self.controls.lock().unwrap().len()
    }

    pub fn last_control(&self) -> ControlRequest {
        self.controls.lock().unwrap().last().cloned().unwrap()
    }

    /// Nothing reached the handler's state-changing entry points.
    pub fn untouched(&self) -> bool {
        self.control_count() == 0
            && self.resets.load(Ordering::SeqCst) == 0
            && self.execs.lock().unwrap().is_empty()
    }
}

pub fn test_info() -> Info {
    Info {
        protocol: 2,
        key: "k1".into(),
        seq: Some(3),
        cluster: "test.web".into(),
        process: "running".into(),
        state: "follower".into(),
        ..Default::default()
    }
}

impl Handler for TestHandler {
    fn info(&self) -> Value {
        serde_json::to_value(test_info()).unwrap()
    }

    fn log(&self) -> Vec<String> {
        vec!["line one".into(), "line \"two\"".into()]
    }

    fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::SeqCst)
    }

    fn ready(&self) -> bool {
        !self.unready.load(Ordering::SeqCst)
    }

    fn metrics(&self) -> String {
        "# TYPE ochopod_rounds_total counter\nochopod_rounds_total 7\n".into()
    }

    fn control(&self, req: ControlRequest) -> BoxFuture<'static, Reply> {
        self.controls.lock().unwrap().push(req.clone());
        if req.body["panic"] == true {
            panic!("scripted panic");
        }
        let gate = self.gate.clone();
        let hold = req.body["hold"] == true;
        // The work runs in its own task, as the runtime's does; the server may drop our future.
        let work = tokio::spawn(async move {
            if hold {
                let _permit = gate.acquire().await;
            }
            if req.body["null"] == true {
                return Reply {
                    code: req.body["code"].as_u64().unwrap_or(200) as u16,
                    body: Value::Null,
                };
            }
            let code = req.body["code"].as_u64().map_or(200, |c| c as u16);
            Reply {
                code,
                body: json!({"task": req.task.as_str(), "epoch": req.epoch.map(|e| e.to_string())}),
            }
        });
        Box::pin(async move {
            work.await
                .unwrap_or_else(|e| Reply::error(500, e.to_string()))
        })
    }

    fn reset(&self) -> BoxFuture<'static, Reply> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Reply::ok(json!({"reset": true})) })
    }

    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Reply> {
        let files = req.files.len();
        let tool = req.tool.clone();
        self.execs.lock().unwrap().push(req);
        Box::pin(async move { Reply::ok(json!({"code": 0, "stdout": [tool], "files": files})) })
    }
}

pub struct TestServer {
    pub addr: String,
    shutdown: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<(), ochopod_http::Error>>,
}

pub async fn start(handler: Arc<TestHandler>, config: ServerConfig) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(ochopod_http::serve(listener, handler, config, async {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        shutdown: Some(tx),
        join,
    }
}

impl TestServer {
    /// Asks for a graceful shutdown and waits (with a deadline) for `serve` to return.
    pub async fn stop(mut self) -> Result<(), ochopod_http::Error> {
        let _ = self.shutdown.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), &mut self.join)
            .await
            .expect("serve returns after shutdown")
            .expect("serve does not panic")
    }
}

/// One HTTP/1.1 connection, kept alive across requests.
pub struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts `status` and a JSON `{"error": "..."}` body containing `needle`.
    pub fn assert_error(&self, status: u16, needle: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        let v = self.json();
        let msg = v["error"].as_str().expect("an error string");
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        assert_eq!(self.headers["content-type"], "application/json");
    }
}

impl Conn {
    pub async fn open(addr: &str) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn { send }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, hyper::Error> {
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "pod");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        self.send(req).await.unwrap()
    }
}

/// One request on a fresh connection.
pub async fn call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    Conn::open(addr)
        .await
        .call(method, path, headers, body)
        .await
}

/// Waits for `cond` with a deadline.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
