//! The cluster view handed to a pod when it is configured: who is in the cluster, who is in
//! each dependency, and where this pod sits among them.

use crate::wire::{ControlBody, Dependencies, Pods, Registration};
use serde::Serialize;

/// A pod's view of its cluster during a configuration (1.x's `cluster` object).
///
/// Built from the leader's [`ControlBody`]; `index` is the pod's position among the sorted keys
/// (0-based, consecutive), `seq` its stable ZooKeeper sequence number.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterView {
    /// This pod's key.
    pub key: String,
    /// This pod's position among the sorted keys of `pods`.
    pub index: usize,
    /// This pod's stable sequence number.
    pub seq: u64,
    /// Number of pods in the cluster.
    pub size: usize,
    /// Every pod of the cluster, by key.
    pub pods: Pods,
    /// Dependency views, by name as written in `depends_on`.
    pub dependencies: Dependencies,
    /// This pod's own registration.
    pub pod: Registration,
}

impl ClusterView {
    /// Builds the view of pod `key` from a control body.
    ///
    /// Fails when `key` is not one of the pods: the leader sent a body meant for someone else.
    pub fn new(key: &str, body: &ControlBody) -> Result<Self, crate::Error> {
        let index = body.pods.keys().position(|k| k == key).ok_or_else(|| {
            crate::Error::Input(format!(
                "pod {key} is not in the cluster view sent by the leader ({} pods)",
                body.pods.len()
            ))
        })?;
        let pod = body.pods[key].clone();
        let seq = pod.seq.unwrap_or(index as u64);
        Ok(ClusterView {
            key: key.to_string(),
            index,
            seq,
            size: body.pods.len(),
            pods: body.pods.clone(),
            dependencies: body.dependencies.clone(),
            pod,
        })
    }

    /// `"ip:port,ip:port"` for every pod of `dependency` (the cluster itself when `dependency`
    /// is empty or names this cluster), using each pod's host port for container port `port`
    /// and its public address when `public` is set.
    ///
    /// An unknown dependency yields an empty string.
    pub fn grep(&self, dependency: &str, port: u16, public: bool) -> String {
        let pods = if dependency.is_empty() || dependency == self.pod.cluster {
            Some(&self.pods)
        } else {
            self.dependencies.get(dependency)
        };
        pods.map(|pods| grep_pods(pods, port, public))
            .unwrap_or_default()
    }
}

/// `"ip:port,ip:port"` over `pods`, in key order.
pub fn grep_pods(pods: &Pods, port: u16, public: bool) -> String {
    pods.values()
        .map(|p| {
            let ip = if public && !p.public.is_empty() {
                &p.public
            } else {
                &p.ip
            };
            format!("{ip}:{}", p.host_port(port))
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(ip: &str, public: &str, seq: u64, ports: &[(u16, u16)]) -> Registration {
        Registration {
            cluster: "web".into(),
            namespace: "demo".into(),
            ip: ip.into(),
            public: public.into(),
            seq: Some(seq),
            ports: ports.iter().map(|(c, h)| (c.to_string(), *h)).collect(),
            port: "8080".into(),
            ..Default::default()
        }
    }

    fn body() -> ControlBody {
        let mut pods = Pods::new();
        pods.insert("c".into(), reg("10.0.0.3", "", 7, &[(9000, 31003)]));
        pods.insert("a".into(), reg("10.0.0.1", "1.1.1.1", 4, &[(9000, 31001)]));
        pods.insert("b".into(), reg("10.0.0.2", "", 9, &[]));
        let mut db = Pods::new();
        db.insert("x".into(), reg("10.1.0.1", "", 1, &[(5432, 40000)]));
        let mut deps = Dependencies::new();
        deps.insert("db".into(), db);
        ControlBody {
            pods,
            dependencies: deps,
            key: "b".into(),
        }
    }

    #[test]
    fn index_is_position_among_sorted_keys_and_seq_is_kept() {
        let b = body();
        for (key, index, seq) in [("a", 0, 4), ("b", 1, 9), ("c", 2, 7)] {
            let v = ClusterView::new(key, &b).unwrap();
            assert_eq!((v.index, v.seq, v.size), (index, seq, 3), "{key}");
        }
    }

    #[test]
    fn grep_remaps_ports_and_prefers_public_only_when_asked() {
        let v = ClusterView::new("a", &body()).unwrap();
        assert_eq!(
            v.grep("", 9000, false),
            "10.0.0.1:31001,10.0.0.2:9000,10.0.0.3:31003"
        );
        assert_eq!(
            v.grep("web", 9000, true),
            "1.1.1.1:31001,10.0.0.2:9000,10.0.0.3:31003"
        );
        assert_eq!(v.grep("db", 5432, false), "10.1.0.1:40000");
        assert_eq!(v.grep("nope", 5432, false), "");
    }

    #[test]
    fn a_key_outside_the_view_is_an_error() {
        let err = ClusterView::new("zz", &body()).unwrap_err().to_string();
        assert!(err.contains("not in the cluster view"), "{err}");
    }
}
