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
pub mod health;
pub mod outlier;
pub mod replay;
pub mod retry;
pub mod target;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use balance::{Balance, Rng};
pub use target::{Caps, InFlight, TargetState};

use budget::{BudgetSettings, RetryBudget};
use outlier::{OutlierSettings, Verdict};

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

/// Default weight of a target.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest weight (which also bounds a tier's round-robin order).
pub const MAX_WEIGHT: u32 = 256;
/// Most targets in one group, addresses of an expanded host name included.
pub const MAX_TARGETS: usize = 128;
/// Highest tier number.
pub const MAX_TIER: u8 = 7;
/// Default time over which a `peak_ewma` latency estimate forgets an old response.
pub const DEFAULT_LATENCY_DECAY: Duration = Duration::from_secs(10);
/// What a failed attempt counts as in a `peak_ewma` estimate, when it failed faster: a target
/// that fails at once must not look like the fastest one.
pub const FAILED_ATTEMPT_LATENCY: Duration = Duration::from_secs(1);

/// One target as the configuration describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    /// The target's name within the route, unique there: what logs, metrics and
    /// `GET /upstreams` show, and what a hash key is tied to.
    pub name: Arc<str>,
    /// Share of the tier's traffic, relative to the other targets' weights.
    pub weight: u32,
    /// Failover tier: 0 first.
    pub tier: u8,
    /// Caps on connections and requests in flight.
    pub caps: Caps,
    /// A hash of everything else about the target (URL, headers, TLS): a reload keeps the
    /// health state of a target whose name and fingerprint are unchanged.
    pub fingerprint: u64,
}

/// One target of a [`TargetSet`].
#[derive(Debug)]
pub struct Member {
    /// Its description.
    pub spec: MemberSpec,
    /// Its run-time state, shared with earlier and later sets.
    pub state: Arc<TargetState>,
    /// A stable hash of its name, for rendezvous hashing.
    identity: u64,
}

/// The targets of one tier: a range of the set's members.
#[derive(Debug)]
struct Tier {
    start: usize,
    end: usize,
    /// The smooth weighted round-robin order, as offsets from `start`.
    order: Box<[u16]>,
    /// The next position in `order`.
    cursor: AtomicUsize,
}

/// A group's targets at one time, ordered by tier.
#[derive(Debug)]
pub struct TargetSet {
    members: Box<[Member]>,
    tiers: Box<[Tier]>,
}

/// Why no target could take an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Every target is down, ejected, cooling or already tried by this request.
    NoHealthyTarget,
    /// The healthy targets of the first tier that has any are all at their caps.
    AtCapacity,
}

impl Unavailable {
    /// The log and metric spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::NoHealthyTarget => "no_healthy_target",
            Unavailable::AtCapacity => "at_capacity",
        }
    }
}

/// The targets a request has already tried, so another attempt goes elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Tried {
    indices: [u16; retry::MAX_ATTEMPTS as usize],
    len: usize,
}

impl Tried {
    /// Notes that the target at `index` was tried (beyond the attempt cap, ignored).
    pub fn add(&mut self, index: usize) {
        if let Some(slot) = self.indices.get_mut(self.len) {
            *slot = u16::try_from(index).unwrap_or(u16::MAX);
            self.len += 1;
        }
    }

    /// Whether the target at `index` was tried.
    pub fn contains(&self, index: usize) -> bool {
        self.indices.iter().take(self.len).any(|tried| usize::from(*tried) == index)
    }

    /// How many targets were tried.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl TargetSet {
    /// A set of `specs`, each with the state `state_of` gives it (a carried-over one, or new).
    fn build(
        mut specs: Vec<MemberSpec>,
        state_of: impl Fn(&MemberSpec) -> Option<Arc<TargetState>>,
    ) -> TargetSet {
        specs.truncate(MAX_TARGETS);
        // Stable: within a tier, targets keep their configured order.
        specs.sort_by_key(|spec| spec.tier);
        let members: Box<[Member]> = specs
            .into_iter()
            .map(|spec| Member {
                identity: balance::hash_bytes(spec.name.as_bytes()),
                state: state_of(&spec).unwrap_or_else(TargetState::new),
                spec,
            })
            .collect();
        let mut tiers = Vec::new();
        let mut start = 0;
        while let Some(first) = members.get(start) {
            let tier = first.spec.tier;
            let len = members.iter().skip(start).take_while(|m| m.spec.tier == tier).count();
            let weights: Vec<u32> = members
                .iter()
                .skip(start)
                .take(len)
                .map(|member| member.spec.weight.clamp(1, MAX_WEIGHT))
                .collect();
            tiers.push(Tier {
                start,
                end: start + len,
                order: balance::smooth_order(&weights).into_boxed_slice(),
                cursor: AtomicUsize::new(0),
            });
            start += len;
        }
        TargetSet { members, tiers: tiers.into_boxed_slice() }
    }

    /// The targets, ordered by tier.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The target at `index`.
    pub fn member(&self, index: usize) -> Option<&Member> {
        self.members.get(index)
    }

