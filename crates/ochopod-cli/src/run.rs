//! `ochopod run` and `ochopod render`: flags and spec turned into validated settings.

use crate::Fail;
use anyhow::{anyhow, Context};
use ochopod::spec::Spec;
use ochopod::spec_pod::SpecLifecycle;
use ochopod::Pod;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `ochopod run`.
#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// The pod spec (TOML; its keys are listed in docs/spec.md).
    #[arg(long)]
    spec: PathBuf,
    /// Namespace (beats the spec's `[pod] namespace`).
    #[arg(long)]
    namespace: Option<String>,
    /// Cluster (beats the spec's `[pod] cluster`).
    #[arg(long)]
    cluster: Option<String>,
    /// The control port inside the container (beats the spec's `[pod] port`); `[ports]` maps
    /// it to the host port other pods and `ochopod` reach.
    #[arg(long)]
    port: Option<u16>,
    /// ZooKeeper connection string (beats the spec's `[pod] zk`; not empty).
    #[arg(long)]
    zk: Option<String>,
    /// Binding: local, generic, marathon, marathon-ec2, kubernetes, kubernetes-ec2, auto.
    #[arg(long)]
    binding: Option<String>,
    /// A file holding the control-plane token (beats the spec's `[pod] token_file`): the token
    /// stays out of the command line.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// A file holding the ZooKeeper credential, `digest:user:password` (beats the spec's
    /// `[pod] zk_auth_file`).
    #[arg(long, value_name = "PATH")]
    zk_auth_file: Option<PathBuf>,
    /// Override any spec key: `--set model.damper=2.5`, `--set 'ports."9000"=31000'`
    /// (the value is TOML; bare words are strings). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// `ochopod render`.
