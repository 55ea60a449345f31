//! Counters in this process's memory: the default store, and the fail-open fallback of the
//! Redis one. One mutex over small maps: an admission takes it once for all of a request's
//! checks, which is what makes the check-and-add atomic.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::state::counter::{Admission, Charge, Check, Counters, StateError, UnixTime, Window};

/// Most counters (or cooldowns) kept per window length. Counter names come from the
/// configuration (virtual keys, routes, provider keys), not from clients, so this is a
/// guard, not a working limit: when it is reached, counters of past windows are dropped,
/// and a counter that still finds no room is not kept (its checks pass).
pub const MAX_COUNTERS: usize = 65_536;

/// One counter: its window's number and its total in that window.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: u64,
    total: u64,
}

#[derive(Debug, Default)]
struct Tables {
    minute: HashMap<Box<str>, Slot>,
    day: HashMap<Box<str>, Slot>,
    /// Cooldowns: the time each ends.
    cooling: HashMap<Box<str>, UnixTime>,
}

impl Tables {
    fn table(&mut self, window: Window) -> &mut HashMap<Box<str>, Slot> {
        match window {
            Window::Minute => &mut self.minute,
            Window::Day => &mut self.day,
        }
    }

    /// The counter's total in the current window.
    fn current(&mut self, name: &str, window: Window, now: UnixTime) -> u64 {
        let index = window.index(now);
        self.table(window).get(name).filter(|slot| slot.index == index).map_or(0, |s| s.total)
    }

    fn add(&mut self, name: &str, window: Window, amount: u64, now: UnixTime) {
        let index = window.index(now);
        let table = self.table(window);
        if let Some(slot) = table.get_mut(name) {
            if slot.index != index {
                *slot = Slot { index, total: 0 };
            }
            slot.total = slot.total.saturating_add(amount);
            return;
        }
        if table.len() >= MAX_COUNTERS {
            table.retain(|_, slot| slot.index == index);
            if table.len() >= MAX_COUNTERS {
                return;
            }
        }
        table.insert(name.into(), Slot { index, total: amount });
    }
}

/// Counters in memory.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    tables: Mutex<Tables>,
}

