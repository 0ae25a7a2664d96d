//! Big and slow requests on real loopback sockets: a body over the limit gets a `413` that
//! Python's urllib (which sends the whole body before reading) can read; refused bodies are
//! discarded within bounds of bytes and time; slow headers, slow bodies and idle connections are
//! closed; connections over the limit get a `503` at once.

mod common;

use common::{start, TestHandler};
use ochopod_http::ServerConfig;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client's own deadline: never reached when the server behaves (a test timeout, not a
/// bound on the server's speed).
const DEADLINE: Duration = Duration::from_secs(60);

/// For each `[url, size, mode]` of the JSON list in argv[1], POSTs `size` bytes with urllib
/// (`length`: Content-Length, `chunked`: an iterable body) and prints one JSON line: `{"status",
/// "body"}`, or `{"error"}` (what urllib raised instead of an HTTP answer).
const URLLIB: &str = r#"
import json, sys, urllib.request, urllib.error
for url, size, mode in json.loads(sys.argv[1]):
    data = b'{"pad": "' + b'x' * size + b'"}'
    headers = {'Content-Type': 'application/json'}
    if mode == 'chunked':
        step = 65536
        data = iter([data[i:i + step] for i in range(0, len(data), step)])
    req = urllib.request.Request(url, data=data, method='POST', headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            print(json.dumps({'status': r.status, 'body': r.read().decode()}))
    except urllib.error.HTTPError as e:
        print(json.dumps({'status': e.code, 'body': e.read().decode()}))
    except Exception as e:
        print(json.dumps({'error': repr(e)}))
"#;

/// Runs [`URLLIB`] on `calls` (one Python process for all: its start-up is the slow part).
async fn urllib(calls: Vec<(String, usize, &'static str)>) -> Vec<Value> {
    let arg = serde_json::to_string(&calls).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", URLLIB, &arg])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON line per call"))
        .collect()
}

fn small() -> ServerConfig {
    ServerConfig {
        max_body: 64 * 1024,
        ..ServerConfig::default()
    }
}

