//! The update flow (issue 7): manifest checks (trust, signature, model, version) and staging of
//! verified images (exact bytes under the final name, nothing on any failure, crash leftovers).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use cid::Cid;
use ed25519_dalek::SigningKey;
use firmware::blockstore::{Blockstore, BlockstoreError};
use firmware::car::CarReader;
use firmware::manifest::{Manifest, SignedManifest, Version};
use firmware::unixfs::importer::CHUNK_SIZE;
use firmware::unixfs::{BlockSource, ExportError, MemoryBlocks, RAW_CODEC, import};
use firmware::update::{
    Decision, Stager, StoreBlocks, UpdateError, UpdatePolicy, VerifiedUpdate, dag_blocks,
    is_complete, pin_image, replace_pin, staged_name, write_dag_car,
};

mod common;
use common::pattern;

const MODEL: &str = "mef-sensor-v2";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn manufacturer() -> SigningKey {
    key(42)
}

fn policy(current: Version) -> UpdatePolicy {
    UpdatePolicy::new(MODEL, current, vec![manufacturer().verifying_key()])
}

fn manifest(version: Version, root: Cid, size: u64) -> Manifest {
    Manifest {
        model: MODEL.into(),
        version,
        root,
        size,
        notes: "test image".into(),
        released_ms: 1_790_000_000_000,
    }
}

fn signed(m: Manifest) -> SignedManifest {
    m.sign(&manufacturer()).expect("sign")
}

/// A 3 MiB image (12 leaves of 256 KiB plus a root node) and its blocks.
fn image() -> (Vec<u8>, Cid, MemoryBlocks) {
    let data = pattern(3 << 20, 4);
    let (root, blocks) = import(data.as_slice(), MemoryBlocks::default()).expect("import");
    assert!(blocks.blocks.len() > 2, "multi-block image");
    assert!(data.len() > CHUNK_SIZE);
    (data, root, blocks)
}

fn verified(m: Manifest) -> VerifiedUpdate {
    match policy(Version::new(1, 0, 0))
        .check(&signed(m))
        .expect("check")
    {
        Decision::Update(u) => u,
        other => panic!("expected an update, got {other:?}"),
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A peer (or disk) that answers for some CIDs with bytes that do not match them.
struct LyingSource<'a> {
    honest: &'a MemoryBlocks,
    lies: HashMap<Cid, Vec<u8>>,
}

impl BlockSource for LyingSource<'_> {
    fn get(&self, cid: &Cid) -> Option<Vec<u8>> {
        self.lies.get(cid).cloned().or_else(|| self.honest.get(cid))
    }
}

// --- Decisions ------------------------------------------------------------------------------

#[test]
fn newer_manifest_is_an_update() {
    let (_, root, _) = image();
    let m = manifest(Version::new(1, 2, 0), root, 3 << 20);
    let s = signed(m.clone());
    match policy(Version::new(1, 1, 9)).check(&s).expect("check") {
        Decision::Update(u) => {
            assert_eq!(u.manifest(), &m);
            assert_eq!(u.signed(), &s);
        }
        other => panic!("expected an update, got {other:?}"),
    }
    // Any of several trusted keys will do.
    let p = UpdatePolicy::new(
        MODEL,
        Version::new(0, 9, 0),
        vec![key(1).verifying_key(), manufacturer().verifying_key()],
    );
    assert!(matches!(p.check(&s), Ok(Decision::Update(_))));
}

#[test]
fn same_version_is_up_to_date() {
    let (_, root, _) = image();
    let s = signed(manifest(Version::new(1, 2, 0), root, 3 << 20));
    assert_eq!(
        policy(Version::new(1, 2, 0)).check(&s).expect("check"),
        Decision::UpToDate {
            version: Version::new(1, 2, 0)
        }
    );
}

#[test]
fn older_version_is_a_refused_downgrade() {
    let (_, root, _) = image();
    for (offered, current) in [
        ((1, 1, 9), (1, 2, 0)),
        ((0, 9, 9), (1, 0, 0)),
        ((2, 0, 0), (2, 0, 1)),
    ] {
        let offered = Version::new(offered.0, offered.1, offered.2);
        let current = Version::new(current.0, current.1, current.2);
        let s = signed(manifest(offered, root, 1));
        assert!(matches!(
            policy(current).check(&s),
            Err(UpdateError::Downgrade { offered: o, current: c }) if o == offered && c == current
        ));
    }
}

