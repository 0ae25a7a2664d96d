//! The machines' timers: each machine names its timers in a closed enum (its `Timer`) and keeps
//! their deadlines in a small fixed table indexed by that enum, as quinn-proto does. A machine's
//! `poll_timeout` is the earliest deadline of the table among the timers that count in its
//! current state, and its `handle_timeout` fires the due ones by kind.
//!
//! Only deadlines the machine acts on live here; instants that are only records (when a process
//! started, since when a cluster is dirty) stay plain fields.

use std::marker::PhantomData;
use std::time::Instant;

/// A closed set of timers: each kind has a fixed slot in a [`TimerTable`].
pub(crate) trait TimerKind: Copy + 'static {
    /// Every kind, in slot order.
    const ALL: &'static [Self];
    /// The kind's slot, below `ALL.len()`.
    fn slot(self) -> usize;
}

/// The deadlines of a machine's `N` timers; a stopped timer has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TimerTable<T: TimerKind, const N: usize> {
    at: [Option<Instant>; N],
    kind: PhantomData<T>,
}

impl<T: TimerKind, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        TimerTable {
            at: [None; N],
            kind: PhantomData,
        }
    }
}

impl<T: TimerKind, const N: usize> TimerTable<T, N> {
    /// The deadline of `timer`, when it is armed.
    pub(crate) fn get(&self, timer: T) -> Option<Instant> {
        self.at[timer.slot()]
    }

    /// Arms `timer` for `at` (replacing any earlier deadline).
    pub(crate) fn set(&mut self, timer: T, at: Instant) {
        self.at[timer.slot()] = Some(at);
    }

    /// Arms `timer` for `at`, or stops it when `at` is `None`.
    pub(crate) fn set_opt(&mut self, timer: T, at: Option<Instant>) {
        self.at[timer.slot()] = at;
    }

    /// Stops `timer`.
    pub(crate) fn stop(&mut self, timer: T) {
        self.at[timer.slot()] = None;
    }

    /// Whether `timer` is armed and its deadline has come by `now`.
    pub(crate) fn is_due(&self, timer: T, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| now >= t)
    }

    /// The earliest deadline among the armed timers for which `counts` holds.
    pub(crate) fn next(&self, mut counts: impl FnMut(T) -> bool) -> Option<Instant> {
        T::ALL
            .iter()
            .filter_map(|&kind| self.get(kind).filter(|_| counts(kind)))
            .min()
    }
}

#[cfg(test)]
// The tests take one real instant as the arbitrary origin of their simulated time.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum T {
        A,
        B,
        C,
    }

    impl TimerKind for T {
        const ALL: &'static [T] = &[T::A, T::B, T::C];
        fn slot(self) -> usize {
            self as usize
        }
    }

    #[test]
    fn the_next_deadline_is_the_earliest_armed_timer_that_counts() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut table: TimerTable<T, 3> = TimerTable::default();
        assert_eq!(table.next(|_| true), None);
        table.set(T::A, t0 + s(5));
        table.set(T::C, t0 + s(2));
        assert_eq!(table.next(|_| true), Some(t0 + s(2)));
        assert_eq!(table.next(|k| k != T::C), Some(t0 + s(5)));
        assert!(table.is_due(T::C, t0 + s(2)) && !table.is_due(T::C, t0 + s(1)));
        assert!(
            !table.is_due(T::B, t0 + s(100)),
            "a stopped timer is never due"
        );
        table.stop(T::C);
        table.set_opt(T::B, Some(t0 + s(3)));
        assert_eq!(table.next(|_| true), Some(t0 + s(3)));
        table.set_opt(T::B, None);
        assert_eq!(
            (table.get(T::A), table.get(T::B), table.get(T::C)),
            (Some(t0 + s(5)), None, None)
        );
    }
}
