//! Control message wire format: decoding never panics, encoding round-trips.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mesh::Hashname;
use mesh::node::{Control, ControlError, RefuseReason};
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = Option<SocketAddr>> {
    prop_oneof![
        Just(None),
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p))),
    ]
}

#[derive(Debug, Clone)]
enum Owned {
    Peer([u8; 32], Vec<u8>),
    Connect([u8; 32], Option<SocketAddr>, Vec<u8>),
    KeyRequest([u8; 32]),
    KeyReply([u8; 32], Option<[u8; 32]>),
    Refused([u8; 32], RefuseReason),
}

impl Owned {
    fn view(&self) -> Control<'_> {
        match self {
            Owned::Peer(h, p) => Control::Peer {
                to: Hashname(*h),
                packet: p,
            },
            Owned::Connect(h, a, p) => Control::Connect {
                from: Hashname(*h),
                observed: *a,
                packet: p,
            },
            Owned::KeyRequest(h) => Control::KeyRequest {
                hashname: Hashname(*h),
            },
            Owned::KeyReply(h, k) => Control::KeyReply {
                hashname: Hashname(*h),
                key: *k,
            },
            Owned::Refused(h, r) => Control::Refused {
                to: Hashname(*h),
                reason: *r,
            },
        }
    }
}

fn control() -> impl Strategy<Value = Owned> {
    let packet = prop::collection::vec(any::<u8>(), 1..200);
    let reason = prop_oneof![
        Just(RefuseReason::NoRoute),
        Just(RefuseReason::Full),
        Just(RefuseReason::Disabled)
    ];
    prop_oneof![
        (any::<[u8; 32]>(), packet.clone()).prop_map(|(h, p)| Owned::Peer(h, p)),
        (any::<[u8; 32]>(), addr(), packet).prop_map(|(h, a, p)| Owned::Connect(h, a, p)),
        any::<[u8; 32]>().prop_map(Owned::KeyRequest),
        (any::<[u8; 32]>(), any::<Option<[u8; 32]>>()).prop_map(|(h, k)| Owned::KeyReply(h, k)),
        (any::<[u8; 32]>(), reason).prop_map(|(h, r)| Owned::Refused(h, r)),
    ]
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Control::parse(&bytes);
    }

    #[test]
    fn round_trip(c in control()) {
        let v = c.view();
        let bytes = v.to_vec();
        prop_assert_eq!(Control::parse(&bytes).unwrap(), v);
        // Every strict prefix of a fixed-size message fails cleanly.
        for cut in 0..bytes.len() {
            let _ = Control::parse(&bytes[..cut]);
        }
    }
}

#[test]
fn malformed_inputs_map_to_errors() {
    assert_eq!(Control::parse(&[]), Err(ControlError::Empty));
    assert_eq!(Control::parse(&[9]), Err(ControlError::UnknownType(9)));
    assert_eq!(Control::parse(&[1; 10]), Err(ControlError::Truncated));
    assert_eq!(Control::parse(&[1; 33]), Err(ControlError::NoPacket));
    let mut kr = vec![3u8];
    kr.extend([0u8; 33]);
    assert_eq!(Control::parse(&kr), Err(ControlError::Trailing));
    let mut c = vec![2u8];
    c.extend([0u8; 32]);
    c.push(5);
    assert_eq!(Control::parse(&c), Err(ControlError::BadFamily(5)));
    let mut r = vec![5u8];
    r.extend([0u8; 32]);
    r.push(0);
    assert_eq!(Control::parse(&r), Err(ControlError::BadReason(0)));
    let mut k = vec![4u8];
    k.extend([0u8; 32]);
    k.push(2);
    assert_eq!(Control::parse(&k), Err(ControlError::BadFlag(2)));
}
