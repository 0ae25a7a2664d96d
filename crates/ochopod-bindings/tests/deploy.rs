//! The deployment examples of `docs/deploy/` are real: the Kubernetes manifests parse into
//! k8s-openapi types without losing a field, grant what the binding reads, and the Marathon
//! application, run the way Marathon runs it, gives the marathon binding what it needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ochopod_bindings::{discover, Explicit, Options};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy")
}

#[tokio::test]
async fn marathon_app_runs_as_the_marathon_binding_expects() {
    let text = std::fs::read_to_string(deploy_dir().join("marathon/web.json")).unwrap();
    let app: serde_json::Value = serde_json::from_str(&text).unwrap();
    // What Marathon and the Mesos agent add for a task of this app (BRIDGE, two mappings).
    let mut env: BTreeMap<String, String> = app["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    env.insert("MARATHON_APP_ID".into(), app["id"].as_str().unwrap().into());
    env.insert(
        "MESOS_TASK_ID".into(),
        "demo_web.0b1c2d3e-c79e-11e8-9d5a-0242ac110004".into(),
    );
    env.insert("HOST".into(), "10.0.1.17".into());
    let mappings = app["container"]["docker"]["portMappings"]
        .as_array()
        .unwrap();
    for (i, m) in mappings.iter().enumerate() {
        let host = 31000 + i as u16;
        env.insert(format!("PORT{i}"), host.to_string());
        env.insert(format!("PORT_{}", m["containerPort"]), host.to_string());
    }
    // The Mesos agent's /etc/mesos, where the application's read-only volume puts it.
    let volumes = app["container"]["volumes"].as_array().unwrap();
    let mesos = volumes
        .iter()
        .find(|v| v["hostPath"] == "/etc/mesos")
        .expect("web.json mounts the Mesos agent's /etc/mesos");
    assert_eq!(mesos["mode"], "RO");
    let inside = mesos["containerPath"]
        .as_str()
        .unwrap()
        .trim_start_matches('/');
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(inside)).unwrap();
    std::fs::write(
        root.path().join(inside).join("zk"),
        "zk://10.0.0.5:2181,10.0.0.6:2181/mesos\n",
    )
    .unwrap();
    let opts = Options {
        files_root: root.path().to_path_buf(),
        ..Options::default()
    };
    let found = discover(&Explicit::default(), &env, &opts).await.unwrap();
    assert_eq!(found.binding, "marathon");
    assert_eq!(found.application, "demo/web");
    assert_eq!(found.ports["8080"], 31000, "the control port is mapped");
    assert_eq!(found.ports["9000"], 31001);
    assert_eq!(found.zk.as_deref(), Some("10.0.0.5:2181,10.0.0.6:2181"));
    assert_eq!(found.settings["cluster"], "web");
    assert_eq!(
        app["healthChecks"][0]["portIndex"], 0,
        "health check on the control port"
    );
    // Alive on /healthz (a health check on /readyz would kill pods waiting for a dependency),
    // ready on /readyz, both on the control port.
    assert_eq!(app["healthChecks"][0]["path"], "/healthz");
    assert_eq!(mappings[0]["containerPort"], 8080);
    let ready = &app["readinessChecks"][0];
    assert_eq!(ready["path"], "/readyz");
    assert_eq!(ready["portName"], mappings[0]["name"]);
    assert_eq!(ready["httpStatusCodesForReady"], serde_json::json!([200]));
}

