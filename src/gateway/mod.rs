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
//! - [`budget`]: requests and tokens per minute and per day, as checks and charges on the
//!   shared counters of [`crate::state`].

pub mod budget;
pub mod cooldown;
pub mod gate;
pub mod provider;
pub mod request;
pub mod scanner;
pub mod sse;
pub mod tap;
pub mod usage;
pub mod virtual_key;
