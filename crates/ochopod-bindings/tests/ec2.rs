//! The `-ec2` bindings against `moto_server` on loopback: IMDSv2 token and metadata, and (with
//! `ec2-api`) ZooKeeper found by tag through moto's EC2 API, with instances made here by boto3.
#![cfg(feature = "ec2")]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ochopod_bindings::{discover, Explicit, Options};

/// `moto_server` (moto 5.2's `moto.server.main`), with one fix to its IMDSv2 token answer: real
/// IMDS sends `X-aws-ec2-metadata-token-ttl-seconds` with the token, moto 5.2 does not, and
/// aws-config's IMDS client (rightly) refuses a token without it. The fix echoes the TTL the
/// client asked for, as IMDS does; everything else is moto as shipped.
const MOTO_SERVER: &str = r#"
import sys
import moto.instance_metadata.urls as urls
from moto.instance_metadata.responses import InstanceMetadataResponse
original = InstanceMetadataResponse.metadata_response
def with_ttl(request, full_url, headers):
    status, out, body = original(request, full_url, headers)
    if full_url.split("?")[0].endswith("/latest/api/token"):
        out = dict(out)
        out["x-aws-ec2-metadata-token-ttl-seconds"] = request.headers.get(
            "x-aws-ec2-metadata-token-ttl-seconds", "21600")
    return status, out, body
for key in list(urls.url_paths):
    urls.url_paths[key] = with_ttl
from moto.server import main
main(sys.argv[1:])
"#;

/// A moto server on a free loopback port, killed on drop.
struct Moto {
    port: u16,
    child: Child,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-c",
                MOTO_SERVER,
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto[server] must be installed");
        let mut moto = Moto { port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const MARATHON: &[(&str, &str)] = &[
    ("MARATHON_APP_ID", "/demo/web"),
    (
        "MESOS_TASK_ID",
        "demo_web.5c8c0e7d-c79e-11e8-9d5a-0242ac110004",
    ),
    ("HOST", "10.0.1.17"),
    ("PORT_8080", "31002"),
    ("ochopod_cluster", "web"),
    ("ochopod_zk", "zk-1:2181"),
];

fn opts() -> Options {
    Options {
        metadata_timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

fn with(
    base: &[(&'static str, &'static str)],
    extra: &[(&'static str, String)],
) -> BTreeMap<String, String> {
    let mut e = env(base);
    e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    e
}

#[tokio::test]
async fn marathon_ec2_reads_imdsv2() {
    let moto = Moto::start();
    let explicit = Explicit {
        binding: Some("marathon-ec2".into()),
        ..Default::default()
    };
    let vars = with(
        MARATHON,
        &[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("{}/", moto.url()),
        )],
    );
    let found = discover(&explicit, &vars, &opts()).await.unwrap();
    assert_eq!(found.binding, "marathon-ec2");
    assert_eq!(found.ip, "127.0.0.1", "moto's local-ipv4");
    assert_eq!(found.public, "198.51.100.1", "moto's public-ipv4");
    assert_eq!(found.node, "i-fake", "moto's instance-id");
    assert_eq!(found.application, "demo/web");
    assert_eq!(found.ports["8080"], 31002);

    // ochopod_ip and ochopod_public beat the metadata.
    let mut vars = vars;
    vars.insert("ochopod_ip".into(), "10.3.3.3".into());
    vars.insert("ochopod_public".into(), String::new());
    let found = discover(&explicit, &vars, &opts()).await.unwrap();
    assert_eq!(
        (
            found.ip.as_str(),
            found.public.as_str(),
            found.node.as_str()
        ),
        ("10.3.3.3", "", "i-fake")
    );
}

#[tokio::test]
async fn unreachable_metadata_is_a_one_line_error() {
    let closed = free_port();
    let explicit = Explicit {
        binding: Some("marathon-ec2".into()),
        ..Default::default()
    };
    let vars = with(
        MARATHON,
        &[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{closed}"),
        )],
    );
    let err = discover(&explicit, &vars, &opts())
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.starts_with(&format!(
            "marathon-ec2 binding: cannot read local-ipv4 from the EC2 instance metadata service at http://127.0.0.1:{closed}: "
        )),
        "{err}"
    );
    assert!(
        err.contains("run on EC2 with IMDSv2 enabled")
            && err.contains("marathon binding with ochopod_ip"),
        "{err}"
    );
}

/// Makes three `role=zookeeper` instances (terminates one) and one `role=kafka` with boto3;
/// returns the private IPs of the two running ZooKeeper instances, sorted.
#[cfg(feature = "ec2-api")]
fn make_instances(endpoint: &str) -> Vec<String> {
    let script = r#"
import boto3, json, sys
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
def run(role, n):
    r = ec2.run_instances(ImageId="ami-12c6146b", MinCount=n, MaxCount=n, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "role", "Value": role}]}])
    return [(i["InstanceId"], i["PrivateIpAddress"]) for i in r["Instances"]]
zk = run("zookeeper", 3)
run("kafka", 1)
ec2.terminate_instances(InstanceIds=[zk[2][0]])
print(json.dumps(sorted(ip for _, ip in zk[:2])))
"#;
    let out = Command::new("python3")
        .args(["-c", script, endpoint])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[cfg(feature = "ec2-api")]
#[tokio::test]
async fn zookeeper_from_ec2_tags() {
    let moto = Moto::start();
    let ips = make_instances(&moto.url());
    assert_eq!(ips.len(), 2);
    let expected = ips
        .iter()
        .map(|ip| format!("{ip}:2181"))
        .collect::<Vec<_>>()
        .join(",");

    // On the instance: region and credentials from IMDS (moto serves both), the EC2 API at moto.
    let explicit = Explicit {
        binding: Some("marathon-ec2".into()),
        ..Default::default()
    };
    let vars = with(
        &MARATHON[..5],
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", moto.url()),
            ("AWS_ENDPOINT_URL_EC2", moto.url()),
            ("ochopod_zk", "ec2-tag:role=zookeeper".to_string()),
        ],
    );
    let found = discover(&explicit, &vars, &opts()).await.unwrap();
    assert_eq!(
        found.zk.as_deref(),
        Some(expected.as_str()),
        "running instances tagged role=zookeeper only"
    );

    // Off EC2: region and credentials from the environment, explicit tag beats ochopod_zk.
    let explicit = Explicit {
        binding: Some("generic".into()),
        ip: Some("10.0.0.8".into()),
        zk: Some("ec2-tag:role=kafka".into()),
        ..Default::default()
    };
    let vars = with(
        &[
            ("HOSTNAME", "builder"),
            ("ochopod_zk", "ec2-tag:role=zookeeper"),
        ],
        &[
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_ENDPOINT_URL", moto.url()),
        ],
    );
    let found = discover(&explicit, &vars, &opts()).await.unwrap();
    let zk = found.zk.unwrap();
    assert_eq!(zk.split(',').count(), 1, "{zk}");
    assert!(
        !expected.contains(&zk),
        "the kafka instance, not a ZooKeeper one: {zk}"
    );

    let explicit = Explicit {
        zk: Some("ec2-tag:role=nothing".into()),
        ..explicit
    };
    let err = discover(&explicit, &vars, &opts())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "generic binding: no running EC2 instance in us-east-1 is tagged role=nothing; tag the \
         ZooKeeper instances with it, or set ochopod_zk to their addresses"
    );
}
