//! Request targets and paths, as pure functions on [`http::Uri`] with no I/O: [`target`] parses
//! what a forward-proxy request names (RFC 9112 §3.2), [`path`] matches routes by whole path
//! segments and builds the upstream URI of a routed request.
//!
//! They sit below the request path (rather than inside `proxy/`) so that their error types can
//! be named by the error renderer, and so fuzz targets exercise them without the proxy.

pub mod owned;
pub mod path;
pub mod target;
