//! Budgets in requests and tokens, for a virtual key or a route: what admission checks and
//! what a response's usage charges, as [`state`](crate::state) checks and charges. Pure:
//! the counter names are made once when the configuration is loaded, and time is given.
//!
//! Requests are counted when admitted. Tokens are charged once the response has reported
//! them, so admission can only refuse a budget that is already spent: the request that
//! crosses the line is served in full, and the overdraft counts against the rest of the
//! window. (Reserving `max_tokens` up front would refuse requests that would have fitted,
//! and most requests do not set it.)

use std::time::Duration;

use crate::state::{Charge, Check, Window};

/// The limits of one virtual key or route; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Requests admitted per minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens (input and output) per minute.
    pub tokens_per_minute: Option<u64>,
    /// Tokens (input and output) per UTC day.
    pub tokens_per_day: Option<u64>,
}

impl Budget {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
            || self.tokens_per_day.is_some()
    }
}

/// Which limit of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `requests_per_minute`.
    RequestsPerMinute,
    /// `tokens_per_minute`.
    TokensPerMinute,
    /// `tokens_per_day`.
    TokensPerDay,
}

impl Limit {
    /// The config key, and the name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::RequestsPerMinute => "requests_per_minute",
            Limit::TokensPerMinute => "tokens_per_minute",
            Limit::TokensPerDay => "tokens_per_day",
        }
    }

    /// The machine-readable error code a refusal carries.
    pub fn code(self) -> &'static str {
        match self {
            Limit::RequestsPerMinute => "requests_per_minute_exceeded",
            Limit::TokensPerMinute => "tokens_per_minute_exceeded",
            Limit::TokensPerDay => "tokens_per_day_exceeded",
        }
    }

    fn window(self) -> Window {
        match self {
            Limit::RequestsPerMinute | Limit::TokensPerMinute => Window::Minute,
            Limit::TokensPerDay => Window::Day,
        }
    }
}

/// Whose budget a counter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A virtual key.
    VirtualKey,
    /// A route, across all its clients.
    Route,
}

impl Holder {
    /// Name for counter keys, logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Holder::VirtualKey => "virtual key",
            Holder::Route => "route",
        }
    }

    fn key_part(self) -> &'static str {
        match self {
            Holder::VirtualKey => "vk",
            Holder::Route => "route",
        }
    }
}

/// A budget with the names of its counters, made once per virtual key or route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCounters {
    /// Whose budget.
    pub holder: Holder,
    /// The virtual key's or route's name.
    pub name: String,
    /// The limits.
    pub budget: Budget,
    requests: String,
    tokens: String,
}

/// A request refused by a budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {name}: the {} budget of {limit_value} is spent", .holder.as_str(), .limit.as_str())]
pub struct BudgetSpent {
    /// Whose budget.
    pub holder: Holder,
    /// The virtual key's or route's name.
    pub name: String,
    /// Which limit.
    pub limit: Limit,
    /// Its value.
    pub limit_value: u64,
    /// Until the window ends and the budget renews.
    pub retry_after: Duration,
}

impl BudgetCounters {
    /// The counters of `holder` `name` for `budget`.
    pub fn new(holder: Holder, name: &str, budget: Budget) -> BudgetCounters {
        let base = format!("{}:{name}", holder.key_part());
        BudgetCounters {
            holder,
            name: name.to_owned(),
            budget,
            requests: format!("{base}:requests"),
            tokens: format!("{base}:tokens"),
        }
    }

    /// The limits that are set, each with its value.
    fn limits(&self) -> impl Iterator<Item = (Limit, u64)> + '_ {
        let b = &self.budget;
        [
            (Limit::RequestsPerMinute, b.requests_per_minute),
            (Limit::TokensPerMinute, b.tokens_per_minute),
            (Limit::TokensPerDay, b.tokens_per_day),
        ]
        .into_iter()
        .filter_map(|(limit, value)| value.map(|value| (limit, value)))
    }

    /// The admission checks of this budget: one request, and room left in the token windows.
    pub fn checks(&self) -> impl Iterator<Item = (Check<'_>, Limit)> + '_ {
        self.limits().map(|(limit, value)| {
            let (name, cost) = match limit {
                Limit::RequestsPerMinute => (self.requests.as_str(), 1),
                Limit::TokensPerMinute | Limit::TokensPerDay => (self.tokens.as_str(), 0),
            };
            (Check { name, window: limit.window(), cost, limit: value }, limit)
        })
    }

    /// What `tokens` of reported usage add to this budget's token windows.
    pub fn charges(&self, tokens: u64) -> impl Iterator<Item = Charge<'_>> + '_ {
        let windows = [
            self.budget.tokens_per_minute.map(|_| Window::Minute),
            self.budget.tokens_per_day.map(|_| Window::Day),
        ];
        windows.into_iter().flatten().filter(move |_| tokens > 0).map(move |window| Charge {
            name: self.tokens.as_str(),
            window,
            amount: tokens,
        })
    }

    /// The refusal for `limit` of this budget, renewing in `retry_after`.
    pub fn spent(&self, limit: Limit, retry_after: Duration) -> BudgetSpent {
        let limit_value = self.limits().find(|(l, _)| *l == limit).map_or(0, |(_, value)| value);
        BudgetSpent {
            holder: self.holder,
            name: self.name.clone(),
            limit,
            limit_value,
            retry_after,
        }
    }
}

