//! Operator commands: `ls`, `info`, `log`, `on`/`off`/`kill`, `reset`, `signal`, `exec`, `hash`,
//! `watch`. Everything goes through the public APIs of `ochopod-zk` ([`Directory`]) and
//! `ochopod-http` ([`Client`]).

use crate::{Fail, ZkArgs};
use anyhow::{anyhow, Context};
use ochopod_core::wire::{ControlBody, Dependencies, Info, Pods, Task};
use ochopod_core::DependencyPattern;
use ochopod_http::{Client, ExecRequest};
use ochopod_zk::{Directory, PodEntry, ZkSettings};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) struct Ctx {
    zk: String,
    zk_auth: Option<String>,
    token: Option<String>,
    tls: Option<ochopod_http::ClientTls>,
    json: bool,
    yes: bool,
}

impl Ctx {
    /// `--zk` wins, then `ochopod_zk` (an empty variable counts as unset), then 127.0.0.1:2181;
    /// an empty `--zk` is an error, not the default.
    pub(crate) fn new(args: &ZkArgs, env: &BTreeMap<String, String>) -> Result<Ctx, Fail> {
        if args.zk.as_deref().is_some_and(|z| z.trim().is_empty()) {
            return Err(Fail::usage(anyhow!(
                "--zk is empty: give a ZooKeeper connection string (e.g. --zk 127.0.0.1:2181), or leave the flag out to use ochopod_zk or 127.0.0.1:2181"
            )));
        }
        let zk = args
            .zk
            .clone()
            .or_else(|| env.get("ochopod_zk").cloned())
            .filter(|z| !z.trim().is_empty())
            .unwrap_or_else(|| "127.0.0.1:2181".to_string());
        Ok(Ctx {
            zk,
            zk_auth: secret(
                ("ochopod_zk_auth", None),
                ("--zk-auth-file", "ochopod_zk_auth_file", &args.zk_auth_file),
                env,
            )?,
            token: secret(
                ("ochopod_token", args.token.as_deref()),
                ("--token-file", "ochopod_token_file", &args.token_file),
                env,
            )?,
            tls: tls_settings(args, env),
            json: args.json,
            yes: false,
        })
    }

    /// Acts on several pods without asking (`--yes`).
    pub(crate) fn yes(mut self, yes: bool) -> Ctx {
        self.yes = yes;
        self
    }

    async fn dir(&self) -> Result<Directory, Fail> {
        let mut settings = ZkSettings::new(self.zk.clone(), Duration::from_secs(5));
        settings.auth = self.zk_auth.clone();
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

    fn client(&self) -> Result<Client, Fail> {
        Client::with_tls(self.token.clone(), self.tls.as_ref()).map_err(|e| {
            Fail::usage(anyhow!(
                "{e} (check --tls-ca, --tls-cert and --tls-key, or ochopod_tls_ca, \
                 ochopod_tls_cert and ochopod_tls_key)"
            ))
        })
    }
}

/// A secret given inline (`--token`, else its variable) or in a file (the flag, else its
/// variable): not both; the file is read once and trimmed. Errors never show the secret.
fn secret(
    (var, flag): (&str, Option<&str>),
    (file_flag, file_var, file): (&str, &str, &Option<std::path::PathBuf>),
    env: &BTreeMap<String, String>,
) -> Result<Option<String>, Fail> {
    let inline = flag
        .map(str::to_string)
        .or_else(|| env.get(var).cloned())
        .filter(|v| !v.is_empty());
    let file = file
        .clone()
        .or_else(|| env.get(file_var).filter(|v| !v.is_empty()).map(Into::into));
    match (inline, file) {
        (Some(_), Some(_)) => Err(Fail::usage(anyhow!(
            "{var} (or its flag) and {file_flag} ({file_var}) are both set: keep {file_flag} only"
        ))),
        (inline, None) => Ok(inline),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Fail::usage(anyhow!(
                    "cannot read {file_flag} {}: {e} (give a readable file, or unset {file_flag} \
                     and {file_var})",
                    path.display()
                ))
            })?;
            match text.trim() {
                "" => Err(Fail::usage(anyhow!(
                    "{file_flag} {} is empty: write the secret in it",
                    path.display()
                ))),
                t => Ok(Some(t.to_string())),
            }
        }
    }
}

