//! The upstream side both proxy modes share: [`connect`] resolves and dials with a deadline,
//! [`client`] is the pooled client that sends requests over those connections, and a route
//! whose upstream speaks only HTTP/1.1 sends its plain requests through its own
//! [`route_pool`]. [`parent`] opens tunnels through a parent proxy, and [`egress`] picks the
//! parents for a destination and fails over between them.

pub mod client;
pub mod connect;
pub mod egress;
pub mod group;
pub mod parent;
pub mod route_pool;
