//! CARv1 tests: header bytes, round trips with UnixFS imports, strict rejection of bad input.

use firmware::car::{CarError, CarReader, CarWriter, decode_header, encode_header, write_car};
use firmware::unixfs::{DAG_PB_CODEC, MemoryBlocks, RAW_CODEC, cid_v1, export_to_vec, import};
use proptest::prelude::*;

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn car_of(data: &[u8]) -> (cid::Cid, Vec<u8>) {
    let (root, blocks) = import(data, MemoryBlocks::default()).expect("import");
    let car = write_car(
        Vec::new(),
        &root,
        blocks
            .order
            .iter()
            .map(|c| (c, blocks.blocks[c].as_slice())),
    )
    .expect("write");
    (root, car)
}

fn read_all(car: &[u8]) -> Result<(Vec<cid::Cid>, MemoryBlocks), CarError> {
    let mut reader = CarReader::new(car)?;
    let roots = reader.roots().to_vec();
    let mut blocks = MemoryBlocks::default();
    while let Some((cid, data)) = reader.next_block()? {
        blocks.blocks.insert(cid, data);
        blocks.order.push(cid);
    }
    Ok((roots, blocks))
}

/// The header for one CIDv1 sha2-256 root is the 58-byte canonical dag-cbor map.
#[test]
fn header_bytes_are_canonical_dag_cbor() {
    let root = cid_v1(DAG_PB_CODEC, b"x");
    let h = encode_header(&[root]);
    assert_eq!(h.len(), 0x3a);
    let mut expected = vec![
        0xa2, 0x65, b'r', b'o', b'o', b't', b's', 0x81, 0xd8, 0x2a, 0x58, 0x25, 0x00,
    ];
    expected.extend_from_slice(&root.to_bytes());
    expected.extend_from_slice(&[0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x01]);
    assert_eq!(h, expected);
    assert_eq!(decode_header(&h).expect("decode"), vec![root]);
}

#[test]
fn car_roundtrip_multi_chunk_file() {
    let data = pattern(3 * 262_144 + 17);
    let (root, car) = car_of(&data);
    let (roots, blocks) = read_all(&car).expect("read");
    assert_eq!(roots, vec![root]);
    assert_eq!(blocks.order.len(), 5);
    assert_eq!(export_to_vec(&blocks, &root).expect("export"), data);
}

/// The importer can stream straight into a CAR (the root is known only at the end, so the header
/// names a placeholder here; real use writes blocks to a store first).
#[test]
fn car_writer_is_a_block_sink() {
    let data = pattern(262_145);
    let placeholder = cid_v1(RAW_CODEC, b"");
    let w = CarWriter::new(Vec::new(), &[placeholder]).expect("header");
    let (root, w) = import(data.as_slice(), w).expect("import");
    let car = w.finish().expect("finish");
    let (_, blocks) = read_all(&car).expect("read");
    assert_eq!(export_to_vec(&blocks, &root).expect("export"), data);
}

#[test]
fn corrupted_block_in_car_is_rejected() {
    let (_, mut car) = car_of(&pattern(1000));
    let last = car.len() - 1;
    car[last] ^= 0x01;
    assert!(matches!(
        read_all(&car),
        Err(CarError::BlockMismatch { .. })
    ));
}

#[test]
fn truncated_section_is_rejected() {
    let (_, car) = car_of(&pattern(1000));
    assert!(matches!(
        read_all(&car[..car.len() - 1]),
        Err(CarError::Truncated(_))
    ));
}

#[test]
fn bad_varint_is_rejected() {
    assert!(matches!(
        CarReader::new(&[0xffu8; 11][..]),
        Err(CarError::BadVarint)
    ));
    let (_, mut car) = car_of(b"abc");
    let header_end = 1 + car[0] as usize;
    car.truncate(header_end);
    car.extend_from_slice(&[0xff; 11]);
    assert!(matches!(read_all(&car), Err(CarError::BadVarint)));
}

#[test]
fn header_not_dag_cbor_is_rejected() {
    let mut car = vec![3, 0x01, 0x02, 0x03];
    assert!(matches!(
        CarReader::new(car.as_slice()),
        Err(CarError::HeaderNotDagCbor(_))
    ));
    car = vec![0];
    assert!(matches!(
        CarReader::new(car.as_slice()),
        Err(CarError::HeaderLength(0))
    ));
}

#[test]
fn version_other_than_one_is_rejected() {
    let mut h = encode_header(&[cid_v1(RAW_CODEC, b"")]);
    let last = h.len() - 1;
    h[last] = 0x02;
    assert!(matches!(decode_header(&h), Err(CarError::Version(2))));
}

#[test]
fn empty_roots_are_rejected() {
    assert!(matches!(
        decode_header(&encode_header(&[])),
        Err(CarError::NoRoots)
    ));
}

#[test]
fn bad_section_cid_is_rejected() {
    let (_, mut car) = car_of(b"abc");
    let header_end = 1 + car[0] as usize;
    car.truncate(header_end);
    car.extend_from_slice(&[4, 0x05, 0x55, 0x12, 0x20]);
    assert!(matches!(read_all(&car), Err(CarError::Cid)));
}

proptest! {
    /// The CAR reader never panics on arbitrary bytes, nor on a valid CAR with bytes flipped.
    #[test]
    fn car_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = read_all(&bytes);
    }

    #[test]
    fn flipped_car_never_panics_and_never_passes_bad_blocks(pos: usize, bit in 0u8..8) {
        let (root, mut car) = car_of(&pattern(700));
        let i = pos % car.len();
        car[i] ^= 1 << bit;
        if let Ok((roots, blocks)) = read_all(&car) {
            // Whatever was accepted verified against its CID; the file is intact if present.
            if roots == vec![root]
                && let Ok(out) = export_to_vec(&blocks, &root)
            {
                prop_assert_eq!(out, pattern(700));
            }
        }
    }
}

/// The hand-made fuzz seeds still decode (`fuzz/seeds/firmware_*`).
#[test]
fn fuzz_seeds_decode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds");
    let car = std::fs::read(format!("{dir}/firmware_car/hello.car")).expect("car seed");
    let (roots, blocks) = read_all(&car).expect("read");
    assert_eq!(
        roots[0].to_string(),
        "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
    );
    assert_eq!(
        export_to_vec(&blocks, &roots[0]).expect("export"),
        b"hello\n"
    );
    let node = std::fs::read(format!("{dir}/firmware_dagpb/two_links.bin")).expect("dag-pb seed");
    let pb = firmware::unixfs::dagpb::PbNode::decode(&node).expect("decode");
    assert_eq!(pb.links.len(), 2);
    assert_eq!(pb.encode(), node);
}
