//! Operator commands: `ls`, `info`, `log`, `on`/`off`/`kill`, `reset`, `signal`, `exec`, `hash`,
//! `watch`. Everything goes through the public APIs of `ochopod-zk` ([`Directory`]) and
//! `ochopod-http` ([`Client`]).

use crate::{Fail, ZkArgs};
use anyhow::{anyhow, Context};
use ochopod_core::wire::{ControlBody, Dependencies, Pods, Task};
use ochopod_core::DependencyPattern;
use ochopod_http::{Client, ExecRequest};
use ochopod_zk::{Directory, PodEntry, ZkSettings};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) struct Ctx {
    zk: String,
    token: Option<String>,
    json: bool,
}

impl Ctx {
    pub(crate) fn new(args: &ZkArgs, env: &BTreeMap<String, String>) -> Ctx {
        let zk = args
            .zk
            .clone()
            .or_else(|| env.get("ochopod_zk").cloned())
            .filter(|z| !z.is_empty())
            .unwrap_or_else(|| "127.0.0.1:2181".to_string());
        Ctx {
            zk,
            token: args
                .token
                .clone()
                .or_else(|| env.get("ochopod_token").cloned())
                .filter(|t| !t.is_empty()),
            json: args.json,
        }
    }

    async fn dir(&self) -> Result<Directory, Fail> {
        let settings = ZkSettings::new(self.zk.clone(), Duration::from_secs(5));
        Directory::connect(&settings)
            .await
            .with_context(|| {
                format!(
                    "cannot reach ZooKeeper at {} (set --zk or ochopod_zk)",
                    self.zk
                )
            })
            .map_err(Fail::from)
    }

    fn client(&self) -> Client {
        Client::new(self.token.clone())
    }
}

/// A pod found in ZooKeeper.
struct Found {
    cluster: String,
    index: usize,
    entry: PodEntry,
}

