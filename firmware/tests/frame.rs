//! Property tests of the exchange's stream framing (`firmware::exchange::frame`).

use firmware::exchange::frame::{Deframer, FrameError, HEADER_LEN, MAX_FRAME, frame_into};
use proptest::prelude::*;

proptest! {
    /// Frames written back to back and read in arbitrary pieces come back whole and in order.
    #[test]
    fn frames_survive_any_split(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..20),
        cuts in proptest::collection::vec(1usize..97, 0..40),
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            frame_into(&mut stream, m).expect("frame");
        }
        let mut d = Deframer::new();
        let mut out = Vec::new();
        let mut rest = &stream[..];
        let mut cuts = cuts.into_iter().cycle();
        while !rest.is_empty() {
            let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
            d.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = d.next_frame().expect("valid stream") {
                out.push(f);
            }
        }
        prop_assert_eq!(out, msgs);
        prop_assert_eq!(d.buffered(), 0);
    }

    /// Arbitrary bytes never panic the deframer; after an error it stays failed and holds
    /// nothing; no frame it yields is empty or over the limit.
    #[test]
    fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut d = Deframer::new();
        d.push(&bytes);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => prop_assert!(!f.is_empty() && f.len() <= MAX_FRAME),
                Ok(None) => break,
                Err(e) => {
                    prop_assert_eq!(d.buffered(), 0);
                    prop_assert_eq!(d.next_frame(), Err(e));
                    break;
                }
            }
        }
    }
}

#[test]
fn oversized_and_empty_frames_are_refused_both_ways() {
    let mut out = Vec::new();
    assert_eq!(frame_into(&mut out, &[]), Err(FrameError::Empty));
    let big = vec![0u8; MAX_FRAME + 1];
    assert!(matches!(
        frame_into(&mut out, &big),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(out.is_empty(), "nothing written for a refused frame");
    // The receiver refuses the header alone, before any body is buffered.
    let mut d = Deframer::new();
    d.push(&((MAX_FRAME + 1) as u32).to_be_bytes());
    assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    let mut d = Deframer::new();
    d.push(&[0; HEADER_LEN]);
    assert_eq!(d.next_frame(), Err(FrameError::Empty));
}