impl MemoryCounters {
    /// Empty counters.
    pub fn new() -> MemoryCounters {
        MemoryCounters::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Counters::admit`] without the future: memory never waits.
    pub fn admit_now(&self, checks: &[Check<'_>], now: UnixTime) -> Admission {
        let mut tables = self.lock();
        for (index, check) in checks.iter().enumerate() {
            if !check.passes(tables.current(check.name, check.window, now)) {
                return Admission::Refused {
                    check: index,
                    retry_after: check.window.remaining(now),
                };
            }
        }
        for check in checks.iter().filter(|check| check.cost > 0) {
            tables.add(check.name, check.window, check.cost, now);
        }
        Admission::Admitted
    }

    /// [`Counters::charge`] without the future.
    pub fn charge_now(&self, charges: &[Charge<'_>], now: UnixTime) {
        let mut tables = self.lock();
        for charge in charges.iter().filter(|charge| charge.amount > 0) {
            tables.add(charge.name, charge.window, charge.amount, now);
        }
    }

    /// [`Counters::cool`] without the future.
    pub fn cool_now(&self, name: &str, period: Duration, now: UnixTime) {
        let mut tables = self.lock();
        let cooling = &mut tables.cooling;
        if cooling.len() >= MAX_COUNTERS && !cooling.contains_key(name) {
            cooling.retain(|_, until| *until > now);
            if cooling.len() >= MAX_COUNTERS {
                return;
            }
        }
        cooling.insert(name.into(), now.after(period));
    }

    /// [`Counters::cooling`] without the future.
    pub fn cooling_now(&self, names: &[&str], now: UnixTime) -> Vec<Option<Duration>> {
        let tables = self.lock();
        names
            .iter()
            .map(|name| {
                let until = tables.cooling.get(*name).filter(|until| **until > now)?;
                Some(Duration::from_millis(until.0 - now.0))
            })
            .collect()
    }
}

impl Counters for MemoryCounters {
    async fn admit(&self, checks: &[Check<'_>], now: UnixTime) -> Result<Admission, StateError> {
        Ok(self.admit_now(checks, now))
    }

    async fn charge(&self, charges: &[Charge<'_>], now: UnixTime) -> Result<(), StateError> {
        self.charge_now(charges, now);
        Ok(())
    }

    async fn cool(&self, name: &str, period: Duration, now: UnixTime) -> Result<(), StateError> {
        self.cool_now(name, period, now);
        Ok(())
    }

    async fn cooling(
        &self,
        names: &[&str],
        now: UnixTime,
    ) -> Result<Vec<Option<Duration>>, StateError> {
        Ok(self.cooling_now(names, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixTime = UnixTime(1_700_000_020_000); // 40 s into a minute

    fn requests(limit: u64) -> Check<'static> {
        Check { name: "key:a:requests", window: Window::Minute, cost: 1, limit }
    }

    fn tokens(limit: u64) -> Check<'static> {
        Check { name: "key:a:tokens", window: Window::Minute, cost: 0, limit }
    }

    #[test]
    fn requests_are_counted_per_window() {
        let counters = MemoryCounters::new();
        for _ in 0..3 {
            assert_eq!(counters.admit_now(&[requests(3)], T0), Admission::Admitted);
        }
        assert_eq!(
            counters.admit_now(&[requests(3)], T0),
            Admission::Refused { check: 0, retry_after: Duration::from_secs(20) }
        );
        // The next minute starts afresh.
        let next = T0.after(Duration::from_secs(20));
        assert_eq!(counters.admit_now(&[requests(3)], next), Admission::Admitted);
    }

    #[test]
    fn a_refusal_adds_nothing_to_any_counter() {
        let counters = MemoryCounters::new();
        counters.charge_now(
            &[Charge { name: "key:a:tokens", window: Window::Minute, amount: 100 }],
            T0,
        );
        // The request check passes, the token check does not: the request is not counted.
        assert_eq!(
            counters.admit_now(&[requests(1), tokens(100)], T0),
            Admission::Refused { check: 1, retry_after: Duration::from_secs(20) }
        );
        assert_eq!(counters.admit_now(&[requests(1)], T0), Admission::Admitted);
    }

    #[test]
    fn token_budgets_refuse_once_spent() {
        let counters = MemoryCounters::new();
        let charge = |amount| [Charge { name: "key:a:tokens", window: Window::Minute, amount }];
        assert_eq!(counters.admit_now(&[tokens(100)], T0), Admission::Admitted);
        counters.charge_now(&charge(99), T0);
        assert_eq!(counters.admit_now(&[tokens(100)], T0), Admission::Admitted);
        // The response reports more than was left: the overdraft is kept until the window ends.
        counters.charge_now(&charge(50), T0);
        assert!(matches!(counters.admit_now(&[tokens(100)], T0), Admission::Refused { .. }));
        let day = [Check { name: "key:a:tokens", window: Window::Day, cost: 0, limit: 100 }];
        assert_eq!(counters.admit_now(&day, T0), Admission::Admitted, "windows are separate");
    }

    #[test]
    fn cooldowns_end() {
        let counters = MemoryCounters::new();
        counters.cool_now("pool:k1", Duration::from_secs(5), T0);
        assert_eq!(
            counters.cooling_now(&["pool:k1", "pool:k2"], T0.after(Duration::from_secs(2))),
            [Some(Duration::from_secs(3)), None]
        );
        assert_eq!(counters.cooling_now(&["pool:k1"], T0.after(Duration::from_secs(5))), [None]);
    }

    #[test]
    fn the_tables_stay_bounded() {
        let counters = MemoryCounters::new();
        let names: Vec<String> = (0..MAX_COUNTERS + 10).map(|i| format!("n{i}")).collect();
        for name in &names {
            counters.charge_now(&[Charge { name, window: Window::Minute, amount: 1 }], T0);
        }
        assert_eq!(counters.lock().minute.len(), MAX_COUNTERS);
        // A later window makes room by dropping the past one.
        let later = T0.after(Duration::from_secs(60));
        counters.charge_now(&[Charge { name: "fresh", window: Window::Minute, amount: 1 }], later);
        assert_eq!(counters.lock().minute.len(), 1);
    }
}
