//! The control plane on live agents (`docs/http.md`): every route and status code, the
//! JSON errors that change nothing, the token rules, the order in which control requests are
//! served, `/info` answering while a slow hook runs, and a timed-out task that is dropped.
//!
//! Hooks that must stay busy wait on a `hold` file the test removes, so "still running" is a
//! fact the test controls, never a race against the clock.

use ochopod_e2e::tools::{pod_nodes, wait_registered_again};
use ochopod_e2e::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A reply read straight off the socket: status, headers (lowercase names) and body text.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a JSON error reply `{"error": "..."}` with `status`, whose message mentions
    /// `mentions`.
    fn assert_error(&self, status: u16, mentions: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{self:?}"
        );
        let msg = self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error string: {self:?}"))
            .to_string();
        assert!(
            msg.contains(mentions),
            "{msg:?} should mention {mentions:?}"
        );
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), any method, any headers.
/// `declared` overrides the Content-Length (to announce a body that is never sent).
fn raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    declared: Option<usize>,
) -> Raw {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        declared.unwrap_or(body.len())
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP reply: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: body.to_string(),
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_for_line(path: &Path, line: &str) -> Result<()> {
    wait_until(WAIT, &format!("{line:?} in {}", path.display()), || {
        let l = lines_of(path);
        if l.iter().any(|x| x == line) {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    })
}

/// Waits until the agent's log shows `needle` more than `before` times.
fn wait_log_count(agent: &Agent, needle: &str, before: usize) -> Result<usize> {
    wait_until(WAIT, &format!("{needle:?} in the agent log"), || {
        let n = agent.log_tail(4 << 20).matches(needle).count();
        if n > before {
            Ok(n)
        } else {
            Err(format!("{n} times"))
        }
    })
}

fn running(agent: &Agent) -> Result<Info> {
    agent.wait_info(WAIT, "process running", |i| i.process == "running")
}

/// `[tools.NAME] command = ...`.
fn tool(spec: &mut PodSpec, name: &str, command: &str) {
    let mut t = toml::Table::new();
    t.insert("command".into(), command.into());
    spec.set("tools", name, toml::Value::Table(t));
}

fn base_spec(zk: &ZkServer, cluster: &str) -> anyhow::Result<PodSpec> {
    let mut spec = PodSpec::new("cp", cluster, &zk.connect_string())?;
    spec.set("process", "shell", true)
        .set("process", "grace", 2.0)
        .set("model", "control_timeout", 20.0)
        .set("hooks", "timeout", 30.0);
    Ok(spec)
}

/// The body of an operator's `on`: the pod alone, as its leader would send it.
fn solo_view(agent: &Agent) -> Value {
    let info = agent.info_json().expect("/info");
    let key = info["key"].as_str().expect("key").to_string();
    json!({ "pods": { key.clone(): info["registration"] }, "dependencies": {}, "key": key })
}

#[test]
fn every_route_and_code_on_a_live_agent() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = base_spec(&zk, "routes")?;
    spec.command("echo 'hello from the process'; exec sleep 600")
        .hook("can_configure", "test ! -e deny")
        .hook(
            "configured",
            "if [ -e fail-ok ]; then echo nope >&2; exit 1; fi; echo configured >> configured.log",
        )
        .hook(
            "signal",
            "if [ -e fail-signal ]; then echo boom >&2; exit 1; fi; sed s/ping/pong/",
        );
    tool(
        &mut spec,
        "echo",
        "echo \"args: $*\"; echo \"pwd: $(pwd)\"; cat upload.txt; ls",
    );
    tool(&mut spec, "fail", "echo failing; exit 3");
    let agent = Agent::spawn(&spec)?;
    let port = agent.port();
    let info = agent.wait_info(WAIT, "running, its own round over", |i| {
        i.process == "running" && i.state == "leader" && i.last_round.is_some()
    })?;
    let pid = info.pid.expect("a running pid");
    let view = solo_view(&agent);
    wait_for_line(&agent.dir().join("configured.log"), "configured")?;

    // Read-only routes: GET and POST, JSON.
    for method in ["GET", "POST"] {
        let r = raw(port, method, "/info", &[], b"", None);
        assert_eq!(r.status, 200, "{method} /info: {r:?}");
        assert_eq!(r.json()["key"], info.key.as_str());
        assert_eq!(r.json()["process"], "running");
    }
    let log = agent.get("/log")?;
    assert_eq!(log.status, 200);
    let log_lines = log.body.as_array().expect("/log is a JSON array");
    assert!(
        log_lines.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("hello from the process"))),
        "{log_lines:?}"
    );
    let health = agent.get("/healthz")?;
    assert_eq!(
        (health.status, &health.body),
        (200, &json!({"healthy": true}))
    );
    let ready = agent.get("/readyz")?;
    assert_eq!((ready.status, &ready.body), (200, &json!({"ready": true})));

    // Prometheus text with the round, restart, leader and ZooKeeper metrics.
    let m = raw(port, "GET", "/metrics", &[], b"", None);
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{m:?}"
    );
    let metric = |name: &str| -> Option<f64> {
        m.body
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    assert!(m.body.contains("# TYPE ochopod_leader gauge"), "{}", m.body);
    assert_eq!(metric("ochopod_leader"), Some(1.0), "{}", m.body);
    assert_eq!(
        metric("ochopod_zookeeper_connected"),
        Some(1.0),
        "{}",
        m.body
    );
    assert_eq!(metric("ochopod_process_running"), Some(1.0), "{}", m.body);
    assert_eq!(
        metric("ochopod_process_restarts_total"),
        Some(0.0),
        "{}",
        m.body
    );
    assert!(metric("ochopod_configuration_rounds_ok_total").is_some_and(|n| n >= 1.0));
    assert_eq!(
        metric("ochopod_configuration_rounds_failed_total"),
        Some(0.0)
    );
    assert!(metric("ochopod_configuration_round_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(metric("ochopod_sanity_check_failures").is_some());

    // Bad input: a JSON error, and nothing changes.
    raw(port, "GET", "/nope", &[], b"", None).assert_error(404, "no route");
    raw(port, "POST", "/control", &[], b"", None).assert_error(404, "no route");
    raw(port, "POST", "/control/on/5/6", &[], b"", None).assert_error(404, "no route");
    let r = raw(port, "DELETE", "/info", &[], b"", None);
    r.assert_error(405, "DELETE");
    assert_eq!(r.header("allow"), Some("GET, POST"));
    let r = raw(port, "GET", "/control/check", &[], b"", None);
    r.assert_error(405, "GET");
    assert_eq!(r.header("allow"), Some("POST"));
    raw(port, "PUT", "/exec", &[], b"{}", None).assert_error(405, "PUT");
    raw(port, "POST", "/control/check", &[], b"", Some(5 << 20)).assert_error(413, "larger");
    raw(port, "POST", "/exec", &[], b"", Some(5 << 20)).assert_error(413, "larger");
    raw(port, "POST", "/control/check", &[], b"{not json", None).assert_error(400, "malformed");
    raw(port, "POST", "/control/bogus", &[], b"", None).assert_error(400, "bogus");
    raw(port, "POST", "/control/on", &[], b"[1]", None).assert_error(400, "bad control body");
    raw(port, "POST", "/control/on", &[], br#"{"pods": 3}"#, None)
        .assert_error(400, "bad control body");
    raw(port, "POST", "/control/on/soon", &[], b"", None).assert_error(400, "bad timeout");
    raw(port, "POST", "/exec", &[], b"[1,2", None).assert_error(400, "malformed exec body");
    raw(
        port,
        "POST",
        "/control/check",
        &[("X-Ochopod-Epoch", "yesterday")],
        b"",
        None,
    )
    .assert_error(400, "X-Ochopod-Epoch");
    // A stale leader's epoch: 409, nothing runs.
    raw(
        port,
        "POST",
        "/control/off",
        &[("X-Ochopod-Epoch", "0-0")],
        b"",
        None,
    )
    .assert_error(409, "");
    let after = agent.info()?;
    assert_eq!(
        (after.process.as_str(), after.pid),
        ("running", Some(pid)),
        "bad requests changed nothing"
    );

    // Control tasks, with and without a timeout in the URL.
    assert_eq!(agent.control("check", None, Some(&view))?.status, 200);
    assert_eq!(agent.post("/control/check/2.5", Some(&view))?.status, 200);
    std::fs::write(agent.dir().join("deny"), "")?;
    let r = agent.control("check", Some(5), Some(&view))?;
    assert_eq!(r.status, 406, "can_configure failed: {r:?}");
    assert!(r.body["error"].is_string(), "{r:?}");
    std::fs::remove_file(agent.dir().join("deny"))?;
    let r = agent.control("signal", None, Some(&json!({"ping": 1})))?;
    assert_eq!((r.status, &r.body), (200, &json!({"pong": 1})));
    std::fs::write(agent.dir().join("fail-signal"), "")?;
    let r = agent.control("signal", None, Some(&json!({})))?;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        r.body["error"].as_str().unwrap_or("").contains("boom"),
        "{r:?}"
    );
    std::fs::remove_file(agent.dir().join("fail-signal"))?;
    assert_eq!(agent.control("ok", Some(10), Some(&view))?.status, 200);
    assert_eq!(lines_of(&agent.dir().join("configured.log")).len(), 2);
    std::fs::write(agent.dir().join("fail-ok"), "")?;
    let r = agent.control("ok", Some(10), Some(&view))?;
    assert_eq!(r.status, 500, "a failing configured hook: {r:?}");
    assert!(
        r.body["error"].as_str().unwrap_or("").contains("nope"),
        "{r:?}"
    );
    std::fs::remove_file(agent.dir().join("fail-ok"))?;
    assert_eq!(
        agent.info()?.process,
        "running",
        "a failed ok changes nothing"
    );

    // off, readyz, on with a view, and the process comes back under a new pid.
    assert_eq!(agent.control("off", Some(10), None)?.status, 200);
    let off = agent.info()?;
    assert_eq!((off.process.as_str(), off.pid), ("stopped", None));
    let ready = agent.get("/readyz")?;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["ready"], false);
    assert!(ready.body["error"].is_string());
    let r = agent.control("on", Some(10), Some(&view))?;
    assert_eq!(r.status, 200, "{r:?}");
    let on = running(&agent)?;
    assert_ne!(on.pid, Some(pid));

    // Tools: arguments, an uploaded file, the exit code, a folder removed afterwards.
    let r = agent.post(
        "/exec",
        Some(&json!({"tool": "echo", "args": ["a", "b c"], "files": {"upload.txt": "aGVsbG8gZmlsZQo="}})),
    )?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["code"], 0);
    let lines: Vec<&str> = r.body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(lines[0], "args: a b c", "{lines:?}");
    assert!(lines.contains(&"hello file"), "{lines:?}");
    assert!(lines.contains(&"upload.txt"), "{lines:?}");
    let pwd = lines[1].strip_prefix("pwd: ").expect("pwd line");
    assert!(
        !Path::new(pwd).exists(),
        "the tool's folder {pwd} was removed"
    );
    let r = agent.post("/exec", Some(&json!({"tool": "fail"})))?;
    assert_eq!((r.status, &r.body["code"]), (200, &json!(3)), "{r:?}");
    assert_eq!(r.body["lines"], json!(["failing"]));
    let r = agent.post("/exec", Some(&json!({"tool": "nope"})))?;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body["error"].as_str().unwrap_or("").contains("nope"));
    // No path escapes the tool's folder.
    let parent = std::env::temp_dir().join("escaped.txt");
    for name in ["../escaped.txt", "a/b", "..", "x\\y"] {
        let r = agent.post(
            "/exec",
            Some(&json!({"tool": "echo", "files": {name: "eA=="}})),
        )?;
        assert_eq!(r.status, 400, "{name}: {r:?}");
        assert!(r.body["error"].as_str().unwrap_or("").contains("file name"));
    }
    assert!(!parent.exists(), "nothing written outside the tool folder");

    // reset: a new session, same key and seq, the process keeps running.
    let before = agent.info()?;
    let kz = Kazoo::new(&zk.connect_string())?;
    let nodes = pod_nodes(&kz, "cp", "routes", &before.key).map_err(anyhow::Error::msg)?;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let r = agent.post("/reset", None)?;
    assert_eq!((r.status, &r.body), (200, &json!({"reset": true})));
    let seq = wait_registered_again(&kz, "cp", "routes", &before.key, nodes[0].0, WAIT)?;
    assert_eq!(seq, json!(before.seq), "the first seq is kept");
    let back = agent.wait_info(WAIT, "connected again", |i| i.zk == "connected")?;
    assert_eq!((back.key, back.seq), (before.key, before.seq));
    assert_eq!(back.pid, before.pid, "reset keeps the process");

    // kill: dead, still answering; control requests then get 410.
    assert_eq!(agent.control("kill", Some(10), None)?.status, 200);
    let dead = agent.info()?;
    assert_eq!((dead.process.as_str(), dead.pid), ("dead", None));
    agent.control("check", None, Some(&view)).map(|r| {
        assert_eq!(r.status, 410, "{r:?}");
        assert!(r.body["error"].is_string());
    })?;
    assert_eq!(agent.get("/healthz")?.status, 200);
    assert_eq!(agent.get("/readyz")?.status, 503);
    Ok(())
}

