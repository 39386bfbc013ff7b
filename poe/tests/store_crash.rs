//! Crash safety of `poe::store::Store` (issue 4: "a test kills the node mid-write and shows
//! nothing committed is lost and nothing half-written is visible").
//!
//! The writer is a child process: this test binary re-executed with [`CHILD_ENV`] set to the
//! database path, running only this test. It resumes after the store's tip and, for each
//! height, prints `BEGIN h n`, puts the block (`n` transactions, in one SQLite transaction),
//! prints `PUT h` once `put_block` has returned, marks it final and prints `FINAL h`. Every
//! sixth block is big (over a thousand transactions, about 2 MB), so its write takes long
//! enough to be cut.
//!
//! The parent reads those lines and SIGKILLs the child at a seeded point: half of the runs a
//! few milliseconds after a big block's `BEGIN`, the others after a random number of `FINAL`s
//! plus a random delay. Then it reopens the database and checks that
//! - every height the child reported `PUT` is present with all its transactions, byte for
//!   byte, and every height reported `FINAL` is final;
//! - every block present is complete: its transaction count is the count its header states,
//!   each transaction is the expected one, and the store holds no transaction outside these
//!   blocks (nothing partial);
//! - the file passes `PRAGMA integrity_check`, the chain has no gaps and `tip()` is the highest
//!   final block.
//!
//! The next run writes to the same file, so each run also checks that a writer resumes after a
//! crash.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use poe::store::{Store, StoredBlock};

mod common;
use common::TempDir;

/// Set (to the database path) in the child process.
const CHILD_ENV: &str = "POE_STORE_CRASH_CHILD";
/// This test's name, for re-running just it in the child.
const TEST_NAME: &str = "sigkill_mid_write_loses_nothing_committed_and_shows_nothing_partial";
/// Seeds the kill points and the block contents.
const SEED: u64 = 0x504F_4534_5354_4F52;
/// Kill-and-reopen runs.
const RUNS: usize = 10;
/// Extra runs with an immediate kill, if no seeded kill cut a big block's write.
const EXTRA_RUNS: usize = 5;
/// Every `BIG_EVERY`-th height holds a big block.
const BIG_EVERY: u64 = 6;
/// Blocks with at least this many transactions count as big.
const BIG_MIN_TXS: usize = 1000;
/// The child stops by itself after this long (the parent kills it much sooner).
const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// Magic at the start of a test header.
const MAGIC: &[u8; 8] = b"TESTHDR1";

/// splitmix64: a small seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The block the child writes at `height`: header = MAGIC, height, transaction count, noise;
/// each transaction = height, index, noise; ids derived from (height, index).
struct TestBlock {
    id: [u8; 32],
    header: Vec<u8>,
    txs: Vec<([u8; 32], Vec<u8>)>,
}

fn test_block(height: u64) -> TestBlock {
    block_with(height, height % BIG_EVERY == BIG_EVERY - 1)
}

/// The block at `height`, big (over [`BIG_MIN_TXS`] transactions) or small (1 to 6).
fn block_with(height: u64, big: bool) -> TestBlock {
    let mut rng = Rng(SEED ^ height.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let (n, max_len) = if big {
        (BIG_MIN_TXS as u64 + rng.below(800), 1800)
    } else {
        (1 + rng.below(6), 400)
    };
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&(n as u32).to_be_bytes());
    header.extend_from_slice(&rng.bytes(16));
    let txs = (0..n as u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&height.to_be_bytes());
            id[8..12].copy_from_slice(&i.to_be_bytes());
            id[12..].copy_from_slice(&rng.bytes(20));
            let len = 20 + rng.below(max_len) as usize;
            let mut body = height.to_be_bytes().to_vec();
            body.extend_from_slice(&i.to_be_bytes());
            body.extend_from_slice(&rng.bytes(len));
            (id, body)
        })
        .collect();
    let mut id = [b'B'; 32];
    id[..8].copy_from_slice(&height.to_be_bytes());
    id[8..].copy_from_slice(&rng.bytes(24));
    TestBlock { id, header, txs }
}