impl Found {
    fn addr(&self) -> Result<String, Fail> {
        self.entry.registration.control_addr().ok_or_else(|| {
            Fail::from(anyhow!(
                "pod {} has no usable control port in its registration",
                self.entry.key
            ))
        })
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    // Reuse core's dependency matching: an absolute pattern never equals the empty "own" name.
    DependencyPattern::parse(&format!("/{pattern}"), "x")
        .map(|p| p.matches(text, ""))
        .unwrap_or(false)
        || pattern == text
}

async fn all_pods(dir: &Directory, pattern: Option<&str>) -> Result<Vec<Found>, Fail> {
    let mut out = Vec::new();
    for cluster in dir.clusters().await? {
        if let Some(p) = pattern {
            let p = if p.contains('.') {
                p.to_string()
            } else {
                format!("*.{p}")
            };
            if !glob(&p, &cluster) {
                continue;
            }
        }
        let mut pods = dir.pods(&cluster).await?;
        pods.sort_by(|a, b| a.key.cmp(&b.key));
        pods.dedup_by(|a, b| a.key == b.key);
        for (index, entry) in pods.into_iter().enumerate() {
            out.push(Found {
                cluster: cluster.clone(),
                index,
                entry,
            });
        }
    }
    Ok(out)
}

/// Resolves POD: a key prefix, or `cluster#index` (`ns.cluster#0`, or `cluster#0` when the
/// name is unique across namespaces).
async fn resolve(dir: &Directory, pod: &str) -> Result<Found, Fail> {
    let pods = all_pods(dir, None).await?;
    let matches: Vec<Found> = if let Some((cluster, index)) = pod.split_once('#') {
        let index: usize = index.parse().map_err(|_| {
            Fail::usage(anyhow!(
                "{pod:?}: the part after # must be an index, e.g. web#0"
            ))
        })?;
        let clusters: Vec<String> = {
            let mut c: Vec<String> = pods
                .iter()
                .map(|p| p.cluster.clone())
                .filter(|c| c == cluster || c.split_once('.').map(|x| x.1) == Some(cluster))
                .collect();
            c.dedup();
            c
        };
        if clusters.len() > 1 {
            return Err(Fail::usage(anyhow!(
                "{pod:?} is ambiguous: clusters {} match; write namespace.cluster#index",
                clusters.join(", ")
            )));
        }
        pods.into_iter()
            .filter(|p| clusters.contains(&p.cluster) && p.index == index)
            .collect()
    } else {
        pods.into_iter()
            .filter(|p| p.entry.key.starts_with(pod))
            .collect()
    };
    match matches.len() {
        0 => Err(Fail::usage(anyhow!(
            "no pod matches {pod:?} (give a key prefix or cluster#index; see `ochopod ls`)"
        ))),
        1 => Ok(matches.into_iter().next().expect("one")),
        n => Err(Fail::usage(anyhow!(
            "{pod:?} is ambiguous: {n} pods match ({}); give more of the key",
            matches
                .iter()
                .map(|m| m.entry.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Rows of `ls`: ZooKeeper plus every pod's /info, fetched concurrently.
async fn rows(ctx: &Ctx, dir: &Directory, pattern: Option<&str>) -> Result<Vec<Value>, Fail> {
    let pods = all_pods(dir, pattern).await?;
    let client = ctx.client();
    let infos = futures::future::join_all(pods.iter().map(|p| {
        let client = client.clone();
        let addr = p.entry.registration.control_addr();
        async move {
            match addr {
                Some(a) => client.info(&a, TIMEOUT).await.map_err(|e| e.to_string()),
                None => Err("no control port".to_string()),
            }
        }
    }))
    .await;
    Ok(pods
        .iter()
        .zip(infos)
        .map(|(p, info)| {
            let r = &p.entry.registration;
            let (state, process, status) = match &info {
                Ok(i) => (
                    i["state"].as_str().unwrap_or("").to_string(),
                    i["process"].as_str().unwrap_or("").to_string(),
                    i["status"].as_str().unwrap_or("").to_string(),
                ),
                Err(e) => ("unreachable".to_string(), "?".to_string(), format!("* {e}")),
            };
            json!({
                "cluster": p.cluster,
                "index": p.index,
                "key": p.entry.key,
                "seq": p.entry.seq,
                "ip": r.ip,
                "ports": r.ports,
                "state": state,
                "process": process,
                "status": status,
            })
        })
        .collect())
}

fn table(rows: &[Value]) -> String {
    let headers = [
        "CLUSTER", "#", "KEY", "SEQ", "IP", "PORTS", "STATE", "PROCESS", "STATUS",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let ports = r["ports"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}->{v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                r["cluster"].as_str().unwrap_or("").to_string(),
                r["index"].to_string(),
                r["key"].as_str().unwrap_or("").chars().take(8).collect(),
                r["seq"].to_string(),
                r["ip"].as_str().unwrap_or("").to_string(),
                ports,
                r["state"].as_str().unwrap_or("").to_string(),
                r["process"].as_str().unwrap_or("").to_string(),
                r["status"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cols: Vec<String>| {
        cols.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

pub(crate) async fn ls(ctx: &Ctx, pattern: Option<&str>) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let rows = rows(ctx, &dir, pattern).await?;
    if ctx.json {
        print_json(&Value::Array(rows));
    } else if rows.is_empty() {
        println!("no pods");
    } else {
        print!("{}", table(&rows));
    }
    Ok(0)
}

/// The pod's cluster view as its leader would send it: the committed snapshot (or the
/// registered pods) plus the dependency snapshots its `/info` names.
async fn cluster_view(dir: &Directory, found: &Found, info: &Value) -> Result<ControlBody, Fail> {
    let pods: Pods = match dir.snapshot(&found.cluster).await? {
        Some(p) if !p.is_empty() => p,
        _ => dir
            .pods(&found.cluster)
            .await?
            .into_iter()
            .map(|p| (p.key, p.registration))
            .collect(),
    };
    let ns = found.cluster.split('.').next().unwrap_or("");
    let mut dependencies = Dependencies::new();
    let clusters = dir.clusters().await?;
    for name in info["dependencies"].as_array().into_iter().flatten() {
        let Some(name) = name.as_str() else { continue };
        let Ok(pattern) = DependencyPattern::parse(name, ns) else {
            continue;
        };
        let view = dependencies.entry(name.to_string()).or_default();
        for c in &clusters {
            if pattern.matches(c, &found.cluster) {
                if let Some(s) = dir.snapshot(c).await? {
                    view.extend(s);
                }
            }
        }
    }
    Ok(ControlBody {
        pods,
        dependencies,
        key: found.entry.key.clone(),
    })
}

pub(crate) async fn info(
    ctx: &Ctx,
    pod: &str,
    view: Option<std::path::PathBuf>,
) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let found = resolve(&dir, pod).await?;
    let info = ctx
        .client()
        .info(&found.addr()?, TIMEOUT)
        .await
        .with_context(|| format!("pod {} is unreachable", found.entry.key))?;
    if let Some(path) = view {
        let body = cluster_view(&dir, &found, &info).await?;
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&body).unwrap_or_default(),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "saved the cluster view of {} to {}",
            found.entry.key,
            path.display()
        );
    }
    print_json(&info);
    Ok(0)
}

pub(crate) async fn log(ctx: &Ctx, pod: &str, follow: bool) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let found = resolve(&dir, pod).await?;
    let addr = found.addr()?;
    let client = ctx.client();
    let mut printed: Vec<String> = Vec::new();
    loop {
        let lines = client
            .log(&addr, TIMEOUT)
            .await
            .with_context(|| format!("pod {} is unreachable", found.entry.key))?;
        // Print what is new: the lines after the longest suffix of what we printed.
        let start = (0..=printed.len().min(lines.len()))
            .rev()
            .find(|&n| n > 0 && printed[printed.len() - n..] == lines[..n])
            .unwrap_or(0);
        let fresh = if printed.is_empty() {
            &lines[..]
        } else {
            &lines[start..]
        };
        if ctx.json && !follow {
            print_json(&json!(lines));
            return Ok(0);
        }
        for l in fresh {
            // Lines end with their newline, as 1.x serves them.
            println!("{}", l.strip_suffix('\n').unwrap_or(l));
        }
        if !follow {
            return Ok(0);
        }
        printed = lines;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn report(ctx: &Ctx, what: &str, code: u16, body: &Value) -> Result<u8, Fail> {
    if ctx.json {
        print_json(&json!({ "code": code, "body": body }));
    } else if code == 200 {
        println!(
            "{what}: ok {}",
            if body.is_null() {
                String::new()
            } else {
                body.to_string()
            }
        );
    }
    if code == 200 {
        Ok(0)
    } else {
        Err(Fail::from(anyhow!(
            "{what}: {code} {}",
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or(&body.to_string())
        )))
    }
}

pub(crate) async fn control(ctx: &Ctx, pod: &str, task: &str) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let found = resolve(&dir, pod).await?;
    let addr = found.addr()?;
    let task: Task = task.parse().map_err(Fail::usage)?;
    // Every operator task goes with an empty body: an empty `on` is an operator's (as in 1.x),
    // which starts the pod's last configuration again and never re-renders.
    let body = bytes::Bytes::new();
    let reply = ctx
        .client()
        .control(&addr, task, 120, None, body, Duration::from_secs(150))
        .await
        .with_context(|| format!("pod {} is unreachable", found.entry.key))?;
    report(
        ctx,
        &format!("{task} {}", found.entry.key),
        reply.code,
        &reply.body,
    )
}

pub(crate) async fn reset(ctx: &Ctx, pod: &str) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let found = resolve(&dir, pod).await?;
    let reply = ctx
        .client()
        .reset(&found.addr()?, TIMEOUT)
        .await
        .with_context(|| format!("pod {} is unreachable", found.entry.key))?;
    report(
        ctx,
        &format!("reset {}", found.entry.key),
        reply.code,
        &reply.body,
    )
}

pub(crate) async fn signal(ctx: &Ctx, pod: &str, body: &str) -> Result<u8, Fail> {
    let body: Value =
        serde_json::from_str(body).map_err(|e| Fail::usage(anyhow!("--body is not JSON: {e}")))?;
    let dir = ctx.dir().await?;
    let found = resolve(&dir, pod).await?;
    let reply = ctx
        .client()
        .signal(&found.addr()?, &body, Duration::from_secs(60))
        .await
        .with_context(|| format!("pod {} is unreachable", found.entry.key))?;
    if reply.code == 200 && !ctx.json {
        print_json(&reply.body);
        return Ok(0);
    }
    report(
        ctx,
        &format!("signal {}", found.entry.key),
        reply.code,
        &reply.body,
    )
}

pub(crate) async fn exec(
    ctx: &Ctx,
    pod: &str,
    tool: &str,
    args: Vec<String>,
    files: Vec<std::path::PathBuf>,
) -> Result<u8, Fail> {
    let mut req = ExecRequest {
        tool: tool.to_string(),
        args,
        files: BTreeMap::new(),
    };
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .ok_or_else(|| Fail::usage(anyhow!("--file {}: not a file", f.display())))?;
        let data = std::fs::read(&f)
            .with_context(|| format!("cannot read {}", f.display()))
            .map_err(Fail::usage)?;
        req.files.insert(name, data);
    }
    let dir = ctx.dir().await?;
    let found = resolve(&dir, pod).await?;
    let reply = ctx
        .client()
        .exec(&found.addr()?, &req, Duration::from_secs(120))
        .await
        .with_context(|| format!("pod {} is unreachable", found.entry.key))?;
    if ctx.json {
        print_json(&reply.body);
    } else if reply.code == 200 {
        for l in reply.body["lines"].as_array().into_iter().flatten() {
            println!("{}", l.as_str().unwrap_or(""));
        }
    }
    if reply.code != 200 {
        return report(ctx, &format!("exec {tool}"), reply.code, &reply.body);
    }
    let code = reply.body["code"].as_i64().unwrap_or(1);
    Ok(if code == 0 { 0 } else { 1 })
}

pub(crate) async fn hash(ctx: &Ctx, cluster: &str) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let hash = dir.hash(cluster).await.map_err(Fail::usage)?;
    let leader = dir.leader(cluster).await?;
    if ctx.json {
        print_json(&json!({ "cluster": cluster, "hash": hash, "leader": leader }));
    } else {
        println!(
            "{cluster} hash={} leader={}",
            hash.as_deref().unwrap_or("-"),
            leader.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}

pub(crate) async fn watch(
    ctx: &Ctx,
    pattern: Option<&str>,
    count: Option<u64>,
) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let mut feed = dir.watch().await?;
    let mut drawn = 0u64;
    loop {
        let rows = rows(ctx, &dir, pattern).await?;
        if ctx.json {
            println!("{}", Value::Array(rows));
        } else {
            // Clear the screen only on a terminal.
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", table(&rows));
            println!("--");
        }
        drawn += 1;
        if count.is_some_and(|c| drawn >= c) {
            return Ok(0);
        }
        feed.changed().await?;
        // Coalesce bursts of changes into one redraw.
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(100), feed.changed()).await
        {
        }
    }
}