#[test]
fn token_guards_control_routes_and_the_leader_sends_it() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut agents = Vec::new();
    for _ in 0..2 {
        let mut spec = base_spec(&zk, "token")?;
        spec.set("pod", "token", "s3cret-t0ken")
            .command("printenv ochopod > ochopod.json; exec sleep 600")
            .hook("signal", "cat");
        tool(&mut spec, "hi", "echo hi");
        agents.push(Agent::spawn(&spec)?);
    }
    // Both pods run: the leader configured both, the other one over HTTP, with the token.
    for a in &agents {
        running(a)?;
    }
    let states: Vec<String> = agents.iter().map(|a| a.info().unwrap().state).collect();
    assert_eq!(
        states.iter().filter(|s| s.starts_with("leader")).count(),
        1,
        "{states:?}"
    );
    let a = &agents[0];
    let port = a.port();
    // Read-only routes stay open.
    for path in ["/info", "/log", "/healthz", "/readyz", "/metrics"] {
        assert_eq!(raw(port, "GET", path, &[], b"", None).status, 200, "{path}");
    }
    // Control, reset, signal and exec need the token.
    let view = solo_view(a).to_string();
    for (path, body) in [
        ("/control/check", ""),
        ("/control/off/5", ""),
        ("/control/signal", "{}"),
        ("/control/on", view.as_str()),
        ("/reset", ""),
        ("/exec", r#"{"tool": "hi"}"#),
    ] {
        let r = raw(port, "POST", path, &[], body.as_bytes(), None);
        r.assert_error(401, "token");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
        raw(
            port,
            "POST",
            path,
            &[("Authorization", "Bearer wrong")],
            body.as_bytes(),
            None,
        )
        .assert_error(401, "token");
        raw(
            port,
            "POST",
            path,
            &[("Authorization", "Basic czNjcmV0LXQwa2Vu")],
            body.as_bytes(),
            None,
        )
        .assert_error(401, "token");
    }
    assert_eq!(
        a.info()?.process,
        "running",
        "refused requests changed nothing"
    );
    let auth = [("Authorization", "Bearer s3cret-t0ken")];
    let r = raw(port, "POST", "/control/check", &auth, view.as_bytes(), None);
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw(port, "POST", "/control/signal", &auth, br#"{"x":1}"#, None);
    assert_eq!((r.status, r.json()), (200, json!({"x": 1})));
    let r = raw(port, "POST", "/exec", &auth, br#"{"tool":"hi"}"#, None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["lines"], json!(["hi"]));
    // The token never leaves the pod: not in /info, not in the process's `ochopod` variable.
    for x in &agents {
        let info = x.get("/info")?.body.to_string();
        assert!(!info.contains("s3cret"), "{info}");
        let env = std::fs::read_to_string(x.dir().join("ochopod.json"))?;
        assert!(env.contains("\"cluster\""), "{env}");
        assert!(!env.contains("s3cret"), "{env}");
    }
    Ok(())
}

#[test]
fn control_requests_run_one_at_a_time_in_arrival_order() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = base_spec(&zk, "order")?;
    spec.command("exec sleep 600")
        .hook(
            "configured",
            "echo ok-start >> order.log; while [ -e hold ]; do sleep 0.05; done; echo ok-end >> order.log",
        )
        .hook("signal", "echo signal >> order.log; echo '{}'")
        .hook("can_configure", "echo check >> order.log");
    let agent = Agent::spawn_env(&spec, &[("OCHOPOD_LOG", "info,ochopod::runtime=debug")])?;
    let order = agent.dir().join("order.log");
    running(&agent)?;
    let view = solo_view(&agent);
    wait_for_line(&order, "ok-end")?; // the leader's own round is over
    std::fs::write(&order, "")?;
    let hold = agent.dir().join("hold");
    std::fs::write(&hold, "")?;

    let checks = agent.log_tail(4 << 20).matches("task=check").count();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let a = s.spawn(|| agent.control("ok", None, Some(&view)));
        wait_for_line(&order, "ok-start")?;
        // /info, /log, /metrics, /healthz answer while the hook holds the control queue.
        for path in ["/info", "/log", "/metrics", "/healthz"] {
            assert_eq!(agent.get(path)?.status, 200, "{path}");
        }
        assert_eq!(agent.info()?.process, "running");
        let b = s.spawn(|| agent.control("signal", None, Some(&json!({}))));
        wait_log_count(&agent, "task=signal", 0)?;
        let c = s.spawn(|| agent.control("check", None, Some(&view)));
        wait_log_count(&agent, "task=check", checks)?;
        assert_eq!(lines_of(&order), vec!["ok-start"], "b and c wait behind a");
        std::fs::remove_file(&hold)?;
        for (name, h) in [("ok", a), ("signal", b), ("check", c)] {
            let r = h.join().expect("request thread")?;
            assert_eq!(r.status, 200, "{name}: {r:?}");
        }
        Ok(())
    })?;
    assert_eq!(
        lines_of(&order),
        vec!["ok-start", "ok-end", "signal", "check"]
    );
    Ok(())
}

