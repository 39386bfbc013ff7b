//! Channel frame parse/emit: known encodings, limits, round trips and arbitrary input
//! (`mesh::channel::frame`).
#![allow(clippy::unwrap_used)]

use mesh::channel::frame::{
    Frame, FrameError, MAX_KIND_LEN, MAX_REASON_LEN, MAX_SACK_RANGES, SackRange,
};
use proptest::prelude::*;

fn enc(f: &Frame<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    f.emit(&mut v).unwrap();
    assert_eq!(v.len(), f.len());
    v
}

#[test]
fn open_layout() {
    let f = Frame::Open {
        id: 7,
        kind: "chain",
        reliable: true,
    };
    assert_eq!(enc(&f), [1, 0, 0, 0, 7, 1, 5, b'c', b'h', b'a', b'i', b'n']);
    assert_eq!(Frame::parse(&enc(&f)).unwrap(), (f, 12));
}

#[test]
fn data_layout() {
    let f = Frame::Data {
        id: 2,
        seq: 0x0102_0304,
        payload: b"hi",
    };
    assert_eq!(enc(&f), [2, 0, 0, 0, 2, 1, 2, 3, 4, 0, 2, b'h', b'i']);
    let u = Frame::UnreliableData {
        id: 3,
        payload: b"x",
    };
    assert_eq!(enc(&u), [3, 0, 0, 0, 3, 0, 1, b'x']);
}

#[test]
fn ack_layout_and_sack_rules() {
    let f = Frame::Ack {
        id: 1,
        cum: 5,
        window: 1000,
        sacks: vec![SackRange { start: 7, end: 9 }],
    };
    let b = enc(&f);
    assert_eq!(
        b,
        [
            4, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 3, 0xe8, 1, 0, 0, 0, 7, 0, 0, 0, 9
        ]
    );
    assert_eq!(Frame::parse(&b).unwrap().0, f);
    // Range not above cum, empty range, overlapping ranges.
    for sacks in [
        vec![SackRange { start: 5, end: 6 }],
        vec![SackRange { start: 7, end: 7 }],
        vec![
            SackRange { start: 7, end: 9 },
            SackRange { start: 8, end: 10 },
        ],
    ] {
        let bad = Frame::Ack {
            id: 1,
            cum: 5,
            window: 0,
            sacks,
        };
        assert_eq!(bad.emit(&mut Vec::new()), Err(FrameError::BadSackRange));
    }
    let mut too_many = vec![
        4,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        MAX_SACK_RANGES as u8 + 1,
    ];
    too_many.extend(std::iter::repeat_n(0, 8 * (MAX_SACK_RANGES + 1)));
    assert_eq!(
        Frame::parse(&too_many),
        Err(FrameError::TooManySackRanges(MAX_SACK_RANGES + 1))
    );
}

#[test]
fn close_layout_and_limits() {
    let f = Frame::Close {
        id: 9,
        ack: true,
        code: 0x100,
        reason: "bye",
    };
    assert_eq!(enc(&f), [5, 0, 0, 0, 9, 1, 0, 0, 1, 0, 3, b'b', b'y', b'e']);
    let long = "r".repeat(MAX_REASON_LEN + 1);
    let bad = Frame::Close {
        id: 9,
        ack: false,
        code: 1,
        reason: &long,
    };
    assert_eq!(
        bad.emit(&mut Vec::new()),
        Err(FrameError::ReasonLength(MAX_REASON_LEN + 1))
    );
    let kind = "k".repeat(MAX_KIND_LEN + 1);
    let bad = Frame::Open {
        id: 0,
        kind: &kind,
        reliable: false,
    };
    assert_eq!(
        bad.emit(&mut Vec::new()),
        Err(FrameError::KindLength(MAX_KIND_LEN + 1))
    );
    assert_eq!(
        Frame::parse(&[1, 0, 0, 0, 0, 0, 0]),
        Err(FrameError::KindLength(0))
    );
}

#[test]
fn malformed_inputs() {
    assert_eq!(Frame::parse(&[]), Err(FrameError::Truncated));
    assert_eq!(Frame::parse(&[0x42]), Err(FrameError::UnknownType(0x42)));
    assert_eq!(
        Frame::parse(&[2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 5, 1]),
        Err(FrameError::Truncated)
    );
    assert_eq!(
        Frame::parse(&[1, 0, 0, 0, 0, 2, 1, b'a']),
        Err(FrameError::UnknownFlags(2))
    );
    assert_eq!(
        Frame::parse(&[1, 0, 0, 0, 0, 0, 1, 0xff]),
        Err(FrameError::NotUtf8)
    );
    // One bad frame spoils the whole datagram.
    let mut d = enc(&Frame::UnreliableData {
        id: 1,
        payload: b"ok",
    });
    d.push(0x42);
    assert_eq!(Frame::parse_all(&d), Err(FrameError::UnknownType(0x42)));
}

#[test]
fn several_frames_share_a_datagram() {
    let frames = vec![
        Frame::Open {
            id: 0,
            kind: "readings",
            reliable: false,
        },
        Frame::UnreliableData {
            id: 0,
            payload: b"21.5C",
        },
        Frame::Ack {
            id: 2,
            cum: 1,
            window: 9,
            sacks: vec![],
        },
        Frame::Close {
            id: 4,
            ack: false,
            code: 2,
            reason: "",
        },
    ];
    let mut d = Vec::new();
    for f in &frames {
        f.emit(&mut d).unwrap();
    }
    assert_eq!(Frame::parse_all(&d).unwrap(), frames);
}

/// Frame type, id, two numbers, a flag, a payload, a string and SACK (gap, length) pairs.
type FrameParts = (u8, u32, u32, u32, bool, Vec<u8>, String, Vec<(u32, u32)>);

fn arb_frame() -> impl Strategy<Value = FrameParts> {
    (
        0u8..5,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        "[a-z]{1,32}",
        proptest::collection::vec((1u32..100, 1u32..100), 0..=MAX_SACK_RANGES),
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(frames) = Frame::parse_all(&bytes) {
            let mut again = Vec::new();
            for f in &frames {
                f.emit(&mut again).unwrap();
            }
            prop_assert_eq!(again, bytes);
        }
    }

    #[test]
    fn round_trip((ty, id, a, b, flag, payload, kind, gaps) in arb_frame()) {
        let mut sacks = Vec::new();
        let mut floor = a / 2;
        for (gap, len) in gaps {
            let start = floor.saturating_add(gap);
            let end = start.saturating_add(len);
            if end <= start { break; }
            sacks.push(SackRange { start, end });
            floor = end;
        }
        let reason: String = kind.chars().take(MAX_REASON_LEN).collect();
        let f = match ty {
            0 => Frame::Open { id, kind: &kind, reliable: flag },
            1 => Frame::Data { id, seq: a, payload: &payload },
            2 => Frame::UnreliableData { id, payload: &payload },
            3 => Frame::Ack { id, cum: a / 2, window: b, sacks },
            _ => Frame::Close { id, ack: flag, code: a, reason: &reason },
        };
        let bytes = enc(&f);
        let (back, used) = Frame::parse(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(back, f);
    }
}