    /// The state of the target named `name` whose fingerprint is `fingerprint`, if there is one.
    fn state_of(&self, spec: &MemberSpec) -> Option<Arc<TargetState>> {
        self.members
            .iter()
            .find(|member| {
                member.spec.name == spec.name && member.spec.fingerprint == spec.fingerprint
            })
            .map(|member| member.state.clone())
    }

    /// The target for the next attempt: the first tier with a healthy target not yet `tried`,
    /// then the `balance` policy among those of its targets with room (`key`: the request's
    /// hash key, for [`Balance::Hash`]; without one, a random choice by weight).
    pub fn pick(
        &self,
        balance: Balance,
        key: Option<u64>,
        tried: &Tried,
        now: Moment,
        rng: &mut Rng,
    ) -> Result<usize, Unavailable> {
        for tier in self.tiers.iter() {
            let Some(members) = self.members.get(tier.start..tier.end) else { continue };
            let healthy = |offset: usize| {
                !tried.contains(tier.start + offset)
                    && members.get(offset).is_some_and(|m| m.state.healthy(now))
            };
            if !(0..members.len()).any(healthy) {
                continue;
            }
            let usable = |offset: usize| {
                healthy(offset)
                    && members.get(offset).is_some_and(|m| m.state.has_room(&m.spec.caps))
            };
            let weight = |offset: usize| {
                usable(offset).then(|| members.get(offset).map_or(1, |m| m.spec.weight.max(1)))
            };
            let count = members.len();
            let chosen = match (balance, key) {
                (Balance::RoundRobin, _) => {
                    let start = tier.cursor.fetch_add(1, Ordering::Relaxed);
                    balance::round_robin(&tier.order, start, usable)
                }
                (Balance::LeastRequest, _) => balance::two_choices(
                    count,
                    weight,
                    |offset| {
                        members.get(offset).map_or(f64::MAX, |m| {
                            f64::from(m.state.in_flight()) / f64::from(m.spec.weight.max(1))
                        })
                    },
                    rng,
                ),
                (Balance::PeakEwma, _) => balance::two_choices(
                    count,
                    weight,
                    |offset| {
                        members.get(offset).map_or(f64::MAX, |m| {
                            m.state.latency.estimate() * f64::from(m.state.in_flight() + 1)
                                / f64::from(m.spec.weight.max(1))
                        })
                    },
                    rng,
                ),
                (Balance::Hash, Some(key)) => balance::rendezvous(count, key, |offset| {
                    let member = members.get(offset)?;
                    usable(offset).then_some((member.spec.weight.max(1), member.identity))
                }),
                (Balance::Random | Balance::Hash, _) => {
                    balance::weighted_random(count, weight, rng)
                }
            };
            return chosen.map(|offset| tier.start + offset).ok_or(Unavailable::AtCapacity);
        }
        Err(Unavailable::NoHealthyTarget)
    }
}

/// How a group balances and judges its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupSettings {
    /// The balancing policy.
    pub balance: Balance,
    /// Passive health.
    pub outlier: OutlierSettings,
    /// The retry budget.
    pub budget: BudgetSettings,
}

/// One route's targets, their health and its retry budget.
#[derive(Debug)]
pub struct Group {
    /// The route's name, for log lines.
    route: Arc<str>,
    targets: ArcSwap<TargetSet>,
    settings: GroupSettings,
    budget: RetryBudget,
    /// Held while deciding an ejection, so two cannot both take the last allowed place.
    ejecting: Mutex<()>,
}

/// A target was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// For how long.
    pub length: Duration,
}

impl Group {
    /// A group of `specs` for the route `route`. A target of `previous` (the group of the
    /// route in the configuration being replaced) with the same name and fingerprint passes
    /// its state on: in-flight counts, health verdicts, ejections and cooling.
    pub fn new(
        route: Arc<str>,
        specs: Vec<MemberSpec>,
        settings: GroupSettings,
        previous: Option<&Group>,
    ) -> Group {
        let previous = previous.map(Group::targets);
        let set = TargetSet::build(specs, |spec| previous.as_ref()?.state_of(spec));
        Group {
            route,
            targets: ArcSwap::from_pointee(set),
            settings,
            budget: RetryBudget::new(settings.budget),
            ejecting: Mutex::new(()),
        }
    }

    /// Replaces the targets (after a DNS refresh), carrying the state of those that stay.
    pub fn replace(&self, specs: Vec<MemberSpec>) {
        let current = self.targets();
        self.targets.store(Arc::new(TargetSet::build(specs, |spec| current.state_of(spec))));
    }

    /// The current targets; a request keeps this set for all its attempts.
    pub fn targets(&self) -> Arc<TargetSet> {
        self.targets.load_full()
    }

    /// The route's name.
    pub fn route(&self) -> &Arc<str> {
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
                    route = %self.route,
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
        let ejected = set.members.iter().filter(|m| m.state.passive.ejected(now)).count();
        if ejected >= outlier::max_ejected(set.members.len(), settings.max_ejected_percent) {
            return None;
        }
        let length = member.state.passive.eject(now, settings);
        tracing::warn!(
            route = %self.route,
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