#[test]
fn sigkill_mid_write_loses_nothing_committed_and_shows_nothing_partial() {
    match std::env::var_os(CHILD_ENV) {
        Some(path) => child(Path::new(&path)),
        None => parent(),
    }
}

/// The writer: resumes after the tip and writes blocks until killed (or [`CHILD_LIMIT`]).
fn child(path: &Path) {
    let started = Instant::now();
    let mut store = Store::open(path).expect("child: open");
    let start = store.tip().expect("child: tip").map_or(0, |(h, _)| h + 1);
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        writeln!(out, "{line}").expect("child: stdout");
        out.flush().expect("child: flush");
    };
    for height in start.. {
        if started.elapsed() > CHILD_LIMIT {
            return;
        }
        let b = test_block(height);
        say(format!("BEGIN {height} {}", b.txs.len()));
        store
            .put_block(height, &b.id, &b.header, &b.txs, false)
            .expect("child: put_block");
        say(format!("PUT {height}"));
        store.mark_final(height).expect("child: mark_final");
        say(format!("FINAL {height}"));
    }
}

/// What the child reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Begin(u64, usize),
    Put(u64),
    Final(u64),
}

/// Parses a child line; other lines (the test harness's) are `None`.
fn parse(line: &str) -> Option<Event> {
    let mut words = line.split_whitespace();
    let kind = words.next()?;
    let height = words.next()?.parse().ok()?;
    match kind {
        "BEGIN" => Some(Event::Begin(height, words.next()?.parse().ok()?)),
        "PUT" => Some(Event::Put(height)),
        "FINAL" => Some(Event::Final(height)),
        _ => None,
    }
}

/// When to kill the child.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// `delay` after the `BEGIN` of the first big block.
    DuringBigBlock { delay: Duration },
    /// `delay` after the `finals`-th `FINAL`.
    AfterFinals { finals: usize, delay: Duration },
}

/// Kills and reaps the child if the parent panics.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything the children reported, over all runs.
#[derive(Default)]
struct Reported {
    put: BTreeSet<u64>,
    finals: BTreeSet<u64>,
    /// Highest height any child began.
    max_begun: Option<u64>,
}

fn parent() {
    let dir = TempDir::new("store_crash", "kill");
    let db = dir.db();

    let mut rng = Rng(SEED);
    let mut reported = Reported::default();
    // Runs killed while `put_block` of a big block was in flight, and how many of those
    // blocks were then absent (the kill cut the transaction, which was rolled back).
    let (mut big_in_flight, mut big_rolled_back) = (0, 0);
    // The seeded runs, then (rarely needed: only if the machine was so loaded that every
    // seeded kill came after the big write had finished) up to `EXTRA_RUNS` immediate kills
    // after a big block's `BEGIN`.
    let mut run = 0;
    while run < RUNS || (big_rolled_back == 0 && run < RUNS + EXTRA_RUNS) {
        let point = if run >= RUNS {
            KillPoint::DuringBigBlock {
                delay: Duration::ZERO,
            }
        } else if run % 2 == 0 {
            KillPoint::DuringBigBlock {
                delay: Duration::from_micros(rng.below(4_000)),
            }
        } else {
            KillPoint::AfterFinals {
                finals: 1 + rng.below(10) as usize,
                delay: Duration::from_micros(rng.below(3_000)),
            }
        };
        let in_flight = kill_run(&db, point, &mut reported);

        let store = Store::open(&db).expect("reopen after the kill");
        verify(&store, &reported, run);
        if let Some((height, n)) = in_flight
            && n >= BIG_MIN_TXS
        {
            big_in_flight += 1;
            if store.block_by_height(height).expect("read").is_none() {
                big_rolled_back += 1;
            }
        }
        eprintln!(
            "run {run}: {point:?}, in flight {in_flight:?}, tip {:?}",
            store.tip().expect("tip").map(|t| t.0)
        );
        run += 1;
    }
    eprintln!(
        "{big_in_flight} kills during a big put_block, {big_rolled_back} rolled back; \
         {} blocks reported put",
        reported.put.len()
    );
    assert!(
        big_in_flight >= 1,
        "no kill landed while a big block was being written"
    );
    assert!(
        big_rolled_back >= 1,
        "no kill cut a big block's transaction: the atomicity check never ran on a cut write"
    );
}

