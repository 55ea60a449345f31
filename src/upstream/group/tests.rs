//! Table and property tests of target choice, tiers, caps and ejection over whole groups.

use super::Rng;
use super::*;
use proptest::prelude::*;
use std::sync::atomic::Ordering;

const S: u64 = 1_000_000_000;

fn at(seconds: u64) -> Moment {
    Moment::from_nanos(seconds * S)
}

fn spec(name: &str, weight: u32, tier: u8) -> MemberSpec {
    MemberSpec {
        name: Arc::from(name),
        weight,
        tier,
        caps: Caps::default(),
        fingerprint: 0,
        endpoint: endpoint(),
    }
}

/// One endpoint shared by every test member: the choice tests never send anything.
fn endpoint() -> Arc<Endpoint> {
    static SHARED: OnceLock<Arc<Endpoint>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let settings = UpstreamSettings::from_config(&crate::config::Config::default());
            let connector =
                crate::upstream::connect::Connector::new(settings.connect, Arc::default(), None);
            let upstream = crate::upstream::client::Upstream::new(
                settings,
                crate::tls::client::default_client_config(),
                crate::config::UpstreamProtocol::Http1,
                None,
                connector,
            );
            Arc::new(Endpoint {
                url: crate::config::upstream::parse_upstream_url("http://127.0.0.1:9").unwrap(),
                upstream,
                host: http::HeaderValue::from_static("127.0.0.1:9"),
                request_headers: Default::default(),
                response_headers: Default::default(),
                route_url: true,
                connections: crate::upstream::connect::OpenConnections::new(usize::MAX),
                fast: None,
            })
        })
        .clone()
}

fn group(balance: Balance, specs: Vec<MemberSpec>) -> Group {
    let settings = GroupSettings { balance, ..GroupSettings::default() };
    Group::new(Arc::from("test"), specs, settings, None)
}

fn names(set: &TargetSet, picks: &[usize]) -> Vec<String> {
    picks.iter().map(|i| set.member(*i).unwrap().spec.name.to_string()).collect()
}

fn share_of(set: &TargetSet, picks: &[usize], name: &str) -> f64 {
    names(set, picks).iter().filter(|n| *n == name).count() as f64 / picks.len() as f64
}

fn pick_many(group: &Group, n: usize, seed: u64) -> Vec<usize> {
    let set = group.targets();
    let mut rng = Rng::seeded(seed);
    (0..n)
        .map(|_| {
            set.pick(group.settings.balance, None, &Tried::default(), at(1), &mut rng).unwrap()
        })
        .collect()
}

#[test]
fn round_robin_honours_weights_exactly() {
    let group = group(Balance::RoundRobin, vec![spec("a", 1, 0), spec("b", 2, 0), spec("c", 3, 0)]);
    let set = group.targets();
    let picks = pick_many(&group, 6000, 1);
    assert!((share_of(&set, &picks, "a") - 1.0 / 6.0).abs() < 1e-9);
    assert!((share_of(&set, &picks, "b") - 2.0 / 6.0).abs() < 1e-9);
    assert!((share_of(&set, &picks, "c") - 3.0 / 6.0).abs() < 1e-9);
    // Smooth: the heaviest target never gets three turns in a row.
    let order = names(&set, &picks[..12]).join("");
    assert!(!order.contains("ccc"), "{order}");
}

#[test]
fn random_and_least_request_honour_weights_within_tolerance() {
    for balance in [Balance::Random, Balance::LeastRequest, Balance::Hash] {
        let group = group(balance, vec![spec("a", 1, 0), spec("b", 3, 0)]);
        let set = group.targets();
        let picks = pick_many(&group, 40_000, 7);
        let b = share_of(&set, &picks, "b");
        assert!((b - 0.75).abs() < 0.01, "{balance:?}: {b}");
    }
}

