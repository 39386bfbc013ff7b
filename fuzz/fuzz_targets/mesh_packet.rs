//! `mesh::packet::Packet::parse` never panics, and whatever it accepts re-emits to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh::packet::Packet;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::parse(data) else { return };
    let v = p.to_vec().expect("accepted packet re-emits");
    assert_eq!(v, data);
    assert_eq!(Packet::parse(&v), Ok(p));
});
