//! The typed client against the real server: round trips on every route, token, errors,
//! connection reuse and the leader's fan-out.

mod common;

use bytes::Bytes;
use common::{start, wait_for, TestHandler};
use ochopod_core::wire::{Epoch, Task};
use ochopod_http::{Client, Error, ExecRequest, ServerConfig};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn every_route_round_trips() {
    let h = TestHandler::new();
    let srv = start(h.clone(), ServerConfig::default()).await;
    let c = Client::new(None);
    let a = srv.addr.as_str();

    assert_eq!(c.info(a, T).await.unwrap()["cluster"], "test.web");
    assert_eq!(c.pod_info(a, T).await.unwrap(), common::test_info());
    assert_eq!(c.log(a, T).await.unwrap(), vec!["line one", "line \"two\""]);
    assert!(c
        .metrics(a, T)
        .await
        .unwrap()
        .contains("ochopod_rounds_total 7"));
    assert!(c.healthz(a, T).await.unwrap());
    assert!(c.readyz(a, T).await.unwrap());
    h.unready.store(true, Ordering::SeqCst);
    assert!(!c.readyz(a, T).await.unwrap());

    let epoch = Epoch { czxid: 9, seq: 2 };
    let r = c
        .control(
            a,
            Task::On,
            3,
            Some(epoch),
            Bytes::from_static(br#"{"key":"k1"}"#),
            T,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.code, r.body),
        (200, json!({"task": "on", "epoch": "9-2"}))
    );
    let req = h.last_control();
    assert_eq!(req.timeout, Some(Duration::from_secs(3)));
    assert_eq!(req.body, json!({"key": "k1"}));
    let r = c
        .control(a, Task::Off, 0, None, Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(
        (h.last_control().timeout, h.last_control().body),
        (None, serde_json::Value::Null)
    );
    let r = c
        .control(
            a,
            Task::Check,
            0,
            None,
            Bytes::from_static(br#"{"code":406}"#),
            T,
        )
        .await
        .unwrap();
    assert_eq!(r.code, 406, "non-2xx codes are replies, not errors");

    let r = c
        .signal(a, &json!({"reload": true}), Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(r.body["task"], "signal");
    let req = h.last_control();
    assert_eq!(
        (req.task, req.timeout),
        (Task::Signal, Some(Duration::from_millis(1500)))
    );
    assert_eq!(req.body, json!({"reload": true}));

    assert_eq!(c.reset(a, T).await.unwrap().body, json!({"reset": true}));

    let mut exec = ExecRequest {
        tool: "dump".into(),
        args: vec!["--all".into(), "x y".into()],
        ..Default::default()
    };
    exec.files.insert("blob.bin".into(), (0..=255u8).collect());
    let r = c.exec(a, &exec, T).await.unwrap();
    assert_eq!((r.code, r.body["files"].clone()), (200, json!(1)));
    assert_eq!(
        h.execs.lock().unwrap()[0],
        exec,
        "files and args arrive byte for byte"
    );

    exec.files.insert("../escape".into(), vec![]);
    let err = c.exec(a, &exec, T).await.unwrap_err();
    assert!(matches!(err, Error::Exec(_)), "{err}");
    assert_eq!(h.execs.lock().unwrap().len(), 1, "refused before sending");
    srv.stop().await.unwrap();
}

/// A signal whose hook fails comes back as `Ok(Reply)` with a 500: `is_success` and
/// `error_message` are what tells it apart from a success.
#[tokio::test]
async fn a_failed_signal_is_a_reply_that_says_so() {
    let h = TestHandler::new();
    let srv = start(h.clone(), ServerConfig::default()).await;
    let c = Client::new(None);
    let a = srv.addr.as_str();
    let ok = c.signal(a, &json!({}), T).await.unwrap();
    assert!(ok.is_success(), "{ok:?}");
    assert_eq!(ok.error_message(), None);
    let failed = c
        .signal(a, &json!({"code": 500, "null": true}), T)
        .await
        .expect("a 500 is a reply, not a transport error");
    assert_eq!(failed.code, 500);
    assert!(!failed.is_success(), "{failed:?}");
    assert_eq!(
        failed.error_message().as_deref(),
        Some("Internal Server Error"),
        "the server names the failure when the hook gave no body"
    );
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn token_is_sent_where_needed() {
    let h = TestHandler::new();
    let srv = start(
        h.clone(),
        ServerConfig {
            token: Some("tok".into()),
            ..Default::default()
        },
    )
    .await;
    let a = srv.addr.as_str();
    let with = Client::new(Some("tok".into()));
    let without = Client::new(None);
    let wrong = Client::new(Some("nope".into()));
    assert_eq!(
        with.control(a, Task::On, 0, None, Bytes::new(), T)
            .await
            .unwrap()
            .code,
        200
    );
    assert_eq!(with.reset(a, T).await.unwrap().code, 200);
    for c in [&without, &wrong] {
        let r = c
            .control(a, Task::On, 0, None, Bytes::new(), T)
            .await
            .unwrap();
        assert_eq!(r.code, 401);
        assert!(r.body["error"].as_str().unwrap().contains("token"));
        assert_eq!(c.reset(a, T).await.unwrap().code, 401);
        assert!(c.info(a, T).await.is_ok(), "read-only routes stay open");
    }
    let bad = Client::new(Some("line\nbreak".into()));
    let err = bad.reset(a, T).await.unwrap_err();
    assert!(err.to_string().contains("printable ASCII"), "{err}");
    assert!(bad.info(a, T).await.is_ok(), "no token needed there");
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn errors_name_the_pod_and_the_route() {
    let h = TestHandler::new();
    let srv = start(h.clone(), ServerConfig::default()).await;
    let c = Client::new(None);

    // A held control with a short request timeout.
    let err = c
        .control(
            &srv.addr,
            Task::On,
            0,
            None,
            Bytes::from_static(br#"{"hold":true}"#),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("/control/on"), "{err}");
    // The server's own timeout is a 408 reply.
    let r = c
        .control(
            &srv.addr,
            Task::On,
            1,
            None,
            Bytes::from_static(br#"{"hold":true}"#),
            T,
        )
        .await
        .unwrap();
    assert_eq!(r.code, 408);

    // Nobody listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let err = c.info(&dead, T).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(err.to_string().contains(&dead), "{err}");

    let err = c.info("10.0.0.1", T).await.unwrap_err();
    assert!(matches!(err, Error::Address { .. }), "{err}");

    // A peer answering /info with 500 is a Status error carrying its error text.
    let odd = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let odd_addr = odd.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = odd.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let body = r#"{"error":"boom!"}"#;
        let head = format!(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
    });
    let err = c.info(&odd_addr, T).await.unwrap_err();
    assert!(
        matches!(err, Error::Status { code: 500, ref error, .. } if error == "boom!"),
        "{err}"
    );

    // An unhealthy pod is a `false`, not an error.
    let h2 = TestHandler::new();
    h2.unhealthy.store(true, Ordering::SeqCst);
    let srv2 = start(h2, ServerConfig::default()).await;
    assert!(!c.healthz(&srv2.addr, T).await.unwrap());
    srv2.stop().await.unwrap();
    h.gate.add_permits(10);
    srv.stop().await.unwrap();
}

/// A loopback TCP proxy that counts the connections it accepts.
async fn counting_proxy(target: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn client_reuses_connections() {
    let h = TestHandler::new();
    let srv = start(h.clone(), ServerConfig::default()).await;
    let (proxy, accepted) = counting_proxy(srv.addr.clone()).await;
    let c = Client::new(None);
    for _ in 0..20 {
        c.info(&proxy, T).await.unwrap();
        let r = c
            .control(&proxy, Task::Check, 5, None, Bytes::from_static(b"{}"), T)
            .await
            .unwrap();
        assert_eq!(r.code, 200);
    }
    let clone = c.clone();
    clone.healthz(&proxy, T).await.unwrap();
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "40 sequential calls on one connection"
    );
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn fan_out_keeps_order_and_bounds_concurrency() {
    let h = TestHandler::new();
    let srv = start(h.clone(), ServerConfig::default()).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let c = Client::new(None);
    let targets = vec![
        ("a", srv.addr.clone()),
        ("b", dead.clone()),
        ("c", srv.addr.clone()),
        ("d", "not an address".to_string()),
    ];
    let out = c
        .control_all(
            targets.clone(),
            Task::Check,
            5,
            None,
            Bytes::from_static(b"{}"),
            T,
            2,
        )
        .await;
    let keys: Vec<_> = out.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, vec!["a", "b", "c", "d"]);
    assert_eq!(out[0].1.as_ref().unwrap().code, 200);
    assert!(matches!(out[1].1, Err(Error::Transport { .. })));
    assert_eq!(out[2].1.as_ref().unwrap().code, 200);
    assert!(matches!(out[3].1, Err(Error::Address { .. })));

    // Concurrency 1 is sequential: with the first pod held, the second is not contacted yet.
    let held = tokio::spawn({
        let c = c.clone();
        let a = srv.addr.clone();
        async move {
            c.control_all(
                vec![(1, a.clone()), (2, a)],
                Task::On,
                0,
                None,
                Bytes::from_static(br#"{"hold":true}"#),
                T,
                1,
            )
            .await
        }
    });
    wait_for("the first held control", || h.control_count() == 3).await;
    // Let the second one through as soon as it arrives; until we release the first, it cannot.
    tokio::task::yield_now().await;
    assert_eq!(h.control_count(), 3, "the second pod waits for the first");
    h.gate.add_permits(1);
    wait_for("the second control", || h.control_count() == 4).await;
    h.gate.add_permits(1);
    let out = held.await.unwrap();
    assert!(out.iter().all(|(_, r)| r.as_ref().unwrap().code == 200));
    srv.stop().await.unwrap();
}