#[test]
fn info_answers_while_a_slow_initialize_runs() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = base_spec(&zk, "slowinit")?;
    spec.command("exec sleep 600")
        .file("hold", "")
        .hook(
            "initialize",
            "echo init-start >> init.log; while [ -e hold ]; do sleep 0.05; done; echo init-end >> init.log",
        );
    let agent = Agent::spawn(&spec)?;
    let init = agent.dir().join("init.log");
    wait_for_line(&init, "init-start")?;
    let info = agent.info()?;
    assert_eq!(info.process, "stopped");
    assert!(info.state.starts_with("leader"), "{info:?}");
    assert_eq!(agent.get("/log")?.status, 200);
    assert_eq!(agent.get("/metrics")?.status, 200);
    assert_eq!(agent.get("/healthz")?.status, 200);
    assert_eq!(agent.get("/readyz")?.status, 503, "not configured yet");
    assert_eq!(lines_of(&init), vec!["init-start"], "still initializing");
    std::fs::remove_file(agent.dir().join("hold"))?;
    running(&agent)?;
    assert_eq!(lines_of(&init), vec!["init-start", "init-end"]);
    assert_eq!(agent.get("/readyz")?.status, 200);
    Ok(())
}

#[test]
fn a_task_that_times_out_before_it_starts_is_dropped() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = base_spec(&zk, "timeout")?;
    spec.command("exec sleep 600")
        .hook(
            "configured",
            "echo ok-start >> order.log; while [ -e hold ]; do sleep 0.05; done; echo ok-end >> order.log",
        )
        .hook("signal", "echo signal >> order.log; echo '{}'")
        .hook("can_configure", "echo check >> order.log");
    let agent = Agent::spawn(&spec)?;
    let order = agent.dir().join("order.log");
    running(&agent)?;
    let view = solo_view(&agent);
    wait_for_line(&order, "ok-end")?;
    std::fs::write(&order, "")?;
    let hold = agent.dir().join("hold");
    std::fs::write(&hold, "")?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let a = s.spawn(|| agent.control("ok", None, Some(&view)));
        wait_for_line(&order, "ok-start")?;
        // Queued behind `ok`, which holds: 408 once its 1 s pass.
        let r = agent.control("signal", Some(1), Some(&json!({})))?;
        assert_eq!(r.status, 408, "{r:?}");
        assert!(
            r.body["error"].as_str().unwrap_or("").contains("signal"),
            "{r:?}"
        );
        std::fs::remove_file(&hold)?;
        assert_eq!(a.join().expect("ok thread")?.status, 200);
        Ok(())
    })?;
    // Served in order, a dropped signal would have run before this check.
    assert_eq!(agent.control("check", None, Some(&view))?.status, 200);
    assert_eq!(lines_of(&order), vec!["ok-start", "ok-end", "check"]);
    Ok(())
}

