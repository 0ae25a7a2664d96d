use ochopod::{ClusterView, HookResult, Lifecycle, Pod, ProcessCommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The web server's container port; `PORT_9000` remaps it to a host port.
const PORT: u16 = 9000;

struct Web {
    dir: PathBuf,
}

impl Lifecycle for Web {
    // Runs at the first configuration and, through the default `reload`, at every change of
    // the cluster while the server runs: `cluster.txt` always says where the pod sits.
    async fn configure(&self, cluster: &ClusterView) -> HookResult<ProcessCommand> {
        let text = format!(
            "index {} of {}\npeers {}\n",
            cluster.index,
            cluster.size,
            cluster.grep("", PORT, false)
        );
        std::fs::write(self.dir.join("cluster.txt"), text)
            .map_err(|e| format!("cannot write cluster.txt: {e}"))?;
        // Each pod's host port for 9000: two copies on one machine do not clash.
        let port = cluster.pod.host_port(PORT).to_string();
        Ok(ProcessCommand::argv(["python3", "-m", "http.server", port.as_str()]).cwd(&self.dir))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // The runtime logs through `tracing`: without a subscriber it prints nothing.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let dir = PathBuf::from(std::env::var("WEB_DIR").unwrap_or_else(|_| "web".to_string()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("web: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    // What the builder leaves unset comes from the `ochopod_*` variables (ochopod_zk,
    // ochopod_binding, ochopod_port, ...) and `PORT_<n>` remappings of this environment.
    let pod = Pod::builder()
        .namespace("demo")
        .cluster("web")
        .env(std::env::vars());
    match pod.run(Web { dir }).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("web: {e}");
            ExitCode::from(2)
        }
    }
}
