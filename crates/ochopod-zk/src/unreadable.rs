//! The leader's bookkeeping of pod nodes it cannot read (yet).
//!
//! A pod node whose payload is not a registration is never judged for good on one read: Ochopod
//! 1.x creates its node empty and writes its registration just after, so a leader may read it in
//! between. The node is read again as soon as its data changes (the leader's watch on `pods/` is
//! recursive) and, while it stays bad, at growing intervals; it is reported (the leader's
//! `/info`, the log) and takes no part in rounds until it reads well. Time is a parameter, so the
//! schedule is tested without a clock.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::layout::Cached;

/// First retry of an unreadable registration; it doubles up to [`RETRY_MAX`].
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest interval between two retries.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(10);
/// An unreadable registration is logged as a warning once it has stayed bad this long (an empty
/// one is normal for an instant); a malformed one is logged at once.
pub(crate) const WARN_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Entry {
    why: String,
    since: Instant,
    delay: Duration,
    next: Instant,
    warned: bool,
}

/// The unreadable pod nodes of one cluster, by node name, with their retry schedule.
#[derive(Debug, Default)]
pub(crate) struct Unreadables {
    entries: BTreeMap<String, Entry>,
}

impl Unreadables {
    /// Brings the set in line with `cache` after a read of `pods/`; returns whether the set of
    /// unreadable nodes or a reason changed.
    pub(crate) fn sync(&mut self, now: Instant, cache: &HashMap<String, Cached>) -> bool {
        let mut changed = false;
        self.entries.retain(|name, e| match cache.get(name) {
            Some(Cached::Bad(_)) => true,
            other => {
                changed = true;
                if matches!(other, Some(Cached::Good(_))) {
                    let after = now.saturating_duration_since(e.since);
                    tracing::info!(%name, ?after, "registration now readable");
                }
                false
            }
        });
        for (name, entry) in cache {
            let Cached::Bad(why) = entry else { continue };
            match self.entries.get_mut(name) {
                Some(e) => {
                    if e.why != *why {
                        e.why = why.clone();
                        changed = true;
                    }
                    if !e.warned && now.saturating_duration_since(e.since) >= WARN_AFTER {
                        e.warned = true;
                        tracing::warn!(%name, why = %e.why, "a registration stays unreadable: retrying; it takes no part in rounds meanwhile");
                    }
                }
                None => {
                    let empty = why.starts_with("registration is empty");
                    if empty {
                        tracing::debug!(%name, %why, "registration not written yet");
                    } else {
                        tracing::warn!(%name, %why, "unreadable registration: re-read when it changes, retried meanwhile");
                    }
                    self.entries.insert(
                        name.clone(),
                        Entry {
                            why: why.clone(),
                            since: now,
                            delay: RETRY_FIRST,
                            next: now + RETRY_FIRST,
                            warned: !empty,
                        },
                    );
                    changed = true;
                }
            }
        }
        changed
    }

    /// When the next retry is due, if any node is unreadable.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.next).min()
    }

    /// Drops from `cache` every unreadable node whose retry is due at `now` (so the next read
    /// fetches it again) and doubles its interval; returns whether any was due.
    pub(crate) fn due(&mut self, now: Instant, cache: &mut HashMap<String, Cached>) -> bool {
        let mut any = false;
        for (name, e) in &mut self.entries {
            if e.next <= now {
                cache.remove(name);
                e.delay = (e.delay * 2).min(RETRY_MAX);
                e.next = now + e.delay;
                any = true;
            }
        }
        any
    }

    /// Node name -> why, as shown in the leader's `/info`.
    pub(crate) fn report(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .map(|(name, e)| (name.clone(), e.why.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ochopod_core::Registration;

    const NODE: &str = "0badc0de-0000-4000-8000-000000000001.0000000007";

    fn bad(why: &str) -> Cached {
        Cached::Bad(why.to_string())
    }

    fn good() -> Cached {
        Cached::Good(Box::new(Registration {
            ip: "127.0.0.1".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_bad_node_is_retried_with_doubling_intervals_then_dropped_once_good() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut u = Unreadables::default();
        let mut cache: HashMap<String, Cached> =
            [(NODE.to_string(), bad("registration is empty"))].into();
        assert!(u.sync(t0, &cache), "a new unreadable node is a change");
        assert_eq!(u.report()[NODE], "registration is empty");
        assert_eq!(u.next_retry(), Some(at(250)));
        assert!(!u.due(at(249), &mut cache), "not due yet");
        assert!(cache.contains_key(NODE));
        // Each due retry forgets the payload (the next read fetches it) and doubles the wait.
        let mut t = 250;
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(u.due(at(t), &mut cache));
            assert!(!cache.contains_key(NODE), "forgotten, so read again");
            cache.insert(NODE.to_string(), bad("registration is empty"));
            assert!(!u.sync(at(t), &cache), "same reason: no change to report");
            let next = u.next_retry().unwrap();
            waits.push(next.duration_since(at(t)).as_millis());
            t = next.duration_since(t0).as_millis() as u64;
        }
        assert_eq!(
            waits,
            vec![500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]
        );
        // A new reason is reported; a good read ends it.
        cache.insert(NODE.to_string(), bad("malformed registration: EOF"));
        assert!(u.sync(at(t), &cache));
        assert_eq!(u.report()[NODE], "malformed registration: EOF");
        cache.insert(NODE.to_string(), good());
        assert!(u.sync(at(t), &cache));
        assert!(u.report().is_empty());
        assert_eq!(u.next_retry(), None);
    }

    #[test]
    fn a_node_gone_or_foreign_is_no_longer_unreadable() {
        let t0 = Instant::now();
        let mut u = Unreadables::default();
        let mut cache: HashMap<String, Cached> = [
            (NODE.to_string(), bad("malformed registration: x")),
            ("other.0000000008".to_string(), bad("registration is empty")),
        ]
        .into();
        assert!(u.sync(t0, &cache));
        assert_eq!(u.report().len(), 2);
        cache.remove(NODE);
        cache.insert("other.0000000008".to_string(), Cached::Foreign);
        assert!(u.sync(t0, &cache));
        assert!(u.report().is_empty());
        assert!(!u.sync(t0, &cache), "nothing more changed");
    }
}