/// The client's TLS from the flags, then `ochopod_tls_*`: a CA turns TLS on; a certificate
/// and its key are presented to pods that ask for one.
fn tls_settings(args: &ZkArgs, env: &BTreeMap<String, String>) -> Option<ochopod_http::ClientTls> {
    let get = |flag: &Option<String>, var: &str| {
        flag.clone()
            .or_else(|| env.get(var).cloned())
            .filter(|v| !v.is_empty())
    };
    let ca = get(&args.tls_ca, "ochopod_tls_ca")?;
    Some(ochopod_http::ClientTls {
        ca: ca.into(),
        cert: get(&args.tls_cert, "ochopod_tls_cert").map(Into::into),
        key: get(&args.tls_key, "ochopod_tls_key").map(Into::into),
        server_name: get(&args.tls_server_name, "ochopod_tls_server_name"),
    })
}

/// A pod found in ZooKeeper.
struct Found {
    cluster: String,
    index: usize,
    entry: PodEntry,
}

impl Found {
    /// `cluster#seq`: how an operator names it.
    fn label(&self) -> String {
        format!("{}#{}", self.cluster, self.entry.seq)
    }

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

/// `*` matches any run of characters; everything else matches itself.
fn star_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            back = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((bp, bt)) = back {
            pi = bp + 1;
            ti = bt + 1;
            back = Some((bp, bt + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

/// Resolves TARGET to its pods, ordered by cluster then seq:
/// - `cluster#SEQ`: the pod of that seq (stable for its life, unlike a position among the
///   pods); `cluster` is `ns.cluster`, or `cluster` when the name is unique across namespaces;
/// - `*` globs in either part (`web#*`, `demo.*#1`), or a glob without `#` (`web*`: every pod
///   of the matching clusters);
/// - otherwise a key prefix, which must name one pod.
async fn resolve_many(dir: &Directory, target: &str) -> Result<Vec<Found>, Fail> {
    let pods = all_pods(dir, None).await?;
    let (cluster, seq) = match target.split_once('#') {
        Some((c, s)) => (Some(c), s),
        None if target.contains('*') => (Some(target), "*"),
        None => (None, ""),
    };
    let mut matches: Vec<Found> = match cluster {
        Some(cluster) => {
            if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit() || b == b'*') {
                return Err(Fail::usage(anyhow!(
                    "{target:?}: the part after # must be the pod's seq (the # column of \
                     `ochopod ls`), e.g. web#3, or a glob such as web#*"
                )));
            }
            let full = if cluster.contains('.') {
                cluster.to_string()
            } else {
                format!("*.{cluster}")
            };
            let mut clusters: Vec<&str> = pods
                .iter()
                .map(|p| p.cluster.as_str())
                .filter(|c| star_match(&full, c))
                .collect();
            clusters.dedup();
            if !cluster.contains('*') && clusters.len() > 1 {
                return Err(Fail::usage(anyhow!(
                    "{target:?} is ambiguous: clusters {} match; write namespace.cluster#seq",
                    clusters.join(", ")
                )));
            }
            let clusters: Vec<String> = clusters.into_iter().map(String::from).collect();
            pods.into_iter()
                .filter(|p| {
                    clusters.contains(&p.cluster) && star_match(seq, &p.entry.seq.to_string())
                })
                .collect()
        }
        None => {
            let found: Vec<Found> = pods
                .into_iter()
                .filter(|p| p.entry.key.starts_with(target))
                .collect();
            if found.len() > 1 {
                return Err(Fail::usage(anyhow!(
                    "{target:?} is ambiguous: {} pods match ({}); give more of the key, or \
                     name them cluster#seq",
                    found.len(),
                    found
                        .iter()
                        .map(|m| m.entry.key.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            found
        }
    };
    if matches.is_empty() {
        return Err(Fail::usage(anyhow!(
            "no pod matches {target:?} (give cluster#seq, a glob such as web#*, or a key \
             prefix; see `ochopod ls`)"
        )));
    }
    matches.sort_by(|a, b| (&a.cluster, a.entry.seq).cmp(&(&b.cluster, b.entry.seq)));
    Ok(matches)
}

/// Resolves TARGET to exactly one pod (for `info` and `log`).
async fn resolve(dir: &Directory, target: &str) -> Result<Found, Fail> {
    let mut found = resolve_many(dir, target).await?;
    if found.len() > 1 {
        return Err(Fail::usage(anyhow!(
            "{target:?} matches {} pods ({}); name one",
            found.len(),
            labels(&found)
        )));
    }
    Ok(found.remove(0))
}

fn labels(pods: &[Found]) -> String {
    pods.iter().map(Found::label).collect::<Vec<_>>().join(", ")
}

/// Resolves TARGET for a command that acts; more than one pod is asked first on a terminal,
/// and refused without one unless `--yes`.
async fn acting(ctx: &Ctx, dir: &Directory, target: &str, verb: &str) -> Result<Vec<Found>, Fail> {
    use std::io::{BufRead, IsTerminal, Write};
    let pods = resolve_many(dir, target).await?;
    if pods.len() < 2 || ctx.yes {
        return Ok(pods);
    }
    let n = pods.len();
    if !std::io::stdin().is_terminal() {
        return Err(Fail::usage(anyhow!(
            "`{verb}` would act on {n} pods ({}) and there is no terminal to ask on: add --yes \
             to act on all of them, or name one pod",
            labels(&pods)
        )));
    }
    eprint!("{verb} {n} pods ({})? [y/N] ", labels(&pods));
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(pods)
    } else {
        Err(Fail::from(anyhow!("not confirmed: nothing done")))
    }
}

/// Runs `one` on every pod in turn: the exit code is the first pod's failure, else the worst
/// code; a failure is printed and the next pod goes on.
async fn each<'a, F, Fut>(pods: &'a [Found], one: F) -> Result<u8, Fail>
where
    F: Fn(&'a Found) -> Fut,
    Fut: std::future::Future<Output = Result<u8, Fail>>,
{
    if let [single] = pods {
        return one(single).await;
    }
    let mut code = 0u8;
    let mut failed = 0;
    for pod in pods {
        match one(pod).await {
            Ok(c) => code = code.max(c),
            Err(f) => {
                failed += 1;
                eprintln!("ochopod: {}: {:#}", pod.label(), f.error);
                code = code.max(f.code);
            }
        }
    }
    if failed > 0 {
        return Err(Fail {
            code,
            error: anyhow!("{failed} of {} pods failed", pods.len()),
        });
    }
    Ok(code)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Rows of `ls`: ZooKeeper plus every pod's /info, fetched concurrently.
async fn rows(ctx: &Ctx, dir: &Directory, pattern: Option<&str>) -> Result<Vec<Value>, Fail> {
    let pods = all_pods(dir, pattern).await?;
    let client = ctx.client()?;
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
                    status_of(i),
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
                "paused": info.as_ref().ok().map(|i| i["paused"].clone()).unwrap_or(Value::Null),
            })
        })
        .collect())
}

/// The STATUS of `ls`: the leader's status and, for a pod whose process is not running, why
/// (its last failure, shortened to one line).
fn status_of(info: &Value) -> String {
    let status = info["status"].as_str().unwrap_or("").to_string();
    let process = info["process"].as_str().unwrap_or("");
    let failure = info["last_failure"].as_str().unwrap_or("");
    if matches!(process, "running" | "terminating") || failure.is_empty() {
        return status;
    }
    let why = shorten(failure, 70);
    if status.is_empty() {
        why
    } else {
        format!("{status}; {why}")
    }
}

/// The first line of `text`, cut to `max` characters with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() <= max && !text.trim().contains('\n') {
        return line.to_string();
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

fn table(rows: &[Value]) -> String {
    let headers = [
        "CLUSTER", "#", "KEY", "INDEX", "IP", "PORTS", "STATE", "PROCESS", "STATUS",
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
                // `#` is the seq, what `cluster#N` names (stable for the pod's life); INDEX is
                // the pod's place among the sorted keys, which shifts when the cluster scales.
                r["seq"].to_string(),
                r["key"].as_str().unwrap_or("").chars().take(8).collect(),
                r["index"].to_string(),
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
/// registered pods) plus the dependency view of what its `/info` declares.
async fn cluster_view(dir: &Directory, found: &Found, info: &Info) -> Result<ControlBody, Fail> {
    let pods: Pods = match dir.snapshot(&found.cluster).await? {
        Some(p) if !p.is_empty() => p,
        _ => dir
            .pods(&found.cluster)
            .await?
            .into_iter()
            .map(|p| (p.key, p.registration))
            .collect(),
    };
    Ok(ControlBody {
        pods,
        dependencies: dependency_view(dir, &found.cluster, &info.dependencies).await?,
        key: found.entry.key.clone(),
    })
}

/// The dependency view of `cluster` for the dependencies its pods declare, built as its leader
/// builds it (`ochopod_core::deps::views`) from the committed snapshots of the clusters they
/// match. A name that does not parse is left out, as the leader refuses it.
async fn dependency_view(
    dir: &Directory,
    cluster: &str,
    declared: &[String],
) -> Result<Dependencies, Fail> {
    let ns = cluster.split('.').next().unwrap_or("");
    let patterns: Vec<DependencyPattern> = declared
        .iter()
        .filter_map(|name| DependencyPattern::parse(name, ns).ok())
        .collect();
    let mut snapshots = BTreeMap::new();
    for c in dir.clusters().await? {
        if ochopod_core::deps::matches_any(&patterns, &c, cluster) {
            if let Some(s) = dir.snapshot(&c).await? {
                snapshots.insert(c, s);
            }
        }
    }
    Ok(ochopod_core::deps::views(
        &patterns,
        cluster,
        snapshots.iter().map(|(c, pods)| (c.as_str(), pods)),
    ))
}

pub(crate) async fn info(
    ctx: &Ctx,
    pod: &str,
    view: Option<std::path::PathBuf>,
) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let found = resolve(&dir, pod).await?;
    let info = ctx
        .client()?
        .info(&found.addr()?, TIMEOUT)
        .await
        .with_context(|| format!("pod {} is unreachable", found.entry.key))?;
    if let Some(path) = view {
        let typed: Info = serde_json::from_value(info.clone()).with_context(|| {
            format!(
                "pod {}'s /info does not read as this version's, so its dependencies are \
                 unknown: run --view against a pod of this version",
                found.entry.key
            )
        })?;
        let body = cluster_view(&dir, &found, &typed).await?;
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
    if ctx.json {
        print_json(&info);
    } else {
        print!("{}", info_table(&info));
    }
    Ok(0)
}

/// `/info` as `FIELD  VALUE` lines: strings as they are, everything else as compact JSON.
fn info_table(info: &Value) -> String {
    let Some(fields) = info.as_object() else {
        return format!("{info}\n");
    };
    let width = fields.keys().map(|k| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in fields {
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_string(),
            other => other.to_string(),
        };
        out.push_str(&format!("{k:<width$}  {value}\n"));
    }
    out
}

pub(crate) async fn log(ctx: &Ctx, pod: &str, follow: bool) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let found = resolve(&dir, pod).await?;
    let addr = found.addr()?;
    let client = ctx.client()?;
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
    let task: Task = task.parse().map_err(Fail::usage)?;
    let dir = ctx.dir().await?;
    let pods = acting(ctx, &dir, pod, &task.to_string()).await?;
    each(&pods, |found| control_one(ctx, found, task)).await
}

async fn control_one(ctx: &Ctx, found: &Found, task: Task) -> Result<u8, Fail> {
    let addr = found.addr()?;
    // Every operator task goes with an empty body: an empty `on` is an operator's (as in 1.x),
    // which starts the pod's last configuration again and never re-renders.
    let body = bytes::Bytes::new();
    let reply = ctx
        .client()?
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
    let pods = acting(ctx, &dir, pod, "reset").await?;
    each(&pods, |found| reset_one(ctx, found)).await
}

async fn reset_one(ctx: &Ctx, found: &Found) -> Result<u8, Fail> {
    let reply = ctx
        .client()?
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
    let pods = acting(ctx, &dir, pod, "signal").await?;
    let body = &body;
    each(&pods, |found| signal_one(ctx, found, body, pods.len() > 1)).await
}

async fn signal_one(ctx: &Ctx, found: &Found, body: &Value, many: bool) -> Result<u8, Fail> {
    let reply = ctx
        .client()?
        .signal(&found.addr()?, body, Duration::from_secs(60))
        .await
        .with_context(|| format!("pod {} is unreachable", found.entry.key))?;
    if reply.code == 200 && !ctx.json {
        if many {
            println!("{}:", found.label());
        }
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
    let pods = acting(ctx, &dir, pod, "exec").await?;
    let req = &req;
    each(&pods, |found| exec_one(ctx, found, req, pods.len() > 1)).await
}

async fn exec_one(ctx: &Ctx, found: &Found, req: &ExecRequest, many: bool) -> Result<u8, Fail> {
    let tool = &req.tool;
    let reply = ctx
        .client()?
        .exec(&found.addr()?, req, Duration::from_secs(120))
        .await
        .with_context(|| format!("pod {} is unreachable", found.entry.key))?;
    if ctx.json {
        print_json(&reply.body);
    } else if reply.code == 200 {
        if many {
            println!(
                "- {} (exit code {})",
                found.label(),
                reply.body["code"].as_i64().unwrap_or(-1)
            );
        }
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

/// Resolves a cluster name or glob for `pause`/`resume`: `ns.cl`, `cl` when unique, or `*`
/// globs; more than one cluster is asked first on a terminal, refused without one unless
/// `--yes`.
async fn clusters_acting(
    ctx: &Ctx,
    dir: &Directory,
    target: &str,
    verb: &str,
) -> Result<Vec<String>, Fail> {
    use std::io::{BufRead, IsTerminal, Write};
    let full = if target.contains('.') {
        target.to_string()
    } else {
        format!("*.{target}")
    };
    let found: Vec<String> = dir
        .clusters()
        .await?
        .into_iter()
        .filter(|c| star_match(&full, c))
        .collect();
    if found.is_empty() {
        return Err(Fail::usage(anyhow!(
            "no cluster matches {target:?} (`ochopod ls` lists them)"
        )));
    }
    if !target.contains('*') && found.len() > 1 {
        return Err(Fail::usage(anyhow!(
            "{target:?} is ambiguous: clusters {} match; write namespace.cluster",
            found.join(", ")
        )));
    }
    if found.len() < 2 || ctx.yes {
        return Ok(found);
    }
    let n = found.len();
    if !std::io::stdin().is_terminal() {
        return Err(Fail::usage(anyhow!(
            "`{verb}` would act on {n} clusters ({}) and there is no terminal to ask on: add \
             --yes to act on all of them, or name one cluster",
            found.join(", ")
        )));
    }
    eprint!("{verb} {n} clusters ({})? [y/N] ", found.join(", "));
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(found)
    } else {
        Err(Fail::from(anyhow!("not confirmed: nothing done")))
    }
}

/// `pause` (with a reason) or `resume` (`None`) every cluster TARGET names.
pub(crate) async fn pause(ctx: &Ctx, target: &str, reason: Option<&str>) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let verb = if reason.is_some() { "pause" } else { "resume" };
    let clusters = clusters_acting(ctx, &dir, target, verb).await?;
    let pause = reason.map(|r| ochopod_core::Pause {
        since_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        reason: r.to_string(),
    });
    let mut out = Vec::new();
    for cluster in &clusters {
        // A pause already in place keeps its time and reason unless a new reason is given.
        let pause = match (&pause, dir.pause(cluster).await?) {
            (Some(new), Some(old)) if new.reason.is_empty() => Some(old),
            (p, _) => p.clone(),
        };
        dir.set_pause(cluster, pause.as_ref()).await.map_err(|e| {
            let denied = matches!(e, ochopod_zk::Error::Denied { .. });
            let e = anyhow!(e).context(format!("cannot {verb} {cluster}"));
            if denied {
                Fail::denied(e)
            } else {
                Fail::from(e)
            }
        })?;
        out.push(json!({ "cluster": cluster, "paused": pause }));
        if !ctx.json {
            match &pause {
                Some(p) if p.reason.is_empty() => println!("{cluster} paused"),
                Some(p) => println!("{cluster} paused ({})", p.reason),
                None => println!("{cluster} resumed"),
            }
        }
    }
    if ctx.json {
        print_json(&Value::Array(out));
    }
    Ok(0)
}

/// `history`: the cluster's recorded rounds, oldest first.
pub(crate) async fn history(ctx: &Ctx, target: &str) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let cluster = clusters_acting(ctx, &dir, target, "history")
        .await?
        .into_iter()
        .next()
        .expect("at least one cluster matched");
    let rounds = dir.history(&cluster).await.map_err(Fail::from)?;
    if ctx.json {
        print_json(&json!({ "cluster": cluster, "rounds": rounds }));
        return Ok(0);
    }
    if rounds.is_empty() {
        println!("{cluster}: no round recorded");
        return Ok(0);
    }
    for r in &rounds {
        let mut change: Vec<String> = r.joined.iter().map(|k| format!("+{}", short(k))).collect();
        change.extend(r.left.iter().map(|k| format!("-{}", short(k))));
        println!(
            "{}  {:>6} ms  {}  why={}  pods={}{}  hash={}  leader={}",
            ochopod_core::wire::utc_text(r.started_ms),
            r.duration_ms,
            r.outcome,
            if r.why.is_empty() {
                "-".to_string()
            } else {
                r.why.join(",")
            },
            listed(&r.pods),
            if change.is_empty() {
                String::new()
            } else {
                format!(" ({})", change.join(" "))
            },
            r.hash.chars().take(12).collect::<String>(),
            short(&r.leader),
        );
        for (key, answer) in &r.failed {
            println!("    {}: {answer}", short(key));
        }
    }
    Ok(0)
}

/// How many pods a history list names (a summarized list ends with `+N more`).
fn listed(list: &[String]) -> usize {
    match list.last().and_then(|l| l.strip_prefix('+')) {
        Some(more) => {
            list.len() - 1
                + more
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0)
        }
        None => list.len(),
    }
}

/// A key's first 8 characters (as `ls` shows it); other text unchanged.
fn short(key: &str) -> String {
    if key.starts_with('+') {
        key.to_string()
    } else {
        key.chars().take(8).collect()
    }
}

pub(crate) async fn hash(ctx: &Ctx, cluster: &str) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let hash = dir.hash(cluster).await.map_err(Fail::usage)?;
    let known = dir.clusters().await?;
    if !known.iter().any(|c| c == cluster) {
        let shown: Vec<&str> = known.iter().take(8).map(String::as_str).collect();
        return Err(Fail::usage(anyhow!(
            "no cluster {cluster:?} in ZooKeeper at {} (give namespace.cluster; known: {}{})",
            ochopod_core::ZkAddress::redact(&ctx.zk),
            if shown.is_empty() {
                "none".to_string()
            } else {
                shown.join(", ")
            },
            if known.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )));
    }
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

/// `plan`: what the cluster's next round would do, with no side effect: who joins and leaves,
/// which dependencies changed, and per pod its dry run (`/control/plan`): restart or reload,
/// and the diff of the files it would render.
pub(crate) async fn plan(ctx: &Ctx, target: &str) -> Result<u8, Fail> {
    let dir = ctx.dir().await?;
    let cluster = clusters_acting(ctx, &dir, target, "plan")
        .await?
        .into_iter()
        .next()
        .expect("at least one cluster matched");
    let mut live = dir.pods(&cluster).await?;
    live.sort_by(|a, b| a.key.cmp(&b.key));
    live.dedup_by(|a, b| a.key == b.key);
    let pods: Pods = live
        .iter()
        .map(|p| (p.key.clone(), p.registration.clone()))
        .collect();
    let committed = dir.snapshot(&cluster).await?;
    let (joining, leaving): (Vec<String>, Vec<String>) = match &committed {
        Some(c) => (
            pods.keys()
                .filter(|k| !c.contains_key(*k))
                .cloned()
                .collect(),
            c.keys()
                .filter(|k| !pods.contains_key(*k))
                .cloned()
                .collect(),
        ),
        None => (pods.keys().cloned().collect(), Vec::new()),
    };
    let client = ctx.client()?;

    // The dependencies as the pods declare them (`/info`), resolved as the leader does.
    let mut declared: Vec<String> = Vec::new();
    for p in &live {
        if let Some(addr) = p.registration.control_addr() {
            if let Ok(info) = client.pod_info(&addr, TIMEOUT).await {
                declared = info.dependencies;
                break;
            }
        }
    }
    let dependencies = dependency_view(&dir, &cluster, &declared).await?;
    let next_hash = ochopod_core::hash::config_hash(&pods, &Default::default(), &dependencies);
    let committed_hash = dir.hash(&cluster).await.map_err(Fail::from)?;
    let pending = committed_hash.as_deref() != Some(next_hash.as_str());

    // Every pod's dry run, at once.
    let body = |key: &str| {
        bytes::Bytes::from(
            serde_json::to_vec(&ControlBody {
                pods: pods.clone(),
                dependencies: dependencies.clone(),
                key: key.to_string(),
            })
            .unwrap_or_default(),
        )
    };
    let answers = futures::future::join_all(live.iter().map(|p| {
        let client = client.clone();
        let addr = p.registration.control_addr();
        let body = body(&p.key);
        async move {
            match addr {
                None => Err("no usable control port in its registration".to_string()),
                Some(a) => client
                    .control(&a, Task::Plan, 60, None, body, Duration::from_secs(75))
                    .await
                    .map_err(|e| e.to_string()),
            }
        }
    }))
    .await;
    let mut dep_changes = serde_json::Map::new();
    let rows: Vec<Value> = live
        .iter()
        .zip(answers)
        .map(|(p, answer)| {
            let mut row = json!({
                "key": p.key,
                "seq": p.seq,
                "pod": format!("{cluster}#{}", p.seq),
            });
            match answer {
                Ok(r) if r.code == 200 => {
                    if let Some(d) = r.body["dependencies"].as_object() {
                        for (k, v) in d {
                            dep_changes.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    row["would"] = r.body["would"].clone();
                    row["why"] = r.body["why"].clone();
                    row["files"] = r.body.get("files").cloned().unwrap_or(Value::Null);
                }
                // A 1.x pod answers 400 to a task it does not know.
                Ok(r) if r.code == 400 => {
                    row["would"] = json!("unknown (1.x)");
                    row["why"] =
                        json!("the pod does not know the plan task (400): an Ochopod 1.x pod");
                }
                Ok(r) => {
                    row["would"] = json!("unknown");
                    row["why"] = json!(format!(
                        "{} {}",
                        r.code,
                        r.body["error"].as_str().unwrap_or(&r.body.to_string())
                    ));
                }
                Err(e) => {
                    row["would"] = json!("unknown");
                    row["why"] = json!(format!("unreachable: {e}"));
                }
            }
            row
        })
        .collect();
    if ctx.json {
        print_json(&json!({
            "cluster": cluster,
            "pending": pending,
            "committed_hash": committed_hash,
            "next_hash": next_hash,
            "joining": joining,
            "leaving": leaving,
            "dependencies": dep_changes,
            "pods": rows,
        }));
        return Ok(0);
    }
    if pending {
        println!(
            "{cluster}: a round is pending ({} pods, hash {} -> {})",
            pods.len(),
            committed_hash
                .as_deref()
                .map_or("none".to_string(), |h| h.chars().take(12).collect()),
            next_hash.chars().take(12).collect::<String>()
        );
    } else {
        println!(
            "{cluster}: no round pending (the cluster matches its committed hash {}); a round now would do:",
            next_hash.chars().take(12).collect::<String>()
        );
    }
    for k in &joining {
        println!("  + {} joins", short(k));
    }
    for k in &leaving {
        println!("  - {} leaves", short(k));
    }
    for (name, change) in &dep_changes {
        let list = |what: &str| -> Vec<String> {
            change[what]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(short))
                .collect()
        };
        let (j, l) = (list("joined"), list("left"));
        println!(
            "  dependency {name} changed: {}{}",
            j.iter().map(|k| format!("+{k} ")).collect::<String>(),
            l.iter().map(|k| format!("-{k} ")).collect::<String>()
        );
    }
    for row in &rows {
        println!(
            "  {} {}  {}: {}",
            row["pod"].as_str().unwrap_or(""),
            short(row["key"].as_str().unwrap_or("")),
            row["would"].as_str().unwrap_or("?"),
            row["why"].as_str().unwrap_or("")
        );
        for f in row["files"].as_array().into_iter().flatten() {
            if f["changed"] == true {
                println!("      {} changes:", f["path"].as_str().unwrap_or("?"));
                for line in f["diff"].as_str().unwrap_or("").lines() {
                    println!("        {line}");
                }
            } else {
                println!("      {} unchanged", f["path"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(0)
}