/// Runs one child, kills it at `point`, records what it reported; returns the block whose
/// `put_block` was in flight when it died, as (height, transaction count).
fn kill_run(db: &Path, point: KillPoint, reported: &mut Reported) -> Option<(u64, usize)> {
    let exe = std::env::current_exe().expect("current exe");
    let child = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();

    let mut events = Vec::new();
    let mut finals = 0;
    loop {
        let Some(line) = lines.next() else {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("child ended before the kill; its stderr:\n{err}");
        };
        let Some(event) = parse(&line.expect("child stdout")) else {
            continue;
        };
        events.push(event);
        match (point, event) {
            (KillPoint::DuringBigBlock { delay }, Event::Begin(_, n)) if n >= BIG_MIN_TXS => {
                std::thread::sleep(delay);
                break;
            }
            (KillPoint::AfterFinals { finals: k, delay }, Event::Final(_)) => {
                finals += 1;
                if finals == k {
                    std::thread::sleep(delay);
                    break;
                }
            }
            _ => {}
        }
    }
    child.0.kill().expect("SIGKILL child");
    let status = child.0.wait().expect("reap child");
    assert_eq!(status.signal(), Some(9), "child not killed: {status:?}");
    // Lines the child wrote before it died count too: each followed a returned commit.
    for line in lines {
        if let Some(event) = parse(&line.expect("child stdout")) {
            events.push(event);
        }
    }

    let mut in_flight = None;
    for event in events {
        match event {
            Event::Begin(h, n) => {
                reported.max_begun = reported.max_begun.max(Some(h));
                in_flight = Some((h, n));
            }
            Event::Put(h) => {
                reported.put.insert(h);
                in_flight = None;
            }
            Event::Final(h) => {
                reported.finals.insert(h);
            }
        }
    }
    in_flight
}

/// Checks the reopened store against what the children reported.
fn verify(store: &Store, reported: &Reported, run: usize) {
    store.check().expect("integrity after the kill");
    for &h in &reported.put {
        let block = store
            .block_by_height(h)
            .expect("read")
            .unwrap_or_else(|| panic!("run {run}: block {h} was reported committed but is lost"));
        assert_complete(&block, &test_block(h), run);
    }
    for &h in &reported.finals {
        let block = store.block_by_height(h).expect("read").expect("present");
        assert!(block.is_final, "run {run}: block {h} was reported final");
    }

    // Every block present is complete, the chain has no gaps, and no transaction lies
    // outside the blocks present.
    let max = reported.max_begun.expect("the child began a block");
    let (mut blocks, mut txs, mut highest_final) = (0u64, 0u64, None);
    let mut gap = None;
    for h in 0..=max + 1 {
        match store.block_by_height(h).expect("read") {
            Some(block) => {
                assert!(gap.is_none(), "run {run}: block {h} after missing {gap:?}");
                assert_complete(&block, &test_block(h), run);
                blocks += 1;
                txs += block.txs.len() as u64;
                if block.is_final {
                    highest_final = Some((h, block.block_id));
                }
            }
            None => gap = gap.or(Some(h)),
        }
    }
    let stats = store.stats().expect("stats");
    assert_eq!(stats.blocks, blocks, "run {run}: blocks outside 0..={max}");
    assert_eq!(stats.txs, txs, "run {run}: transactions outside the blocks");
    assert_eq!(store.tip().expect("tip"), highest_final, "run {run}: tip");
}

/// The block is `expected` (the one written at its height) and complete: the transaction
/// count its header states, each transaction whole.
fn assert_complete(block: &StoredBlock, expected: &TestBlock, run: usize) {
    let h = block.height;
    let header = &block.header;
    assert_eq!(&header[..8], MAGIC, "run {run}: block {h} header");
    let stated = u32::from_be_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
    assert_eq!(
        block.txs.len(),
        stated,
        "run {run}: block {h} has {} of the {stated} transactions its header states",
        block.txs.len()
    );
    for (i, (_, body)) in block.txs.iter().enumerate() {
        assert_eq!(&body[..8], &h.to_be_bytes(), "run {run}: block {h} tx {i}");
        assert_eq!(
            &body[8..12],
            &(i as u32).to_be_bytes(),
            "run {run}: block {h} tx {i}"
        );
    }
    assert_eq!(block.block_id, expected.id, "run {run}: block {h} id");
    assert_eq!(block.header, expected.header, "run {run}: block {h} header");
    assert!(
        block.txs == expected.txs,
        "run {run}: block {h} transaction bytes"
    );
}

