//! An incremental scanner of a JSON object's top-level members: fed a body frame by frame,
//! it finds the values of a few wanted members (`model`, `stream`, `usage`, ...) with their
//! byte offsets, without building the document and without keeping the frames.
//!
//! Nested values are skipped by counting brackets outside strings; only the wanted members'
//! values are copied, each up to a capture limit. The scanner does not validate JSON beyond
//! what it needs to find member boundaries: the upstream still parses the body for real. What
//! it must get right is where a top-level member starts and ends (RFC 8259 §4, §7), so that
//! sluice and the upstream read the same `model`; a wanted member given twice is reported,
//! since parsers disagree on which of the two counts (RFC 8259 §4: names SHOULD be unique).

/// Longest member name compared against the wanted names; longer names are never wanted.
const MAX_NAME_BYTES: usize = 64;

/// A wanted member's value as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Offset of the value's first byte from the start of the input.
    pub start: u64,
    /// Offset just past the value's last byte, once the value is complete.
    pub end: Option<u64>,
    /// The value's bytes (its JSON text), up to the capture limit.
    pub raw: Vec<u8>,
    /// The value was longer than the capture limit: `raw` holds only its beginning.
    pub truncated: bool,
}

impl Member {
    /// The whole value's JSON text, when it is complete and was captured whole.
    pub fn text(&self) -> Option<&[u8]> {
        (self.end.is_some() && !self.truncated).then_some(self.raw.as_slice())
    }
}

/// Where the scanner is in the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `{`.
    Start,
    /// After `{`: a member name or the closing `}`.
    BeforeName,
    /// After `,`: a member name (RFC 8259 has no trailing comma).
    NextName,
    /// Inside a member name.
    Name,
    /// Just after a backslash in a member name.
    NameEscape,
    /// After a member name: the `:`.
    AfterName,
    /// After `:`: the value's first byte.
    BeforeValue,
    /// Inside a string value.
    StringValue,
    /// Just after a backslash in a string value.
    StringEscape,
    /// Inside an object or array value (see `depth`, `in_string`, `escaped`).
    Nested,
    /// Inside a number, `true`, `false` or `null`.
    Scalar,
    /// After a value: `,` or the closing `}`.
    AfterValue,
    /// The object ended at `closed_at`.
    Closed,
    /// The input is not a JSON object.
    Invalid,
}

/// Scans one JSON object incrementally for its wanted top-level members.
#[derive(Debug)]
pub struct ObjectScanner {
    wanted: &'static [&'static str],
    capture_limit: usize,
    members: Vec<Option<Member>>,
    duplicate: Option<&'static str>,
    state: State,
    /// Offset of the next byte to be fed.
    offset: u64,
    name: Vec<u8>,
    name_too_long: bool,
    /// Index (in `wanted`) of the member whose value is being read.
    current: Option<usize>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    closed_at: Option<u64>,
}

