use super::*;

const LIMITS: HeadLimits = HeadLimits { max_bytes: 8192, max_fields: 100 };

fn parse_with(input: &[u8], limits: HeadLimits) -> Result<Option<(usize, Framing, bool)>, Refusal> {
    let mut fields = Vec::new();
    Ok(match parse(input, limits, &mut fields)? {
        Parsed::Complete(head) => Some((head.len, head.framing, head.keep_alive)),
        Parsed::Partial => None,
    })
}

fn refusal(input: &str) -> Option<Refusal> {
    parse_with(input.as_bytes(), LIMITS).err()
}

#[test]
fn a_request_head_is_read_in_place() {
    let input = b"\r\nGET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Two:  a b \r\nx-two: c\r\nX-Empty:\r\n\r\nBODY";
    let mut fields = Vec::new();
    let Parsed::Complete(head) = parse(input, LIMITS, &mut fields).unwrap() else {
        panic!("partial")
    };
    assert_eq!(head.len, input.len() - 4);
    assert_eq!(head.method, Method::GET);
    assert_eq!(head.uri, "/a?b=c");
    assert_eq!(head.target, b"/a?b=c");
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.framing, Framing::Empty);
    assert!(head.keep_alive);
    assert_eq!(head.fields.get("host"), Some(&b"example.com"[..]));
    assert_eq!(head.fields.get_all("x-two").collect::<Vec<_>>(), [&b"a b"[..], b"c"]);
    assert_eq!(head.fields.get("x-empty"), Some(&b""[..]));
    let lines: Vec<_> = head.fields.lines().map(|(_, _, line)| line).collect();
    assert_eq!(lines, [&b"Host: example.com"[..], b"X-Two:  a b", b"x-two: c", b"X-Empty"]);
}

#[test]
fn framing_and_keep_alive_follow_hyper() {
    use Framing::*;
    let cases: &[(&str, (Framing, bool))] = &[
        ("GET / HTTP/1.1\r\n\r\n", (Empty, true)),
        ("GET / HTTP/1.0\r\n\r\n", (Empty, false)),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", (Empty, true)),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", (Empty, false)),
        ("GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n", (Empty, false)),
        ("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", (Length(5), true)),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", (Chunked, true)),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", (Chunked, true)),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            (Chunked, true),
        ),
        (
            "CONNECT a:443 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            (Length(1), true),
        ),
    ];
    for (input, expected) in cases {
        let got = parse_with(input.as_bytes(), LIMITS).unwrap().map(|(_, f, k)| (f, k));
        assert_eq!(got, Some(*expected), "{input:?}");
    }
}

#[test]
fn what_the_general_path_refuses_is_refused() {
    use Refusal::*;
    let cases: &[(&str, Refusal)] = &[
        // The wire guard.
        ("GET / HTTP/1.1\nHost: a\n\n", BareLf),
        ("GET / HTTP/1.1\r\nHost: a\n\r\n", BareLf),
        ("GET / HTTP/1.1\r\nX: a\nContent-Length: 3\r\n\r\n", BareLf),
        // A bare LF ending the request line of a head with no fields, or ending a line whose
        // value has trailing whitespace.
        ("GET / HTTP/1.1\n\r\n", BareLf),
        ("GET / HTTP/1.1\r\nX: a \nY: b\r\n\r\n", BareLf),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            LengthWithEncoding,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            LengthWithEncoding,
        ),
        ("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", RepeatedLength),
        // hyper.
        ("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", BadLength),
        ("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", BadLength),
        ("POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n", BadLength),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", EncodingInHttp10),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", NotChunked),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", NotChunked),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n\r\n",
            NotChunked,
        ),
        ("GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n", Syntax("invalid header name")),
        ("GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n", Syntax("invalid header name")),
        ("GET / HTTP/1.1\r\nX-Nul: a\0b\r\n\r\n", Syntax("invalid header value")),
        ("GET / HTTP/2.0\r\n\r\n", Syntax("invalid HTTP version")),
        ("GET  / HTTP/1.1\r\n\r\n", Syntax("invalid token")),
        ("GET http://[::1/ HTTP/1.1\r\n\r\n", BadTarget),
    ];
    for (input, expected) in cases {
        assert_eq!(refusal(input), Some(*expected), "{input:?}");
    }
}

#[test]
fn a_bare_lf_is_refused_before_the_head_is_complete() {
    assert_eq!(refusal("GET / HTTP/1.1\nHo"), Some(Refusal::BareLf));
    assert_eq!(parse_with(b"GET / HTTP/1.1\r\nHo", LIMITS), Ok(None));
    // Empty lines before a message frame nothing: bare LFs there are skipped.
    assert_eq!(parse_with(b"\n\r\nGET / HTTP/1.1\r\n\r\n", LIMITS).unwrap().map(|h| h.0), Some(21));
}

#[test]
fn limits_give_431_and_414() {
    let small = HeadLimits { max_bytes: 32, max_fields: 2 };
    assert_eq!(
        parse_with(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", small).unwrap().map(|h| h.0),
        Some(30)
    );
    assert_eq!(
        parse_with(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", small),
        Err(Refusal::TooLarge)
    );
    assert_eq!(
        parse_with(b"GET / HTTP/1.1\r\nA: 1\r\nB: 23456\r\n\r\n", small),
        Err(Refusal::TooLarge)
    );
    assert_eq!(
        parse_with(b"GET / HTTP/1.1\r\nA: 1\r\nB: 234567890", small),
        Err(Refusal::TooLarge)
    );
    // A bare LF past the limit is left to the size check, as the guard leaves it to hyper.
    assert_eq!(
        parse_with(b"GET / HTTP/1.1\r\nA: 1\r\nB: 234567890\n", small),
        Err(Refusal::TooLarge)
    );
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_BYTES));
    let roomy = HeadLimits { max_bytes: 1 << 20, max_fields: 100 };
    assert_eq!(parse_with(long.as_bytes(), roomy), Err(Refusal::TargetTooLong));
    // More fields than fit on the stack, when the limit allows them.
    let many: String = (0..150).map(|i| format!("X-{i}: {i}\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let lots = HeadLimits { max_bytes: 1 << 20, max_fields: 200 };
    assert!(parse_with(head.as_bytes(), lots).unwrap().is_some());
    assert_eq!(parse_with(head.as_bytes(), LIMITS), Err(Refusal::TooLarge));
}

#[test]
fn statuses_match_the_general_path() {
    assert_eq!(Refusal::TooLarge.status(), 431);
    assert_eq!(Refusal::TargetTooLong.status(), 414);
    assert_eq!(Refusal::BareLf.status(), 400);
}

#[test]
fn the_head_says_whether_its_connection_lines_may_name_fields() {
    let cases: &[(&str, bool)] = &[
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nConnection: Keep-Alive, Upgrade, TE\r\n\r\n", false),
        // `close` names a field as any other option does (a field called `Close` is dropped).
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: X-Drop\r\n\r\n", true),
        // A value that is not visible ASCII lists nothing, as hyper reads it.
        ("GET / HTTP/1.1\r\nConnection: x-drop\u{e9}\r\n\r\n", false),
    ];
    for (input, options) in cases {
        let mut fields = Vec::new();
        let Ok(Parsed::Complete(head)) = parse(input.as_bytes(), LIMITS, &mut fields) else {
            panic!("{input:?} does not parse")
        };
        assert_eq!(head.fields.connection_options(), *options, "{input:?}");
    }
}