#[test]
fn untrusted_signer_refused() {
    let (_, root, _) = image();
    let s = manifest(Version::new(9, 0, 0), root, 1)
        .sign(&key(7))
        .expect("sign");
    let err = policy(Version::new(1, 0, 0))
        .check(&s)
        .expect_err("must fail");
    assert!(
        matches!(err, UpdateError::UntrustedSigner { signer } if signer == key(7).verifying_key().to_bytes())
    );
    // No trusted key at all: nothing is accepted.
    let empty = UpdatePolicy::new(MODEL, Version::new(1, 0, 0), vec![]);
    assert!(matches!(
        empty.check(&signed(manifest(Version::new(9, 0, 0), root, 1))),
        Err(UpdateError::UntrustedSigner { .. })
    ));
}

#[test]
fn tampered_manifest_refused() {
    let (_, root, _) = image();
    let good = signed(manifest(Version::new(2, 0, 0), root, 3 << 20));
    let p = policy(Version::new(1, 0, 0));
    assert!(matches!(p.check(&good), Ok(Decision::Update(_))));

    let mut bigger = good.clone();
    bigger.manifest.size += 1;
    let mut other_root = good.clone();
    other_root.manifest.root = firmware::unixfs::cid_v1(RAW_CODEC, b"evil image");
    let mut newer = good.clone();
    newer.manifest.version = Version::new(3, 0, 0);
    let mut bad_sig = good.clone();
    bad_sig.signature[10] ^= 1;
    for t in [bigger, other_root, newer, bad_sig] {
        assert!(
            matches!(p.check(&t), Err(UpdateError::BadSignature)),
            "{t:?}"
        );
    }
    // Through the wire encoding too: flip a byte of the size field.
    let mut bytes = good.encode().expect("encode");
    let size_at = bytes.len() - 96 - 2 - good.manifest.notes.len() - 8 - 8 + 7;
    bytes[size_at] ^= 1;
    let decoded = SignedManifest::decode(&bytes).expect("decode");
    assert_ne!(decoded.manifest.size, good.manifest.size);
    assert!(matches!(p.check(&decoded), Err(UpdateError::BadSignature)));
}

#[test]
fn wrong_model_refused() {
    let (_, root, _) = image();
    let mut m = manifest(Version::new(2, 0, 0), root, 1);
    m.model = "mef-sensor-v3".into();
    let err = policy(Version::new(1, 0, 0))
        .check(&signed(m))
        .expect_err("must fail");
    assert!(matches!(
        err,
        UpdateError::WrongModel { ref expected, ref found } if expected == MODEL && found == "mef-sensor-v3"
    ));
}

// --- Staging --------------------------------------------------------------------------------

#[test]
fn staging_a_correct_image_yields_the_exact_bytes() {
    let (data, root, blocks) = image();
    let dir = tempfile::tempdir().expect("tempdir");
    let stager = Stager::open(dir.path()).expect("open");
    let update = verified(manifest(Version::new(1, 2, 3), root, data.len() as u64));
    let mut last = 0;
    let staged = stager
        .stage_with_progress(&update, &blocks, &mut |n| last = n)
        .expect("stage");
    assert_eq!(last, data.len() as u64);
    assert_eq!(staged.path, dir.path().join("mef-sensor-v2-1.2.3.bin"));
    assert_eq!(
        staged.manifest_path,
        dir.path().join("mef-sensor-v2-1.2.3.manifest")
    );
    assert_eq!(staged.size, data.len() as u64);
    assert_eq!(staged.root, root);
    assert_eq!(staged.version, Version::new(1, 2, 3));
    assert!(fs::read(&staged.path).expect("read image") == data);
    let man = SignedManifest::decode(&fs::read(&staged.manifest_path).expect("read manifest"))
        .expect("decode manifest");
    assert_eq!(&man, update.signed());
    assert_eq!(
        dir_names(dir.path()),
        ["mef-sensor-v2-1.2.3.bin", "mef-sensor-v2-1.2.3.manifest"]
    );
    // Staging again replaces the files with the same bytes.
    stager.stage(&update, &blocks).expect("stage again");
    assert!(fs::read(&staged.path).expect("read image") == data);
    assert_eq!(dir_names(dir.path()).len(), 2);
}

