//! Free loopback ports.

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Ports are picked below the kernel's ephemeral range (`ip_local_port_range`, 32768-60999 by
/// default): a port the kernel hands out for `bind(0)` is also one it may give to the next
/// outgoing connection (a ZooKeeper client, an HTTP client), which would then steal it from the
/// agent that was told to listen there.
const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

/// A TCP port on 127.0.0.1 that is free now and was never returned before in this process.
///
/// Ports come from 20000-32000, outside the kernel's ephemeral range, in an order seeded by the
/// process id and the clock, so parallel test processes rarely try the same ones; within one
/// test binary the same port is never handed out twice, even after its listener closed.
pub fn free_port() -> Result<u16> {
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let span = u64::from(LAST - FIRST);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    let mut x = (u64::from(std::process::id()) << 32) ^ nanos ^ (given.len() as u64 * 7919);
    for _ in 0..512 {
        // xorshift: a cheap, well-spread walk over the range.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = FIRST + (x % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(Error::Usage(format!(
        "free_port: no free port found in {FIRST}-{LAST} after 512 tries"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        TcpListener::bind(("127.0.0.1", a)).unwrap();
    }
}
