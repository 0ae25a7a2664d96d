//! Dependency names (`docs/protocol.md#dependencies`): `foo` means `NS.foo`, `/other.foo` is
//! absolute, `*` matches any run of characters in cluster names, and a cluster never depends on
//! itself.

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
    fn bad_names_are_explained() {
        for bad in ["", "/nodot", "a/b", "a b"] {
            let err = DependencyPattern::parse(bad, "prod")
                .unwrap_err()
                .to_string();
            assert!(err.contains("depends_on"), "{bad}: {err}");
        }
    }
}