impl ObjectScanner {
    /// A scanner for the members named in `wanted`, copying at most `capture_limit` bytes of
    /// each value.
    pub fn new(wanted: &'static [&'static str], capture_limit: usize) -> ObjectScanner {
        ObjectScanner {
            wanted,
            capture_limit,
            members: vec![None; wanted.len()],
            duplicate: None,
            state: State::Start,
            offset: 0,
            name: Vec::with_capacity(16),
            name_too_long: false,
            current: None,
            depth: 0,
            in_string: false,
            escaped: false,
            closed_at: None,
        }
    }

    /// The wanted member `name`, when seen (possibly still incomplete).
    pub fn member(&self, name: &str) -> Option<&Member> {
        let index = self.wanted.iter().position(|wanted| *wanted == name)?;
        self.members.get(index).and_then(Option::as_ref)
    }

    /// Whether the value of the wanted member `name` has been read to its end.
    pub fn complete(&self, name: &str) -> bool {
        self.member(name).is_some_and(|member| member.end.is_some())
    }

    /// The first wanted member that appeared twice, if any.
    pub fn duplicate(&self) -> Option<&'static str> {
        self.duplicate
    }

    /// The offset of the object's closing `}`, once it has been read.
    pub fn closed_at(&self) -> Option<u64> {
        self.closed_at
    }

    /// Whether the input so far cannot be the start of a JSON object.
    pub fn invalid(&self) -> bool {
        self.state == State::Invalid
    }

    /// Whether scanning is over: the object closed or the input is not an object.
    pub fn done(&self) -> bool {
        matches!(self.state, State::Closed | State::Invalid)
    }

    /// Bytes fed so far.
    pub fn consumed(&self) -> u64 {
        self.offset
    }

    /// Reads the next bytes of the input. Bytes after the object's end are counted and
    /// otherwise ignored.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() {
            if self.done() {
                break;
            }
            let rest = chunk.get(i..).unwrap_or_default();
            // Fast path: the inside of a string up to its next quote or backslash.
            let in_text = matches!(self.state, State::StringValue | State::Name)
                || (self.state == State::Nested && self.in_string && !self.escaped);
            if in_text {
                let run = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                if run > 0 {
                    let text = rest.get(..run).unwrap_or_default();
                    if self.state == State::Name {
                        self.push_name(text);
                    } else {
                        self.capture(text);
                    }
                    self.offset += run as u64;
                    i += run;
                    continue;
                }
            }
            let Some(&byte) = rest.first() else { break };
            if self.step(byte) {
                self.offset += 1;
                i += 1;
            }
        }
        // Bytes after the end are consumed too.
        self.offset += (chunk.len() - i.min(chunk.len())) as u64;
    }

    /// Handles one byte; returns false when the byte must be handled again in the new state.
    fn step(&mut self, byte: u8) -> bool {
        let space = matches!(byte, b' ' | b'\t' | b'\n' | b'\r');
        match self.state {
            State::Start => match byte {
                _ if space => {}
                b'{' => self.state = State::BeforeName,
                _ => self.state = State::Invalid,
            },
            State::BeforeName | State::NextName => match byte {
                _ if space => {}
                b'"' => {
                    self.name.clear();
                    self.name_too_long = false;
                    self.state = State::Name;
                }
                b'}' if self.state == State::BeforeName => self.close(),
                _ => self.state = State::Invalid,
            },
            State::Name => match byte {
                b'"' => self.state = State::AfterName,
                b'\\' => {
                    // An escaped name never equals a wanted (plain ASCII) name.
                    self.name_too_long = true;
                    self.state = State::NameEscape;
                }
                _ => self.push_name(&[byte]),
            },
            State::NameEscape => self.state = State::Name,
            State::AfterName => match byte {
                _ if space => {}
                b':' => {
                    self.current = self.wanted_index();
                    self.state = State::BeforeValue;
                }
                _ => self.state = State::Invalid,
            },
            State::BeforeValue => {
                if space {
                    return true;
                }
                if matches!(byte, b',' | b'}' | b']' | b':') {
                    self.state = State::Invalid;
                    return true;
                }
                self.start_value();
                self.capture(&[byte]);
                self.state = match byte {
                    b'"' => State::StringValue,
                    b'{' | b'[' => {
                        self.depth = 1;
                        self.in_string = false;
                        self.escaped = false;
                        State::Nested
                    }
                    _ => State::Scalar,
                };
            }
            State::StringValue => {
                self.capture(&[byte]);
                match byte {
                    b'"' => self.end_value(self.offset + 1),
                    b'\\' => self.state = State::StringEscape,
                    _ => {}
                }
            }
            State::StringEscape => {
                self.capture(&[byte]);
                self.state = State::StringValue;
            }
            State::Nested => {
                self.capture(&[byte]);
                if self.in_string {
                    if self.escaped {
                        self.escaped = false;
                    } else if byte == b'\\' {
                        self.escaped = true;
                    } else if byte == b'"' {
                        self.in_string = false;
                    }
                } else {
                    match byte {
                        b'"' => self.in_string = true,
                        b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                        b'}' | b']' => {
                            self.depth = self.depth.saturating_sub(1);
                            if self.depth == 0 {
                                self.end_value(self.offset + 1);
                            }
                        }
                        _ => {}
                    }
                }
            }
            State::Scalar => {
                if space || matches!(byte, b',' | b'}') {
                    self.end_value(self.offset);
                    return false;
                }
                self.capture(&[byte]);
            }
            State::AfterValue => match byte {
                _ if space => {}
                b',' => self.state = State::NextName,
                b'}' => self.close(),
                _ => self.state = State::Invalid,
            },
            State::Closed | State::Invalid => {}
        }
        true
    }

    fn push_name(&mut self, bytes: &[u8]) {
        if self.name.len() + bytes.len() > MAX_NAME_BYTES {
            self.name_too_long = true;
        } else {
            self.name.extend_from_slice(bytes);
        }
    }

    fn wanted_index(&mut self) -> Option<usize> {
        if self.name_too_long {
            return None;
        }
        let index = self.wanted.iter().position(|wanted| wanted.as_bytes() == self.name)?;
        if self.members.get(index).is_some_and(Option::is_some) && self.duplicate.is_none() {
            self.duplicate = self.wanted.get(index).copied();
        }
        Some(index)
    }

    fn start_value(&mut self) {
        let start = self.offset;
        if let Some(slot) = self.current.and_then(|index| self.members.get_mut(index)) {
            // A duplicate's value replaces the first: it is what most parsers keep.
            *slot = Some(Member { start, ..Member::default() });
        }
    }

    fn capture(&mut self, bytes: &[u8]) {
        let limit = self.capture_limit;
        let Some(Some(member)) = self.current.and_then(|index| self.members.get_mut(index)) else {
            return;
        };
        let room = limit.saturating_sub(member.raw.len());
        if bytes.len() > room {
            member.truncated = true;
        }
        member.raw.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }

    fn end_value(&mut self, end: u64) {
        if let Some(Some(member)) = self.current.and_then(|index| self.members.get_mut(index)) {
            member.end = Some(end);
        }
        self.current = None;
        self.state = State::AfterValue;
    }

    fn close(&mut self) {
        self.closed_at = Some(self.offset);
        self.state = State::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANTED: &[&str] = &["model", "stream", "usage"];

    /// Scans `input` fed in pieces of `step` bytes.
    fn scan(input: &str, step: usize) -> ObjectScanner {
        let mut scanner = ObjectScanner::new(WANTED, 32);
        for piece in input.as_bytes().chunks(step) {
            scanner.feed(piece);
        }
        scanner
    }

    fn text(scanner: &ObjectScanner, name: &str) -> Option<String> {
        scanner.member(name).and_then(Member::text).map(|t| String::from_utf8(t.to_vec()).unwrap())
    }

    #[test]
    fn members_are_found_however_the_input_is_split() {
        let input = r#" { "messages": [{"role":"user","content":"say \"model\": {x}"}],
            "model" : "gpt-4o", "n": 1, "stream":true, "usage": {"a": [1, {"b": "}"}]} } trailing"#;
        for step in 1..=input.len() {
            let scanner = scan(input, step);
            assert_eq!(text(&scanner, "model").as_deref(), Some(r#""gpt-4o""#), "step {step}");
            assert_eq!(text(&scanner, "stream").as_deref(), Some("true"), "step {step}");
            assert_eq!(
                text(&scanner, "usage").as_deref(),
                Some(r#"{"a": [1, {"b": "}"}]}"#),
                "step {step}"
            );
            assert_eq!(scanner.closed_at(), Some(input.rfind('}').unwrap() as u64));
            assert!(scanner.duplicate().is_none());
            assert_eq!(scanner.consumed(), input.len() as u64);
        }
    }

    #[test]
    fn offsets_point_at_the_value() {
        let input = r#"{"a":1,"model":"m-1"}"#;
        let scanner = scan(input, 3);
        let member = scanner.member("model").unwrap();
        let (start, end) = (member.start as usize, member.end.unwrap() as usize);
        assert_eq!(&input[start..end], r#""m-1""#);
    }

    #[test]
    fn table() {
        // (input, model text, stream text, closed, invalid, duplicate)
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, bool, bool, Option<&'a str>);
        let cases: &[Case] = &[
            ("{}", None, None, true, false, None),
            ("  {\n}", None, None, true, false, None),
            (r#"{"stream":false}"#, None, Some("false"), true, false, None),
            (r#"{"stream":null,"model":"a"}"#, Some(r#""a""#), Some("null"), true, false, None),
            (r#"{"model":"a","model":"b"}"#, Some(r#""b""#), None, true, false, Some("model")),
            (r#"{"mo\u0064el":"a"}"#, None, None, true, false, None),
            (r#"{"model":"a\"b\\"}"#, Some(r#""a\"b\\""#), None, true, false, None),
            (r#"{"model":"a""#, Some(r#""a""#), None, false, false, None),
            (r#"{"model":"abc"#, None, None, false, false, None),
            ("[1,2]", None, None, false, true, None),
            ("model", None, None, false, true, None),
            (r#"{"model" "a"}"#, None, None, false, true, None),
            (r#"{"model":}"#, None, None, false, true, None),
            (r#"{"model":"x",}"#, Some(r#""x""#), None, false, true, None),
            (r#"{"stream":1e3 }"#, None, Some("1e3"), true, false, None),
        ];
        for (input, model, stream, closed, invalid, duplicate) in cases {
            for step in [1, 2, 5, 100] {
                let scanner = scan(input, step);
                assert_eq!(text(&scanner, "model").as_deref(), *model, "{input} / {step}");
                assert_eq!(text(&scanner, "stream").as_deref(), *stream, "{input} / {step}");
                assert_eq!(scanner.closed_at().is_some(), *closed, "{input} / {step}");
                assert_eq!(scanner.invalid(), *invalid, "{input} / {step}");
                assert_eq!(scanner.duplicate(), *duplicate, "{input} / {step}");
            }
        }
    }

    #[test]
    fn long_values_are_truncated_but_still_delimited() {
        let long = "x".repeat(100);
        let input = format!(r#"{{"model":"{long}","stream":true}}"#);
        let scanner = scan(&input, 7);
        let member = scanner.member("model").unwrap();
        assert!(member.truncated);
        assert_eq!(member.raw.len(), 32);
        assert!(member.text().is_none());
        assert_eq!(member.end, Some(9 + 102));
        assert_eq!(text(&scanner, "stream").as_deref(), Some("true"));
    }

    #[test]
    fn long_names_are_never_wanted() {
        let name = "m".repeat(MAX_NAME_BYTES + 10);
        let input = format!(r#"{{"{name}":"a","model":"b"}}"#);
        assert_eq!(text(&scan(&input, 4), "model").as_deref(), Some(r#""b""#));
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let deep =
            format!("{{\"x\":{}{}, \"model\":\"m\"}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(text(&scan(&deep, 4096), "model").as_deref(), Some(r#""m""#));
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_serde_json_on_top_level_members(
            model in "[a-z0-9\"\\\\{}\\[\\]:, -]{0,12}",
            other in proptest::collection::vec(("[a-z]{1,6}", "[a-z\"{}\\[\\]]{0,8}"), 0..4),
            stream in proptest::bool::ANY,
            step in 1usize..16,
        ) {
            let mut object = serde_json::Map::new();
            for (name, value) in &other {
                if !WANTED.contains(&name.as_str()) {
                    object.insert(name.clone(), serde_json::json!([value, {"k": value}]));
                }
            }
            object.insert("model".into(), serde_json::Value::String(model.clone()));
            object.insert("stream".into(), serde_json::Value::Bool(stream));
            let input = serde_json::to_string(&object).unwrap();
            let scanner = scan(&input, step);
            let found: String = serde_json::from_slice(
                scanner.member("model").unwrap().text().unwrap_or(b"\"<truncated>\"")
            ).unwrap();
            if input.len() < 1000 && found != "<truncated>" {
                proptest::prop_assert_eq!(found, model);
            }
            proptest::prop_assert_eq!(text(&scanner, "stream"), Some(stream.to_string()));
            proptest::prop_assert!(scanner.closed_at().is_some());
        }
    }
}
