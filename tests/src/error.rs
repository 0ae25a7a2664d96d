//! The harness's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while setting up or observing an end-to-end scenario.
///
/// Every variant names what failed and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper command (`scripts/zk.sh`, `python3`, `cargo`, `pip`) failed.
    #[error("{command} failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed (tail).
        output: String,
    },
    /// The `ochopod` binary could not be found or built.
    #[error("the ochopod agent binary is missing at {path}: {why}; run `cargo build -p ochopod-cli` (or set OCHOPOD_BIN to a built binary)")]
    MissingBinary {
        /// Where it was expected.
        path: PathBuf,
        /// Why it is missing.
        why: String,
    },
    /// A condition did not hold before its deadline.
    #[error("timed out after {after:?} waiting for {what}; last observed: {last}")]
    Timeout {
        /// The condition waited for.
        what: String,
        /// How long the harness waited.
        after: Duration,
        /// The last state observed before giving up.
        last: String,
    },
    /// An HTTP request to an agent failed.
    #[error("HTTP {url}: {why}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// A reply or a ZooKeeper payload was not what the contract says.
    #[error("unexpected payload from {from}: {why}")]
    Payload {
        /// Where the payload came from.
        from: String,
        /// What is wrong with it.
        why: String,
    },
    /// A test or a harness call used the harness the wrong way.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result type of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;