#[test]
fn least_request_prefers_the_less_loaded_target() {
    let group =
        group(Balance::LeastRequest, vec![spec("a", 1, 0), spec("b", 1, 0), spec("c", 1, 0)]);
    let set = group.targets();
    let mut rng = Rng::seeded(3);
    let now = at(1);
    // "a" and "b" are busy with 5 requests each; "c" has none.
    let mut held = Vec::new();
    for index in 0..2 {
        let member = set.member(index).unwrap();
        for _ in 0..5 {
            held.push(member.state.enter(&member.spec.caps).unwrap());
        }
    }
    let mut to_c = 0;
    for _ in 0..3000 {
        let index =
            set.pick(Balance::LeastRequest, None, &Tried::default(), now, &mut rng).unwrap();
        if index == 2 {
            to_c += 1;
        }
    }
    // "c" wins every pair it is drawn into: two pairs of three.
    let share = f64::from(to_c) / 3000.0;
    assert!((share - 2.0 / 3.0).abs() < 0.03, "{share}");
    // With the load held by enter(), the group evens out: every new request goes to the
    // least loaded of its two candidates.
    drop(held);
    let mut in_flight = Vec::new();
    for _ in 0..300 {
        let (_, slot) = group.enter(&set, None, &Tried::default(), now, &mut rng).unwrap();
        in_flight.push(slot);
    }
    let loads: Vec<u32> = set.members().iter().map(|m| m.state.in_flight()).collect();
    let spread = loads.iter().max().unwrap() - loads.iter().min().unwrap();
    assert!(spread <= 2, "{loads:?}");
}

#[test]
fn peak_ewma_avoids_a_slow_target() {
    let group = group(Balance::PeakEwma, vec![spec("fast", 1, 0), spec("slow", 1, 0)]);
    let set = group.targets();
    let now = at(10);
    group.report(&set, 0, Verdict::Success, Duration::from_millis(5), now);
    group.report(&set, 1, Verdict::Success, Duration::from_millis(500), now);
    let picks = pick_many(&group, 1000, 5);
    assert!(share_of(&set, &picks, "fast") > 0.99);
    // A failing target counts as slow even when it fails at once.
    group.report(&set, 0, Verdict::Failure, Duration::from_millis(1), now);
    let picks = pick_many(&group, 1000, 6);
    assert!(share_of(&set, &picks, "slow") > 0.99);
}

#[test]
fn hash_keys_stick_and_follow_their_target_out_and_back() {
    let group = group(Balance::Hash, vec![spec("a", 1, 0), spec("b", 1, 0), spec("c", 1, 0)]);
    let set = group.targets();
    let mut rng = Rng::seeded(1);
    let pick = |key: u64, now: Moment, rng: &mut Rng| {
        set.pick(Balance::Hash, Some(key), &Tried::default(), now, rng).unwrap()
    };
    let keys: Vec<u64> = (0..300u64).map(|k| balance::hash_bytes(&k.to_le_bytes())).collect();
    let before: Vec<usize> = keys.iter().map(|k| pick(*k, at(1), &mut rng)).collect();
    let again: Vec<usize> = keys.iter().map(|k| pick(*k, at(1), &mut rng)).collect();
    assert_eq!(before, again);
    // "b" cools for a minute: only its keys move.
    set.member(1).unwrap().state.passive.cool(at(61));
    for (key, was) in keys.iter().zip(&before) {
        let now = pick(*key, at(2), &mut rng);
        if *was == 1 {
            assert_ne!(now, 1);
        } else {
            assert_eq!(now, *was);
        }
    }
    // Back afterwards.
    let after: Vec<usize> = keys.iter().map(|k| pick(*k, at(61), &mut rng)).collect();
    assert_eq!(before, after);
}

#[test]
fn tier_one_serves_only_when_tier_zero_is_down_or_tried() {
    let group =
        group(Balance::RoundRobin, vec![spec("backup", 1, 1), spec("a", 1, 0), spec("b", 1, 0)]);
    let set = group.targets();
    let mut rng = Rng::seeded(1);
    let now = at(5);
    let name = |index: usize| set.member(index).unwrap().spec.name.to_string();
    for _ in 0..10 {
        let index = set.pick(Balance::RoundRobin, None, &Tried::default(), now, &mut rng).unwrap();
        assert_ne!(name(index), "backup");
    }
    // "a" failed this request: "b" next, still tier 0.
    let a = (0..3).find(|i| name(*i) == "a").unwrap();
    let b = (0..3).find(|i| name(*i) == "b").unwrap();
    let mut tried = Tried::default();
    tried.add(a);
    assert_eq!(set.pick(Balance::RoundRobin, None, &tried, now, &mut rng), Ok(b));
    // Both failed this request: the backup.
    tried.add(b);
    assert_eq!(name(set.pick(Balance::RoundRobin, None, &tried, now, &mut rng).unwrap()), "backup");
    // "a" down by its checks, "b" ejected: every request goes to the backup.
    let checks =
        crate::config::health::HealthSettings { unhealthy_threshold: 1, ..Default::default() };
    set.member(a).unwrap().state.active.record(false, &checks);
    set.member(b).unwrap().state.passive.eject(now, &OutlierSettings::default());
    let index = set.pick(Balance::RoundRobin, None, &Tried::default(), now, &mut rng).unwrap();
    assert_eq!(name(index), "backup");
    // And nothing at all once the backup failed too.
    let mut all = Tried::default();
    all.add(index);
    assert_eq!(
        set.pick(Balance::RoundRobin, None, &all, now, &mut rng),
        Err(Unavailable::NoHealthyTarget)
    );
}

