use ochopod_http::Client;
use ochopod_zk::{Directory, ZkSettings};
use std::time::Duration;

// `pods ZK NAMESPACE.CLUSTER`: every pod of a cluster, found in ZooKeeper, with what its
// control plane says (`/info`).
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(zk), Some(cluster)) = (args.next(), args.next()) else {
        return Err("usage: pods ZK NAMESPACE.CLUSTER, e.g. pods 127.0.0.1:2181 demo.web".into());
    };
    let directory = Directory::connect(&ZkSettings::new(zk, Duration::from_secs(5))).await?;
    // Routes that act (control, signal, reset, exec) need the token when the pods have one.
    let client = Client::new(std::env::var("ochopod_token").ok());
    for pod in directory.pods(&cluster).await? {
        let Some(addr) = pod.registration.control_addr() else {
            println!("{} seq {}: no control address", pod.key, pod.seq);
            continue;
        };
        match client.info(&addr, Duration::from_secs(5)).await {
            Ok(info) => println!(
                "{} seq {} at {addr}: process {}, pid {}",
                pod.key, pod.seq, info["process"], info["pid"]
            ),
            Err(e) => println!("{} seq {} at {addr}: {e}", pod.key, pod.seq),
        }
    }
    directory.close().await;
    Ok(())
}
