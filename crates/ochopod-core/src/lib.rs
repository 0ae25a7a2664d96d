//! Ochopod's pure model.
//!
//! This crate holds what every other Ochopod crate agrees on: the wire types stored in ZooKeeper
//! and sent over HTTP ([`wire`]), the cluster view a pod is configured with ([`view`]), dependency
//! matching ([`deps`]), the configuration hash ([`hash`]), the settings ([`settings`]), seedable
//! jitter for backoffs ([`jitter`]), and the two sans-IO state machines that carry every rule of
//! the design: the leader's reconfiguration machine ([`leader`]) and the pod's lifecycle machine
//! ([`pod`]).
//!
//! **Architecture invariant:** no IO, no clock, no tokio, no ZooKeeper, no HTTP. Time is always a
//! parameter (`now: Instant`); the machines hand out actions and their next deadline, and a
//! runtime (the `ochopod` crate) carries them out and feeds the results back. Every rule is
//! therefore testable here, with simulated time, in microseconds.
#![warn(missing_docs)]

pub mod deps;
pub mod hash;
pub mod jitter;
pub mod leader;
pub mod pod;
pub mod settings;
mod timer;
pub mod view;
pub mod wire;
pub mod zk_address;

pub use deps::DependencyPattern;
pub use jitter::Jitter;
pub use view::ClusterView;
pub use wire::{
    ControlBody, Dependencies, Epoch, HistoryEntry, Info, Pause, PauseStatus, Pods, Registration,
    Task, PROTOCOL,
};
pub use zk_address::{ZkAddress, ZkAddressError, DEFAULT_ZK_PORT};

/// Errors of the pure model: bad input, always with what is wrong and how to fix it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A payload (registration, snapshot) that cannot be read.
    #[error("malformed payload: {0}")]
    Payload(String),
    /// Bad input from a request, a setting or a name.
    #[error("{0}")]
    Input(String),
}