/// A power cut can leave the end of the write-ahead log torn. Copies of a store's files with
/// the WAL cut at seeded offsets (and with noise appended) open to a whole prefix of the
/// blocks: never a partial block, never a gap, more blocks as the cut moves later.
#[test]
fn torn_wal_tail_keeps_a_whole_prefix_of_blocks() {
    const BLOCKS: u64 = 24;
    let dir = TempDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("store_torn_wal-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("create temp dir");
    let src = dir.0.join("src.db");
    let wal_of = |db: &Path| PathBuf::from(format!("{}-wal", db.display()));

    // Small blocks only: the WAL stays below SQLite's 1000-page auto-checkpoint, so it holds
    // every commit. Copy the files while the store is open (the WAL is not yet checkpointed).
    let mut store = Store::open(&src).expect("open");
    for h in 0..BLOCKS {
        let b = block_with(h, false);
        store
            .put_block(h, &b.id, &b.header, &b.txs, true)
            .expect("put");
    }
    let main = std::fs::read(&src).expect("read main file");
    let wal = std::fs::read(wal_of(&src)).expect("read WAL");
    drop(store);
    assert!(wal.len() > 32 + 4096 * 10, "WAL of {} bytes", wal.len());

    let mut rng = Rng(SEED ^ 0x7042);
    let mut cuts: Vec<usize> = (0..14)
        .map(|_| rng.below(wal.len() as u64) as usize)
        .collect();
    cuts.extend([0, 32, wal.len()]);
    cuts.sort_unstable();
    let (mut last, mut partial_cuts) = (0, 0);
    for (i, &cut) in cuts.iter().enumerate() {
        let db = dir.0.join(format!("cut{i}.db"));
        std::fs::write(&db, &main).expect("write copy");
        std::fs::write(wal_of(&db), &wal[..cut]).expect("write torn WAL");
        let kept = whole_prefix(&db, BLOCKS);
        partial_cuts += usize::from(kept > 0 && kept < BLOCKS);
        assert!(
            kept >= last,
            "cut at {cut}: {kept} blocks, {last} at an earlier cut"
        );
        last = kept;
    }
    assert_eq!(last, BLOCKS, "the whole WAL keeps every block");
    assert!(
        partial_cuts >= 5,
        "only {partial_cuts} cuts fell inside the blocks' frames"
    );

    // Noise after the last frame fails the frame checksums and is ignored.
    let db = dir.0.join("noise.db");
    std::fs::write(&db, &main).expect("write copy");
    let mut noisy = wal.clone();
    noisy.extend(Rng(SEED ^ 0x4E).bytes(10_000));
    std::fs::write(wal_of(&db), &noisy).expect("write noisy WAL");
    assert_eq!(whole_prefix(&db, BLOCKS), BLOCKS);
}

/// Opens a copy, checks it, and returns how many blocks it holds: they must be heights
/// `0..n`, each final and complete, with no other block or transaction stored.
fn whole_prefix(db: &Path, written: u64) -> u64 {
    let store = Store::open(db).expect("open a copy with a torn WAL");
    store.check().expect("integrity of a copy with a torn WAL");
    let (mut n, mut txs) = (0, 0);
    while let Some(block) = store.block_by_height(n).expect("read") {
        assert!(block.is_final, "block {n} not final");
        assert_complete(&block, &block_with(n, false), 0);
        txs += block.txs.len() as u64;
        n += 1;
    }
    assert!(n <= written);
    let stats = store.stats().expect("stats");
    assert_eq!(
        (stats.blocks, stats.txs),
        (n, txs),
        "rows beyond the prefix"
    );
    assert_eq!(
        store.tip().expect("tip").map(|t| t.0),
        n.checked_sub(1),
        "tip"
    );
    n
}
