//! `mef-gateway firmware …` end to end (issue 7): the real binary in a temp directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod firmware_common;

use firmware_common::{BIN, fails, mef, ok, pattern};

/// `ipfs add --cid-version=1` of the empty file (firmware/tests/unixfs.rs).
const EMPTY_CID: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
/// `ipfs add --cid-version=1` of "hello world" without a newline (firmware/tests/unixfs.rs).
const HELLO_CID: &str = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, data).expect("write input");
    p
}

/// Block files of the store (their names are the CIDs).
fn block_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(store.join("blocks")).expect("blocks dir") {
        for f in fs::read_dir(shard.expect("shard").path()).expect("shard dir") {
            out.push(f.expect("entry").path());
        }
    }
    out.sort();
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `keygen` in `dir`; returns (key file name, base64 public key).
fn keygen(dir: &Path, name: &str) -> (String, String) {
    let pubkey = ok(dir, &["keygen", "--out", name]);
    (name.to_owned(), pubkey)
}

#[test]
fn add_prints_the_kubo_cids() {
    let t = tempfile::tempdir().expect("tempdir");
    write(t.path(), "empty.bin", b"");
    write(t.path(), "hello.txt", b"hello world");
    assert_eq!(ok(t.path(), &["firmware", "add", "empty.bin"]), EMPTY_CID);
    assert_eq!(ok(t.path(), &["firmware", "add", "hello.txt"]), HELLO_CID);
    // The default store is ./mef-firmware; both images are pinned there.
    let pins = names(&t.path().join("mef-firmware/pins"));
    let mut want = vec![format!("{EMPTY_CID}.pin"), format!("{HELLO_CID}.pin")];
    want.sort();
    assert_eq!(pins, want);
}

#[test]
fn add_then_get_round_trips_a_multi_chunk_file() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = pattern((1 << 20) + 12_345, 1);
    write(t.path(), "image.bin", &data);
    let root = ok(
        t.path(),
        &["firmware", "add", "image.bin", "--store", "store"],
    );
    assert!(root.starts_with("bafybei"), "dag-pb root: {root}");
    assert_eq!(block_files(&t.path().join("store")).len(), 6); // 5 leaves + root
    ok(
        t.path(),
        &[
            "firmware", "get", &root, "-o", "out.bin", "--store", "store",
        ],
    );
    assert!(fs::read(t.path().join("out.bin")).expect("read output") == data);
    // The store can also come from the environment.
    let out = Command::new(BIN)
        .args(["firmware", "get", &root, "-o", "out2.bin"])
        .current_dir(t.path())
        .env("MEF_GATEWAY_FIRMWARE_STORE", "store")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(fs::read(t.path().join("out2.bin")).expect("read output") == data);
}

#[test]
fn car_export_import_into_a_fresh_store_then_get() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = pattern(700_000, 2);
    write(t.path(), "image.bin", &data);
    let root = ok(
        t.path(),
        &[
            "firmware",
            "add",
            "image.bin",
            "--store",
            "a",
            "--car",
            "image.car",
        ],
    );
    assert_eq!(
        ok(
            t.path(),
            &["firmware", "import-car", "image.car", "--store", "b"]
        ),
        root
    );
    assert_eq!(names(&t.path().join("b/pins")), [format!("{root}.pin")]);
    ok(
        t.path(),
        &["firmware", "get", &root, "-o", "back.bin", "--store", "b"],
    );
    assert!(fs::read(t.path().join("back.bin")).expect("read") == data);

    // A CAR whose block does not match its CID is refused, naming the problem.
    let mut car = fs::read(t.path().join("image.car")).expect("read car");
    let n = car.len();
    car[n - 10] ^= 0x01;
    write(t.path(), "bad.car", &car);
    let err = fails(
        t.path(),
        &["firmware", "import-car", "bad.car", "--store", "c"],
    );
    assert!(err.contains("does not match its CID"), "{err}");
}

