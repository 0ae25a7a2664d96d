//! Dependency names (`docs/protocol.md#dependencies`): `foo` means `NS.foo`, `/other.foo` is
//! absolute, `*` matches any run of characters in cluster names, and a cluster never depends on
//! itself. The dependency view (what a round's `on` carries under `dependencies`) is built
//! here, once, for the leader and for the tools ([`views`]).

use crate::wire::{Dependencies, Pods};

/// One entry of `depends_on`, resolved against the pod's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencyPattern {
    /// The name as written: the key in `dependencies` and in `grep()`.
    pub name: String,
    /// The full-name pattern (`ns.cluster`, may hold `*`).
    pub pattern: String,
}

impl DependencyPattern {
    /// Resolves `name` as written in `depends_on` for a pod of `namespace`.
    pub fn parse(name: &str, namespace: &str) -> Result<Self, crate::Error> {
        let trimmed = name.trim();
        let pattern = match trimmed.strip_prefix('/') {
            Some(abs) => abs.to_string(),
            None => format!("{namespace}.{trimmed}"),
        };
        let bad = |why: &str| {
            crate::Error::Input(format!(
                "bad dependency {name:?} in depends_on: {why} (write `cluster`, `/namespace.cluster` or a pattern like `web-*`)"
            ))
        };
        if trimmed.is_empty() {
            return Err(bad("empty name"));
        }
        if !pattern.contains('.') {
            return Err(bad("an absolute name needs a namespace"));
        }
        if pattern.contains('/') || pattern.chars().any(char::is_whitespace) {
            return Err(bad("no slash or space inside a name"));
        }
        Ok(DependencyPattern {
            name: trimmed.to_string(),
            pattern,
        })
    }

    /// Whether the cluster `full` (`ns.cluster`) belongs to this dependency of cluster `own`.
    pub fn matches(&self, full: &str, own: &str) -> bool {
        full != own && glob(&self.pattern, full)
    }

    /// Whether the pattern holds a wildcard (so clusters may appear later).
    pub fn is_wildcard(&self) -> bool {
        self.pattern.contains('*')
    }
}

/// Resolves every `depends_on` entry; the first bad one is the error.
pub fn parse_all(
    names: &[String],
    namespace: &str,
) -> Result<Vec<DependencyPattern>, crate::Error> {
    names
        .iter()
        .map(|n| DependencyPattern::parse(n, namespace))
        .collect()
}

/// Whether the cluster `full` belongs to one of the dependencies of cluster `own`: the leader
/// watches it and its pods join the dependency view.
pub fn matches_any(patterns: &[DependencyPattern], full: &str, own: &str) -> bool {
    patterns.iter().any(|p| p.matches(full, own))
}

/// The view of every dependency of cluster `own`, by name as written: the union of the pods of
/// every cluster it matches (`clusters`: each cluster's full name with its committed pods).
/// Every dependency has its entry, empty while no cluster matches.
pub fn views<'a, I>(patterns: &[DependencyPattern], own: &str, clusters: I) -> Dependencies
where
    I: IntoIterator<Item = (&'a str, &'a Pods)>,
    I::IntoIter: Clone,
{
    let clusters = clusters.into_iter();
    let mut out = Dependencies::new();
    for pattern in patterns {
        let view = out.entry(pattern.name.clone()).or_default();
        for (cluster, pods) in clusters.clone() {
            if pattern.matches(cluster, own) {
                view.extend(pods.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
    out
}

/// Glob match with `*` (any run of characters, possibly empty).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_relative_absolute_and_wildcards() {
        let own = "prod.lb";
        let table = [
            ("web", "prod.web", true),
            ("web", "dev.web", false),
            ("/dev.web", "dev.web", true),
            ("/dev.web", "prod.web", false),
            ("web-*", "prod.web-blue", true),
            ("web-*", "prod.web-", true),
            ("web-*", "prod.webx", false),
            ("/prod.*", "prod.db", true),
            ("/prod.*", "prod.lb", false), // never itself
            ("lb", "prod.lb", false),      // never itself
            ("*", "prod.anything", true),
            ("/*.zk", "shared.zk", true),
        ];
        for (name, full, expected) in table {
            let d = DependencyPattern::parse(name, "prod").unwrap();
            assert_eq!(d.matches(full, own), expected, "{name} vs {full}");
            assert_eq!(d.name, name, "keyed as written");
        }
    }

    #[test]
    fn views_are_the_union_of_matching_clusters_by_name_as_written() {
        let pods = |keys: &[&str]| -> Pods {
            keys.iter()
                .map(|k| (k.to_string(), crate::Registration::default()))
                .collect()
        };
        let (blue, green, db, lb) = (
            pods(&["b1"]),
            pods(&["g1", "g2"]),
            pods(&["d1"]),
            pods(&["l1"]),
        );
        let clusters = [
            ("prod.web-blue", &blue),
            ("prod.web-green", &green),
            ("dev.db", &db),
            ("prod.lb", &lb),
        ];
        let patterns =
            parse_all(&["web-*".into(), "/dev.db".into(), "cache".into()], "prod").unwrap();
        let views = views(&patterns, "prod.lb", clusters);
        let keys = |name: &str| views[name].keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys("web-*"), ["b1", "g1", "g2"]);
        assert_eq!(keys("/dev.db"), ["d1"]);
        assert!(
            keys("cache").is_empty(),
            "a dependency without a cluster has an empty view"
        );
        assert_eq!(views.len(), 3);
        assert!(matches_any(&patterns, "prod.web-blue", "prod.lb"));
        assert!(!matches_any(&patterns, "prod.lb", "prod.lb"));
        assert!(!matches_any(&patterns, "dev.web-blue", "prod.lb"));
    }

    #[test]
    fn bad_names_are_explained() {
        for bad in ["", "/nodot", "a/b", "a b"] {
            let err = DependencyPattern::parse(bad, "prod")
                .unwrap_err()
                .to_string();
            assert!(err.contains("depends_on"), "{bad}: {err}");
        }
    }
}
