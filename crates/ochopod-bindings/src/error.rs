//! The crate's one error enum. Every message is one line: the binding, what was missing or
//! failed, and how to fix it. Causes are kept in `cause` fields (and printed inline), not chained
//! through `source()`, so printing the error once shows everything exactly once.

/// Everything that can go wrong while finding out where the pod runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A variable, file or value the binding needs is missing or unusable.
    #[error("{binding} binding: {what}; {fix}")]
    Missing {
        /// The binding that failed (`marathon`, `kubernetes`, ...).
        binding: &'static str,
        /// What was missing or wrong.
        what: String,
        /// How to fix it.
        fix: String,
    },
    /// The binding reached its platform (files, API server, metadata service) and failed.
    #[error("{binding} binding: {what}: {cause}; {fix}")]
    Platform {
        /// The binding that failed.
        binding: &'static str,
        /// What it was doing.
        what: String,
        /// The underlying failure, rendered as one line (the full cause chain).
        cause: String,
        /// How to fix it.
        fix: String,
    },
    /// A ZooKeeper address that does not parse.
    #[error(
        "invalid ZooKeeper address {url:?}: {reason}; write it as \"h1:2181,h2:2181/chroot\" or \
         \"zk://user:password@h1:2181,h2:2181/chroot\""
    )]
    InvalidZk {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A binding name that is not known.
    #[error(
        "unknown binding {0:?}; use one of local, generic, marathon, marathon-ec2, kubernetes, \
         kubernetes-ec2 or auto"
    )]
    UnknownBinding(String),
    /// The binding (or a setting) needs a cargo feature this build was made without. The fix
    /// names the command that builds an agent with it (the `ochopod-cli` package forwards every
    /// feature; a program on the `ochopod` library enables the feature of the same name).
    #[error(
        "{binding} binding: {what} needs the `{feature}` cargo feature, which this build lacks; \
         build the agent with `cargo build --release -p ochopod-cli --features {feature}` (a \
         program on the ochopod library: ochopod = {{ features = [\"{feature}\"] }}), or choose \
         another binding"
    )]
    FeatureDisabled {
        /// The binding asked for.
        binding: &'static str,
        /// What needed the feature.
        what: &'static str,
        /// The missing cargo feature.
        feature: &'static str,
    },
}

impl Error {
    pub(crate) fn missing(
        binding: &'static str,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::Missing {
            binding,
            what: what.into(),
            fix: fix.into(),
        }
    }

    #[allow(dead_code)] // used by the feature-gated bindings
    pub(crate) fn platform(
        binding: &'static str,
        what: impl Into<String>,
        cause: &(dyn std::error::Error + 'static),
        fix: impl Into<String>,
    ) -> Self {
        Error::Platform {
            binding,
            what: what.into(),
            cause: chain(cause),
            fix: fix.into(),
        }
    }
}

/// Renders an error and its sources as one line, `a: b: c`, skipping repeats.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string().replace(['\n', '\r'], " ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::Error;

    /// The command a feature error names builds: `ochopod-cli` forwards the feature to `ochopod`,
    /// which forwards it to this crate.
    #[test]
    fn feature_errors_name_a_command_that_works() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let features = |krate: &str| -> toml::Table {
            let path = root.join(krate).join("Cargo.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let doc: toml::Table = toml::from_str(&text).unwrap();
            doc["features"].as_table().unwrap().clone()
        };
        let own = features("ochopod-bindings");
        let cli = features("ochopod-cli");
        let lib = features("ochopod");
        for feature in ["kubernetes", "ec2", "ec2-api"] {
            assert!(own.contains_key(feature), "{feature}");
            let line = Error::FeatureDisabled {
                binding: "kubernetes",
                what: "the Kubernetes API",
                feature,
            }
            .to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(
                line.contains(&format!(
                    "`cargo build --release -p ochopod-cli --features {feature}`"
                )),
                "{line}"
            );
            assert!(
                line.contains(&format!("ochopod = {{ features = [\"{feature}\"] }}")),
                "{line}"
            );
            // The CLI enables the library's feature, which enables this crate's.
            for (krate, table, forwarded) in [
                ("ochopod-cli", &cli, format!("ochopod/{feature}")),
                ("ochopod", &lib, format!("ochopod-bindings/{feature}")),
            ] {
                let list = table
                    .get(feature)
                    .and_then(|v| v.as_array())
                    .unwrap_or_else(|| panic!("{krate} has no `{feature}` feature"));
                assert!(
                    list.iter().any(|v| v.as_str() == Some(forwarded.as_str())),
                    "{krate}'s `{feature}` does not enable {forwarded}: {list:?}"
                );
            }
        }
        // The shipped agent (the CLI's default build) has Kubernetes and EC2, not ec2-api (its
        // other defaults, such as `tls`, are not platform features).
        let default: Vec<&str> = cli["default"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for on in ["kubernetes", "ec2"] {
            assert!(default.contains(&on), "{on} missing from {default:?}");
        }
        assert!(!default.contains(&"ec2-api"), "{default:?}");
    }
}
