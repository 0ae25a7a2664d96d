//! The pod builder as a library user meets it: every setting has a method, nothing set is
//! dropped, and errors name the builder methods.

use ochopod::bindings::Explicit;
use ochopod::{ClusterView, Error, HookResult, Lifecycle, Pod, PodConfig, ProcessCommand};
use std::time::Duration;

struct Idle;

impl Lifecycle for Idle {
    async fn configure(&self, _: &ClusterView) -> HookResult<ProcessCommand> {
        Ok(ProcessCommand::argv(["sleep", "600"]))
    }
}

/// Settings given before and after `config` are all kept.
#[tokio::test]
async fn config_merges_with_the_other_methods() {
    let prepared = Pod::builder()
        .namespace("ns")
        .cluster("web")
        .binding("local")
        .port(18080)
        .map_port(9000, 19000)
        .config(PodConfig {
            explicit: Explicit {
                zk: Some("127.0.0.1:2999".into()),
                ports: [("7000".to_string(), 17000)].into(),
                ..Default::default()
            },
            token: Some("secret".into()),
            session_timeout: Some(Duration::from_secs(7)),
            ..Default::default()
        })
        .ip("127.0.0.1")
        .prepare()
        .await
        .expect("prepared");
    let reg = prepared.registration();
    assert_eq!(
        (reg.namespace.as_str(), reg.cluster.as_str()),
        ("ns", "web")
    );
    assert_eq!(reg.binding, "local");
    assert_eq!(reg.port, "18080");
    assert_eq!(reg.zk, "127.0.0.1:2999");
    assert_eq!((reg.host_port(9000), reg.host_port(7000)), (19000, 17000));
}

/// A setting given two values is refused, naming both methods; the same value twice is fine.
#[tokio::test]
async fn a_setting_given_two_values_is_refused() {
    let err = Pod::builder()
        .cluster("web")
        .map_port(9000, 19000)
        .config(PodConfig {
            cluster: Some("db".into()),
            explicit: Explicit {
                ports: [("9000".to_string(), 19001)].into(),
                ..Default::default()
            },
            ..Default::default()
        })
        .prepare()
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, Error::Settings(_)), "{err:?}");
    for needle in [
        "cluster is set twice",
        "\"web\" by PodBuilder::cluster",
        "\"db\" by PodBuilder::config",
        "ports.9000 is set twice",
        "PodBuilder::map_port",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    let err = Pod::builder()
        .config(PodConfig {
            token: Some("a".into()),
            ..Default::default()
        })
        .token("b")
        .cluster("web")
        .cluster("web")
        .prepare()
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "token is set twice, to \"a\" by PodBuilder::config and to \"b\" by PodBuilder::token"
        ),
        "{msg}"
    );
    assert!(
        !msg.contains("cluster"),
        "the same value twice is fine: {msg}"
    );
}

/// Errors speak the library's words: builder methods, not spec keys or flags.
#[tokio::test]
async fn errors_name_the_builder_methods() {
    let err = Pod::builder()
        .binding("local")
        .prepare()
        .await
        .err()
        .expect("no cluster");
    assert!(matches!(err, Error::MissingCluster), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("PodBuilder::cluster"), "{msg}");
    assert!(!msg.contains("[pod]") && !msg.contains("--"), "{msg}");

    // A control port another pod holds is its own error.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let err = Pod::builder()
        .cluster("web")
        .binding("local")
        .zk("127.0.0.1:2999")
        .port(port)
        .prepare()
        .await
        .expect("prepared")
        .run(Idle)
        .await
        .expect_err("cannot listen");
    let msg = err.to_string();
    match &err {
        Error::Listen { addr, .. } => assert_eq!(addr.port(), port),
        other => panic!("not Error::Listen: {other:?}"),
    }
    assert!(
        msg.contains("PodBuilder::port") && msg.contains("PodBuilder::map_port"),
        "{msg}"
    );
    assert!(!msg.contains("[pod]"), "{msg}");
}

/// `ochopod_start` in the pod's environment holds for a library pod as for a spec pod;
/// `PodBuilder::start` wins over it, and a value that is not a boolean is refused.
#[tokio::test]
async fn ochopod_start_in_the_environment_is_honoured() {
    let start_of =
        |prepared: &ochopod::PreparedPod| prepared.registration().extra.get("start").cloned();
    let base = || {
        Pod::builder()
            .cluster("web")
            .binding("local")
            .zk("127.0.0.1:2999")
    };
    let prepared = base()
        .env([("ochopod_start", "false")])
        .prepare()
        .await
        .expect("prepared");
    assert_eq!(start_of(&prepared), Some("false".into()));
    let prepared = base().prepare().await.expect("prepared");
    assert_eq!(start_of(&prepared), Some("true".into()), "default");
    let prepared = base()
        .env([("ochopod_start", "false")])
        .start(true)
        .prepare()
        .await
        .expect("prepared");
    assert_eq!(start_of(&prepared), Some("true".into()), "the method wins");
    let err = base()
        .env([("ochopod_start", "maybe")])
        .prepare()
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, Error::Settings(_)), "{err:?}");
    assert!(err.to_string().contains("ochopod_start"), "{err}");
}
