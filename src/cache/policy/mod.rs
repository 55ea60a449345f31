//! RFC 9111 rules as pure functions over header maps, methods, status codes and times.
//!
//! - [`directives`]: Cache-Control of requests and responses, and targeted fields such as
//!   `CDN-Cache-Control` (RFC 9213), parsed with [`structured`] (RFC 8941 dictionaries);
//! - [`date`]: HTTP-dates (RFC 9110 §5.6.7);
//! - [`freshness`]: freshness lifetime, age, and whether a stored response may be reused
//!   (§4.2, RFC 5861 `stale-while-revalidate` / `stale-if-error`);
//! - [`storage`]: whether a response may be stored, and what of it (§3);
//! - [`validation`]: conditional requests, 304 updates, answering a client's conditional
//!   request (§4.3);
//! - [`invalidation`]: what an unsafe request's response invalidates (§4.4).

pub mod date;
pub mod directives;
pub mod freshness;
pub mod invalidation;
pub mod storage;
pub mod structured;
pub mod validation;
