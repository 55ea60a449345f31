//! The HTTP/1 request parser (`h1::request::parse`) on arbitrary bytes, under fuzzed limits.
//! It never panics; a head it accepts lies within the input, its fields within the head, its
//! framing agrees with its fields; the head serialised again (`h1::write`, no edits) parses
//! back to the same method, target, version and end-to-end fields; and a refusal does not
//! depend on bytes after the head, nor does an accepted head.
//!
//! Input: a byte for the head limit (`8 KiB * (1 + b % 8)`, or 64 bytes when `b` is 0), a
//! byte for the field limit (`1 + b`), then the connection's bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::h1::request::{self, Refusal};
use sluice::h1::{Framing, HeadLimits, Parsed, write};
use sluice::headers::hop_by_hop;

fuzz_target!(|data: &[u8]| {
    let [size, count, buf @ ..] = data else { return };
    let max_bytes = if *size == 0 { 64 } else { 8192 * (1 + usize::from(size % 8)) };
    let limits = HeadLimits { max_bytes, max_fields: 1 + usize::from(*count) };
    let mut fields = Vec::new();
    let parsed = request::parse(buf, limits, &mut fields);
    match parsed {
        Ok(Parsed::Complete(head)) => {
            assert!(head.len <= buf.len() && head.len <= max_bytes);
            assert!(head.fields.len() <= limits.max_fields);
            assert!(buf[..head.len].ends_with(b"\r\n\r\n"), "a head ends in CRLF CRLF");
            let lengths = head.fields.get_all("content-length").count();
            let encodings = head.fields.get_all("transfer-encoding").count();
            if head.method != http::Method::CONNECT {
                assert!(lengths <= 1 && (lengths == 0 || encodings == 0));
            }
            match head.framing {
                Framing::Empty => assert!(lengths == 0 && encodings == 0),
                Framing::Length(n) => {
                    let value = head.fields.get("content-length").expect("a length field");
                    assert_eq!(
                        std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()),
                        Some(n)
                    );
                }
                Framing::Chunked => assert!(encodings > 0),
                Framing::CloseDelimited => panic!("a request is never close-delimited"),
            }
            // The bytes after the head do not change it.
            let mut alone = Vec::new();
            let Ok(Parsed::Complete(same)) = request::parse(&buf[..head.len], limits, &mut alone)
            else {
                panic!("the head alone does not parse")
            };
            assert_eq!((same.len, same.framing), (head.len, head.framing));

            // Serialised again, it parses back to the same request.
            let mut out = Vec::new();
            write::request_line(&mut out, head.method.as_str().as_bytes(), head.target);
            write::fields(&mut out, &head.fields, &[], true);
            write::end(&mut out);
            let roomy =
                HeadLimits { max_bytes: out.len().max(8192), max_fields: limits.max_fields };
            let mut again = Vec::new();
            let back = match request::parse(&out, roomy, &mut again) {
                Ok(Parsed::Complete(back)) => back,
                other => {
                    panic!("{:?} does not parse back: {other:?}", String::from_utf8_lossy(&out))
                }
            };
            assert_eq!(back.len, out.len());
            assert_eq!((&back.method, &back.uri), (&head.method, &head.uri));
            let connection: Vec<&[u8]> = head.fields.get_all("connection").collect();
            let kept: Vec<_> = head
                .fields
                .iter()
                .filter(|(name, _)| !hop_by_hop::is_hop_by_hop(name, connection.iter().copied()))
                .collect();
            assert_eq!(back.fields.iter().collect::<Vec<_>>(), kept);
        }
        Ok(Parsed::Partial) => {
            assert!(buf.len() < max_bytes, "a partial head is under the limit");
        }
        Err(refusal) => {
            assert!(matches!(refusal.status(), 400 | 414 | 431));
            if refusal == Refusal::BareLf {
                // Refused on the bytes up to the bare LF: more bytes do not change that.
                let mut longer = buf.to_vec();
                longer.extend_from_slice(b"\r\n\r\n");
                let mut more = Vec::new();
                assert_eq!(request::parse(&longer, limits, &mut more).err(), Some(Refusal::BareLf));
            }
        }
    }
});
