//! Property tests: arbitrary methods, paths, headers and bodies never panic the router, and
//! every non-2xx answer is a JSON `{"error": "..."}`. In process through [`Router::handle`]
//! (many cases) and through real loopback requests (fewer cases).

mod common;

use bytes::Bytes;
use common::{start, Conn, TestHandler};
use http_body_util::{BodyExt, Full};
use ochopod_http::{Router, ServerConfig};
use proptest::prelude::*;
use serde_json::Value;
use std::sync::Arc;

const TOKEN: &str = "tok";

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("PUT".to_string()),
        Just("DELETE".to_string()),
        Just("PATCH".to_string()),
        Just("OPTIONS".to_string()),
        "[A-Z]{1,8}".prop_filter("CONNECT needs an authority-form target", |m| m != "CONNECT"),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just(""),
        Just("/info"),
        Just("/log"),
        Just("/reset"),
        Just("/exec"),
        Just("/healthz"),
        Just("/readyz"),
        Just("/metrics"),
        Just("/control/"),
        Just("/control/on"),
        Just("/control/check/"),
        Just("/control/signal/1.5"),
    ];
    (
        prefix,
        "[a-zA-Z0-9._~%/-]{0,12}",
        proptest::option::of("[a-z0-9=&]{0,8}"),
    )
        .prop_map(|(p, tail, query)| {
            let mut s = format!("{p}{tail}");
            if !s.starts_with('/') {
                s.insert(0, '/');
            }
            if let Some(q) = query {
                s.push('?');
                s.push_str(&q);
            }
            s
        })
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let auth = prop_oneof![
        Just(format!("Bearer {TOKEN}")),
        Just("Bearer".to_string()),
        Just("Basic dG9r".to_string()),
        "[ -~]{0,16}",
    ]
    .prop_map(|v| ("authorization".to_string(), v));
    let epoch = prop_oneof![Just("3-4".to_string()), "[0-9-]{0,6}", "[ -~]{0,8}"]
        .prop_map(|v| ("x-ochopod-epoch".to_string(), v));
    let other = ("x-[a-z]{1,6}", "[ -~]{0,10}");
    let content_type = Just(("content-type".to_string(), "application/json".to_string()));
    proptest::collection::vec(prop_oneof![auth, epoch, other, content_type], 0..4)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(br#"{"code":406}"#.to_vec()),
        Just(br#"{"code":1000}"#.to_vec()),
        Just(br#"{"code":410,"null":true}"#.to_vec()),
        Just(br#"{"panic":true}"#.to_vec()),
        Just(br#"{"tool":"t","args":["a"],"files":{"f":"aGk="}}"#.to_vec()),
        Just(br#"{"tool":"t","files":{"..":"aGk="}}"#.to_vec()),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 100..300),
    ]
}

fn check(
    status: u16,
    method: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), TestCaseError> {
    prop_assert!((200..=599).contains(&status), "status {}", status);
    if (200..300).contains(&status) || method == "HEAD" {
        return Ok(());
    }
    prop_assert_eq!(content_type, Some("application/json"));
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TestCaseError::fail(format!("{status} body is not JSON: {e}")))?;
    prop_assert!(
        v["error"].is_string(),
        "{} without an error string: {}",
        status,
        v
    );
    Ok(())
}

fn config() -> ServerConfig {
    ServerConfig {
        token: Some(TOKEN.into()),
        max_body: 200,
        ..ServerConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn router_answers_anything_in_process(m in method(), p in path(), hs in headers(), b in body()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let router = Router::new(TestHandler::new(), &config());
            let mut req = hyper::Request::builder().method(m.as_str()).uri(p.as_str());
            for (k, v) in &hs {
                req = req.header(k.as_str(), v.as_str());
            }
            let req = req.body(Full::new(Bytes::from(b))).unwrap();
            let resp = router.handle(req).await;
            let status = resp.status().as_u16();
            let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            check(status, &m, ct.as_deref(), &bytes)
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn server_answers_anything_over_http(m in method(), p in path(), hs in headers(), b in body()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let h = TestHandler::new();
            let srv = start(Arc::clone(&h), config()).await;
            let mut conn = Conn::open(&srv.addr).await;
            let mut req = hyper::Request::builder().method(m.as_str()).uri(p.as_str()).header("host", "pod");
            for (k, v) in &hs {
                req = req.header(k.as_str(), v.as_str());
            }
            let req = req.body(Full::new(Bytes::from(b))).unwrap();
            let resp = conn.send(req).await.map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
            let ct = resp.headers.get("content-type").and_then(|v| v.to_str().ok());
            check(resp.status.as_u16(), &m, ct, &resp.body)?;
            // The server is still healthy afterwards, on a fresh connection.
            let r = common::call(&srv.addr, "GET", "/healthz", &[], "").await;
            prop_assert_eq!(r.status.as_u16(), 200);
            srv.stop().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            Ok(())
        })?;
    }
}
