//! On-disk blockstore: verification, corruption detection, pinning, GC, crash leftovers.

use std::fs;
use std::path::PathBuf;

use firmware::blockstore::{Blockstore, BlockstoreError, DAG_PB, RAW, Stats, cid_of};

fn block_file(store: &Blockstore, cid: &cid::Cid) -> PathBuf {
    let key = cid.to_string();
    let shard = &key[key.len() - 3..key.len() - 1];
    store.root().join("blocks").join(shard).join(key)
}

fn all_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn put_get_has_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Blockstore::open(dir.path()).expect("open");
    let data = b"hello block".to_vec();
    let cid = cid_of(RAW, &data);
    assert!(!store.has(&cid).expect("has"));
    assert_eq!(store.get(&cid).expect("get"), None);
    assert!(store.put(&cid, &data).expect("put"));
    assert!(!store.put(&cid, &data).expect("put again"));
    assert!(store.has(&cid).expect("has"));
    assert_eq!(store.get(&cid).expect("get"), Some(data.clone()));
    assert!(block_file(&store, &cid).is_file());
    assert_eq!(
        store.stats().expect("stats"),
        Stats {
            blocks: 1,
            bytes: data.len() as u64
        }
    );
    assert!(store.delete(&cid).expect("delete"));
    assert!(!store.delete(&cid).expect("delete again"));
    assert!(!store.has(&cid).expect("has"));
    let c2 = store.put_data(DAG_PB, b"node").expect("put_data");
    assert_eq!(c2, cid_of(DAG_PB, b"node"));
}

#[test]
fn mismatched_bytes_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Blockstore::open(dir.path()).expect("open");
    let cid = cid_of(RAW, b"the real bytes");
    assert!(
        matches!(store.put(&cid, b"other bytes"), Err(BlockstoreError::HashMismatch(c)) if c == cid)
    );
    assert!(!store.has(&cid).expect("has"));
    assert_eq!(store.stats().expect("stats"), Stats::default());
    // Nothing was written, not even a temp file.
    assert!(all_files(&dir.path().join("blocks")).is_empty());
}

#[test]
fn unsupported_hash_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Blockstore::open(dir.path()).expect("open");
    let mh = cid::multihash::Multihash::<64>::wrap(0x00, b"inline").expect("identity multihash");
    let cid = cid::Cid::new_v1(RAW, mh);
    assert!(matches!(
        store.put(&cid, b"inline"),
        Err(BlockstoreError::UnsupportedHash { code: 0, .. })
    ));
}

#[test]
fn corrupted_file_detected_on_get_and_repaired_by_put() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Blockstore::open(dir.path()).expect("open");
    let data = vec![42u8; 5000];
    let cid = store.put_data(RAW, &data).expect("put");
    let path = block_file(&store, &cid);
    let mut bytes = fs::read(&path).expect("read");
    bytes[1234] ^= 0x80;
    fs::write(&path, &bytes).expect("corrupt");
    assert!(matches!(
        store.get(&cid),
        Err(BlockstoreError::Corrupt { .. })
    ));
    fs::write(&path, &data[..10]).expect("truncate");
    assert!(matches!(
        store.get(&cid),
        Err(BlockstoreError::Corrupt { .. })
    ));
    assert!(store.put(&cid, &data).expect("repair"));
    assert_eq!(store.get(&cid).expect("get"), Some(data));
}

#[test]
fn cidv0_and_cidv1_name_the_same_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Blockstore::open(dir.path()).expect("open");
    let v1 = store.put_data(DAG_PB, b"dag-pb node").expect("put");
    let v0 = cid::Cid::new_v0(*v1.hash()).expect("v0");
    assert!(store.has(&v0).expect("has"));
    assert_eq!(store.get(&v0).expect("get"), Some(b"dag-pb node".to_vec()));
}

