//! local, generic and marathon with real-looking environments, the Mesos agent's ZooKeeper files
//! in a temporary root, precedence (explicit > env > platform) and one-line errors.

use std::collections::BTreeMap;
use std::path::Path;

use ochopod_bindings::{discover, parse_zk, Environment, Error, Explicit, Options};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn opts(root: &Path) -> Options {
    Options {
        files_root: root.to_path_buf(),
        ..Options::default()
    }
}

async fn run(
    explicit: &Explicit,
    vars: &[(&str, &str)],
    root: &Path,
) -> Result<Environment, Error> {
    discover(explicit, &env(vars), &opts(root)).await
}

fn write(root: &Path, file: &str, text: &str) {
    let path = root.join(file.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// What Marathon 1.x and a Mesos agent give a task in BRIDGE mode with two port mappings.
const MARATHON: &[(&str, &str)] = &[
    ("MARATHON_APP_ID", "/demo/web"),
    ("MARATHON_APP_VERSION", "2026-11-20T10:15:02.000Z"),
    ("MARATHON_APP_DOCKER_IMAGE", "example/web-ochopod:1.0"),
    (
        "MESOS_TASK_ID",
        "demo_web.5c8c0e7d-c79e-11e8-9d5a-0242ac110004",
    ),
    ("MESOS_SANDBOX", "/mnt/mesos/sandbox"),
    (
        "MESOS_CONTAINER_NAME",
        "mesos-4f7b2c1e-1d2a-4d55-8a0f-1b2c3d4e5f60",
    ),
    ("HOST", "10.0.1.17"),
    ("PORT0", "31002"),
    ("PORT1", "31003"),
    ("PORTS", "31002,31003"),
    ("PORT", "31002"),
    ("PORT_8080", "31002"),
    ("PORT_9000", "31003"),
    ("HOSTNAME", "4f7b2c1e1d2a"),
    ("ochopod_cluster", "web"),
    ("ochopod_namespace", "demo"),
    ("ochopod_token", "t0ken"),
];

#[tokio::test]
async fn local_is_all_loopback_with_default_zookeeper() {
    let root = tempfile::tempdir().unwrap();
    let found = run(
        &Explicit {
            binding: Some("local".into()),
            ..Default::default()
        },
        &[
            ("ochopod_cluster", "web"),
            ("PORT_9000", "9001"),
            ("HOSTNAME", "laptop"),
        ],
        root.path(),
    )
    .await
    .unwrap();
    assert_eq!(found.binding, "local");
    assert_eq!(found.ip, "127.0.0.1");
    assert_eq!(found.public, "");
    assert_eq!(found.node, "laptop");
    assert_eq!(found.application, "web");
    assert_eq!(found.task, format!("local-{}", std::process::id()));
    assert_eq!(found.zk.as_deref(), Some("127.0.0.1:2181"));
    assert_eq!(found.control_port, 8080);
    assert_eq!(
        found.ports,
        BTreeMap::from([("8080".into(), 8080), ("9000".into(), 9001)])
    );
    assert_eq!(
        found.settings,
        BTreeMap::from([("cluster".into(), "web".into())])
    );
}

#[tokio::test]
async fn local_ports_from_the_spec_merge_over_port_variables() {
    let root = tempfile::tempdir().unwrap();
    let explicit = Explicit {
        binding: Some("local".into()),
        port: Some(8081),
        ports: BTreeMap::from([("8081".into(), 18081), ("9000".into(), 19000)]),
        ..Default::default()
    };
    let found = run(
        &explicit,
        &[
            ("PORT_9000", "9001"),
            ("PORT_7000", "7001"),
            ("ochopod_port", "8090"),
        ],
        root.path(),
    )
    .await
    .unwrap();
    assert_eq!(found.control_port, 8081, "the flag beats ochopod_port");
    assert_eq!(
        found.ports,
        BTreeMap::from([
            ("7000".into(), 7001),
            ("8081".into(), 18081),
            ("9000".into(), 19000)
        ])
    );
}

#[tokio::test]
async fn generic_takes_ochopod_ip_and_public_and_the_hostname() {
    let root = tempfile::tempdir().unwrap();
    let found = run(
        &Explicit {
            binding: Some("generic".into()),
            ..Default::default()
        },
        &[
            ("HOSTNAME", "c0ffee123456"),
            ("ochopod_ip", "10.1.2.3"),
            ("ochopod_public", "203.0.113.9"),
            ("ochopod_zk", "zk-1:2181,zk-2:2181"),
            ("ochopod_cluster", "db"),
            ("ochopod_port", "9090"),
        ],
        root.path(),
    )
    .await
    .unwrap();
    assert_eq!(
        (found.ip.as_str(), found.public.as_str()),
        ("10.1.2.3", "203.0.113.9")
    );
    assert_eq!(
        (found.node.as_str(), found.task.as_str()),
        ("c0ffee123456", "c0ffee123456")
    );
    assert_eq!(found.application, "db");
    assert_eq!(found.control_port, 9090);
    assert_eq!(found.ports, BTreeMap::from([("9090".into(), 9090)]));
    assert_eq!(found.zk.as_deref(), Some("zk-1:2181,zk-2:2181"));
    assert!(!found.settings.contains_key("ip") && !found.settings.contains_key("zk"));
}

#[tokio::test]
async fn generic_finds_a_non_loopback_ipv4_or_says_how_to_give_one() {
    let root = tempfile::tempdir().unwrap();
    let found = run(
        &Explicit {
            binding: Some("generic".into()),
            ..Default::default()
        },
        &[],
        root.path(),
    )
    .await;
    match found {
        Ok(env) => {
            let ip: std::net::Ipv4Addr = env.ip.parse().unwrap();
            assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
            assert_eq!(env.zk, None);
            let err = env.require_zk().unwrap_err().to_string();
            assert!(
                err.starts_with("generic binding: no ZooKeeper address;"),
                "{err}"
            );
            assert!(err.contains("ochopod_zk"), "{err}");
        }
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("generic binding") && e.contains("ochopod_ip"),
                "{e}"
            );
        }
    }
}