/// Runs `tests/py/exec1x.py` (1.x tooling's `exec`: `X-Shell` and a multipart upload) against
/// `agent`; `fields` are extra uploads `NAME=PATH`. Returns the status and the JSON reply.
fn exec_1x(agent: &Agent, fields: &[String], cmdline: &[&str]) -> anyhow::Result<(u16, Value)> {
    ensure_python_deps()?;
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(workspace_root().join("tests/py/exec1x.py"))
        .args(["--url", &agent.url("")]);
    for f in fields {
        cmd.args(["--field", f]);
    }
    let out = cmd.args(cmdline).output()?;
    anyhow::ensure!(
        out.status.success(),
        "exec1x.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["status"].as_u64().unwrap_or(0) as u16, v["body"].clone()))
}

#[test]
fn exec_speaks_the_1x_form_of_1x_tooling() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = base_spec(&zk, "exec1x")?;
    spec.command("exec sleep 600");
    tool(
        &mut spec,
        "show",
        "echo \"argc: $#\"; for a in \"$@\"; do echo \"arg: [$a]\"; done; ls; \
         for f in *; do echo \"$f: $(cat \"$f\")\"; done",
    );
    tool(&mut spec, "fail", "echo failing; exit 3");
    let agent = Agent::spawn(&spec)?;
    running(&agent)?;

    // The files the operator names on the command line, by absolute and relative path.
    let here = tempfile::tempdir()?;
    let conf = here.path().join("conf.yml");
    std::fs::write(&conf, "port: 1\n")?;
    std::fs::create_dir(here.path().join("sub"))?;
    std::fs::write(here.path().join("sub/data.txt"), "payload")?;
    let conf_arg = conf.to_str().expect("utf-8 path");
    let (status, body) = exec_1x(&agent, &[], &["show", "--to", conf_arg, "", "plain"])?;
    assert_eq!(status, 200, "{body}");
    let stdout: Vec<&str> = body["stdout"]
        .as_array()
        .expect("stdout is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(body["code"], 0, "{body}");
    // Split on single spaces as 1.x does: the empty token is an argument of its own, and the
    // path of the uploaded file became its name in the tool's folder.
    assert_eq!(
        &stdout[..5],
        &[
            "argc: 4",
            "arg: [--to]",
            "arg: [conf.yml]",
            "arg: []",
            "arg: [plain]"
        ],
        "{stdout:?}"
    );
    assert!(stdout.contains(&"conf.yml: port: 1"), "{stdout:?}");
    assert!(
        body.as_object().is_some_and(|o| o.len() == 2),
        "1.x's reply holds code and stdout only: {body}"
    );

    // A relative path with folders is saved under its last component.
    let rel = here.path().join("sub/data.txt");
    let (status, body) = exec_1x(&agent, &[], &["show", rel.to_str().expect("utf-8")])?;
    assert_eq!((status, &body["code"]), (200, &json!(0)), "{body}");
    assert!(
        body["stdout"]
            .as_array()
            .is_some_and(|l| l.contains(&json!("data.txt: payload"))),
        "{body}"
    );

    // The tool's exit code, and an unknown tool: 404 with an empty object, as 1.x.
    let (status, body) = exec_1x(&agent, &[], &["fail"])?;
    assert_eq!(
        (status, body),
        (200, json!({"code": 3, "stdout": ["failing"]}))
    );
    let (status, body) = exec_1x(&agent, &[], &["nope", "x"])?;
    assert_eq!((status, body), (404, json!({})));

    // Field names that would leave the tool's folder are refused, nothing runs, still a 200.
    let escaped = std::env::temp_dir().join("escaped-1x.txt");
    let _ = std::fs::remove_file(&escaped);
    for name in ["..", "x/..", "dir/"] {
        let (status, body) = exec_1x(&agent, &[format!("{name}={conf_arg}")], &["show"])?;
        assert_eq!((status, &body["code"]), (200, &json!(1)), "{name}: {body}");
        let why = body["stdout"][0].as_str().unwrap_or("");
        assert!(why.contains("upload field"), "{name}: {body}");
    }
    let (status, body) = exec_1x(
        &agent,
        &[format!("../escaped-1x.txt={conf_arg}")],
        &["show"],
    )?;
    assert_eq!((status, &body["code"]), (200, &json!(0)), "{body}");
    assert!(
        body["stdout"]
            .as_array()
            .is_some_and(|l| l.contains(&json!("escaped-1x.txt: port: 1"))),
        "saved inside the tool's folder under its last component: {body}"
    );
    assert!(!escaped.exists(), "nothing written outside the tool folder");

    // The JSON form is still served beside it.
    let r = agent.post("/exec", Some(&json!({"tool": "fail"})))?;
    assert_eq!((r.status, &r.body["lines"]), (200, &json!(["failing"])));
    Ok(())
}

/// `/info` has Ochopod 1.x's flat shape: its twelve keys at the top level with 1.x's types
/// (`port` a string, `ports` string -> number, `metrics` an object, `dependencies` a list), so a
/// 1.x tool reads `info["ip"]` and `info["ports"][info["port"]]` as it always did.
#[test]
fn info_has_the_flat_1x_shape() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = base_spec(&zk, "flatinfo")?;
    spec.command("exec sleep 600").set(
        "model",
        "depends_on",
        toml::Value::Array(vec!["db".into()]),
    );
    let agent = Agent::spawn(&spec)?;
    agent.wait_info(WAIT, "registered and leading", |i| {
        i.seq.is_some() && i.state.starts_with("leader")
    })?;
    let info = agent.info_json()?;
    let is_string = |v: &Value| v.is_string();
    type Check<'a> = &'a dyn Fn(&Value) -> bool;
    let expect: [(&str, Check); 12] = [
        ("application", &is_string),
        ("dependencies", &|v| v == &json!(["db"])),
        ("ip", &|v| v == "127.0.0.1"),
        ("metrics", &Value::is_object),
        ("node", &is_string),
        ("port", &|v| v == &json!(agent.port().to_string())),
        ("ports", &|v| {
            v.as_object()
                .is_some_and(|m| !m.is_empty() && m.values().all(Value::is_u64))
        }),
        ("process", &|v| {
            ["stopped", "running"].contains(&v.as_str().unwrap_or(""))
        }),
        ("public", &is_string),
        ("state", &|v| {
            v.as_str().is_some_and(|s| s.starts_with("leader"))
        }),
        ("status", &is_string),
        ("task", &is_string),
    ];
    for (key, ok) in expect {
        assert!(ok(&info[key]), "/info[{key:?}] = {} in {info:#}", info[key]);
    }
    // What ochothon's `grep` does with it: ip and the host port of the control port.
    let port = info["port"].as_str().expect("port");
    assert_eq!(info["ports"][port], json!(agent.port()), "{info:#}");
    Ok(())
}

