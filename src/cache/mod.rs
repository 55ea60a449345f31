//! A shared HTTP cache (RFC 9111) for reverse routes and for the forward proxy's plain
//! `http://` requests.
//!
//! - [`key`]: the primary key (method and target URI) and the secondary key from the request
//!   fields a response's `Vary` names;
//! - [`policy`]: the RFC 9111 rules, pure functions with table tests;
//! - [`range`]: byte ranges served from complete stored responses (RFC 9110 §14);
//! - [`status`]: `Cache-Status` (RFC 9211) and the outcome logged and counted;
//! - [`store`]: the bounded in-memory store of responses and their variants;
//! - [`body`]: a stored body that readers stream from while it is still being filled;
//! - [`fill`]: the response body that passes the origin's bytes to the first client and into
//!   the store at the same time;
//! - [`collapse`]: one request to the origin per key, with the others waiting for it;
//! - [`plan`]: what to do with a request before it goes to the origin, and with the
//!   origin's answer;
//! - [`answer`]: the response a stored object gives one request (Age, 304, 206/416, HEAD).

pub mod answer;
pub mod body;
pub mod collapse;
pub mod fill;
pub mod key;
pub mod plan;
pub mod policy;
pub mod range;
pub mod status;
pub mod store;
