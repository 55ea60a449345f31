//! A group's targets at one time ([`TargetSet`]): each [`Member`] with its endpoint, state and
//! metric handles, ordered by tier, and the pick of the next attempt's target.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::balance::{self, Rng};
use super::{Caps, Endpoint, Moment, TargetSeries, TargetState};
use crate::config::group::{Balance, MAX_TARGETS, MAX_WEIGHT};

/// One target as the configuration describes it.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// The target's name within the route, unique there: what logs, metrics and
    /// `GET /upstreams` show, and what a hash key is tied to.
    pub name: Arc<str>,
    /// Share of the tier's traffic, relative to the other targets' weights.
    pub weight: u32,
    /// Failover tier: 0 first.
    pub tier: u8,
    /// Caps on requests in flight (its connection cap is its endpoint's).
    pub caps: Caps,
    /// A hash of everything else about the target (URL, headers, TLS): a reload keeps the
    /// health state of a target whose name and fingerprint are unchanged.
    pub fingerprint: u64,
    /// How requests reach it.
    pub endpoint: Arc<Endpoint>,
}

/// One target of a [`TargetSet`].
#[derive(Debug)]
pub struct Member {
    /// Its description.
    pub spec: MemberSpec,
    /// Its run-time state, shared with earlier and later sets.
    pub state: Arc<TargetState>,
    /// Its metric handles.
    pub series: Arc<TargetSeries>,
    /// A stable hash of its name, for rendezvous hashing.
    identity: u64,
}

impl Member {
    /// Whether the target can take another request under its caps: fewer requests in flight
    /// than `max_in_flight`, and below `max_connections` or with a connection free.
    pub fn has_room(&self) -> bool {
        let connections = &self.spec.endpoint.connections;
        self.state.has_room(&self.spec.caps) && connections.admits(self.state.in_flight())
    }
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
    indices: [u16; crate::config::retry::MAX_ATTEMPTS as usize],
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
    pub(super) fn build(
        route: &Arc<str>,
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
                series: Arc::new(TargetSeries::new(route.clone(), spec.name.clone())),
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
    pub(super) fn state_of(&self, spec: &MemberSpec) -> Option<Arc<TargetState>> {
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
                healthy(offset) && members.get(offset).is_some_and(Member::has_room)
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