/// Reads until the peer closes (or resets): everything it sent.
async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match tokio::time::timeout(DEADLINE, s.read(&mut buf)).await {
            Err(_) => panic!("the server neither answered nor closed: {out:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urllib_reads_the_413_of_a_body_over_the_limit() {
    let h = TestHandler::new();
    let srv = start(
        h.clone(),
        ServerConfig {
            token: Some("s3cret".into()),
            ..small()
        },
    )
    .await;
    let base = format!("http://{}", srv.addr);
    // 2 MiB: far more than the socket buffers hold, so the client is still sending when the
    // server decides.
    // Over the limit; refused before the body is read (unknown route, no token); within the
    // limit (served).
    let mut calls = Vec::new();
    for mode in ["length", "chunked"] {
        for path in ["/info", "/nope", "/control/on"] {
            calls.push((format!("{base}{path}"), 2 << 20, mode));
        }
    }
    calls.push((format!("{base}/info"), 1000, "length"));
    let got = urllib(calls.clone()).await;
    assert_eq!(got.len(), calls.len(), "{got:?}");
    for ((url, size, mode), r) in calls.iter().zip(&got) {
        let want = match (url.rsplit_once('/').map(|(_, p)| p), *size) {
            (_, 1000) => 200,
            (Some("info"), _) => 413,
            (Some("nope"), _) => 404,
            _ => 401,
        };
        assert_eq!(r["status"], want, "{url} {mode}: {r}");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        if want == 413 {
            assert!(
                body["error"].as_str().unwrap().contains("65536 bytes"),
                "{mode}: {body}"
            );
        }
    }
    assert!(h.untouched());
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarding_a_refused_body_is_bounded_in_bytes_and_time() {
    let h = TestHandler::new();
    let srv = start(
        h.clone(),
        ServerConfig {
            drain_max: 1 << 20,
            drain_timeout: Duration::from_millis(300),
            ..small()
        },
    )
    .await;

    // Declared larger than drain_max: answered at once, nothing read.
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    s.write_all(b"POST /info HTTP/1.1\r\nhost: pod\r\ncontent-length: 1073741824\r\n\r\n")
        .await
        .unwrap();
    let out = read_all(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("connection: close"), "{out}");

    // A chunked body that never ends: read up to drain_max, then the connection is closed, so
    // the client's writes fail long before it could send 256 MiB.
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    s.write_all(b"POST /info HTTP/1.1\r\nhost: pod\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 65536, "z".repeat(65536));
    let mut sent = 0usize;
    let cut = tokio::time::timeout(DEADLINE, async {
        while sent < 256 << 20 {
            if s.write_all(chunk.as_bytes()).await.is_err() {
                return true;
            }
            sent += 65536;
        }
        false
    })
    .await
    .expect("writes either fail or go through");
    assert!(cut, "the server kept reading: {sent} bytes accepted");

    // Declared within drain_max, but the client stalls: answered once drain_timeout passes.
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    s.write_all(b"POST /info HTTP/1.1\r\nhost: pod\r\ncontent-length: 500000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&vec![b'x'; 100_000]).await.unwrap();
    let out = read_all(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(h.untouched());
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_slow_bodies_and_idle_connections_are_closed() {
    let h = TestHandler::new();
    let srv = start(
        h.clone(),
        ServerConfig {
            header_read_timeout: Duration::from_millis(500),
            body_read_timeout: Duration::from_millis(500),
            ..small()
        },
    )
    .await;

    // Slow-loris: a header byte every 100 ms, for ever; the server closes the connection.
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    s.write_all(b"POST /control/on HTTP/1.1\r\nhost: pod\r\n")
        .await
        .unwrap();
    let closed = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 1024];
        loop {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
            {
                match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // an answer (408): the close follows
                }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickling client kept its connection");

    // Idle: connected, nothing sent; and idle after one request (keep-alive).
    let mut idle = TcpStream::connect(&srv.addr).await.unwrap();
    let out = read_all(&mut idle).await;
    assert!(!out.contains("200 OK"), "{out}");
    let mut kept = TcpStream::connect(&srv.addr).await.unwrap();
    kept.write_all(b"GET /info HTTP/1.1\r\nhost: pod\r\n\r\n")
        .await
        .unwrap();
    let out = read_all(&mut kept).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // A slow body: the headers arrive, the body stalls: 408 and close.
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    s.write_all(b"POST /control/on HTTP/1.1\r\nhost: pod\r\ncontent-length: 100\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let out = read_all(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("did not arrive"), "{out}");
    assert_eq!(h.control_count(), 0);
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503_and_slots_come_back() {
    let h = TestHandler::new();
    let srv = start(
        h.clone(),
        ServerConfig {
            max_connections: 2,
            ..small()
        },
    )
    .await;
    // Two clients hold both slots (connected, nothing sent; the header timeout is 30 s).
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(&srv.addr).await.unwrap(),
        TcpStream::connect(&srv.addr).await.unwrap(),
    ];
    let ask = |addr: String| async move {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /info HTTP/1.1\r\nhost: pod\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        read_all(&mut s).await
    };
    // The accept loop may not have taken both yet: the third is refused once it has.
    let refused = tokio::time::timeout(DEADLINE, async {
        loop {
            let out = ask(srv.addr.clone()).await;
            if out.starts_with("HTTP/1.1 503") {
                return out;
            }
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        }
    })
    .await
    .expect("a third connection refused while two are held");
    assert!(refused.contains("too many connections"), "{refused}");
    assert!(refused.contains("connection: close"), "{refused}");
    // One holder leaves: its slot comes back and a request is served again.
    drop(held);
    let served = tokio::time::timeout(DEADLINE, async {
        loop {
            let out = ask(srv.addr.clone()).await;
            if out.starts_with("HTTP/1.1 200") {
                return out;
            }
            assert!(out.starts_with("HTTP/1.1 503"), "{out}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("served once the held connections closed");
    assert!(served.contains("\"protocol\""), "{served}");
    srv.stop().await.unwrap();
}
