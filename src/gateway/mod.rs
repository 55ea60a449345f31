//! The AI gateway: what sluice understands of the AI provider APIs a route may speak.
//!
//! - [`provider`]: which paths are which operation, how a client presents its key, the
//!   JSON shape of each provider's errors;
//! - [`scanner`] and [`request`]: `model`, `stream` and `max_tokens` read from the first
//!   bytes of a request body, bounded, and the edits made before it goes upstream;
//! - [`usage`], [`sse`] and [`tap`]: token usage, the model and timing read from JSON
//!   responses and event streams as they pass, never holding a byte back;
//! - [`cooldown`]: how long a provider key rests after a 429, from the provider's reset
//!   headers;
//! - [`gate`]: the first-event gate, which holds a stream's response head until its first
//!   event, so a stream that fails at once can still fall back;
//! - [`virtual_key`]: the keys sluice issues to clients, hashed, from the configuration or a
//!   key file that reloads;
//! - [`refusal`]: why a request was turned away, with its provider error code;
//! - [`metering`]: what the log phase of an AI request charges and records;
//! - [`budget`]: requests and tokens per minute and per day, as checks and charges on the
//!   shared counters of [`crate::state`].

pub mod budget;
pub mod cooldown;
pub mod gate;
pub mod metering;
pub mod provider;
pub mod refusal;
pub mod request;
pub mod scanner;
pub mod sse;
pub mod tap;
pub mod usage;
pub mod virtual_key;

use std::sync::Arc;

use crate::gateway::virtual_key::KeyStore;
use crate::state::SharedState;

/// The gateway state one configuration generation shares: the virtual keys in force and the
/// counters budgets are kept in.
#[derive(Debug)]
pub struct Gateway {
    /// The virtual keys (configured, and from the key file).
    pub keys: Arc<KeyStore>,
    /// Where budgets are counted.
    pub state: Arc<SharedState>,
}
