//! The runtime's one clock: tokio's. Every `now` the runtime hands to the machines comes from
//! here, and every timer it arms is a tokio timer, so a test that pauses tokio's time
//! (`tokio::time::pause`) moves the runtime's whole notion of time (`clippy.toml` bans
//! `std::time::Instant::now` in this crate).

use std::time::Instant;

/// Now, on tokio's clock (virtual when the test paused time).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
