//! The upstream side both proxy modes share: [`dialer`] resolves and opens TCP connections
//! with a deadline and the destination guard, [`connect`] makes the connections the pooled
//! clients dial (straight there, or through parents, counted against a target's cap), and
//! [`client`] is the pooled client that sends requests over them; a route whose upstream
//! speaks only HTTP/1.1 sends its plain requests through its own [`route_pool`]. [`parent`]
//! speaks to a parent proxy, and [`egress`] picks the parents for a destination and fails
//! over between them. Both pools send an idempotent request again when the upstream closed the
//! reused connection it went out on ([`replay`]), knowing a reused connection by when
//! [`connect`] opened it.

pub mod client;
pub mod connect;
pub mod dialer;
pub mod egress;
pub mod group;
pub mod h1;
pub mod parent;
pub mod replay;
pub mod route_pool;
