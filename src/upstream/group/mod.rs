//! Upstream groups: a route that spreads its requests over several targets, notices the ones
//! that fail and tries another.
//!
//! A [`Group`] is one route's targets, ordered by tier: tier 0 takes the traffic, tier 1 only
//! when every tier-0 target is unhealthy or has already failed this request (a fallback
//! provider), and so on. Within a tier, a [`Balance`] policy chooses ([`balance`]). A target
//! is left out while the active checks have marked it down ([`health`]), while it is ejected
//! for failing or cooling after a `Retry-After` ([`outlier`]), and while it is at its caps
//! (circuit breaking, [`target::Caps`]). A failed attempt may be tried on another target
//! ([`retry`]), within the route's [`budget`], with the request body kept for it
//! ([`replay`]).
//!
//! Everything a request touches is an atomic in the target's [`TargetState`]; the only locks
//! are taken when a target is ejected (to keep the ejected share) and twice per attempt of a
//! replayable body. A group's targets are an immutable [`TargetSet`] behind an `ArcSwap`, so a
//! request sees one set for all its attempts while a new one (after a DNS refresh) is
//! swapped in. The states are kept apart from the set, so a new set, or a reloaded
//! configuration's new group, carries over the health of every target that did not change.

pub mod affinity;
pub mod balance;
pub mod budget;
pub mod discovery;
pub mod endpoint;
pub mod health;
pub mod outlier;
pub mod retry;
pub mod set;
pub mod target;
pub mod view;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

pub use balance::Rng;
pub use endpoint::{Blueprint, Endpoint, TargetError};
pub use set::{Member, MemberSpec, TargetSet, Tried, Unavailable};
pub use target::{Caps, InFlight, TargetSeries, TargetState};

use crate::config::RouteConfig;
use crate::config::group::{Balance, GroupConfig, HashOn};
use crate::config::health::{HealthCheck, OutlierSettings};
use crate::config::retry::RetryPolicy;
use crate::upstream::client::UpstreamSettings;
use crate::upstream::connect::StaticHosts;
use budget::RetryBudget;
use outlier::Verdict;

/// A point in time, as nanoseconds since the process's clock epoch: what target state keeps
/// in its atomics, and what the pure functions take so tests can choose the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Moment(u64);

