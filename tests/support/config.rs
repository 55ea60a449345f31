//! Configuration for the proxy under test: TOML tables built from parts (listeners on
//! 127.0.0.1:0, routes, the admin listener) and config files written for the binary.

use std::path::PathBuf;

use super::tls::{LeafFiles, toml_path};

/// Listener modes: reverse proxy only.
pub const REVERSE: &str = "forward = false\nreverse = true\n";

/// Listener modes: forward proxy only.
pub const FORWARD: &str = "forward = true\nreverse = false\n";

/// Listener modes: forward and reverse proxy on one listener.
pub const BOTH: &str = "forward = true\nreverse = true\n";

/// `[admin]` on an ephemeral loopback port.
pub const ADMIN: &str = "[admin]\naddress = \"127.0.0.1:0\"\n";

/// One `[[listener]]` table on 127.0.0.1:0 serving `modes` (see [`REVERSE`], [`FORWARD`],
/// [`BOTH`]; empty for the defaults), with further keys `extra`.
pub fn listener(modes: &str, extra: &str) -> String {
    format!("[[listener]]\naddress = \"127.0.0.1:0\"\n{modes}{extra}\n")
}

/// A reverse-only listener on 127.0.0.1:0 followed by `rest` (routes and other tables).
pub fn reverse_config(rest: &str) -> String {
    format!("{}{rest}", listener(REVERSE, ""))
}

/// One TLS listener on 127.0.0.1:0 serving `leaf`, with `modes` and extra `[listener.tls]`
/// lines `tls_extra`.
pub fn tls_listener(leaf: &LeafFiles, modes: &str, tls_extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n{modes}\n[listener.tls]\ncertificate = {}\n\
         key = {}\n{tls_extra}\n",
        toml_path(&leaf.cert),
        toml_path(&leaf.key)
    )
}

/// One `[[route]]` table sending `prefix` to `upstream`, with further keys (or sub-tables such
/// as `[route.tls]`) `extra`.
pub fn route(prefix: &str, upstream: &str, extra: &str) -> String {
    format!("[[route]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

/// One `[[route]]` table named `name` (the name labels its log fields and metrics).
pub fn named_route(name: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n"
    )
}

/// Writes `text` as the config file `name` under `CARGO_TARGET_TMPDIR`, for the binary's
/// `--config`, and returns its path.
pub fn write_config(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}
