//! Relaying a body (`h1::body::BodyRelay`) under every plan, with the received bytes arriving
//! in pieces of fuzzed sizes. However the bytes arrive, the relay sends the same bytes and
//! takes the same number of them (or fails the same way); a chunked body passed through as
//! chunks is sent byte for byte, and decoded, re-chunked or not, gives the same data.
//!
//! Input: a plan byte, a piece-size byte, then the received bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::h1::body::{BodyRelay, Plan, relay_all};

fuzz_target!(|data: &[u8]| {
    let [plan, step, input @ ..] = data else { return };
    let plan = match plan % 6 {
        0 => Plan::Length(u64::from(*step) * 3),
        1 => Plan::Chunks { trailers: true },
        2 => Plan::Chunks { trailers: false },
        3 => Plan::Unchunk,
        4 => Plan::Chunk,
        _ => Plan::UntilClose,
    };
    let closed = matches!(plan, Plan::Chunk | Plan::UntilClose);
    let run = |step: usize| {
        let mut relay = BodyRelay::new(plan, 4096);
        let mut out = Vec::new();
        let taken = relay_all(&mut relay, input, step, closed, &mut out);
        (taken, out, relay.data_received())
    };
    let whole = run(input.len().max(1));
    let pieces = run(1 + usize::from(*step));
    let bytes = run(1);
    assert_eq!(whole.0, pieces.0);
    assert_eq!(whole.0, bytes.0);
    let Ok(taken) = whole.0 else { return };
    if plan == Plan::Chunk {
        // Chunks follow the pieces the bytes arrived in; their data does not.
        assert_eq!(run_unchunk(&pieces.1), input);
        assert_eq!(run_unchunk(&bytes.1), input);
    } else {
        assert_eq!(whole.1, pieces.1);
        assert_eq!(whole.1, bytes.1);
    }
    let body = &input[..taken];
    let decoded = |sent: &[u8]| {
        let mut relay = BodyRelay::new(Plan::Unchunk, 1 << 20);
        let mut data = Vec::new();
        let took = relay_all(&mut relay, sent, sent.len().max(1), false, &mut data);
        assert_eq!(took, Ok(sent.len()), "what was sent is one whole chunked body");
        data
    };
    match plan {
        Plan::Chunks { trailers: true } => assert_eq!(whole.1, body),
        Plan::Chunks { trailers: false } => {
            let data = run_unchunk(body);
            assert_eq!(decoded(&whole.1), data);
        }
        Plan::Unchunk => assert_eq!(whole.1.len() as u64, whole.2),
        Plan::Chunk => assert_eq!(decoded(&whole.1), input),
        Plan::Length(_) | Plan::UntilClose | Plan::Empty => assert_eq!(whole.1, body),
    }
});

/// The data of the chunked body `body`.
fn run_unchunk(body: &[u8]) -> Vec<u8> {
    let mut relay = BodyRelay::new(Plan::Unchunk, 4096);
    let mut data = Vec::new();
    relay_all(&mut relay, body, body.len().max(1), false, &mut data).expect("a whole body");
    data
}