#[tokio::test]
async fn marathon_reads_the_task_environment_and_the_first_mesos_file() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "/opt/mesosphere/etc/mesos-slave-common",
        "MESOS_CLUSTER=prod\nMESOS_MASTER=zk://zk-1.zk:2181,zk-2.zk:2181,zk-3.zk:2181/mesos\n",
    );
    write(
        root.path(),
        "/opt/mesosphere/etc/mesos-slave",
        "MESOS_MASTER=zk://other:2181/mesos\n",
    );
    write(root.path(), "/etc/mesos/zk", "zk://third:2181/mesos\n");
    let found = run(
        &Explicit {
            binding: Some("marathon".into()),
            ..Default::default()
        },
        MARATHON,
        root.path(),
    )
    .await
    .unwrap();
    assert_eq!(found.binding, "marathon");
    assert_eq!(found.application, "demo/web", "leading slash dropped");
    assert_eq!(found.task, "demo_web.5c8c0e7d-c79e-11e8-9d5a-0242ac110004");
    assert_eq!(
        (found.ip.as_str(), found.node.as_str()),
        ("10.0.1.17", "10.0.1.17")
    );
    assert_eq!(
        found.zk.as_deref(),
        Some("zk-1.zk:2181,zk-2.zk:2181,zk-3.zk:2181"),
        "Mesos's /mesos dropped"
    );
    assert_eq!(found.ports["8080"], 31002);
    assert_eq!(found.ports["9000"], 31003);
    assert_eq!(found.settings["token"], "t0ken");
    assert!(
        !format!("{found:?}").contains("t0ken"),
        "Debug redacts secrets"
    );
}

#[tokio::test]
async fn marathon_falls_back_through_the_three_files_in_order() {
    let root = tempfile::tempdir().unwrap();
    let explicit = Explicit {
        binding: Some("marathon".into()),
        ..Default::default()
    };
    write(
        root.path(),
        "/etc/mesos/zk",
        "# written by the installer\nzk://ops:pw@10.0.0.5:2181,10.0.0.6/mesos\n",
    );
    let found = run(&explicit, MARATHON, root.path()).await.unwrap();
    assert_eq!(found.zk.as_deref(), Some("10.0.0.5:2181,10.0.0.6:2181"));
    assert_eq!(found.zk_auth, None, "Mesos's credentials are not ours");

    // A mesos-slave file without a zk:// master is skipped; one with it wins over /etc/mesos/zk.
    write(
        root.path(),
        "/opt/mesosphere/etc/mesos-slave-common",
        "MESOS_MASTER=10.0.0.9:5050\n",
    );
    write(
        root.path(),
        "/opt/mesosphere/etc/mesos-slave",
        "export MESOS_MASTER='zk://m1:2181,m2:2181/mesos'\n",
    );
    let found = run(&explicit, MARATHON, root.path()).await.unwrap();
    assert_eq!(found.zk.as_deref(), Some("m1:2181,m2:2181"));
}

