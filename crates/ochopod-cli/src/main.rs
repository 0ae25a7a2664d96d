//! The `ochopod` binary: `ochopod run` (the agent) and the operator commands.
//!
//! This crate is thin on purpose: it parses flags (clap values first, then validated settings),
//! reads the process environment once and hands it down as a map, installs the tracing
//! subscriber, and calls the library crates. It holds no protocol code of its own.
//!
//! Exit codes: 0 success; 1 the command failed (pod unreachable, ZooKeeper error, hook failure);
//! 2 bad usage or settings (a flag, the spec, an ambiguous pod name, several pods without
//! `--yes` and no terminal to ask on); 3 the circuit breaker gave up with `on_give_up = "exit"`; 4 `ochopod run` cannot listen on its control port
//! (another pod on the machine uses it); 5 ZooKeeper refused the credential for the cluster's
//! nodes (`ochopod run` at start, or an operator command that writes: give the cluster's
//! credential with `zk_auth_file`).

mod ops;
mod run;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Ochopod: pods that configure themselves through ZooKeeper.
#[derive(Parser, Debug)]
#[command(name = "ochopod", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the operator commands find ZooKeeper.
#[derive(clap::Args, Debug, Clone)]
struct ZkArgs {
    /// ZooKeeper connection string (`h1:2181,h2:2181[/chroot]`); defaults to `ochopod_zk`,
    /// then 127.0.0.1:2181.
    #[arg(long, global = true)]
    zk: Option<String>,
    /// Control-plane token, for on/off/kill/reset/signal/exec (`ochopod_token`). Visible in
    /// `ps`: prefer --token-file.
    #[arg(long, global = true)]
    token: Option<String>,
    /// A file holding the control-plane token (`ochopod_token_file`).
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,
    /// A file holding the ZooKeeper credential, `digest:user:password`, for clusters whose
    /// nodes only its holders may change (`ochopod_zk_auth_file`; `ochopod_zk_auth` holds it
    /// inline).
    #[arg(long, global = true, value_name = "PATH")]
    zk_auth_file: Option<std::path::PathBuf>,
    /// The cluster's PEM CA: talk TLS to the pods, whose certificates it must have signed
    /// (`ochopod_tls_ca`).
    #[arg(long, global = true)]
    tls_ca: Option<String>,
    /// PEM certificate presented to pods that ask for one (mutual TLS) (`ochopod_tls_cert`).
    #[arg(long, global = true)]
    tls_cert: Option<String>,
    /// PEM key of --tls-cert (`ochopod_tls_key`).
    #[arg(long, global = true)]
    tls_key: Option<String>,
    /// The name the pods' certificates carry (`ochopod_tls_server_name`; default their IP).
    #[arg(long, global = true)]
    tls_server_name: Option<String>,
    /// Print JSON instead of a table (ls, info, log, hash, watch, and the replies of on, off,
    /// kill, reset, signal and exec).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent: register in ZooKeeper, elect a leader, configure and supervise the process.
    Run(run::RunArgs),
    /// Render a spec's templates offline against a saved cluster view.
    Render(run::RenderArgs),
    /// List clusters and their pods (ZooKeeper plus each pod's /info).
    Ls {
        /// Only clusters matching this pattern (`*` wildcards, e.g. `demo.*`).
        pattern: Option<String>,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Show one pod's /info.
    Info {
        /// One pod: `cluster#SEQ` (SEQ is the pod's seq, the `#` column of `ls`, stable for the
        /// pod's life; `ns.cluster#SEQ` when the name is in several namespaces) or a key prefix.
        /// (Changed: `#N` was the pod's position among the sorted keys.)
        pod: String,
        /// Save the pod's cluster view (the last configuration) to this file, for `render`.
        #[arg(long)]
        view: Option<std::path::PathBuf>,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Show one pod's log (last 32 KiB).
    Log {
        /// One pod: `cluster#SEQ` (SEQ is the pod's seq, the `#` column of `ls`, stable for the
        /// pod's life; `ns.cluster#SEQ` when the name is in several namespaces) or a key prefix.
        /// (Changed: `#N` was the pod's position among the sorted keys.)
        pod: String,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Start a pod's process again with its last configuration (an empty `on`: nothing is
    /// re-rendered; a running pod is left alone; a pod never configured answers 406).
    On {
        /// The pods: `cluster#SEQ` (SEQ is the pod's seq, the `#` column of `ls`, stable for
        /// the pod's life), `*` globs (`web#*`, `demo.*#1`, `web*`), or a key prefix. More than
        /// one pod: asked first on a terminal, refused without one unless `--yes`. (Changed: `#N`
        /// was the pod's position among the sorted keys.)
        pod: String,
        /// Act on several pods without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Tear a pod's process down.
    Off {
        /// The pods: `cluster#SEQ` (SEQ is the pod's seq, the `#` column of `ls`, stable for
        /// the pod's life), `*` globs (`web#*`, `demo.*#1`, `web*`), or a key prefix. More than
        /// one pod: asked first on a terminal, refused without one unless `--yes`. (Changed: `#N`
        /// was the pod's position among the sorted keys.)
        pod: String,
        /// Act on several pods without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Tear a pod's process down for good (the pod goes dead).
    Kill {
        /// The pods: `cluster#SEQ` (SEQ is the pod's seq, the `#` column of `ls`, stable for
        /// the pod's life), `*` globs (`web#*`, `demo.*#1`, `web*`), or a key prefix. More than
        /// one pod: asked first on a terminal, refused without one unless `--yes`. (Changed: `#N`
        /// was the pod's position among the sorted keys.)
        pod: String,
        /// Act on several pods without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Make a pod drop its ZooKeeper session and register again.
    Reset {
        /// The pods: `cluster#SEQ` (SEQ is the pod's seq, the `#` column of `ls`, stable for
        /// the pod's life), `*` globs (`web#*`, `demo.*#1`, `web*`), or a key prefix. More than
        /// one pod: asked first on a terminal, refused without one unless `--yes`. (Changed: `#N`
        /// was the pod's position among the sorted keys.)
        pod: String,
        /// Act on several pods without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Run a pod's signal hook with a JSON body.
    Signal {
        /// The pods: `cluster#SEQ` (SEQ is the pod's seq, the `#` column of `ls`, stable for
        /// the pod's life), `*` globs (`web#*`, `demo.*#1`, `web*`), or a key prefix. More than
        /// one pod: asked first on a terminal, refused without one unless `--yes`. (Changed: `#N`
        /// was the pod's position among the sorted keys.)
        pod: String,
        /// Act on several pods without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        /// The JSON body handed to the hook.
        #[arg(long = "body", default_value = "{}")]
        body: String,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Run one of a pod's `[tools.NAME]`.
    Exec {
        /// The pods: `cluster#SEQ` (SEQ is the pod's seq, the `#` column of `ls`, stable for
        /// the pod's life), `*` globs (`web#*`, `demo.*#1`, `web*`), or a key prefix. More than
        /// one pod: asked first on a terminal, refused without one unless `--yes`. (Changed: `#N`
        /// was the pod's position among the sorted keys.)
        pod: String,
        /// Act on several pods without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        /// The tool's name.
        tool: String,
        /// Arguments for the tool.
        args: Vec<String>,
        /// Upload this file into the tool's folder (repeatable).
        #[arg(long = "file")]
        files: Vec<std::path::PathBuf>,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Pause clusters (maintenance mode): their leaders track pods joining and leaving but
    /// start no configuration round until `resume`. Kept in ZooKeeper: survives leader
    /// changes and agent restarts.
    Pause {
        /// `namespace.cluster`, `cluster` when unique, or a `*` glob (`demo.*`). More than one
        /// cluster: asked first on a terminal, refused without one unless `--yes`.
        cluster: String,
        /// Why (shown by `ls` and the leader's /info).
        #[arg(long, default_value = "")]
        reason: String,
        /// Act on several clusters without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Resume paused clusters: a leader whose cluster changed meanwhile runs one round at once.
    Resume {
        /// `namespace.cluster`, `cluster` when unique, or a `*` glob (`demo.*`). More than one
        /// cluster: asked first on a terminal, refused without one unless `--yes`.
        cluster: String,
        /// Act on several clusters without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Show a cluster's configuration rounds, oldest first: when, why (joined, left,
    /// dependency, operator, retry, elected), which pods, outcome, duration and hash. Kept in
    /// ZooKeeper by the leaders (the last 64 KiB of rounds).
    History {
        /// `namespace.cluster`, or `cluster` when the name is in one namespace only.
        cluster: String,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// What a cluster's next round would do, with no side effect: pods joining and leaving,
    /// dependency changes, and per pod whether it would restart or reload, with the diff of the
    /// files it would render (each pod renders into memory; a 1.x pod shows "unknown (1.x)").
    Plan {
        /// `namespace.cluster`, or `cluster` when the name is in one namespace only.
        cluster: String,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Print a cluster's committed configuration hash and leader.
    Hash {
        /// `namespace.cluster`.
        cluster: String,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// A live view of the clusters, redrawn on every ZooKeeper change.
    Watch {
        /// Only clusters matching this pattern.
        pattern: Option<String>,
        /// Stop after this many redraws (for scripts and tests).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        zk: ZkArgs,
    },
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// A failure with its exit code.
#[derive(Debug)]
pub(crate) struct Fail {
    code: u8,
    error: anyhow::Error,
}

impl Fail {
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Fail {
        Fail {
            code: 2,
            error: error.into(),
        }
    }

    /// ZooKeeper refused the credential for the cluster's nodes (exit code 5).
    pub(crate) fn denied(error: impl Into<anyhow::Error>) -> Fail {
        Fail {
            code: 5,
            error: error.into(),
        }
    }

    /// The control plane cannot listen on its port (exit code 4).
    pub(crate) fn listen(error: impl Into<anyhow::Error>) -> Fail {
        Fail {
            code: 4,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail {
            code: 1,
            error: e.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let log = init_tracing(&cli, &env);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ochopod: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(dispatch(cli, env, log));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if is_broken_pipe(&f.error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("ochopod: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Installs the subscriber: human lines on stderr (`OCHOPOD_LOG`, else INFO for the agent, WARN
/// for the operator commands, DEBUG with `ochopod_debug=true`), and for the agent the pod log
/// of `/log` (the agent's own events at INFO, DEBUG with `ochopod_debug=true`, as in 1.x).
fn init_tracing(cli: &Cli, env: &std::collections::BTreeMap<String, String>) -> ochopod::PodLog {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let agent = matches!(cli.command, Command::Run(_));
    let debug = env
        .get("ochopod_debug")
        .is_some_and(|v| v == "true" || v == "1");
    let default = if debug {
        "debug"
    } else if agent {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_env("OCHOPOD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter);
    let log = ochopod::PodLog::new();
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    let pod_log = agent.then(|| {
        log.layer(debug)
            .with_filter(Targets::new().with_target("ochopod", level))
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(pod_log)
        .try_init();
    log
}

async fn dispatch(
    cli: Cli,
    env: std::collections::BTreeMap<String, String>,
    log: ochopod::PodLog,
) -> Result<u8, Fail> {
    match cli.command {
        Command::Run(args) => run::run(args, env, log).await,
        Command::Render(args) => run::render(args, env).await,
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ochopod", &mut std::io::stdout());
            Ok(0)
        }
        Command::Ls { pattern, zk } => {
            ops::ls(&ops::Ctx::new(&zk, &env)?, pattern.as_deref()).await
        }
        Command::Info { pod, view, zk } => ops::info(&ops::Ctx::new(&zk, &env)?, &pod, view).await,
        Command::Log { pod, follow, zk } => {
            ops::log(&ops::Ctx::new(&zk, &env)?, &pod, follow).await
        }
        Command::On { pod, yes, zk } => {
            ops::control(&ops::Ctx::new(&zk, &env)?.yes(yes), &pod, "on").await
        }
        Command::Off { pod, yes, zk } => {
            ops::control(&ops::Ctx::new(&zk, &env)?.yes(yes), &pod, "off").await
        }
        Command::Kill { pod, yes, zk } => {
            ops::control(&ops::Ctx::new(&zk, &env)?.yes(yes), &pod, "kill").await
        }
        Command::Reset { pod, yes, zk } => {
            ops::reset(&ops::Ctx::new(&zk, &env)?.yes(yes), &pod).await
        }
        Command::Signal { pod, body, yes, zk } => {
            ops::signal(&ops::Ctx::new(&zk, &env)?.yes(yes), &pod, &body).await
        }
        Command::Exec {
            pod,
            tool,
            args,
            files,
            yes,
            zk,
        } => {
            ops::exec(
                &ops::Ctx::new(&zk, &env)?.yes(yes),
                &pod,
                &tool,
                args,
                files,
            )
            .await
        }
        Command::Pause {
            cluster,
            reason,
            yes,
            zk,
        } => ops::pause(&ops::Ctx::new(&zk, &env)?.yes(yes), &cluster, Some(&reason)).await,
        Command::Resume { cluster, yes, zk } => {
            ops::pause(&ops::Ctx::new(&zk, &env)?.yes(yes), &cluster, None).await
        }
        Command::History { cluster, zk } => {
            ops::history(&ops::Ctx::new(&zk, &env)?, &cluster).await
        }
        Command::Plan { cluster, zk } => ops::plan(&ops::Ctx::new(&zk, &env)?, &cluster).await,
        Command::Hash { cluster, zk } => ops::hash(&ops::Ctx::new(&zk, &env)?, &cluster).await,
        Command::Watch { pattern, count, zk } => {
            ops::watch(&ops::Ctx::new(&zk, &env)?, pattern.as_deref(), count).await
        }
    }
}
