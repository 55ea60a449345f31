//! Serialising heads straight into an output buffer: the start line, the received field lines
//! that survive (hop-by-hop fields removed as [`crate::headers::hop_by_hop`] removes them, the
//! framing fields left to the body's own plan, the lines the edits replace or remove), then the
//! lines the edits add ([`crate::headers::edit`]). Received lines are copied whole, as they
//! arrived; nothing is parsed into a map and written out again.

use http::StatusCode;

use crate::h1::fields::Fields;
use crate::headers::edit::{self, Edit};
use crate::headers::hop_by_hop;

/// Appends `method SP target SP HTTP/1.1 CRLF` (RFC 9112 §3): sluice speaks HTTP/1.1
/// upstream whatever the client spoke.
pub fn request_line(out: &mut Vec<u8>, method: &[u8], target: &[u8]) {
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// Appends `HTTP/1.1 SP status SP reason CRLF` (RFC 9112 §4): the status line is sluice's own,
/// so an HTTP/1.0 upstream does not downgrade the client's connection; the reason phrase is
/// the upstream's. [`status_line_http10`] is the one for an HTTP/1.0 client.
pub fn status_line(out: &mut Vec<u8>, status: StatusCode, reason: &[u8]) {
    if status == StatusCode::OK && reason == b"OK" {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// Appends `HTTP/1.0 SP status SP reason CRLF`: the status line for an HTTP/1.0 client, which
/// is answered in its own version (as hyper's server does, RFC 9110 §6.2).
pub fn status_line_http10(out: &mut Vec<u8>, status: StatusCode, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.0 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// Appends one field line.
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Ends the head.
pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// What [`fields`] wrote, for the fields a head must not go without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// A `Host` line.
    pub host: bool,
    /// A `Date` line.
    pub date: bool,
}

/// Appends the field lines of the rewritten head: every received line that is not hop-by-hop,
/// not `Content-Length` (unless `keep_length`: the body is sent with the length it arrived
/// with) and not dropped by `edits`, then the lines `edits` add.
pub fn fields(
    out: &mut Vec<u8>,
    received: &Fields<'_>,
    edits: &[Edit<'_>],
    keep_length: bool,
) -> Written {
    fields_without(out, received, edits, keep_length, |_| false)
}

/// [`fields`], also leaving out every received line whose name `dropped` says is to go (the
/// look-alikes of names sluice writes, `headers::lookalike`).
pub fn fields_without(
    out: &mut Vec<u8>,
    received: &Fields<'_>,
    edits: &[Edit<'_>],
    keep_length: bool,
    dropped: impl Fn(&[u8]) -> bool,
) -> Written {
    let options = ConnectionOptions::of(received);
    let mut written = Written::default();
    for (name, _, line) in received.lines() {
        if hop_by_hop::is_fixed(name)
            || options.name(received, name)
            || (!keep_length && name.eq_ignore_ascii_case(b"content-length"))
            || edit::drops(edits, name)
            || dropped(name)
        {
            continue;
        }
        note(&mut written, name);
        out.extend_from_slice(line);
        if line.len() == name.len() {
            out.push(b':');
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in edit::additions(edits) {
        let name = name.as_str().as_bytes();
        note(&mut written, name);
        field(out, name, value.as_bytes());
    }
    written
}

/// The options of a head's `Connection` lines, read once per head rather than once per copied
/// line: most heads carry none, or only `keep-alive` or `close`, which name no field that is
/// not dropped anyway.
enum ConnectionOptions<'b> {
    /// Up to [`ConnectionOptions::INLINE`] options that may name a field.
    Few([&'b [u8]; ConnectionOptions::INLINE], usize),
    /// More than that: each line asks the `Connection` lines again.
    Many,
}

impl<'b> ConnectionOptions<'b> {
    const INLINE: usize = 8;

    fn of(received: &Fields<'b>) -> ConnectionOptions<'b> {
        let mut few = [&[][..]; ConnectionOptions::INLINE];
        let mut count = 0;
        if !received.connection_options() {
            return ConnectionOptions::Few(few, count);
        }
        for value in received.get_all("connection") {
            // A value that is not visible ASCII names nothing (`hop_by_hop::names`).
            if !value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) {
                continue;
            }
            for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if option.is_empty() || hop_by_hop::is_fixed(option) {
                    continue;
                }
                let Some(slot) = few.get_mut(count) else { return ConnectionOptions::Many };
                *slot = option;
                count += 1;
            }
        }
        ConnectionOptions::Few(few, count)
    }

    /// Whether the head's `Connection` lines name `name` (one that is not dropped anyway).
    fn name(&self, received: &Fields<'_>, name: &[u8]) -> bool {
        match self {
            ConnectionOptions::Few(few, count) => few
                .get(..*count)
                .unwrap_or_default()
                .iter()
                .any(|option| option.eq_ignore_ascii_case(name)),
            ConnectionOptions::Many => {
                received.get_all("connection").any(|value| hop_by_hop::names(value, name))
            }
        }
    }
}

fn note(written: &mut Written, name: &[u8]) {
    if name.len() == 4 {
        if name.eq_ignore_ascii_case(b"host") {
            written.host = true;
        } else if name.eq_ignore_ascii_case(b"date") {
            written.date = true;
        }
    }
}

#[cfg(test)]
mod tests;
