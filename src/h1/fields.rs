//! A parsed field section: the fields of a head as spans of the buffer it was parsed from, in
//! the order they arrived, with lookups by name (case-insensitive, RFC 9110 §5.1).

use std::cell::RefCell;

use crate::h1::{Span, list_members};

/// One field line: its name and its value (without surrounding whitespace), as spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Field {
    /// The field name, as received.
    pub name: Span,
    /// The field value, trimmed of leading and trailing whitespace.
    pub value: Span,
}

/// The field lines of one head, read in place from the buffer they were parsed from.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'b> {
    buf: &'b [u8],
    list: &'b [Field],
    /// Whether a `Connection` line may list an option that names a field to drop (one other
    /// than the fixed hop-by-hop names): false lets a rewrite skip reading those lines again.
    options: bool,
}

impl<'b> Fields<'b> {
    /// The fields `list` of a head parsed from `buf`.
    pub fn new(buf: &'b [u8], list: &'b [Field]) -> Fields<'b> {
        Fields { buf, list, options: true }
    }

    /// The fields `list` of a head parsed from `buf`, whose parser found whether any
    /// `Connection` line lists an option other than the fixed hop-by-hop names.
    pub fn parsed(buf: &'b [u8], list: &'b [Field], options: bool) -> Fields<'b> {
        Fields { buf, list, options }
    }

    /// Whether a `Connection` line may name a field beyond the fixed hop-by-hop ones.
    pub fn connection_options(&self) -> bool {
        self.options
    }

    /// How many field lines there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every field line as `(name, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + use<'b> {
        let buf = self.buf;
        self.list.iter().map(move |field| (field.name.of(buf), field.value.of(buf)))
    }

    /// Every field line as `(name, value, line)`: `line` is the line as received from the
    /// start of the name to the end of the value (without its CRLF), or just the name when the
    /// value is empty. Copying `line` copies the field without taking it apart.
    pub fn lines(&self) -> impl Iterator<Item = (&'b [u8], &'b [u8], &'b [u8])> + use<'b> {
        let buf = self.buf;
        self.list.iter().map(move |field| {
            let name = field.name.of(buf);
            let value = field.value.of(buf);
            let line = if value.is_empty() || field.value.start < field.name.end {
                name
            } else {
                Span { start: field.name.start, end: field.value.end }.of(buf)
            };
            (name, value, line)
        })
    }

    /// The values of every line named `name` (lowercase), in order.
    pub fn get_all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'b [u8]> + use<'b, 'n> {
        self.iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// The value of the first line named `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&'b [u8]> {
        self.get_all(name).next()
    }

    /// Whether any line named `name` lists `token` among its comma-separated members
    /// (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(list_members)
            .any(|member| member.eq_ignore_ascii_case(token.as_bytes()))
    }
}

thread_local! {
    static SPARE: RefCell<Vec<Field>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the thread's spare field list, for a head that is parsed and done with at
/// once (its list is not kept): no allocation per head, as the connection's own list gives the
/// request heads. `f` must not ask for the spare list again.
pub fn with_spare<R>(f: impl FnOnce(&mut Vec<Field>) -> R) -> R {
    SPARE.with_borrow_mut(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans for `pairs` laid out one after the other in a buffer.
    fn fields(pairs: &[(&str, &str)]) -> (Vec<u8>, Vec<Field>) {
        let mut buf = Vec::new();
        let mut list = Vec::new();
        for (name, value) in pairs {
            let start = buf.len() as u32;
            buf.extend_from_slice(name.as_bytes());
            let name = Span { start, end: buf.len() as u32 };
            let start = buf.len() as u32;
            buf.extend_from_slice(value.as_bytes());
            list.push(Field { name, value: Span { start, end: buf.len() as u32 } });
        }
        (buf, list)
    }

    #[test]
    fn lookups_ignore_case_and_keep_order() {
        let (buf, list) = fields(&[
            ("Host", "a"),
            ("Connection", "keep-alive, Upgrade"),
            ("X-Multi", "1"),
            ("x-multi", "2"),
        ]);
        let fields = Fields::new(&buf, &list);
        assert_eq!(fields.len(), 4);
        assert_eq!(fields.get("host"), Some(&b"a"[..]));
        assert_eq!(fields.get_all("x-multi").collect::<Vec<_>>(), [&b"1"[..], b"2"]);
        assert!(fields.has_token("connection", "upgrade"));
        assert!(fields.has_token("connection", "keep-alive"));
        assert!(!fields.has_token("connection", "close"));
        assert_eq!(fields.get("missing"), None);
    }
}