#[test]
fn full_targets_are_skipped_and_a_full_tier_does_not_spill_over() {
    let mut small = spec("a", 1, 0);
    small.caps = Caps { max_in_flight: 1 };
    let mut other = spec("b", 1, 0);
    other.caps = small.caps;
    let group = group(Balance::RoundRobin, vec![small, other, spec("backup", 1, 1)]);
    let set = group.targets();
    let mut rng = Rng::seeded(1);
    let now = at(1);
    let (first, _one) = group.enter(&set, None, &Tried::default(), now, &mut rng).unwrap();
    let (second, _two) = group.enter(&set, None, &Tried::default(), now, &mut rng).unwrap();
    assert_ne!(first, second);
    assert!(first < 2 && second < 2);
    // Tier 0 is healthy but full: a fast refusal, not the fallback.
    assert_eq!(
        group.enter(&set, None, &Tried::default(), now, &mut rng).map(|(index, _)| index),
        Err(Unavailable::AtCapacity)
    );
}

#[test]
fn three_failures_eject_and_a_success_resets_the_count() {
    let settings = GroupSettings {
        outlier: OutlierSettings { consecutive_failures: 3, ..OutlierSettings::default() },
        ..GroupSettings::default()
    };
    let group = Group::new(Arc::from("t"), vec![spec("a", 1, 0), spec("b", 1, 0)], settings, None);
    let set = group.targets();
    let now = at(1);
    let fail = || group.report(&set, 0, Verdict::Failure, Duration::ZERO, now);
    assert_eq!(fail(), None);
    assert_eq!(fail(), None);
    group.report(&set, 0, Verdict::Success, Duration::ZERO, now);
    assert_eq!(fail(), None);
    assert_eq!(fail(), None);
    assert_eq!(fail(), Some(Ejection { length: crate::config::health::DEFAULT_BASE_EJECTION }));
    assert!(!set.member(0).unwrap().state.healthy(now));
    assert_eq!(set.member(0).unwrap().state.failures.load(Ordering::Relaxed), 5);
    // The other target may not be ejected too: 50 % of 2 is 1.
    for _ in 0..10 {
        assert_eq!(group.report(&set, 1, Verdict::Failure, Duration::ZERO, now), None);
    }
    assert!(set.member(1).unwrap().state.healthy(now));
}

#[test]
fn retry_after_cools_exactly_that_target() {
    let group = group(Balance::RoundRobin, vec![spec("a", 1, 0), spec("b", 1, 0)]);
    let set = group.targets();
    let now = at(100);
    let verdict = Verdict::Cool(at(130));
    assert_eq!(group.report(&set, 0, verdict, Duration::ZERO, now), None);
    assert!(!set.member(0).unwrap().state.healthy(at(129)));
    assert!(set.member(0).unwrap().state.healthy(at(130)));
    assert!(set.member(1).unwrap().state.healthy(at(129)));
    let mut rng = Rng::seeded(1);
    for _ in 0..10 {
        assert_eq!(
            set.pick(Balance::RoundRobin, None, &Tried::default(), at(110), &mut rng),
            Ok(1)
        );
    }
}