#[test]
fn single_block_and_empty_images_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stager = Stager::open(dir.path()).expect("open");
    for (i, data) in [b"hello world".to_vec(), Vec::new()]
        .into_iter()
        .enumerate()
    {
        let (root, blocks) = import(data.as_slice(), MemoryBlocks::default()).expect("import");
        let update = verified(manifest(
            Version::new(2, i as u32, 0),
            root,
            data.len() as u64,
        ));
        let staged = stager.stage(&update, &blocks).expect("stage");
        assert_eq!(fs::read(&staged.path).expect("read"), data);
    }
}

fn assert_nothing_staged(dir: &Path) {
    assert_eq!(
        dir_names(dir),
        Vec::<String>::new(),
        "staging dir not empty"
    );
}

#[test]
fn lying_block_source_cannot_stage_a_wrong_image() {
    let (data, root, blocks) = image();
    let leaf = blocks.order[5];
    let mut forged = blocks.get(&leaf).expect("leaf");
    forged[1000] ^= 0x01;
    let liar = LyingSource {
        honest: &blocks,
        lies: HashMap::from([(leaf, forged)]),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let stager = Stager::open(dir.path()).expect("open");
    let update = verified(manifest(Version::new(1, 2, 3), root, data.len() as u64));
    let err = stager.stage(&update, &liar).expect_err("must fail");
    assert!(
        matches!(err, UpdateError::Export(ExportError::Corrupt { cid, .. }) if cid == leaf),
        "{err:?}"
    );
    assert_nothing_staged(dir.path());

    // A liar swapping the root for another valid image is caught the same way.
    let (other_root, other) =
        import(pattern(1 << 20, 9).as_slice(), MemoryBlocks::default()).expect("import");
    let swap = LyingSource {
        honest: &blocks,
        lies: HashMap::from([(root, other.get(&other_root).expect("root"))]),
    };
    assert!(matches!(
        stager.stage(&update, &swap),
        Err(UpdateError::Export(ExportError::Corrupt { .. }))
    ));
    assert_nothing_staged(dir.path());
}

#[test]
fn missing_block_fails_and_leaves_nothing() {
    let (data, root, mut blocks) = image();
    let leaf = blocks.order[11];
    blocks.blocks.remove(&leaf);
    let dir = tempfile::tempdir().expect("tempdir");
    let stager = Stager::open(dir.path()).expect("open");
    let update = verified(manifest(Version::new(1, 2, 3), root, data.len() as u64));
    assert!(matches!(
        stager.stage(&update, &blocks),
        Err(UpdateError::Export(ExportError::Missing(c))) if c == leaf
    ));
    assert_nothing_staged(dir.path());
}

#[test]
fn size_mismatch_fails_and_leaves_nothing() {
    let (data, root, blocks) = image();
    let len = data.len() as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let stager = Stager::open(dir.path()).expect("open");
    let short = verified(manifest(Version::new(1, 2, 3), root, len + 1));
    assert!(matches!(
        stager.stage(&short, &blocks),
        Err(UpdateError::SizeMismatch { expected, actual }) if expected == len + 1 && actual == len
    ));
    assert_nothing_staged(dir.path());
    let long = verified(manifest(Version::new(1, 2, 3), root, len - 1));
    assert!(matches!(
        stager.stage(&long, &blocks),
        Err(UpdateError::TooLarge { expected }) if expected == len - 1
    ));
    assert_nothing_staged(dir.path());
}

#[test]
fn leftover_temp_files_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join(".tmp-123-0-mef-sensor-v2-1.0.0.bin"),
        b"half an image",
    )
    .expect("write");
    fs::write(dir.path().join(".tmp-123-1-x.manifest"), b"half").expect("write");
    fs::write(
        dir.path().join("mef-sensor-v2-0.9.0.bin"),
        b"an older staged image",
    )
    .expect("write");
    let stager = Stager::open(dir.path()).expect("open");
    assert_eq!(stager.temps_cleaned(), 2);
    assert_eq!(dir_names(dir.path()), ["mef-sensor-v2-0.9.0.bin"]);
    // Opening creates a missing directory.
    let nested = dir.path().join("a/b");
    let s = Stager::open(&nested).expect("open nested");
    assert_eq!(s.temps_cleaned(), 0);
    assert!(nested.is_dir());
}

