//! The control server on real loopback HTTP: every route and status code, the token rules,
//! timeouts, body limits, keep-alive and graceful shutdown.

mod common;

use common::{call, start, wait_for, Conn, TestHandler};
use ochopod_core::wire::{Epoch, Task};
use ochopod_http::ServerConfig;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config() -> ServerConfig {
    ServerConfig::default()
}

#[tokio::test]
async fn read_only_routes_answer_get_and_post() {
    let h = TestHandler::new();
    let srv = start(h.clone(), config()).await;
    for method in ["GET", "POST"] {
        let r = call(&srv.addr, method, "/info", &[], "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.json()["state"], "follower");
        assert_eq!(r.json()["protocol"], 2);

        let r = call(&srv.addr, method, "/log", &[], "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), json!(["line one", "line \"two\""]));

        let r = call(&srv.addr, method, "/metrics", &[], "").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(std::str::from_utf8(&r.body)
            .unwrap()
            .contains("ochopod_rounds_total 7"));

        let r = call(&srv.addr, method, "/healthz", &[], "").await;
        assert_eq!(
            (r.status.as_u16(), r.json()["healthy"].clone()),
            (200, json!(true))
        );
        let r = call(&srv.addr, method, "/readyz", &[], "").await;
        assert_eq!(
            (r.status.as_u16(), r.json()["ready"].clone()),
            (200, json!(true))
        );
    }
    // A trailing slash and a query string do not change the route.
    assert_eq!(
        call(&srv.addr, "GET", "/info/?x=1", &[], "").await.status,
        200
    );

    h.unhealthy.store(true, Ordering::SeqCst);
    h.unready.store(true, Ordering::SeqCst);
    call(&srv.addr, "GET", "/healthz", &[], "")
        .await
        .assert_error(503, "not healthy");
    call(&srv.addr, "GET", "/readyz", &[], "")
        .await
        .assert_error(503, "not ready");
    assert!(h.untouched());
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_change_nothing() {
    let h = TestHandler::new();
    let srv = start(h.clone(), config()).await;
    let a = &srv.addr;
    for path in [
        "/",
        "/nope",
        "/control",
        "/control/",
        "/control/on/1/2",
        "/infos",
        "/exec/x",
    ] {
        call(a, "POST", path, &[], "")
            .await
            .assert_error(404, "no route");
    }
    for (method, path, allow) in [
        ("GET", "/reset", "POST"),
        ("GET", "/control/on", "POST"),
        ("GET", "/exec", "POST"),
        ("PUT", "/info", "GET, POST"),
        ("DELETE", "/metrics", "GET, POST"),
        ("PATCH", "/control/on/5", "POST"),
    ] {
        let r = call(a, method, path, &[], "").await;
        r.assert_error(405, "not allowed");
        assert_eq!(r.headers["allow"], allow, "{method} {path}");
    }
    call(a, "POST", "/control/reboot", &[], "")
        .await
        .assert_error(400, "unknown task");
    for t in ["x", "-1", "1e3", "inf", "86401", "1.2.3"] {
        call(a, "POST", &format!("/control/on/{t}"), &[], "")
            .await
            .assert_error(400, "bad timeout");
    }
    for e in ["12", "a-b", "1-2-3", "-"] {
        call(a, "POST", "/control/on", &[("X-Ochopod-Epoch", e)], "")
            .await
            .assert_error(400, "X-Ochopod-Epoch");
    }
    call(a, "POST", "/control/on", &[], "{not json")
        .await
        .assert_error(400, "malformed JSON");
    call(a, "POST", "/exec", &[], "{not json")
        .await
        .assert_error(400, "malformed exec body");
    call(a, "POST", "/exec", &[], "")
        .await
        .assert_error(400, "malformed exec body");
    call(
        a,
        "POST",
        "/exec",
        &[],
        r#"{"tool":"t","files":{"../etc":""}}"#,
    )
    .await
    .assert_error(400, "`..`");
    call(
        a,
        "POST",
        "/exec",
        &[],
        r#"{"tool":"t","files":{"a":"%%%"}}"#,
    )
    .await
    .assert_error(400, "base64");
    assert!(h.untouched(), "no bad request reached the handler");
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let h = TestHandler::new();
    let srv = start(
        h.clone(),
        ServerConfig {
            max_body: 1024,
            ..config()
        },
    )
    .await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    for path in ["/control/on", "/exec", "/reset", "/info"] {
        call(&srv.addr, "POST", path, &[], &big)
            .await
            .assert_error(413, "1024 bytes");
    }
    // Exactly at the limit is accepted.
    let fits = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 - 10));
    assert_eq!(fits.len(), 1024);
    assert_eq!(
        call(&srv.addr, "POST", "/control/on", &[], &fits)
            .await
            .status,
        200
    );
    assert_eq!(h.control_count(), 1);

    // A chunked body (no Content-Length) is cut at the limit too.
    let mut s = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
    let chunk = "y".repeat(1500);
    let req = format!(
        "POST /control/on HTTP/1.1\r\nhost: pod\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains(r#"{"error":"#), "{out}");
    assert_eq!(
        h.control_count(),
        1,
        "the oversized request did not reach the handler"
    );
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn control_requests_reach_the_handler_validated() {
    let h = TestHandler::new();
    let srv = start(h.clone(), config()).await;
    let a = &srv.addr;
    let r = call(
        a,
        "POST",
        "/control/check/2.5",
        &[("X-Ochopod-Epoch", "17-4")],
        r#"{"key":"k1"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"task": "check", "epoch": "17-4"}));
    let req = h.last_control();
    assert_eq!(req.task, Task::Check);
    assert_eq!(req.epoch, Some(Epoch { czxid: 17, seq: 4 }));
    assert_eq!(req.timeout, Some(Duration::from_millis(2500)));
    assert_eq!(req.body, json!({"key": "k1"}));

    // Every task parses; an empty body is Null; no timeout in the URL means none.
    for task in Task::ALL {
        let r = call(a, "POST", &format!("/control/{task}"), &[], "").await;
        assert_eq!(r.status, 200, "{task}");
        let req = h.last_control();
        assert_eq!(
            (req.task, req.body.clone(), req.timeout),
            (task, serde_json::Value::Null, None)
        );
    }

    // The handler's codes pass through; a null non-2xx body becomes a JSON error.
    for code in [406, 409, 410, 500] {
        let r = call(
            a,
            "POST",
            "/control/on/5",
            &[],
            &format!(r#"{{"code":{code}}}"#),
        )
        .await;
        assert_eq!(r.status.as_u16(), code);
        assert_eq!(r.json()["task"], "on");
    }
    call(
        a,
        "POST",
        "/control/off",
        &[],
        r#"{"code":410,"null":true}"#,
    )
    .await
    .assert_error(410, "Gone");
    call(a, "POST", "/control/off", &[], r#"{"code":99}"#)
        .await
        .assert_error(500, "invalid status 99");
    // A panicking handler is a 500, and the server keeps serving.
    call(a, "POST", "/control/on", &[], r#"{"panic":true}"#)
        .await
        .assert_error(500, "panicked");
    assert_eq!(call(a, "GET", "/info", &[], "").await.status, 200);

    // /reset and /exec.
    let r = call(a, "POST", "/reset", &[], "").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["reset"].clone()),
        (200, json!(true))
    );
    assert_eq!(h.resets.load(Ordering::SeqCst), 1);
    let r = call(
        a,
        "POST",
        "/exec",
        &[],
        r#"{"tool":"dump","args":["-v"],"files":{"a.txt":"aGk="}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["stdout"], json!(["dump"]));
    let exec = h.execs.lock().unwrap()[0].clone();
    assert_eq!(exec.args, vec!["-v"]);
    assert_eq!(exec.files["a.txt"], b"hi");
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn token_guards_control_reset_and_exec_only() {
    let h = TestHandler::new();
    let srv = start(
        h.clone(),
        ServerConfig {
            token: Some("s3cret".into()),
            ..config()
        },
    )
    .await;
    let a = &srv.addr;
    let exec = r#"{"tool":"t"}"#;
    for (path, body) in [
        ("/control/on", ""),
        ("/control/signal/1", "{}"),
        ("/reset", ""),
        ("/exec", exec),
    ] {
        for auth in [
            None,
            Some("Bearer nope"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
            Some("s3cret"),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.map(|v| ("authorization", v)).into_iter().collect();
            let r = call(a, "POST", path, &headers, body).await;
            r.assert_error(401, "Authorization: Bearer");
            assert_eq!(r.headers["www-authenticate"], "Bearer");
        }
        // 401 comes before body validation: an unknown client learns nothing.
        call(a, "POST", path, &[], "{bad")
            .await
            .assert_error(401, "token");
        assert!(h.untouched());
    }
    call(a, "POST", "/control/nope", &[], "")
        .await
        .assert_error(401, "token");
    for (path, body) in [("/control/on", ""), ("/reset", ""), ("/exec", exec)] {
        for auth in ["Bearer s3cret", "bearer  s3cret "] {
            let r = call(a, "POST", path, &[("authorization", auth)], body).await;
            assert_eq!(r.status, 200, "{path} with {auth:?}");
        }
    }
    for path in ["/info", "/log", "/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            call(a, "GET", path, &[], "").await.status,
            200,
            "{path} stays open"
        );
    }
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn slow_control_times_out_with_408_and_info_keeps_answering() {
    let h = TestHandler::new();
    let srv = start(h.clone(), config()).await;
    let a = srv.addr.clone();
    call(&a, "POST", "/control/on/0.2", &[], r#"{"hold":true}"#)
        .await
        .assert_error(408, "did not complete within 0.2s");

    // An untimed slow control: /info and the other read-only routes answer meanwhile.
    let slow = tokio::spawn({
        let a = a.clone();
        async move { call(&a, "POST", "/control/on", &[], r#"{"hold":true}"#).await }
    });
    wait_for("the slow control to reach the handler", || {
        h.control_count() == 2
    })
    .await;
    let mut conn = Conn::open(&a).await;
    for _ in 0..20 {
        assert_eq!(conn.call("GET", "/info", &[], "").await.status, 200);
        assert_eq!(conn.call("GET", "/healthz", &[], "").await.status, 200);
    }
    assert!(!slow.is_finished(), "the slow control is still held");
    h.gate.add_permits(2);
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let h = TestHandler::new();
    let srv = start(h.clone(), config()).await;
    let mut conn = Conn::open(&srv.addr).await;
    for i in 0..50 {
        let r = match i % 3 {
            0 => conn.call("GET", "/info", &[], "").await,
            1 => conn.call("POST", "/control/check", &[], "{}").await,
            _ => conn.call("GET", "/nope", &[], "").await,
        };
        assert_eq!(r.status.as_u16(), [200, 200, 404][i % 3]);
        assert!(r.headers.get("connection").is_none_or(|v| v != "close"));
    }
    assert_eq!(h.control_count(), 17);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_closes_idle_connections_and_bounds_busy_ones() {
    let h = TestHandler::new();
    let srv = start(
        h.clone(),
        ServerConfig {
            shutdown_timeout: Duration::from_millis(300),
            ..config()
        },
    )
    .await;
    let a = srv.addr.clone();
    let mut idle = Conn::open(&a).await;
    assert_eq!(idle.call("GET", "/info", &[], "").await.status, 200);
    let busy = tokio::spawn({
        let a = a.clone();
        async move {
            let mut c = Conn::open(&a).await;
            let req = hyper::Request::post("/control/on")
                .header("host", "pod")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    br#"{"hold":true}"#,
                )))
                .unwrap();
            c.send(req).await
        }
    });
    wait_for("the held control", || h.control_count() == 1).await;
    // serve returns although a request is still held, once the shutdown timeout passes.
    srv.stop().await.unwrap();
    assert!(
        busy.await.unwrap().is_err(),
        "the held request's connection was dropped"
    );
    let again = hyper::Request::get("/info")
        .header("host", "pod")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert!(
        idle.send(again).await.is_err(),
        "the idle keep-alive connection was closed"
    );
    assert!(
        tokio::net::TcpStream::connect(&a).await.is_err(),
        "no longer listening"
    );
}