#[tokio::test]
async fn explicit_beats_env_beats_platform() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "/etc/mesos/zk", "zk://mesos-zk:2181/mesos\n");
    let mut vars = MARATHON.to_vec();
    vars.extend([
        ("ochopod_zk", "zk://env-zk:2181/ochopod"),
        ("ochopod_ip", "10.9.9.9"),
        ("ochopod_public", "198.51.100.7"),
    ]);

    // Env beats the platform: ochopod_zk over the Mesos file, chroot kept (it is ours).
    let found = run(
        &Explicit {
            binding: Some("marathon".into()),
            ..Default::default()
        },
        &vars,
        root.path(),
    )
    .await
    .unwrap();
    assert_eq!(found.zk.as_deref(), Some("env-zk:2181/ochopod"));
    assert_eq!(found.ip, "10.9.9.9");
    assert_eq!(found.public, "198.51.100.7");

    // Explicit beats env.
    let explicit = Explicit {
        binding: Some("marathon".into()),
        zk: Some("zk://ops:s3cret@flag-1,flag-2:2182/x".into()),
        ip: Some("10.7.7.7".into()),
        public: Some(String::new()),
        ports: BTreeMap::from([("9000".into(), 32000)]),
        ..Default::default()
    };
    let found = run(&explicit, &vars, root.path()).await.unwrap();
    assert_eq!(found.zk.as_deref(), Some("flag-1:2181,flag-2:2182/x"));
    assert_eq!(found.zk_auth, Some(("ops".into(), "s3cret".into())));
    assert!(!format!("{found:?}").contains("s3cret"));
    assert_eq!(found.ip, "10.7.7.7");
    assert_eq!(found.public, "");
    assert_eq!(found.ports["9000"], 32000);

    // ochopod_binding picks the binding when no flag does; the flag beats it.
    let found = run(
        &Explicit::default(),
        &[("ochopod_binding", "local")],
        root.path(),
    )
    .await
    .unwrap();
    assert_eq!(found.binding, "local");
    let found = run(
        &Explicit {
            binding: Some("generic".into()),
            ..Default::default()
        },
        &[("ochopod_binding", "local"), ("ochopod_ip", "10.0.0.1")],
        root.path(),
    )
    .await
    .unwrap();
    assert_eq!(found.binding, "generic");
}

#[tokio::test]
async fn auto_picks_from_the_environment() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "/etc/mesos/zk", "zk://z:2181/mesos\n");
    let found = run(&Explicit::default(), MARATHON, root.path())
        .await
        .unwrap();
    assert_eq!(found.binding, "marathon");
    let found = run(
        &Explicit::default(),
        &[("ochopod_ip", "10.0.0.1")],
        root.path(),
    )
    .await
    .unwrap();
    assert_eq!(found.binding, "generic");
    // Kubernetes variables win over Marathon's; without the feature that is a clear error.
    let mut vars = MARATHON.to_vec();
    vars.push(("KUBERNETES_SERVICE_HOST", "127.0.0.1"));
    let found = run(
        &Explicit {
            binding: Some("auto".into()),
            ..Default::default()
        },
        &vars,
        root.path(),
    )
    .await;
    match found {
        Ok(env) => panic!("no API server here, yet {env:?}"),
        Err(e) => assert!(e.to_string().starts_with("kubernetes binding: "), "{e}"),
    }
}

