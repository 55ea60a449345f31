//! Header handling on the proxy path, as pure functions on [`http::HeaderMap`].
//!
//! Each step is separate so it can be tested and fuzzed alone: [`hop_by_hop`] removes what
//! belongs to one connection, [`forwarded`] adds what a proxy must say about itself.

pub mod forwarded;
pub mod hop_by_hop;
pub mod max_forwards;
pub mod rules;
pub mod via;