impl Moment {
    /// Now, by the monotonic clock.
    pub fn now() -> Moment {
        static EPOCH: OnceLock<tokio::time::Instant> = OnceLock::new();
        let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
        Moment(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The moment `nanos` nanoseconds after the epoch.
    pub fn from_nanos(nanos: u64) -> Moment {
        Moment(nanos)
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// The moment `duration` later (saturating).
    pub fn plus(self, duration: Duration) -> Moment {
        Moment(self.0.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)))
    }

    /// The time from `earlier` to this moment; zero if `earlier` is later.
    pub fn since(self, earlier: Moment) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Default time over which a `peak_ewma` latency estimate forgets an old response.
pub const DEFAULT_LATENCY_DECAY: Duration = Duration::from_secs(10);
/// What a failed attempt counts as in a `peak_ewma` estimate, when it failed faster: a target
/// that fails at once must not look like the fastest one.
pub const FAILED_ATTEMPT_LATENCY: Duration = Duration::from_secs(1);

/// How a group balances, retries and judges its targets: its configuration without the
/// targets themselves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupSettings {
    /// The balancing policy.
    pub balance: Balance,
    /// What `Balance::Hash` keys on.
    pub hash_on: Option<HashOn>,
    /// Retries and the retry budget.
    pub retry: RetryPolicy,
    /// Passive health.
    pub outlier: OutlierSettings,
    /// Active checks.
    pub health_check: Option<HealthCheck>,
}

impl GroupSettings {
    /// The settings of `group`.
    pub fn of(group: &GroupConfig) -> GroupSettings {
        GroupSettings {
            balance: group.balance,
            hash_on: group.hash_on.clone(),
            retry: group.retry.clone(),
            outlier: group.passive_health,
            health_check: group.health_check.clone(),
        }
    }
}

/// One route's targets, their health and its retry budget.
#[derive(Debug)]
pub struct Group {
    /// The route's name, for log lines and metric labels.
    route: Arc<str>,
    targets: ArcSwap<TargetSet>,
    settings: GroupSettings,
    budget: RetryBudget,
    /// Held while deciding an ejection, so two cannot both take the last allowed place.
    ejecting: Mutex<()>,
    /// What the targets are built from, to build them again after a DNS change (absent for
    /// a group made of ready specs).
    blueprint: Option<Blueprint>,
    /// The addresses each configured target expands into, once looked up.
    addresses: Mutex<Vec<Option<Vec<SocketAddr>>>>,
    /// Stops every task of the group (checks, lookups) when the group is dropped.
    stop: CancellationToken,
    /// Stops the checks of the current set when the set is replaced.
    checks: Mutex<CancellationToken>,
}

/// A target was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// For how long.
    pub length: Duration,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Group {
    /// A group of `specs` for the route `route`. A target of `previous` (the group of the
    /// route in the configuration being replaced) with the same name and fingerprint passes
    /// its state on: in-flight counts, health verdicts, ejections and cooling. Starts no
    /// task: see [`Group::build`] for a route's group with its checks and lookups.
    pub fn new(
        route: Arc<str>,
        specs: Vec<MemberSpec>,
        settings: GroupSettings,
        previous: Option<&Group>,
    ) -> Group {
        let previous = previous.map(Group::targets);
        let set = TargetSet::build(&route, specs, |spec| previous.as_ref()?.state_of(spec));
        let stop = CancellationToken::new();
        Group {
            route,
            targets: ArcSwap::from_pointee(set),
            budget: RetryBudget::new(settings.retry.budget),
            settings,
            ejecting: Mutex::new(()),
            blueprint: None,
            addresses: Mutex::new(Vec::new()),
            checks: Mutex::new(stop.child_token()),
            stop,
        }
    }

    /// The group of `route`, whose targets are `group`: each target's client (over `pool`'s
    /// settings, with `default_tls` unless it has TLS settings of its own), the state of
    /// unchanged targets carried over from `previous`, and, when called within a runtime,
    /// its health checks and DNS lookups started.
    pub fn build(
        route: &RouteConfig,
        group: &GroupConfig,
        pool: UpstreamSettings,
        default_tls: &Arc<rustls::ClientConfig>,
        hosts: &StaticHosts,
        previous: Option<&Group>,
    ) -> Result<Arc<Group>, TargetError> {
        let blueprint = Blueprint::new(route, group, pool, default_tls, hosts)?;
        // Addresses an unchanged expanded target already resolved to are kept, so its
        // members (and their health) carry over instead of starting from the bare name.
        let addresses: Vec<Option<Vec<SocketAddr>>> = (0..blueprint.len())
            .map(|index| previous.and_then(|previous| previous.addresses_like(&blueprint, index)))
            .collect();
        let current = previous.map(Group::targets);
        let specs = blueprint.specs(&addresses, current.as_deref());
        let mut built =
            Group::new(Arc::from(route.name.as_str()), specs, GroupSettings::of(group), previous);
        built.blueprint = Some(blueprint);
        built.addresses = Mutex::new(addresses);
        let built = Arc::new(built);
        if tokio::runtime::Handle::try_current().is_ok() {
            built.start_checks(&built.targets());
            built.start_lookups();
        }
        Ok(built)
    }

    /// What target `index` of `blueprint` expanded into in this group, if it is the same
    /// target (name and fingerprint) and was expanded.
    fn addresses_like(&self, blueprint: &Blueprint, index: usize) -> Option<Vec<SocketAddr>> {
        let mine = self.blueprint.as_ref()?.position_of(blueprint, index)?;
        self.addresses.lock().unwrap_or_else(PoisonError::into_inner).get(mine)?.clone()
    }

    /// Starts the active checks of `set`'s targets (stopping those of the set before), or,
    /// without checks, marks every target healthy as far as checks go.
    fn start_checks(&self, set: &TargetSet) {
        let token = self.stop.child_token();
        let previous = std::mem::replace(
            &mut *self.checks.lock().unwrap_or_else(PoisonError::into_inner),
            token.clone(),
        );
        previous.cancel();
        let (Some(blueprint), Some(check)) = (&self.blueprint, &self.settings.health_check) else {
            for member in set.members() {
                member.state.active.disown();
            }
            return;
        };
        for member in set.members() {
            if let Some(probe) = blueprint.probe(&member.spec.endpoint) {
                let checker = health::Checker {
                    state: member.state.clone(),
                    probe,
                    settings: check.settings,
                    name: Arc::from(format!("{}/{}", self.name(), member.spec.name)),
                };
                drop(health::spawn(checker, token.clone()));
            }
        }
    }

    /// Starts the periodic lookups of the targets that expand into their addresses.
    fn start_lookups(self: &Arc<Group>) {
        let Some(blueprint) = &self.blueprint else { return };
        for (index, host, port, every) in blueprint.expanded() {
            let current = self
                .addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(index)
                .cloned()
                .flatten()
                .unwrap_or_default();
            let group: Weak<Group> = Arc::downgrade(self);
            let changed: discovery::OnChange = Box::new(move |addrs: &[SocketAddr]| {
                if let Some(group) = group.upgrade() {
                    group.expand(index, addrs);
                }
            });
            drop(discovery::spawn(
                host,
                port,
                every,
                blueprint.hosts().clone(),
                current,
                changed,
                self.stop.child_token(),
            ));
        }
    }

    /// Target `index` now resolves to `addrs`: a new set with one member per address, the
    /// members of addresses that stay keeping their state and pools.
    fn expand(&self, index: usize, addrs: &[SocketAddr]) {
        let Some(blueprint) = &self.blueprint else { return };
        let specs = {
            let mut addresses = self.addresses.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = addresses.get_mut(index) {
                *slot = Some(addrs.to_vec());
            }
            blueprint.specs(&addresses, Some(&self.targets()))
        };
        self.replace(specs);
        self.start_checks(&self.targets());
    }

    /// Replaces the targets, carrying the state of those that stay.
    pub fn replace(&self, specs: Vec<MemberSpec>) {
        let current = self.targets();
        let set = TargetSet::build(&self.route, specs, |spec| current.state_of(spec));
        self.targets.store(Arc::new(set));
    }

    /// The current targets; a request keeps this set for all its attempts.
    pub fn targets(&self) -> Arc<TargetSet> {
        self.targets.load_full()
    }

    /// The route's name.
    pub fn route(&self) -> &Arc<str> {
        &self.route
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.route
    }

    /// The settings.
    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    /// The route's retry budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Picks a target of `set` for the next attempt and takes one of its in-flight slots. A
    /// target that filled up between the pick and the slot is passed over (as if tried),
    /// a few times at most.
    pub fn enter(
        &self,
        set: &TargetSet,
        key: Option<u64>,
        tried: &Tried,
        now: Moment,
        rng: &mut Rng,
    ) -> Result<(usize, InFlight), Unavailable> {
        let mut passed_over = tried.clone();
        for _ in 0..3 {
            let index = set.pick(self.settings.balance, key, &passed_over, now, rng)?;
            if let Some(member) = set.member(index)
                && let Some(in_flight) = member.state.enter(&member.spec.caps)
            {
                return Ok((index, in_flight));
            }
            passed_over.add(index);
        }
        Err(Unavailable::AtCapacity)
    }

    /// Records what an attempt on the target at `index` of `set` showed, `elapsed` after it
    /// was sent; returns the ejection it caused, if any (logged here, once).
    pub fn report(
        &self,
        set: &TargetSet,
        index: usize,
        verdict: Verdict,
        elapsed: Duration,
        now: Moment,
    ) -> Option<Ejection> {
        let member = set.member(index)?;
        let state = &member.state;
        let peak_ewma = self.settings.balance == Balance::PeakEwma;
        let decay = DEFAULT_LATENCY_DECAY;
        match verdict {
            Verdict::Success => {
                state.passive.record_success();
                if peak_ewma {
                    state.latency.observe(elapsed, now, decay);
                }
                None
            }
            Verdict::Cool(until) => {
                state.passive.cool(until);
                tracing::info!(
                    route = %self.name(),
                    target_name = %member.spec.name,
                    for_ms = until.since(now).as_millis() as u64,
                    "upstream target asked to be left alone (Retry-After): cooling"
                );
                None
            }
            Verdict::Neutral => None,
            Verdict::Failure => {
                state.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if peak_ewma {
                    state.latency.observe(elapsed.max(FAILED_ATTEMPT_LATENCY), now, decay);
                }
                if !state.passive.record_failure(self.settings.outlier.consecutive_failures) {
                    return None;
                }
                self.eject(set, member, now)
            }
        }
    }

    /// Ejects `member` if the group's share allows it.
    fn eject(&self, set: &TargetSet, member: &Member, now: Moment) -> Option<Ejection> {
        let settings = &self.settings.outlier;
        let _deciding = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
        if member.state.passive.ejected(now) {
            return None;
        }
        let ejected = set.members().iter().filter(|m| m.state.passive.ejected(now)).count();
        if ejected >= outlier::max_ejected(set.members().len(), settings.max_ejected_percent) {
            return None;
        }
        let length = member.state.passive.eject(now, settings);
        tracing::warn!(
            route = %self.name(),
            target_name = %member.spec.name,
            failures = settings.consecutive_failures,
            for_ms = length.as_millis() as u64,
            "upstream target failed repeatedly: ejected"
        );
        Some(Ejection { length })
    }
}

#[cfg(test)]
mod tests;
