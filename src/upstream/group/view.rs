//! What `GET /upstreams` shows of a group: how it balances and retries, and every target with
//! its health (checks, ejection, cooling), weight, tier and requests in flight.

use serde_json::{Value, json};

use super::{Group, Member, Moment};

impl Group {
    /// The group at `now`, as JSON.
    pub fn view(&self, now: Moment) -> Value {
        let settings = self.settings();
        let set = self.targets();
        let targets: Vec<Value> = set.members().iter().map(|member| target(member, now)).collect();
        let budget = &settings.retry.budget;
        json!({
            "balance": settings.balance.as_str(),
            "hash_on": settings.hash_on.as_ref().map(ToString::to_string),
            "retry": {
                "max_attempts": settings.retry.max_attempts,
                "budget_percent": budget.percent,
                "budget_min_per_second": budget.min_per_second,
                "budget_exhausted": self.budget().exhausted(),
            },
            "health_check": settings.health_check.is_some(),
            "targets": targets,
        })
    }
}

/// One target at `now`.
fn target(member: &Member, now: Moment) -> Value {
    let state = &member.state;
    let passive = &state.passive;
    let remaining = |until: Option<Moment>| {
        until.filter(|until| *until > now).map(|until| until.since(now).as_millis() as u64)
    };
    let checks = if state.active.is_healthy() { "up" } else { "down" };
    let connections = &member.spec.endpoint.connections;
    json!({
        "name": &*member.spec.name,
        "url": member.spec.endpoint.url.to_string(),
        "tier": member.spec.tier,
        "weight": member.spec.weight,
        "healthy": state.healthy(now),
        "checks": checks,
        "ejected_for_ms": remaining(passive.ejected_until()),
        "ejections": passive.ejections(),
        "cooling_for_ms": remaining(passive.cooling_until()),
        "consecutive_failures": passive.consecutive_failures(),
        "in_flight": state.in_flight(),
        "max_in_flight": member.spec.caps.max_in_flight,
        "connections": connections.open(),
        "max_connections": connections.limit(),
        "attempts": state.attempts.load(std::sync::atomic::Ordering::Relaxed),
        "failures": state.failures.load(std::sync::atomic::Ordering::Relaxed),
        "retries": state.retries.load(std::sync::atomic::Ordering::Relaxed),
    })
}
