//! The Structured Field Dictionary parser (RFC 8941 §4.2.2) that targeted cache-control fields
//! such as `CDN-Cache-Control` use (RFC 9213 §2.1).
//!
//! Only what a cache needs is kept of each value: integers and booleans; strings, tokens,
//! decimals, byte sequences and inner lists are parsed for validity and then reduced to
//! [`Item::Other`]. Parameters are parsed and dropped.

/// A dictionary member's value, reduced to what cache directives use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An sf-integer.
    Integer(i64),
    /// An sf-boolean; a member without a value is `true` (RFC 8941 §3.2).
    Boolean(bool),
    /// Any other valid item or inner list.
    Other,
}

/// Parses a dictionary; `None` when the text is not a valid one (RFC 8941 §4.2: then the
/// whole field is ignored). When a key repeats, the last value wins (RFC 8941 §3.2).
pub fn dictionary(text: &str) -> Option<Vec<(String, Item)>> {
    let mut parser = Parser { rest: text.trim_start_matches(' ').as_bytes() };
    let mut members: Vec<(String, Item)> = Vec::new();
    while !parser.rest.is_empty() {
        let key = parser.key()?;
        let item = if parser.eat(b'=') {
            if parser.peek() == Some(b'(') { parser.inner_list()? } else { parser.bare_item()? }
        } else {
            Item::Boolean(true)
        };
        parser.parameters()?;
        match members.iter_mut().find(|(existing, _)| *existing == key) {
            Some(member) => member.1 = item,
            None => members.push((key, item)),
        }
        parser.skip_ows();
        if parser.rest.is_empty() {
            break;
        }
        if !parser.eat(b',') {
            return None;
        }
        parser.skip_ows();
        if parser.rest.is_empty() {
            return None; // a trailing comma
        }
    }
    Some(members)
}

/// Whether `byte` may appear in a token (RFC 9110 §5.6.2).
pub fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A cursor over the field value.
struct Parser<'a> {
    /// What is left to parse.
    rest: &'a [u8],
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(*first)
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.rest = self.rest.get(1..).unwrap_or_default();
            true
        } else {
            false
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.bump();
        }
    }

    /// key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )
    fn key(&mut self) -> Option<String> {
        let first = self.peek()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return None;
        }
        let mut key = String::new();
        while let Some(byte) = self.peek() {
            if byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-.*".contains(&byte) {
                key.push(char::from(byte));
                self.bump();
            } else {
                break;
            }
        }
        Some(key)
    }

    /// parameters = *( ";" *SP key [ "=" bare-item ] )
    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip_sp();
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    /// inner-list = "(" *SP [ sf-item *( 1*SP sf-item ) *SP ] ")" parameters
    fn inner_list(&mut self) -> Option<Item> {
        if !self.eat(b'(') {
            return None;
        }
        loop {
            self.skip_sp();
            if self.eat(b')') {
                return Some(Item::Other);
            }
            self.bare_item()?;
            self.parameters()?;
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return None;
            }
        }
    }

    fn bare_item(&mut self) -> Option<Item> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => self.byte_sequence(),
            b'?' => {
                self.bump();
                match self.bump()? {
                    b'0' => Some(Item::Boolean(false)),
                    b'1' => Some(Item::Boolean(true)),
                    _ => None,
                }
            }
            byte if byte.is_ascii_alphabetic() || byte == b'*' => {
                while let Some(byte) = self.peek() {
                    if is_tchar(byte) || byte == b':' || byte == b'/' {
                        self.bump();
                    } else {
                        break;
                    }
                }
                Some(Item::Other)
            }
            _ => None,
        }
    }

    /// sf-integer (at most 15 digits) or sf-decimal (RFC 8941 §4.2.4).
    fn number(&mut self) -> Option<Item> {
        let negative = self.eat(b'-');
        let mut digits = String::new();
        let mut decimal = false;
        while let Some(byte) = self.peek() {
            if byte.is_ascii_digit() {
                digits.push(char::from(byte));
            } else if byte == b'.' && !decimal && !digits.is_empty() && digits.len() <= 12 {
                decimal = true;
                digits.push('.');
            } else {
                break;
            }
            self.bump();
            if (!decimal && digits.len() > 15) || (decimal && digits.len() > 16) {
                return None;
            }
        }
        if digits.is_empty() || digits.ends_with('.') {
            return None;
        }
        if decimal {
            let fraction = digits.split_once('.').map_or(0, |(_, fraction)| fraction.len());
            return (fraction <= 3).then_some(Item::Other);
        }
        let value: i64 = digits.parse().ok()?;
        Some(Item::Integer(if negative { -value } else { value }))
    }

    /// sf-string: printable ASCII, with only `\"` and `\\` escapes.
    fn string(&mut self) -> Option<Item> {
        self.bump();
        loop {
            match self.bump()? {
                b'\\' => {
                    if !matches!(self.bump()?, b'"' | b'\\') {
                        return None;
                    }
                }
                b'"' => return Some(Item::Other),
                byte if (0x20..0x7f).contains(&byte) => {}
                _ => return None,
            }
        }
    }

    /// sf-binary: `:` base64 `:`.
    fn byte_sequence(&mut self) -> Option<Item> {
        self.bump();
        loop {
            match self.bump()? {
                b':' => return Some(Item::Other),
                byte if byte.is_ascii_alphanumeric() || b"+/=".contains(&byte) => {}
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed dictionary.
    type Members = Vec<(String, Item)>;

    #[test]
    fn table() {
        let int = |key: &str, value: i64| (key.to_owned(), Item::Integer(value));
        let flag = |key: &str| (key.to_owned(), Item::Boolean(true));
        let other = |key: &str| (key.to_owned(), Item::Other);
        let cases: Vec<(&str, Option<Members>)> = vec![
            ("max-age=3600", Some(vec![int("max-age", 3600)])),
            ("foobar, max-age=3600", Some(vec![flag("foobar"), int("max-age", 3600)])),
            ("  no-store ,\tprivate", Some(vec![flag("no-store"), flag("private")])),
            ("max-age=99999999999", Some(vec![int("max-age", 99_999_999_999)])),
            ("max-age=\"10000\"", Some(vec![other("max-age")])),
            ("a=1;p=2, b=?0", Some(vec![int("a", 1), ("b".to_owned(), Item::Boolean(false))])),
            (
                "a=(1 2 \"x\");q, b=tok/en:x, c=:AQID:, d=1.5",
                Some(vec![other("a"), other("b"), other("c"), other("d")]),
            ),
            ("a=1, a=2", Some(vec![int("a", 2)])),
            ("", Some(vec![])),
            // Invalid dictionaries.
            ("max-age=10000, &&&&&", None),
            ("MaX-aGe=3600", None),
            ("max-age =100", None),
            ("max-age= 100", None),
            ("a=1,", None),
            ("a=1234567890123456", None),
            ("a=\"unterminated", None),
            ("a=?2", None),
            ("a=1.2345", None),
        ];
        for (input, expected) in cases {
            assert_eq!(dictionary(input), expected, "input: {input:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[ -~]{0,40}") {
            let _ = dictionary(&text);
        }
    }
}