/// `/control/signal` on a pod without a signal hook answers 200 `{}`, as a 1.x pod whose
/// `signaled` callback is not overridden.
#[test]
fn signal_without_a_hook_answers_200_empty_as_1x() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = base_spec(&zk, "nosignal")?;
    spec.command("exec sleep 600");
    let agent = Agent::spawn(&spec)?;
    let before = running(&agent)?;
    let r = agent.control("signal", None, Some(&json!({"ping": 1})))?;
    assert_eq!((r.status, &r.body), (200, &json!({})), "{r:?}");
    let r = agent.control("signal", Some(5), None)?;
    assert_eq!((r.status, &r.body), (200, &json!({})), "{r:?}");
    let after = agent.info()?;
    assert_eq!(
        (after.process.as_str(), after.pid),
        ("running", before.pid),
        "a signal changes nothing"
    );
    Ok(())
}

/// An empty `on` is an operator's, as in 1.x: on a pod never configured it answers 406 with why
/// and the pod stays alive (its leader configures it later); on a running pod it does nothing;
/// on a stopped pod it starts the last command again with its last overrides, rendering
/// nothing.
#[test]
fn an_empty_on_is_an_operators_as_in_1x() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = base_spec(&zk, "emptyon")?;
    let mut env = toml::Table::new();
    env.insert("RENDERED".into(), "{{ cluster.size }}".into());
    spec.command("echo \"$RENDERED\" >> starts.log; exec sleep 600")
        .set("process", "env", toml::Value::Table(env))
        .template("view.txt.j2", "size={{ cluster.size }}\n", "view.txt")
        .hook("can_configure", "test -e allow");
    let agent = Agent::spawn(&spec)?;
    // The leader's check fails until `allow` exists: never configured.
    agent.wait_info(WAIT, "leading, its round failing", |i| {
        i.state.starts_with("leader") && i.round_failure.is_some()
    })?;
    let r = agent.control("on", Some(10), None)?;
    assert_eq!(r.status, 406, "{r:?}");
    assert!(
        r.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("never configured")),
        "{r:?}"
    );
    assert_eq!(agent.info()?.process, "stopped", "kept alive, not dead");
    std::fs::write(agent.dir().join("allow"), "")?;
    let first = running(&agent)?;
    wait_for_line(&agent.dir().join("starts.log"), "1")?;

    // Running: 200 {}, nothing happens.
    let r = agent.control("on", Some(10), None)?;
    assert_eq!((r.status, &r.body), (200, &json!({})), "{r:?}");
    assert_eq!(agent.info()?.pid, first.pid);

    // Stopped: the same command and overrides start again; nothing is rendered.
    assert_eq!(agent.control("off", Some(10), None)?.status, 200);
    std::fs::remove_file(agent.dir().join("view.txt"))?;
    let r = agent.control("on", Some(10), None)?;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["pid"].is_u64(), "{r:?}");
    let again = running(&agent)?;
    assert_ne!(again.pid, first.pid);
    let starts = agent.dir().join("starts.log");
    wait_until(WAIT, "the second start's line", || {
        match lines_of(&starts) {
            l if l.len() >= 2 => Ok(l),
            l => Err(format!("{l:?}")),
        }
    })
    .map(|l| assert_eq!(l, vec!["1", "1"], "the same overrides"))?;
    assert!(!agent.dir().join("view.txt").exists(), "nothing rendered");
    Ok(())
}