#[test]
fn unsafe_model_names_are_refused() {
    let root = firmware::unixfs::cid_v1(RAW_CODEC, b"x");
    for bad in ["../etc", "a/b", ".hidden", ".tmp-x", "sp ace"] {
        let mut m = manifest(Version::new(1, 0, 0), root, 1);
        m.model = bad.into();
        assert!(
            matches!(staged_name(&m), Err(UpdateError::UnsafeModelName(_))),
            "{bad}"
        );
    }
    let m = manifest(Version::new(1, 0, 0), root, 1);
    assert_eq!(
        staged_name(&m).expect("name"),
        (
            "mef-sensor-v2-1.0.0.bin".to_owned(),
            "mef-sensor-v2-1.0.0.manifest".to_owned()
        )
    );
}

// --- Blockstore: pins, the store as a block source, CAR export --------------------------------

fn store_with(blocks: &MemoryBlocks, dir: &Path) -> Blockstore {
    let store = Blockstore::open(dir).expect("open store");
    for cid in &blocks.order {
        store
            .put(cid, &blocks.blocks[cid])
            .expect("put block in store");
    }
    store
}

#[test]
fn stage_from_the_blockstore_and_corrupt_stored_block_is_reported() {
    let (data, root, blocks) = image();
    let sdir = tempfile::tempdir().expect("tempdir");
    let store = store_with(&blocks, sdir.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let stager = Stager::open(dir.path()).expect("open");
    let update = verified(manifest(Version::new(1, 2, 3), root, data.len() as u64));
    let src = StoreBlocks::new(&store);
    let staged = stager.stage(&update, &src).expect("stage");
    assert!(fs::read(&staged.path).expect("read") == data);
    fs::remove_file(&staged.path).expect("rm");
    fs::remove_file(&staged.manifest_path).expect("rm");

    // Flip a bit in a stored leaf: the store reports it corrupt, the stage fails cleanly.
    let leaf = blocks.order[3];
    let key = leaf.to_string();
    let path = sdir
        .path()
        .join("blocks")
        .join(&key[key.len() - 3..key.len() - 1])
        .join(&key);
    let mut bytes = fs::read(&path).expect("read block");
    bytes[7] ^= 0x40;
    fs::write(&path, bytes).expect("corrupt block");
    let src = StoreBlocks::new(&store);
    let err = match stager.stage(&update, &src) {
        Err(UpdateError::Export(source)) => src.explain(source),
        other => panic!("expected an export failure, got {other:?}"),
    };
    assert!(
        matches!(err, UpdateError::Blockstore(BlockstoreError::Corrupt { cid, .. }) if cid == leaf),
        "{err:?}"
    );
    assert_nothing_staged(dir.path());
}

#[test]
fn pins_follow_the_installed_image_and_gc_reclaims_the_old_one() {
    let sdir = tempfile::tempdir().expect("tempdir");
    let (_, old_root, old_blocks) = image();
    let new_data = pattern(600_000, 77);
    let (new_root, new_blocks) =
        import(new_data.as_slice(), MemoryBlocks::default()).expect("import");
    let store = store_with(&old_blocks, sdir.path());
    for cid in &new_blocks.order {
        store.put(cid, &new_blocks.blocks[cid]).expect("put");
    }
    assert_eq!(
        pin_image(&store, &old_root).expect("pin old"),
        old_blocks.blocks.len()
    );
    let report = replace_pin(&store, &new_root, Some(&old_root)).expect("replace");
    assert_eq!(report.blocks_pinned, new_blocks.blocks.len());
    assert!(report.previous_unpinned);
    assert_eq!(store.pinned_roots().expect("roots"), vec![new_root]);
    let gc = store.gc().expect("gc");
    assert_eq!(gc.blocks_removed as usize, old_blocks.blocks.len());
    assert_eq!(gc.blocks_kept as usize, new_blocks.blocks.len());
    let src = StoreBlocks::new(&store);
    assert!(firmware::unixfs::export_to_vec(&src, &new_root).expect("export") == new_data);

    // An incomplete image cannot be pinned.
    let err = pin_image(&store, &old_root).expect_err("must fail");
    assert!(matches!(
        err,
        UpdateError::Export(ExportError::Missing(c)) if c == old_root
    ));
}

#[test]
fn dag_walk_and_car_export_cover_every_block_root_first() {
    let (data, root, blocks) = image();
    let cids = dag_blocks(&blocks, &root).expect("walk");
    assert_eq!(cids[0], root);
    assert_eq!(cids.len(), blocks.blocks.len());
    // Leaves in file order after the root (a one-level tree).
    assert_eq!(&cids[1..], &blocks.order[..blocks.order.len() - 1]);

    let (car, n) = write_dag_car(Vec::new(), &blocks, &root).expect("car");
    assert_eq!(n, blocks.blocks.len());
    let mut reader = CarReader::new(car.as_slice()).expect("car header");
    assert_eq!(reader.roots(), &[root]);
    let mut back = MemoryBlocks::default();
    while let Some((cid, block)) = reader.next_block().expect("car block") {
        firmware::unixfs::BlockSink::put_block(&mut back, &cid, &block).expect("put");
    }
    assert_eq!(back.order, cids);
    assert!(firmware::unixfs::export_to_vec(&back, &root).expect("export") == data);
}

#[test]
fn newest_staged_image_is_found_and_half_staged_or_foreign_ones_are_not() {
    let (data, root, blocks) = image();
    let dir = tempfile::tempdir().expect("tempdir");
    let stager = Stager::open(dir.path()).expect("open");
    let p = policy(Version::new(1, 0, 0));
    assert_eq!(stager.newest(&p).expect("scan"), None);
    let size = data.len() as u64;
    stager
        .stage(
            &verified(manifest(Version::new(1, 1, 0), root, size)),
            &blocks,
        )
        .expect("stage 1.1.0");
    let v12 = stager
        .stage(
            &verified(manifest(Version::new(1, 2, 0), root, size)),
            &blocks,
        )
        .expect("stage 1.2.0");
    assert_eq!(stager.newest(&p).expect("scan"), Some(v12.clone()));
    // A newer manifest whose image is missing (a crash between the renames cannot make this,
    // but a user deleting the image can), one signed by another key, one for another model and
    // one under a name that is not its canonical name are all skipped.
    let write = |name: &str, m: SignedManifest| {
        fs::write(dir.path().join(name), m.encode().expect("encode")).expect("write");
    };
    write(
        "mef-sensor-v2-2.0.0.manifest",
        signed(manifest(Version::new(2, 0, 0), root, size)),
    );
    write(
        "mef-sensor-v2-3.0.0.manifest",
        manifest(Version::new(3, 0, 0), root, size)
            .sign(&key(7))
            .expect("sign"),
    );
    let mut other = manifest(Version::new(4, 0, 0), root, size);
    other.model = "other-model".into();
    write("other-model-4.0.0.manifest", signed(other));
    fs::copy(&v12.path, dir.path().join("mef-sensor-v2-5.0.0.bin")).expect("copy");
    write(
        "renamed.manifest",
        signed(manifest(Version::new(5, 0, 0), root, size)),
    );
    // An image of the wrong size next to a good manifest.
    fs::write(dir.path().join("mef-sensor-v2-6.0.0.bin"), b"short").expect("write");
    write(
        "mef-sensor-v2-6.0.0.manifest",
        signed(manifest(Version::new(6, 0, 0), root, size)),
    );
    assert_eq!(stager.newest(&p).expect("scan"), Some(v12));
}

#[test]
fn is_complete_reads_only_the_dag_nodes() {
    use std::cell::Cell;
    struct Counting<'a> {
        inner: &'a MemoryBlocks,
        gets: Cell<usize>,
    }
    impl BlockSource for Counting<'_> {
        fn get(&self, cid: &Cid) -> Option<Vec<u8>> {
            self.gets.set(self.gets.get() + 1);
            self.inner.get(cid)
        }
        fn has(&self, cid: &Cid) -> bool {
            self.inner.blocks.contains_key(cid)
        }
    }
    let (_, root, mut blocks) = image();
    let src = Counting {
        inner: &blocks,
        gets: Cell::new(0),
    };
    assert!(is_complete(&src, &root));
    assert_eq!(src.gets.get(), 1, "only the root node is read");
    let leaf = *blocks
        .blocks
        .keys()
        .find(|c| c.codec() == RAW_CODEC)
        .expect("a leaf");
    blocks.blocks.remove(&leaf);
    assert!(!is_complete(&blocks, &root));
    assert!(!is_complete(&MemoryBlocks::default(), &root));
}