#[test]
fn a_new_group_keeps_the_state_of_unchanged_targets() {
    let first = group(Balance::RoundRobin, vec![spec("a", 1, 0), spec("b", 1, 0), spec("c", 1, 0)]);
    let old = first.targets();
    old.member(0).unwrap().state.passive.cool(at(50));
    let mut changed = spec("b", 1, 0);
    changed.fingerprint = 99;
    let second = Group::new(
        Arc::from("test"),
        vec![spec("a", 5, 0), changed, spec("d", 1, 0)],
        GroupSettings::default(),
        Some(&first),
    );
    let new = second.targets();
    let state = |set: &TargetSet, name: &str| {
        set.members().iter().find(|m| &*m.spec.name == name).unwrap().state.clone()
    };
    // The same name and fingerprint: the same state (weight is not part of the identity).
    assert!(Arc::ptr_eq(&state(&old, "a"), &state(&new, "a")));
    assert!(!state(&new, "a").healthy(at(49)));
    // A changed target starts afresh, and so does a new one.
    assert!(!Arc::ptr_eq(&state(&old, "b"), &state(&new, "b")));
    assert!(state(&new, "d").healthy(at(1)));
    // Replacing the set (a DNS refresh) carries states the same way.
    second.replace(vec![spec("a", 1, 0)]);
    assert!(Arc::ptr_eq(&state(&old, "a"), &state(&second.targets(), "a")));
}

#[test]
fn tried_keeps_up_to_the_attempt_cap() {
    let mut tried = Tried::default();
    assert!(tried.is_empty());
    for index in 0..20 {
        tried.add(index);
    }
    assert_eq!(tried.len(), crate::config::retry::MAX_ATTEMPTS as usize);
    assert!(tried.contains(0) && tried.contains(9) && !tried.contains(10));
}

#[test]
fn moments_saturate() {
    assert_eq!(at(1).plus(Duration::from_secs(2)), at(3));
    assert_eq!(at(1).since(at(3)), Duration::ZERO);
    assert_eq!(at(3).since(at(1)), Duration::from_secs(2));
    assert_eq!(Moment::from_nanos(u64::MAX).plus(Duration::MAX).as_nanos(), u64::MAX);
    assert!(Moment::now() <= Moment::now());
}

/// One step of the ejection property test.
#[derive(Debug, Clone)]
enum Step {
    Fail(usize),
    Succeed(usize),
    Wait(u64),
}

fn steps(targets: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            6 => (0..targets).prop_map(Step::Fail),
            1 => (0..targets).prop_map(Step::Succeed),
            1 => (1u64..40).prop_map(Step::Wait),
        ],
        1..300,
    )
}

proptest! {
    /// Whatever fails when, no more than the allowed share is ejected at once, and a target
    /// ejected again soon after coming back is ejected for longer (up to the cap).
    #[test]
    fn ejection_grows_and_never_exceeds_the_share(
        targets in 1usize..8,
        percent in 1u8..=100,
        steps in steps(8),
    ) {
        let outlier = OutlierSettings {
            consecutive_failures: 2,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(35),
            max_ejected_percent: percent,
            ..OutlierSettings::default()
        };
        let settings = GroupSettings { outlier, ..GroupSettings::default() };
        let specs = (0..targets).map(|i| spec(&format!("t{i}"), 1, 0)).collect();
        let group = Group::new(Arc::from("p"), specs, settings, None);
        let set = group.targets();
        let allowed = outlier::max_ejected(targets, percent);
        let mut now = at(1);
        let mut last: Vec<Option<(Moment, Duration)>> = vec![None; targets];
        for step in steps {
            match step {
                Step::Fail(i) if i < targets => {
                    if let Some(ejection) = group.report(&set, i, Verdict::Failure, Duration::ZERO, now) {
                        prop_assert!(ejection.length >= outlier.base_ejection);
                        prop_assert!(ejection.length <= outlier.max_ejection);
                        if let Some((ended_at, previous)) = last[i] {
                            let back_for = now.since(ended_at.plus(previous));
                            if back_for < outlier.max_ejection {
                                prop_assert!(
                                    ejection.length > previous || ejection.length == outlier.max_ejection
                                );
                            }
                        }
                        last[i] = Some((now, ejection.length));
                    }
                }
                Step::Succeed(i) if i < targets => {
                    group.report(&set, i, Verdict::Success, Duration::ZERO, now);
                }
                Step::Wait(seconds) => now = now.plus(Duration::from_secs(seconds)),
                _ => {}
            }
            let ejected = set.members().iter().filter(|m| m.state.passive.ejected(now)).count();
            prop_assert!(ejected <= allowed, "{ejected} ejected, {allowed} allowed");
        }
    }
}
