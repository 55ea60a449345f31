//! Why the gateway turned a request away before (or instead of) a provider's answer, each
//! with the machine-readable code its provider-shaped error body carries.

use std::sync::Arc;

use crate::gateway::budget::BudgetSpent;
use crate::gateway::gate::GateFailure;
use crate::gateway::request::FieldError;
use crate::state::StateError;

/// A request the gateway refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No virtual key was presented.
    #[error(
        "no API key given: send your virtual key as `Authorization: Bearer <key>` or `x-api-key`"
    )]
    MissingKey,
    /// The presented key is not a virtual key of this gateway.
    #[error("the API key is not valid")]
    UnknownKey,
    /// The virtual key may not use this route.
    #[error("virtual key {key} may not use this route")]
    RouteNotAllowed {
        /// The virtual key's name.
        key: Arc<str>,
    },
    /// The virtual key may not use this model (or must name one).
    #[error("virtual key {key} may not use model `{model}`")]
    ModelNotAllowed {
        /// The virtual key's name.
        key: Arc<str>,
        /// The requested model (empty when none was named).
        model: String,
    },
    /// A request or token budget is spent.
    #[error(transparent)]
    Budget(#[from] BudgetSpent),
    /// The body is not an AI request sluice can read.
    #[error("the request body cannot be read: {0}")]
    Body(#[from] FieldError),
    /// The shared counters cannot be reached and the gateway fails closed.
    #[error("budgets cannot be checked right now")]
    State(#[source] StateError),
    /// Every attempt failed before its first event (the last failure is given).
    #[error("no provider answered with a first event")]
    FirstEvent(#[source] GateFailure),
}

impl Refusal {
    /// The `code` of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::MissingKey | Refusal::UnknownKey => "invalid_api_key",
            Refusal::RouteNotAllowed { .. } => "route_not_allowed",
            Refusal::ModelNotAllowed { .. } => "model_not_allowed",
            Refusal::Budget(spent) => spent.limit.code(),
            Refusal::Body(_) => "invalid_request_body",
            Refusal::State(_) => "budget_store_unavailable",
            Refusal::FirstEvent(GateFailure::Timeout) => "first_event_timeout",
            Refusal::FirstEvent(_) => "stream_failed_before_first_event",
        }
    }
}
