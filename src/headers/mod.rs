//! Header handling on the proxy path, as pure functions on [`http::HeaderMap`], each with the
//! streaming form the HTTP/1 fast path applies while it copies a head.
//!
//! Each step is separate so it can be tested and fuzzed alone: [`hop_by_hop`] removes what
//! belongs to one connection, [`lookalike`] what could pass for a field sluice writes,
//! [`forwarded`] adds what a proxy must say about itself, [`rules`] applies the configured
//! rules; [`edit`] is the list of edits the last two come down to; [`host`] checks and shares
//! the `Host` value.

pub mod edit;
pub mod forwarded;
pub mod hop_by_hop;
pub mod host;
pub mod lookalike;
pub mod max_forwards;
pub mod rules;
pub mod via;