#[derive(clap::Args, Debug)]
pub(crate) struct RenderArgs {
    /// The pod spec.
    #[arg(long)]
    spec: PathBuf,
    /// A saved cluster view (`ochopod info --view FILE POD`), or a control body
    /// (`{"pods": ..., "dependencies": ..., "key": ...}`).
    #[arg(long)]
    view: PathBuf,
    /// Render as this pod (a key of the view); default: the view's `key`.
    #[arg(long)]
    key: Option<String>,
    /// Write the rendered files under this folder instead of their targets (one line per
    /// file names where it went; the contents are not printed).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Reads the spec with `--set` overrides applied. Errors of the file itself name its own line;
/// an error that a `--set` brought names that `--set`.
fn load_spec(path: &PathBuf, sets: &[String]) -> Result<Spec, Fail> {
    let alone = Spec::load(path);
    if sets.is_empty() {
        return alone.map_err(Fail::usage);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read spec {}", path.display()))
        .map_err(Fail::usage)?;
    // A file that is not TOML at all: its own error, with its line.
    let doc: toml::Table = match toml::from_str(&text) {
        Ok(doc) => doc,
        Err(_) => return alone.map_err(Fail::usage),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let origin = path.display().to_string();
    let build = |doc: &toml::Table| Spec::from_table(doc.clone(), &origin, dir.clone());
    let mut merged = doc.clone();
    for set in sets {
        apply_set(&mut merged, set)?;
    }
    let Err(error) = build(&merged) else {
        return build(&merged).map_err(Fail::usage);
    };
    // Which part brought the error: the file (then report it with its line), or the first
    // `--set` after which it appears.
    let mut partial = doc;
    let mut before = build(&partial).err().map(|e| e.0);
    if before.as_deref() == Some(error.0.as_str()) {
        return Err(Fail::usage(match alone {
            Err(e) => anyhow!(e),
            Ok(_) => anyhow!(error),
        }));
    }
    for set in sets {
        apply_set(&mut partial, set)?;
        let now = build(&partial).err().map(|e| e.0);
        if now.as_deref() == Some(error.0.as_str()) && before != now {
            let why = error
                .0
                .strip_prefix(&format!("spec {origin}: "))
                .unwrap_or(&error.0);
            return Err(Fail::usage(anyhow!(
                "spec {origin}: the value given by --set {set:?}: {why}"
            )));
        }
        before = now;
    }
    Err(Fail::usage(anyhow!("{error} (with the --set overrides)")))
}

/// Applies one `--set KEY=VALUE` to a parsed spec.
fn apply_set(doc: &mut toml::Table, set: &str) -> Result<(), Fail> {
    let (key, value) = set.split_once('=').ok_or_else(|| {
        Fail::usage(anyhow!(
            "--set {set:?}: write KEY=VALUE, e.g. --set model.damper=2"
        ))
    })?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let parts: Vec<String> = split_key(key);
    let (last, path_parts) = parts
        .split_last()
        .ok_or_else(|| Fail::usage(anyhow!("--set {set:?}: empty key")))?;
    let mut table = doc;
    for p in path_parts {
        table = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| Fail::usage(anyhow!("--set {set:?}: {p} is not a table")))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

/// `model.damper` -> [model, damper]; `ports."9000"` -> [ports, 9000].
fn split_key(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in key.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Runs the agent; `log` is the pod log the tracing subscriber writes the agent's events into.
pub(crate) async fn run(
    args: RunArgs,
    env: BTreeMap<String, String>,
    log: ochopod::PodLog,
) -> Result<u8, Fail> {
    if args.zk.as_deref().is_some_and(|z| z.trim().is_empty()) {
        return Err(Fail::usage(anyhow!(
            "--zk is empty: give a ZooKeeper connection string (e.g. --zk 127.0.0.1:2181), or leave the flag out"
        )));
    }
    let spec = load_spec(&args.spec, &args.sets)?;
    // Everything that can be checked before starting: a missing or broken template is an
    // error now, not a pod that goes dead at its first configuration.
    spec.preflight()
        .map_err(|e| Fail::usage(anyhow!("spec {}: {e}", args.spec.display())))?;
    // The spec's settings (the library's defaults for what it leaves out), then the flags on
    // top; the `ochopod_*` variables are resolved after both, by the builder.
    let mut config = spec.pod_config();
    let e = &mut config.explicit;
    e.binding = args.binding.clone().or(e.binding.take());
    e.zk = args.zk.clone().filter(|z| !z.is_empty()).or(e.zk.take());
    e.port = args.port.or(e.port);
    config.namespace = args.namespace.clone().or(config.namespace);
    config.cluster = args.cluster.clone().or(config.cluster);
    config.zk_auth_file = args.zk_auth_file.clone().or(config.zk_auth_file);
    config.token_file = args.token_file.clone().or(config.token_file);
    let model = spec
        .model_settings(&env)
        .map_err(|e| Fail::usage(anyhow!("{e}")))?;
    let process = spec.process_settings();
    let prepared = Pod::builder()
        .log(log)
        .config(config)
        .model(model)
        .process(process)
        .env(env)
        .prepare()
        .await
        .map_err(cli_error)?;
    tracing::info!(
        key = prepared.key(),
        cluster = %prepared.registration().full_cluster(),
        binding = %prepared.registration().binding,
        "starting"
    );
    let lifecycle = SpecLifecycle::new(spec, prepared.reaper().clone(), prepared.process_env());
    let code = prepared.run(lifecycle).await.map_err(cli_error)?;
    Ok(u8::try_from(code).unwrap_or(1))
}

/// The library's error in the words of the spec and the flags, with its exit code.
fn cli_error(e: ochopod::Error) -> Fail {
    match e {
        ochopod::Error::MissingCluster => Fail::usage(anyhow!(
            "no cluster name: set [pod] cluster in the spec, --cluster, or ochopod_cluster"
        )),
        ochopod::Error::Listen { addr, source } => Fail::listen(anyhow!(
            "cannot listen on {addr} for the control plane: {source} (is another pod using this \
             port? set [pod] port, --port or ochopod_port, or remap it with [ports])"
        )),
        // Bad settings, whichever layer found them: bad usage (2).
        ochopod::Error::Settings(_)
        | ochopod::Error::Binding(_)
        | ochopod::Error::Dependency(_)
        | ochopod::Error::Client(_)
        | ochopod::Error::Zk(ochopod_zk::Error::Input(_)) => Fail::usage(e),
        e @ ochopod::Error::ZkDenied { .. } => Fail::denied(e),
        other => Fail::from(other),
    }
}

pub(crate) async fn render(args: RenderArgs, env: BTreeMap<String, String>) -> Result<u8, Fail> {
    let mut spec = Spec::load(&args.spec).map_err(Fail::usage)?;
    let text = std::fs::read_to_string(&args.view)
        .with_context(|| format!("cannot read view {}", args.view.display()))
        .map_err(Fail::usage)?;
    let body: ochopod_core::ControlBody = serde_json::from_str(&text)
        .with_context(|| {
            format!(
                "view {} is not a cluster view (expected {{\"pods\": ..., \"dependencies\": ..., \"key\": ...}})",
                args.view.display()
            )
        })
        .map_err(Fail::usage)?;
    let key = args
        .key
        .clone()
        .filter(|k| !k.is_empty())
        .or_else(|| Some(body.key.clone()).filter(|k| !k.is_empty()))
        .or_else(|| body.pods.keys().next().cloned())
        .ok_or_else(|| Fail::usage(anyhow!("the view has no pods to render for")))?;
    let view = ochopod_core::ClusterView::new(&key, &body).map_err(Fail::usage)?;
    if let Some(out) = &args.out {
        for t in &mut spec.templates {
            let name = std::path::Path::new(&t.target)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "rendered".to_string());
            t.target = out.join(name).display().to_string();
        }
    }
    let reaper = ochopod::Reaper::install()?;
    let lifecycle = SpecLifecycle::new(spec.clone(), reaper, env);
    lifecycle
        .render_all(&view)
        .map_err(|e| Fail::usage(anyhow!("{e}")))?;
    for t in &spec.templates {
        println!(
            "rendered {} -> {}",
            t.source,
            spec.path(&t.target).display()
        );
    }
    Ok(0)
}
