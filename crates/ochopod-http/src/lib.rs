//! Ochopod's HTTP control plane: the hyper server (routes, status codes, limits, token) and the
//! client the leader fans out with. **Never depends on** ZooKeeper or the supervisor.
//!
//! # Server
//!
//! The runtime implements [`Handler`] and hands it to [`serve`] with a bound listener. The
//! [`Router`] turns every request into exactly one call of the handler, or into a JSON error
//! (`{"error": "..."}`) when the request is bad, without touching the handler:
//!
//! | route | methods | handler | codes |
//! |---|---|---|---|
//! | `/info` | GET, POST | [`Handler::info`] | 200 |
//! | `/log` | GET, POST | [`Handler::log`] | 200 |
//! | `/healthz` | GET, POST | [`Handler::healthy`] | 200 / 503 |
//! | `/readyz` | GET, POST | [`Handler::ready`] | 200 / 503 |
//! | `/metrics` | GET, POST | [`Handler::metrics`] (Prometheus text) | 200 |
//! | `/reset` | POST, token | [`Handler::reset`] | the handler's |
//! | `/control/<task>[/<secs>]` | POST, token | [`Handler::control`] | the handler's, 408 |
//! | `/exec` | POST, token | [`Handler::exec`] | the handler's |
//!
//! `/exec` takes two forms: a JSON body ([`ExecRequest`]), or 1.x's [`SHELL_HEADER`] with the
//! files as a `multipart/form-data` upload. The 1.x form answers as 1.x does: 404 `{}` for an
//! unknown tool, otherwise always 200 `{"code": N, "stdout": [lines]}`.
//!
//! With [`ServerConfig::tls`] the server speaks TLS only (feature `tls`, rustls); with a client
//! CA it asks for client certificates (mutual TLS): the acting routes then need a verified one
//! (403 without), the read-only routes too unless [`ServerTls::open_read_only`]. Certificate,
//! key and CA files are read again when they change. A plain-HTTP request to a TLS port gets a
//! plain 400 saying to use `https`.
//!
//! Errors decided by the router: unknown route 404, wrong method 405, missing or wrong token 401,
//! body over [`ServerConfig::max_body`] 413, malformed JSON, unknown task, bad epoch header or bad
//! timeout 400, control timeout 408, handler panic 500.
//!
//! # Client
//!
//! [`Client`] is a typed client for every route, with connection reuse; the leader's fan-out is
//! [`Client::control_all`]. The read-only routes (`info`, `log`, `metrics`, ...) turn a non-2xx
//! answer into [`Error::Status`]; the routes that act (`control`, `signal`, `reset`, `exec`)
//! return any answer as a [`Reply`], so `?` only catches transport failures there: check
//! [`Reply::is_success`] (a failed `signal` hook answers 500).
//!
//! The types its signatures name are re-exported here ([`Info`], [`Task`], [`Epoch`],
//! [`Bytes`], [`serde_json`], ...): a tool needs `ochopod-http` (and `ochopod-zk` to find the
//! pods), nothing else.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ochopod_http::Error> {
//! use std::time::Duration;
//! let client = ochopod_http::Client::new(None);
//! let info = client.info("127.0.0.1:8080", Duration::from_secs(2)).await?;
//! println!("{}", info["state"]);
//! # Ok(()) }
//! ```
//!
//! # A tool
//!
//! A tool finds the pods with `ochopod-zk`'s `Directory` and talks to each with [`Client`]
//! (dependencies: `ochopod-zk`, `ochopod-http`, and `tokio` for the runtime):
//!
//! ```no_run
#![doc = include_str!("../docs/pods_tool.rs")]
//! ```
#![warn(missing_docs)]

mod client;
mod exec;
mod multipart;
mod outcome;
mod server;
mod tls;

pub use client::Client;
pub use exec::ExecRequest;
pub use outcome::{answer_of, control_input, outcome_reply};
pub use server::{
    serve, ControlRequest, Handler, PeerCertified, Reply, Router, ServerConfig, SHELL_HEADER,
};
pub use tls::{ClientTls, ServerTls};

// What this crate's signatures name, so a tool needs no other dependency to call them.
pub use bytes::Bytes;
pub use ochopod_core::wire::{Epoch, Info, Registration, RoundReport, Task, EPOCH_HEADER};
pub use serde_json;

/// Everything that can go wrong in this crate, each variant naming the problem and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The control server could not use its listener.
    #[error("control server: {0}")]
    Io(#[from] std::io::Error),
    /// A pod address the client cannot use.
    #[error("bad pod address {addr:?}: {reason}; expected `ip:port`, e.g. `10.0.0.4:8080`")]
    Address {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS settings that cannot be used (a missing or bad file, a build without the `tls`
    /// feature).
    #[error("TLS: {0}")]
    Tls(String),
    /// The client's token cannot be sent in an HTTP header.
    #[error("bad token: {0}")]
    Token(String),
    /// An exec request that would be refused (bad file name, empty tool).
    #[error("bad exec request: {0}")]
    Exec(String),
    /// The request could not be sent or the connection failed.
    #[error("{route} on {addr}: {reason}")]
    Transport {
        /// The pod's address.
        addr: String,
        /// The route (`/info`, `/control/on`, ...).
        route: String,
        /// The whole cause chain, flattened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Box<hyper_util::client::legacy::Error>,
    },
    /// No complete reply within the request timeout.
    #[error("{route} on {addr}: no reply within {after:?}")]
    Timeout {
        /// The pod's address.
        addr: String,
        /// The route.
        route: String,
        /// The request timeout that passed.
        after: std::time::Duration,
    },
    /// The pod answered a read-only route with a non-2xx code.
    #[error("{route} on {addr} answered {code}: {error}")]
    Status {
        /// The pod's address.
        addr: String,
        /// The route.
        route: String,
        /// The HTTP status code.
        code: u16,
        /// The `error` field of the reply, or its text.
        error: String,
    },
    /// The reply could not be read or is not what the route returns.
    #[error("{route} on {addr}: unexpected reply: {reason}")]
    Decode {
        /// The pod's address.
        addr: String,
        /// The route.
        route: String,
        /// What is wrong with the reply.
        reason: String,
    },
}