#[test]
fn publish_then_verify_accepts_the_right_key_only() {
    let t = tempfile::tempdir().expect("tempdir");
    let (key, pubkey) = keygen(t.path(), "maker.key");
    let (_, other) = keygen(t.path(), "other.key");
    write(t.path(), "fw.bin", &pattern(300_000, 3));
    let summary = ok(
        t.path(),
        &[
            "firmware",
            "publish",
            "--key",
            &key,
            "--model",
            "mef-sensor",
            "--version",
            "1.2.0",
            "--notes",
            "radio fix",
            "fw.bin",
            "-o",
            "fw.manifest",
        ],
    );
    assert!(summary.contains("mef-sensor"), "{summary}");
    assert!(summary.contains("1.2.0"), "{summary}");
    assert!(summary.contains(&pubkey), "{summary}");

    let verify = |extra: &[&str]| {
        let mut args = vec!["firmware", "verify", "fw.manifest"];
        args.extend_from_slice(extra);
        mef(t.path(), &args)
    };
    let accepted = verify(&["--trust", &pubkey]);
    assert!(accepted.status.success());
    assert!(String::from_utf8_lossy(&accepted.stdout).starts_with("accepted"));
    assert!(
        verify(&[
            "--trust",
            &pubkey,
            "--model",
            "mef-sensor",
            "--current",
            "1.1.9"
        ])
        .status
        .success()
    );
    // Several trusted keys: one is enough.
    assert!(
        verify(&["--trust", &other, "--trust", &pubkey])
            .status
            .success()
    );

    let refused = |extra: &[&str], reason: &str| {
        let out = verify(extra);
        assert!(!out.status.success(), "{extra:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{extra:?}: {err}");
    };
    refused(&["--trust", &other], "untrusted key");
    refused(&["--trust", &pubkey, "--model", "other-model"], "model");
    refused(
        &["--trust", &pubkey, "--current", "1.2.0"],
        "already running",
    );
    refused(&["--trust", &pubkey, "--current", "2.0.0"], "downgrade");

    // One changed byte in the manifest: the signature no longer verifies.
    let mut bytes = fs::read(t.path().join("fw.manifest")).expect("read manifest");
    bytes[6] ^= 0x01; // the model name
    write(t.path(), "tampered.manifest", &bytes);
    let out = mef(
        t.path(),
        &[
            "firmware",
            "verify",
            "tampered.manifest",
            "--trust",
            &pubkey,
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature does not verify"));

    // --cid/--size instead of a file.
    let root = ok(t.path(), &["firmware", "add", "fw.bin"]);
    ok(
        t.path(),
        &[
            "firmware",
            "publish",
            "--key",
            &key,
            "--model",
            "mef-sensor",
            "--version",
            "1.3.0",
            "--cid",
            &root,
            "--size",
            "300000",
            "-o",
            "by-cid.manifest",
        ],
    );
    assert!(
        mef(
            t.path(),
            &["firmware", "verify", "by-cid.manifest", "--trust", &pubkey]
        )
        .status
        .success()
    );
}

#[test]
fn stage_produces_the_verified_image() {
    let t = tempfile::tempdir().expect("tempdir");
    let (key, pubkey) = keygen(t.path(), "maker.key");
    let data = pattern((1 << 20) + 5, 4);
    write(t.path(), "fw.bin", &data);
    ok(
        t.path(),
        &[
            "firmware",
            "publish",
            "--key",
            &key,
            "--model",
            "mef-sensor",
            "--version",
            "2.0.0",
            "fw.bin",
            "-o",
            "fw.manifest",
        ],
    );
    let stage = |current: &str| {
        mef(
            t.path(),
            &[
                "firmware",
                "stage",
                "fw.manifest",
                "--trust",
                &pubkey,
                "--model",
                "mef-sensor",
                "--current",
                current,
                "--staging",
                "staging",
            ],
        )
    };
    let out = stage("1.9.0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(path.ends_with("mef-sensor-2.0.0.bin"), "{path}");
    assert!(fs::read(t.path().join(&path)).expect("read staged") == data);
    assert_eq!(
        names(&t.path().join("staging")),
        ["mef-sensor-2.0.0.bin", "mef-sensor-2.0.0.manifest"]
    );
    assert!(
        fs::read(t.path().join("staging/mef-sensor-2.0.0.manifest")).expect("read")
            == fs::read(t.path().join("fw.manifest")).expect("read")
    );
    // Not newer: refused, nothing more staged.
    assert!(!stage("2.0.0").status.success());
    assert!(!stage("3.0.0").status.success());
    assert_eq!(names(&t.path().join("staging")).len(), 2);
}

#[test]
fn stage_refuses_a_corrupt_store_and_stages_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let (key, pubkey) = keygen(t.path(), "maker.key");
    write(t.path(), "fw.bin", &pattern(600_000, 5));
    ok(
        t.path(),
        &[
            "firmware",
            "publish",
            "--key",
            &key,
            "--model",
            "m",
            "--version",
            "1.0.1",
            "fw.bin",
            "-o",
            "fw.manifest",
        ],
    );
    // Flip a bit in one stored block.
    let victim = block_files(&t.path().join("mef-firmware"))[0].clone();
    let mut bytes = fs::read(&victim).expect("read block");
    bytes[0] ^= 0x80;
    fs::write(&victim, bytes).expect("corrupt block");
    let err = fails(
        t.path(),
        &[
            "firmware",
            "stage",
            "fw.manifest",
            "--trust",
            &pubkey,
            "--model",
            "m",
            "--current",
            "1.0.0",
            "--staging",
            "staging",
        ],
    );
    let cid = victim.file_name().expect("name").to_string_lossy();
    assert!(err.contains("corrupt") && err.contains(&*cid), "{err}");
    assert_eq!(names(&t.path().join("staging")), Vec::<String>::new());
}

#[test]
fn get_with_a_missing_block_fails_clearly_and_writes_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    write(t.path(), "image.bin", &pattern(3 * 262_144 + 1, 6));
    let root = ok(t.path(), &["firmware", "add", "image.bin"]);
    let store = t.path().join("mef-firmware");
    let victim = block_files(&store)
        .into_iter()
        .find(|p| !p.ends_with(&root))
        .expect("a leaf block");
    fs::remove_file(&victim).expect("remove block");
    let missing = victim
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();

    fs::create_dir(t.path().join("out")).expect("mkdir");
    let err = fails(t.path(), &["firmware", "get", &root, "-o", "out/image.bin"]);
    assert!(
        err.contains(&missing) && err.contains("not in the firmware store"),
        "{err}"
    );
    assert_eq!(names(&t.path().join("out")), Vec::<String>::new());

    // A store that does not exist is an error, not an empty store.
    let err = fails(
        t.path(),
        &[
            "firmware", "get", &root, "-o", "x.bin", "--store", "nowhere",
        ],
    );
    assert!(err.contains("no firmware store"), "{err}");
    assert!(!t.path().join("nowhere").exists());
    // A malformed CID is a usage error.
    fails(t.path(), &["firmware", "get", "not-a-cid", "-o", "x.bin"]);
}

#[test]
fn export_pins_unpin_and_gc_keep_what_is_pinned() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    let old = pattern((1 << 20) + 5, 3); // 5 leaves + root
    let mut new = old.clone();
    new[(1 << 20) + 1] ^= 0xff; // only the last leaf and the root differ
    write(dir, "old.bin", &old);
    write(dir, "new.bin", &new);
    let old_root = ok(dir, &["firmware", "add", "old.bin", "--store", "s"]);
    let new_root = ok(dir, &["firmware", "add", "new.bin", "--store", "s"]);
    let pins = ok(dir, &["firmware", "pins", "--store", "s"]);
    let mut want = vec![format!("{old_root} 6"), format!("{new_root} 6")];
    want.sort();
    assert_eq!(pins.lines().collect::<Vec<_>>(), want);
    assert_eq!(
        block_files(&dir.join("s")).len(),
        8,
        "4 shared leaves, 2 + 2 own"
    );

    // Export as a CAR, import it into another store, rebuild there.
    ok(
        dir,
        &[
            "firmware", "export", &old_root, "-o", "old.car", "--store", "s",
        ],
    );
    ok(dir, &["firmware", "import-car", "old.car", "--store", "t"]);
    ok(
        dir,
        &["firmware", "get", &old_root, "-o", "t.bin", "--store", "t"],
    );
    assert!(fs::read(dir.join("t.bin")).expect("read") == old);

    // Pinned blocks survive gc; an unpinned image's own blocks go, the shared ones stay.
    assert_eq!(
        ok(dir, &["firmware", "gc", "--store", "s"]),
        "removed 0 blocks (0 bytes), kept 8"
    );
    ok(dir, &["firmware", "unpin", &old_root, "--store", "s"]);
    let gc = ok(dir, &["firmware", "gc", "--store", "s"]);
    assert!(gc.starts_with("removed 2 blocks ("), "{gc}");
    assert!(gc.ends_with("kept 6"), "{gc}");
    assert_eq!(block_files(&dir.join("s")).len(), 6);
    let err = fails(
        dir,
        &["firmware", "get", &old_root, "-o", "x.bin", "--store", "s"],
    );
    assert!(err.contains("is not in the firmware store"), "{err}");
    ok(
        dir,
        &["firmware", "get", &new_root, "-o", "n.bin", "--store", "s"],
    );
    assert!(fs::read(dir.join("n.bin")).expect("read") == new);
    let err = fails(dir, &["firmware", "unpin", &old_root, "--store", "s"]);
    assert!(err.contains("is not pinned"), "{err}");
    let err = fails(
        dir,
        &[
            "firmware", "export", &old_root, "-o", "y.car", "--store", "s",
        ],
    );
    assert!(err.contains("is not in the firmware store"), "{err}");
    assert!(!dir.join("y.car").exists(), "no partial CAR");
    assert!(
        !names(dir).iter().any(|n| n.contains(".tmp")),
        "{:?}",
        names(dir)
    );
}
