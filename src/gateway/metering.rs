//! What the log phase of one AI request needs from the gateway: the usage its response's tap
//! recorded, whose budgets to charge with it, and what to log ([`Metered`]).

use std::sync::Arc;

use crate::gateway::budget::BudgetCounters;
use crate::gateway::usage::{UsageMeter, UsageRecord};
use crate::gateway::virtual_key::VirtualKey;
use crate::state::{Counters, SharedState, UnixTime};

/// Whether an exact-cache lookup found an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the cache.
    Hit,
    /// Sent to the provider (and stored, when it answered well).
    Miss,
}

impl CacheResult {
    /// Name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
        }
    }
}

/// One AI request as the gateway followed it.
#[derive(Debug)]
pub struct Metered {
    /// What the response's tap recorded.
    pub meter: Arc<UsageMeter>,
    /// The client's virtual key, when the route requires one.
    pub virtual_key: Option<Arc<VirtualKey>>,
    /// The route's budget, when it has one.
    pub route_budget: Option<Arc<BudgetCounters>>,
    /// Where budgets are counted.
    pub state: Arc<SharedState>,
    /// The model the client asked for.
    pub requested_model: Option<String>,
    /// The model the answering provider was asked for (after aliases).
    pub model: Option<String>,
    /// The provider key that answered: its target's name.
    pub key_id: Option<Arc<str>>,
    /// Attempts that failed before the one that answered.
    pub fallbacks: u32,
    /// The exact cache's part, when the route caches.
    pub cache: Option<CacheResult>,
}

impl Metered {
    /// The record of the finished request; charges the tokens its provider reported to the
    /// virtual key's and the route's budgets, in the background (a cached answer costs no
    /// tokens).
    pub fn settle(&self) -> UsageRecord {
        let record = self.meter.snapshot();
        let tokens = record.usage.map_or(0, |usage| usage.total());
        let charged = self.virtual_key.iter().any(|key| key.budget.budget.is_limited())
            || self.route_budget.iter().any(|budget| budget.budget.is_limited());
        if tokens > 0 && charged && self.cache != Some(CacheResult::Hit) {
            let now = UnixTime::now();
            let key_charges = self.virtual_key.iter().flat_map(|key| key.budget.charges(tokens));
            let route_charges = self.route_budget.iter().flat_map(|route| route.charges(tokens));
            let charges: Vec<_> = key_charges.chain(route_charges).collect();
            if self.state.charge_in_memory(&charges, now) {
                return record;
            }
            let key = self.virtual_key.clone();
            let route = self.route_budget.clone();
            let state = self.state.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let key_charges = key.iter().flat_map(|key| key.budget.charges(tokens));
                    let route_charges = route.iter().flat_map(|route| route.charges(tokens));
                    let charges: Vec<_> = key_charges.chain(route_charges).collect();
                    // A failure is logged and counted by the shared state itself.
                    let _ = state.charge(&charges, now).await;
                });
            }
        }
        record
    }
}
