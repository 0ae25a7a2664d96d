//! The configuration hash (`docs/protocol.md#the-configuration-hash`): SHA-256, lowercase hex, over
//! a canonical JSON serialization (sorted keys, no whitespace) of the cluster's live pods and its
//! dependency views.

use crate::wire::{Dependencies, Pods};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Writes `value` as canonical JSON: object keys sorted, no whitespace.
///
/// Key order does not depend on serde_json's `preserve_order` feature.
pub fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The configuration hash of `pods` (minus `dead`) and `dependencies`.
pub fn config_hash(pods: &Pods, dead: &BTreeSet<String>, dependencies: &Dependencies) -> String {
    let live: Pods = pods
        .iter()
        .filter(|(k, _)| !dead.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let doc = serde_json::json!({ "pods": live, "dependencies": dependencies });
    let mut text = String::with_capacity(256 * (pods.len() + 1));
    canonical_json(&doc, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Registration;
    use proptest::prelude::*;

    fn reg(ip: &str) -> Registration {
        Registration {
            cluster: "c".into(),
            namespace: "n".into(),
            ip: ip.into(),
            ..Default::default()
        }
    }

    #[test]
    fn canonical_json_sorts_keys_without_whitespace() {
        let v: Value = serde_json::from_str(r#"{"b": [1, {"z": 1, "a": 2}], "a": "x"}"#).unwrap();
        let mut s = String::new();
        canonical_json(&v, &mut s);
        assert_eq!(s, r#"{"a":"x","b":[1,{"a":2,"z":1}]}"#);
    }

    #[test]
    fn hash_is_lowercase_sha256_hex_and_excludes_dead_pods() {
        let mut pods = Pods::new();
        pods.insert("k1".into(), reg("1.1.1.1"));
        let h1 = config_hash(&pods, &BTreeSet::new(), &Dependencies::new());
        assert_eq!(h1.len(), 64);
        assert!(h1
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        pods.insert("k2".into(), reg("2.2.2.2"));
        let h2 = config_hash(&pods, &BTreeSet::new(), &Dependencies::new());
        assert_ne!(h1, h2);
        let dead: BTreeSet<String> = ["k2".to_string()].into();
        assert_eq!(config_hash(&pods, &dead, &Dependencies::new()), h1);
    }

    #[test]
    fn hash_covers_dependencies() {
        let pods = Pods::new();
        let mut deps = Dependencies::new();
        let empty = config_hash(&pods, &BTreeSet::new(), &deps);
        deps.insert("db".into(), Pods::new());
        let with_empty_dep = config_hash(&pods, &BTreeSet::new(), &deps);
        assert_ne!(empty, with_empty_dep);
    }

    proptest! {
        #[test]
        fn hash_ignores_insertion_order_and_sees_every_ip_change(
            ips in proptest::collection::btree_map("[a-f0-9]{8}", "[0-9]{1,3}\\.[0-9]{1,3}", 1..20),
            flip in any::<prop::sample::Index>(),
        ) {
            let regs: Vec<(String, Registration)> =
                ips.iter().map(|(k, ip)| (k.clone(), reg(ip))).collect();
            let forward: Pods = regs.iter().cloned().collect();
            let backward: Pods = regs.iter().rev().cloned().collect();
            let none = BTreeSet::new();
            let deps = Dependencies::new();
            prop_assert_eq!(config_hash(&forward, &none, &deps), config_hash(&backward, &none, &deps));
            let mut changed = forward.clone();
            let key = flip.get(&regs).0.clone();
            changed.get_mut(&key).unwrap().ip.push('9');
            prop_assert_ne!(config_hash(&forward, &none, &deps), config_hash(&changed, &none, &deps));
        }
    }
}