/// Given flags, environment, and what the error line must hold.
type Case<'a> = (Explicit, Vec<(&'a str, &'a str)>, &'a [&'a str]);

#[tokio::test]
async fn failures_are_one_line_naming_binding_what_and_fix() {
    let root = tempfile::tempdir().unwrap();
    let marathon = Explicit {
        binding: Some("marathon".into()),
        ..Default::default()
    };
    let without = |key: &str| -> Vec<(&str, &str)> {
        MARATHON
            .iter()
            .copied()
            .filter(|(k, _)| *k != key)
            .collect()
    };

    let cases: Vec<Case> = vec![
        (marathon.clone(), without("MARATHON_APP_ID"), &["marathon binding: MARATHON_APP_ID is not set;", "Marathon application"]),
        (marathon.clone(), without("MESOS_TASK_ID"), &["marathon binding: MESOS_TASK_ID is not set;", "generic binding"]),
        (
            marathon.clone(),
            MARATHON.to_vec(),
            &[
                "marathon binding: no ZooKeeper address: none of /opt/mesosphere/etc/mesos-slave-common, /opt/mesosphere/etc/mesos-slave, /etc/mesos/zk names a zk:// URL;",
                "set ochopod_zk",
            ],
        ),
        (
            marathon.clone(),
            without("HOST").into_iter().chain([("ochopod_zk", "z:2181")]).collect(),
            &["marathon binding: neither HOST nor LIBPROCESS_IP is set;", "ochopod_ip"],
        ),
        (
            Explicit { binding: Some("local".into()), ..Default::default() },
            vec![("PORT_9000", "lots")],
            &["local binding: PORT_9000=\"lots\" is not a port number;", "host port"],
        ),
        (
            Explicit { binding: Some("local".into()), ..Default::default() },
            vec![("ochopod_port", "0")],
            &["local binding: ochopod_port=\"0\" is not a port number;"],
        ),
        (
            Explicit { binding: Some("local".into()), zk: Some("zk://h1:2181,,h2".into()), ..Default::default() },
            vec![],
            &["invalid ZooKeeper address \"zk://h1:2181,,h2\": empty host between commas;"],
        ),
        (Explicit { binding: Some("mesos".into()), ..Default::default() }, vec![], &["unknown binding \"mesos\"; use one of local, generic"]),
    ];
    for (explicit, vars, needles) in cases {
        let err = run(&explicit, &vars, root.path())
            .await
            .expect_err("must fail")
            .to_string();
        assert!(!err.contains('\n'), "one line: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }
}

#[tokio::test]
async fn unreadable_mesos_file_is_named() {
    let root = tempfile::tempdir().unwrap();
    // A directory where a file is expected cannot be read as text.
    std::fs::create_dir_all(root.path().join("etc/mesos/zk")).unwrap();
    let err = run(
        &Explicit {
            binding: Some("marathon".into()),
            ..Default::default()
        },
        MARATHON,
        root.path(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("marathon binding: cannot read "), "{err}");
    assert!(
        err.contains("etc/mesos/zk") && err.contains("set ochopod_zk"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_etc_mesos_zk_is_named_with_its_fix() {
    let marathon = Explicit {
        binding: Some("marathon-ec2".into()),
        ..Default::default()
    };
    for (content, needle) in [
        // Not a URL at all: before, the file was skipped and the error blamed "no ZooKeeper".
        (
            "10.0.0.5:2181\n",
            "etc/mesos/zk holds \"10.0.0.5:2181\", not a zk:// URL;",
        ),
        (
            "# the agent's ensemble\nzk://10.0.0.5:notaport/mesos\n",
            "etc/mesos/zk holds an unusable ZooKeeper URL: bad port \"notaport\"",
        ),
    ] {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "/etc/mesos/zk", content);
        let err = run(&marathon, MARATHON, root.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.starts_with("marathon-ec2 binding: "), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(
            err.ends_with("write the Mesos agent's ZooKeeper there as zk://host:2181[,host:2181...]/mesos, or set ochopod_zk"),
            "{err}"
        );
    }
}

#[test]
fn zk_urls_with_credentials_and_chroot() {
    let zk = parse_zk("zk://user:pass@h1,h2/path").unwrap();
    assert_eq!(zk.hosts, ["h1:2181", "h2:2181"]);
    assert_eq!(zk.chroot.as_deref(), Some("/path"));
    assert_eq!(zk.auth, Some(("user".into(), "pass".into())));
    assert_eq!(zk.connect_string(), "h1:2181,h2:2181/path");
    assert!(!zk.to_string().contains("pass"));

    let zk = parse_zk(" h1:2181 , h2:2182/ ").unwrap();
    assert_eq!(zk.hosts, ["h1:2181", "h2:2182"]);
    assert_eq!(zk.chroot, None);

    // A password may hold ':' and '@'; the last '@' ends the credentials.
    let zk = parse_zk("zk://u:p:a@ss@h1:2181/a/b").unwrap();
    assert_eq!(zk.auth, Some(("u".into(), "p:a@ss".into())));
    assert_eq!(zk.chroot.as_deref(), Some("/a/b"));
}

#[tokio::test]
async fn ec2_tag_without_the_feature_or_tag_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let explicit = Explicit {
        binding: Some("local".into()),
        zk: Some("ec2-tag:".into()),
        ..Default::default()
    };
    let err = run(&explicit, &[], root.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("local binding: ochopod_zk=\"ec2-tag:\" names no tag;"),
        "{err}"
    );
    if !cfg!(feature = "ec2-api") {
        let explicit = Explicit {
            zk: Some("ec2-tag:role=zk".into()),
            ..explicit
        };
        let err = run(&explicit, &[], root.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs the `ec2-api` cargo feature"), "{err}");
    }
}