#[cfg(feature = "kubernetes")]
mod kubernetes {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};

    /// Every document of every manifest, as (file, JSON value).
    fn documents() -> Vec<(String, serde_json::Value)> {
        let dir = deploy_dir().join("kubernetes");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut docs = Vec::new();
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        {
            let text = std::fs::read_to_string(file).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_json::Value::deserialize(doc).unwrap();
                docs.push((
                    file.file_name().unwrap().to_string_lossy().into_owned(),
                    value,
                ));
            }
        }
        docs
    }

    /// Parses into `T` and checks nothing was dropped (a misspelt field would be).
    fn typed<T: DeserializeOwned + Serialize>(file: &str, value: &serde_json::Value) -> T {
        let typed: T =
            serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(
            &back, value,
            "{file}: a field did not survive k8s-openapi's types"
        );
        typed
    }

    #[test]
    fn manifests_parse_into_k8s_openapi_types() {
        let mut kinds = BTreeMap::new();
        let (mut role, mut binding, mut deployment, mut service, mut account) =
            (None, None, None, None, None);
        for (file, doc) in documents() {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no kind"))
                .to_string();
            *kinds.entry(kind.clone()).or_insert(0) += 1;
            match kind.as_str() {
                "Role" => role = Some(typed::<Role>(&file, &doc)),
                "RoleBinding" => binding = Some(typed::<RoleBinding>(&file, &doc)),
                "Deployment" => deployment = Some(typed::<Deployment>(&file, &doc)),
                "Service" => service = Some(typed::<Service>(&file, &doc)),
                "ServiceAccount" => account = Some(typed::<ServiceAccount>(&file, &doc)),
                other => panic!("{file}: unexpected kind {other}"),
            }
        }
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        let (role, binding, deployment, service, account) = (
            role.unwrap(),
            binding.unwrap(),
            deployment.unwrap(),
            service.unwrap(),
            account.unwrap(),
        );

        // The Role lets the binding `get` pods.
        let rules = role.rules.unwrap();
        assert!(rules.iter().any(
            |r| r.resources.as_deref() == Some(&["pods".to_string()][..])
                && r.verbs.contains(&"get".to_string())
                && r.api_groups.as_deref() == Some(&[String::new()][..])
        ));
        assert!(rules.iter().any(|r| r.resources.as_deref()
            == Some(&["endpointslices".to_string()][..])
            && r.verbs.contains(&"list".to_string())));
        // ... bound to the service account the pods run as.
        let account_name = account.metadata.name.unwrap();
        assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
        assert!(binding
            .subjects
            .unwrap()
            .iter()
            .any(|s| s.kind == "ServiceAccount" && s.name == account_name));
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(account_name.as_str())
        );

        // The container gives the binding its pod name and namespace, and names the Service.
        let env: BTreeMap<String, String> = pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| {
                let v = e
                    .value
                    .or_else(|| e.value_from.and_then(|f| f.field_ref).map(|f| f.field_path));
                (e.name, v.unwrap_or_default())
            })
            .collect();
        assert_eq!(env["POD_NAME"], "metadata.name");
        assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
        assert_eq!(
            env["ochopod_zk_service"],
            service.metadata.name.clone().unwrap()
        );
        let ports = pod.containers[0].ports.clone().unwrap();
        assert!(
            ports.iter().any(|p| p.container_port == 8080),
            "the control port is declared"
        );
        // Ready on /readyz (configured, process running), alive on /healthz, control port.
        let probe = |p: Option<k8s_openapi::api::core::v1::Probe>, what: &str| {
            let get = p
                .and_then(|p| p.http_get)
                .unwrap_or_else(|| panic!("no {what} httpGet"));
            let port = match get.port {
                IntOrString::String(name) => ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| p.container_port)
                    .unwrap_or_else(|| panic!("{what}: no port named {name}")),
                IntOrString::Int(n) => n,
            };
            (get.path.unwrap_or_default(), port)
        };
        let container = &pod.containers[0];
        assert_eq!(
            probe(container.readiness_probe.clone(), "readinessProbe"),
            ("/readyz".to_string(), 8080)
        );
        assert_eq!(
            probe(container.liveness_probe.clone(), "livenessProbe"),
            ("/healthz".to_string(), 8080)
        );

        // The Service's client port is the one the binding picks.
        let svc_ports = service.spec.unwrap().ports.unwrap();
        assert!(svc_ports
            .iter()
            .any(|p| p.name.as_deref() == Some("client") && p.port == 2181));
    }
}