/// The checks of several budgets (a virtual key's and a route's), in one list for one atomic
/// admission, with which budget and limit each belongs to.
pub fn admission<'a>(
    budgets: &[&'a BudgetCounters],
) -> (Vec<Check<'a>>, Vec<(&'a BudgetCounters, Limit)>) {
    let mut checks = Vec::new();
    let mut owners = Vec::new();
    for budget in budgets {
        for (check, limit) in budget.checks() {
            checks.push(check);
            owners.push((*budget, limit));
        }
    }
    (checks, owners)
}

/// `Retry-After` in whole seconds (RFC 9110 §10.2.3), rounded up so a client that waits that
/// long finds the budget renewed.
pub fn retry_after_seconds(retry_after: Duration) -> u64 {
    retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::memory::MemoryCounters;
    use crate::state::{Admission, UnixTime};

    fn alice() -> BudgetCounters {
        BudgetCounters::new(
            Holder::VirtualKey,
            "alice",
            Budget {
                requests_per_minute: Some(2),
                tokens_per_minute: Some(100),
                tokens_per_day: Some(150),
            },
        )
    }

    #[test]
    fn checks_and_charges_name_their_counters() {
        let budget = alice();
        let checks: Vec<_> = budget.checks().collect();
        assert_eq!(checks.len(), 3);
        assert_eq!(
            checks[0].0,
            Check { name: "vk:alice:requests", window: Window::Minute, cost: 1, limit: 2 }
        );
        assert_eq!(
            checks[1].0,
            Check { name: "vk:alice:tokens", window: Window::Minute, cost: 0, limit: 100 }
        );
        assert_eq!(
            checks[2].0,
            Check { name: "vk:alice:tokens", window: Window::Day, cost: 0, limit: 150 }
        );
        let charges: Vec<_> = budget.charges(30).collect();
        assert_eq!(charges.len(), 2);
        assert!(budget.charges(0).next().is_none());
        let route = BudgetCounters::new(Holder::Route, "openai", Budget::default());
        assert!(route.checks().next().is_none() && route.charges(5).next().is_none());
        assert!(!route.budget.is_limited() && budget.budget.is_limited());
    }

    #[test]
    fn a_day_budget_outlasts_the_minute() {
        let counters = MemoryCounters::new();
        let budget = alice();
        let (checks, owners) = admission(&[&budget]);
        let t0 = UnixTime(1_700_000_000_000);
        assert_eq!(counters.admit_now(&checks, t0), Admission::Admitted);
        counters.charge_now(&budget.charges(120).collect::<Vec<_>>(), t0);
        // The minute's token budget is spent.
        let Admission::Refused { check, retry_after } = counters.admit_now(&checks, t0) else {
            panic!("admitted")
        };
        assert_eq!(owners[check].1, Limit::TokensPerMinute);
        let spent = owners[check].0.spent(owners[check].1, retry_after);
        assert_eq!(
            spent.to_string(),
            "virtual key alice: the tokens_per_minute budget of 100 is spent"
        );
        // A minute later the minute renews; 30 more tokens spend the day.
        let t1 = t0.after(Duration::from_secs(60));
        assert_eq!(counters.admit_now(&checks, t1), Admission::Admitted);
        counters.charge_now(&budget.charges(30).collect::<Vec<_>>(), t1);
        let t2 = t1.after(Duration::from_secs(60));
        let Admission::Refused { check, .. } = counters.admit_now(&checks, t2) else {
            panic!("admitted")
        };
        assert_eq!(owners[check].1, Limit::TokensPerDay);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(20)), 20);
        assert_eq!(retry_after_seconds(Duration::from_millis(20_001)), 21);
    }
}
