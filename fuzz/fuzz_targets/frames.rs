//! The frame and handshake-payload parsers never panic, and every frame they accept re-emits
//! to bytes that parse to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mef_transport::wire::handshake::TransportParams;
use mef_transport::wire::{Frame, Frames};

fuzz_target!(|data: &[u8]| {
    let _ = TransportParams::parse(data, false);
    let _ = TransportParams::parse(data, true);
    let mut out = vec![0u8; data.len() + 1024];
    for frame in Frames::new(data) {
        let Ok(frame) = frame else { break };
        let Ok(n) = frame.emit(&mut out) else { continue };
        let (again, m) = Frame::parse(&out[..n]).expect("re-emitted frame parses");
        assert_eq!(m, n);
        match (frame, again) {
            (Frame::Ack(a), Frame::Ack(b)) => {
                assert!(a.ranges().eq(b.ranges()));
                assert_eq!(a.rate_echo_kbps, b.rate_echo_kbps);
            }
            (a, b) => assert_eq!(a, b),
        }
    }
});