#[test]
fn pin_unpin_gc_keeps_pinned_images_and_frees_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Blockstore::open(dir.path()).expect("open");
    let put = |d: &[u8]| store.put_data(RAW, d).expect("put");
    let (a_root, a1, a2) = (put(b"image A root"), put(b"A chunk 1"), put(b"A chunk 2"));
    let (b_root, b1) = (put(b"image B root"), put(b"B chunk 1"));
    let shared = put(b"shared chunk");
    let loose = put(b"unpinned garbage");
    store.pin(&a_root, &[a1, a2, shared]).expect("pin A");
    store.pin(&b_root, &[b1, shared, b_root]).expect("pin B");
    let mut roots = store.pinned_roots().expect("roots");
    roots.sort();
    let mut want = vec![a_root, b_root];
    want.sort();
    assert_eq!(roots, want);
    assert_eq!(
        store
            .pinned_blocks(&b_root)
            .expect("blocks")
            .map(|v| v.len()),
        Some(3)
    );

    let r = store.gc().expect("gc");
    assert_eq!((r.blocks_removed, r.bytes_freed, r.blocks_kept), (1, 16, 6));
    assert!(!store.has(&loose).expect("has"));
    for c in [a_root, a1, a2, b_root, b1, shared] {
        assert!(store.has(&c).expect("has"));
    }

    assert!(store.unpin(&a_root).expect("unpin"));
    assert!(!store.unpin(&a_root).expect("unpin again"));
    let r = store.gc().expect("gc");
    assert_eq!(r.blocks_removed, 3); // a_root, a1, a2; shared stays for B
    for c in [a_root, a1, a2] {
        assert!(!store.has(&c).expect("has"));
    }
    for c in [b_root, b1, shared] {
        assert!(store.get(&c).expect("get").is_some());
    }
    assert_eq!(store.stats().expect("stats").blocks, 3);
}

#[test]
fn reopen_keeps_blocks_and_pins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, chunk) = {
        let store = Blockstore::open(dir.path()).expect("open");
        let root = store.put_data(DAG_PB, b"root").expect("put");
        let chunk = store.put_data(RAW, b"chunk").expect("put");
        store.put_data(RAW, b"garbage").expect("put");
        store.pin(&root, &[chunk]).expect("pin");
        (root, chunk)
    };
    let store = Blockstore::open(dir.path()).expect("reopen");
    assert_eq!(store.pinned_roots().expect("roots"), vec![root]);
    assert_eq!(store.gc().expect("gc").blocks_removed, 1);
    assert_eq!(store.get(&chunk).expect("get"), Some(b"chunk".to_vec()));
    assert!(store.has(&root).expect("has"));
}

#[test]
fn crash_leftovers_cleaned_and_never_visible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = b"a complete block".to_vec();
    let cid = cid_of(RAW, &data);
    let (shard_dir, pins_dir) = {
        let store = Blockstore::open(dir.path()).expect("open");
        store.put_data(RAW, b"existing").expect("put");
        let p = block_file(&store, &cid);
        (
            p.parent().expect("shard").to_path_buf(),
            dir.path().join("pins"),
        )
    };
    // A crash during put: a partially written temp file in the block's shard directory, a full
    // but unrenamed one elsewhere, and a half-written pin file.
    fs::create_dir_all(&shard_dir).expect("shard");
    fs::write(shard_dir.join(".tmp-999-0"), &data[..5]).expect("partial temp");
    fs::write(dir.path().join("blocks").join(".tmp-999-1"), &data).expect("full temp");
    fs::write(pins_dir.join(".tmp-999-2"), b"mef-fw-pin 1\nbafk").expect("pin temp");

    let store = Blockstore::open(dir.path()).expect("reopen");
    assert_eq!(store.temps_cleaned(), 3);
    assert!(!store.has(&cid).expect("has"));
    assert_eq!(store.get(&cid).expect("get"), None);
    assert_eq!(store.stats().expect("stats").blocks, 1);
    assert!(store.pinned_roots().expect("roots").is_empty());
    let leftovers: Vec<_> = all_files(dir.path())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The block can then be written normally.
    assert!(store.put(&cid, &data).expect("put"));
    assert_eq!(store.get(&cid).expect("get"), Some(data));
}

#[test]
fn temp_file_in_place_of_block_is_not_a_block() {
    // A block file that was never renamed into place (crash before rename) is invisible even
    // without reopening: lookups only ever read the final name.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Blockstore::open(dir.path()).expect("open");
    let cid = cid_of(RAW, b"pending");
    let p = block_file(&store, &cid);
    fs::create_dir_all(p.parent().expect("shard")).expect("shard");
    fs::write(p.with_file_name(".tmp-1-1"), b"pend").expect("temp");
    assert!(!store.has(&cid).expect("has"));
    assert_eq!(store.stats().expect("stats").blocks, 0);
    assert_eq!(store.gc().expect("gc").blocks_removed, 0);
}

#[test]
fn malformed_pin_file_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Blockstore::open(dir.path()).expect("open");
    let root = store.put_data(RAW, b"root").expect("put");
    store.pin(&root, &[]).expect("pin");
    let pin = dir.path().join("pins").join(format!("{root}.pin"));
    let text = fs::read_to_string(&pin).expect("read");
    fs::write(&pin, text.replace("end 0\n", "")).expect("truncate");
    assert!(matches!(
        store.gc(),
        Err(BlockstoreError::BadPinFile { .. })
    ));
    assert!(
        store.has(&root).expect("has"),
        "gc must not free anything when a pin is unreadable"
    );
}
