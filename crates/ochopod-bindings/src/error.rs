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
    /// The binding (or a setting) needs a cargo feature this build was made without.
    #[error(
        "{binding} binding: {what} needs the `{feature}` cargo feature of ochopod-bindings, which \
         this build lacks; rebuild with `--features {feature}` or choose another binding"
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