/// `/log` as served: every line, each ending with its newline.
fn pod_log(agent: &Agent) -> Result<Vec<String>> {
    let lines = ochopod_e2e::supervision::log_lines(agent)?;
    for l in &lines {
        assert!(
            l.ends_with('\n'),
            "1.x serves lines with their newline: {l:?}"
        );
    }
    Ok(lines)
}

/// Waits until the pod log has a line containing every one of `needles`; returns that line.
fn wait_log_line(agent: &Agent, needles: &[&str]) -> Result<String> {
    wait_until(WAIT, &format!("a /log line with {needles:?}"), || {
        let lines = pod_log(agent).map_err(|e| e.to_string())?;
        lines
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .cloned()
            .ok_or_else(|| format!("{} | {}", lines.concat(), agent.summary()))
    })
}

/// `asctime - LEVEL - message`, asctime as Python writes it: `2024-05-01 12:00:00,123`.
fn level_of(line: &str) -> Option<&str> {
    let (stamp, rest) = (line.get(..23)?, line.get(23..)?);
    let shape: String = stamp
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    (shape == "9999-99-99 99:99:99,999").then_some(())?;
    let rest = rest.strip_prefix(" - ")?;
    let (level, _) = rest.split_once(" - ")?;
    Some(level)
}

#[test]
fn log_interleaves_the_agents_events_with_the_piped_output_as_1x() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = base_spec(&zk, "podlog")?;
    // The first run crashes with code 7, the second runs until a check fails twice.
    spec.command(
        "if [ ! -e crashed ]; then touch crashed; echo first run; exit 7; fi; \
         echo second run; exec sleep 600",
    )
    .set("process", "pipe", true)
    .set("process", "restart_delay", 0.2)
    .set("process", "check_every", 0.3)
    .set("process", "checks", 2)
    .hook(
        "sanity_check",
        "if [ -e sick ]; then echo 'disk full' >&2; exit 1; fi",
    );
    let agent = Agent::spawn(&spec)?;

    // The leader's round, the configuration, the process output and the crash, in order.
    let round = wait_log_line(&agent, &[" - INFO - configuration round ", "asking 1 pods"])?;
    let configuring = wait_log_line(&agent, &[" - INFO - configuring pod 1/1"])?;
    let configured = wait_log_line(&agent, &[" - INFO - configured\n"])?;
    let first = wait_log_line(&agent, &[" - INFO - pid ", " : first run"])?;
    let died = wait_log_line(&agent, &[" - WARNING - pid ", "died (exit code 7)"])?;
    let restarting = wait_log_line(&agent, &["process exited with code 7; restarting"])?;
    let started = wait_log_line(&agent, &["as pid ", "(start #2)"])?;
    let second = wait_log_line(&agent, &[" : second run"])?;
    let lines = pod_log(&agent)?;
    let at = |l: &String| lines.iter().position(|x| x == l).expect("still kept");
    // Output lines come through the pipe, events from the agent: only causes are ordered (a
    // line and the agent's note of its process's start or end may land either way, in 1.x too;
    // the restart and the note of its delay too, when the crash ends a step under way).
    for (before, after) in [
        (&round, &configuring),
        (&configuring, &configured),
        (&configured, &first),
        (&configured, &died),
        (&died, &restarting),
        (&died, &started),
        (&died, &second),
    ] {
        assert!(
            at(before) < at(after),
            "{before:?} before {after:?} in {}",
            lines.concat()
        );
    }
    let pid = running(&agent)?.pid.expect("pid");
    assert!(
        second.contains(&format!(" - INFO - pid {pid} : second run")),
        "{second}"
    );

    // A failing check says why and how many in a row; the breaker turns the process off and
    // the log says how it ended.
    std::fs::write(agent.dir().join("sick"), "")?;
    wait_log_line(
        &agent,
        &[" - WARNING - sanity check (", "/2) failed -> ", "disk full"],
    )?;
    wait_log_line(&agent, &[" - WARNING - circuit breaker"])?;
    wait_log_line(&agent, &[" - INFO - process running -> terminating"])?;
    wait_log_line(&agent, &[&format!("pid {pid} ended (killed by SIGTERM)")])?;
    wait_log_line(&agent, &[" - INFO - process terminating -> stopped"])?;

    // Every line is 1.x's `asctime - LEVEL - message`; no DEBUG without ochopod_debug.
    let lines = pod_log(&agent)?;
    for l in &lines {
        let level = level_of(l).unwrap_or_else(|| panic!("not 1.x's format: {l:?}"));
        assert!(["INFO", "WARNING", "ERROR"].contains(&level), "{l:?}");
    }
    drop(agent);

    // With ochopod_debug=true the agent's DEBUG events are kept too.
    let mut quiet = base_spec(&zk, "podlog-debug")?;
    quiet.command("exec sleep 600");
    let agent = Agent::spawn_env(&quiet, &[("ochopod_debug", "true")])?;
    running(&agent)?;
    agent.post("/control/check", None)?;
    wait_log_line(&agent, &[" - DEBUG - "])?;
    Ok(())
}
