//! Crash safety of the gateway store (issue 6: "written durably before anything is
//! acknowledged").
//!
//! The writer is a child process: this test binary re-executed with [`CHILD_ENV`] set to a
//! directory, running only this test. It appends calls of readings (1 to 2,000 per call,
//! every call also carrying one duplicate copy of its first reading), and after each
//! `append` returns it writes `ACK first last call size` to a side file (then to stdout).
//! Every few calls it forwards batches to a [`FileUplink`] (JSON lines, fsynced). Each call's
//! readings carry the call's id in `time_ms` and the call's size in `unit`, so any call found
//! later can be checked for completeness.
//!
//! The parent SIGKILLs the child at seeded points (half of the runs a few milliseconds after a
//! big call's `BEGIN`, the others after a random number of `ACK`s or during a forward), then
//! reopens the store and checks that
//! - the file passes `PRAGMA integrity_check` and the queue's invariants (`Store::check`);
//! - every acknowledged reading is present exactly once: stored, or delivered to the file
//!   uplink (or both, for a batch delivered but not confirmed when the kill came — the
//!   at-least-once boundary, resolved by the receiver's de-duplication on `first_seq`);
//! - every call present is complete (its stated size, its exact contents): nothing
//!   half-written; a call cut by the kill is entirely absent;
//! - every file line verifies, and lines with the same `first_seq` are the same batch.
//!
//! Finally the parent replays the file's batches into a [`TestUplink`] (the same receiver),
//! forwards what the store still holds to it, and checks that the receiver ends up with every
//! committed reading exactly once, in sequence order; re-sent batches arrive byte-identical
//! (same id, range and signature).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, key, open};
use gateway::store::{Batch, Limits, QueuedReading};
use gateway::uplink::{
    FileBatch, FileUplink, Forwarder, ForwarderConfig, PumpState, TestUplink, Uplink,
};
use gateway::{DeviceId, RadioMeta, Reading, Source};

/// Set (to the working directory) in the child process.
const CHILD_ENV: &str = "GW_STORE_CRASH_CHILD";
/// The run number, in the child.
const RUN_ENV: &str = "GW_STORE_CRASH_RUN";
/// This test's name, for re-running just it in the child.
const TEST_NAME: &str = "sigkill_loses_no_acknowledged_reading_and_shows_nothing_partial";
const SEED: u64 = 0x4757_5354_4F52_4531;
const RUNS: u64 = 10;
const EXTRA_RUNS: u64 = 5;
/// Calls with at least this many readings count as big.
const BIG: usize = 1000;
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// splitmix64.
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
}

/// The id of call `n` of run `run` (also its `time_ms`).
fn call_id(run: u64, n: u64) -> u64 {
    run * 1_000_000 + n
}

/// Size of call `id`: every 7th is big.
fn call_size(id: u64) -> usize {
    let mut rng = Rng(SEED ^ id.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    if id % 7 == 3 {
        BIG + rng.below(1000) as usize
    } else {
        1 + rng.below(40) as usize
    }
}

/// Reading `i` of call `id`.
fn reading(id: u64, i: usize) -> Reading {
    let mut dev = [0u8; 8];
    dev[..6].copy_from_slice(&id.to_be_bytes()[2..]);
    dev[6..].copy_from_slice(&((i / 256) as u16).to_be_bytes());
    Reading {
        source: if i.is_multiple_of(3) {
            Source::Lora
        } else {
            Source::Ble
        },
        device: DeviceId(dev),
        time_ms: id,
        quantity: "temperature".into(),
        value: i as f64,
        unit: call_size(id).to_string(),
        frame_id: Some((i % 256) as u32),
        radio: RadioMeta {
            rssi_dbm: Some(-(i as i16 % 100)),
            ..RadioMeta::default()
        },
    }
}

#[test]
fn sigkill_loses_no_acknowledged_reading_and_shows_nothing_partial() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

fn child(dir: &Path) {
    let run: u64 = std::env::var(RUN_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("child: run number");
    let started = Instant::now();
    let mut store = open(&dir.join("queue.db"), Limits::default());
    let mut uplink = FileUplink::open(dir.join("uplink.jsonl")).expect("child: file uplink");
    let mut fwd = Forwarder::new(ForwarderConfig {
        batch_size: 300,
        max_batches_per_pump: 3,
        ..ForwarderConfig::default()
    });
    let mut side = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acked.log"))
        .expect("child: side file");
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        writeln!(out, "{line}").expect("child: stdout");
        out.flush().expect("child: flush");
    };
    for n in 1.. {
        if started.elapsed() > CHILD_LIMIT {
            return;
        }
        let id = call_id(run, n);
        let size = call_size(id);
        let mut rs: Vec<Reading> = (0..size).map(|i| reading(id, i)).collect();
        rs.push(rs[0].clone()); // heard twice
        say(format!("BEGIN {id} {size}"));
        let o = store.append(&rs).expect("child: append");
        assert_eq!((o.accepted, o.duplicates), (size, 1), "child: call {id}");
        let seqs = o.seqs.expect("child: seqs");
        side.write_all(format!("ACK {} {} {id} {size}\n", seqs.start(), seqs.end()).as_bytes())
            .expect("child: side file");
        say(format!("ACK {id}"));
        if n % 3 == 0 {
            say("PUMP".into());
            fwd.pump(&mut store, &mut uplink, n).expect("child: pump");
            say("PUMPED".into());
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum KillPoint {
    DuringBigCall(Duration),
    AfterAcks(u64, Duration),
    DuringPump(Duration),
}

/// Kills and reaps the child if the parent panics.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn parent() {
    let dir = TempDir::new("crash");
    let mut rng = Rng(SEED);
    let (mut big_cut, mut big_rolled_back, mut run) = (0, 0, 0);
    let mut committed_unacked = 0;
    while run < RUNS || (big_rolled_back == 0 && run < RUNS + EXTRA_RUNS) {
        let point = if run >= RUNS {
            KillPoint::DuringBigCall(Duration::ZERO)
        } else {
            match run % 3 {
                0 => KillPoint::DuringBigCall(Duration::from_micros(rng.below(4_000))),
                1 => {
                    KillPoint::AfterAcks(1 + rng.below(12), Duration::from_micros(rng.below(3_000)))
                }
                _ => KillPoint::DuringPump(Duration::from_micros(rng.below(3_000))),
            }
        };
        let begun = kill_run(&dir.0, run, point);
        let present = verify(&dir.0);
        if let Some((id, size)) = begun {
            let acked = read_acks(&dir.0).contains_key(&id);
            if size >= BIG && !acked {
                big_cut += 1;
                big_rolled_back += usize::from(!present.contains(&id));
            }
            committed_unacked += usize::from(!acked && present.contains(&id));
        }
        eprintln!("run {run}: {point:?}, last call begun {begun:?}");
        run += 1;
    }
    eprintln!(
        "{big_cut} kills during a big append, {big_rolled_back} rolled back, \
         {committed_unacked} committed but not yet acknowledged"
    );
    assert!(big_rolled_back >= 1, "no kill cut a big append");

    // Replay the file into the receiver, then forward the rest of the store to it.
    let mut receiver = TestUplink::new();
    for line in FileUplink::read(dir.0.join("uplink.jsonl")).expect("read uplink file") {
        receiver.submit(&to_batch(&line)).expect("replay");
    }
    let replayed = receiver.submissions();
    let mut store = open(&dir.db(), Limits::default());
    let mut fwd = Forwarder::new(ForwarderConfig::default());
    let mut steps = 0;
    loop {
        let out = fwd.pump(&mut store, &mut receiver, 0).expect("pump");
        steps += 1;
        assert!(steps < 10_000);
        if out.state == PumpState::Idle {
            break;
        }
    }
    store.check().expect("check after draining");
    let delivered: Vec<u64> = receiver.readings().map(|q| q.seq).collect();
    assert!(
        delivered.windows(2).all(|w| w[0] < w[1]),
        "each once, in order"
    );
    let acked: BTreeSet<u64> = read_acks(&dir.0)
        .values()
        .flat_map(|&(a, b, _)| a..=b)
        .collect();
    let delivered_set: BTreeSet<u64> = delivered.iter().copied().collect();
    assert!(
        acked.is_subset(&delivered_set),
        "an acknowledged reading was not delivered"
    );
    let extra = delivered_set.len() - acked.len();
    assert!(
        extra <= committed_unacked * 2000,
        "{extra} unacknowledged readings delivered"
    );
    for q in receiver.readings() {
        check_reading(q);
    }
    eprintln!(
        "delivered {} readings ({} acknowledged); {replayed} batches replayed from the file, \
         {} re-sends deduplicated",
        delivered.len(),
        acked.len(),
        receiver.duplicates()
    );
}

/// Runs one child, kills it at `point`; returns the last call it began (id, size).
fn kill_run(dir: &Path, run: u64, point: KillPoint) -> Option<(u64, usize)> {
    let exe = std::env::current_exe().expect("current exe");
    let child = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(RUN_ENV, (run + 1).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut acks, mut begun) = (0, None);
    loop {
        let Some(line) = lines.next() else {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("child ended before the kill; its stderr:\n{err}");
        };
        let line = line.expect("child stdout");
        let words: Vec<&str> = line.split_whitespace().collect();
        match (point, words.as_slice()) {
            (_, ["BEGIN", id, size]) => {
                let call = (
                    id.parse::<u64>().expect("id"),
                    size.parse::<usize>().expect("size"),
                );
                begun = Some(call);
                if let KillPoint::DuringBigCall(d) = point
                    && call.1 >= BIG
                {
                    std::thread::sleep(d);
                    break;
                }
            }
            (KillPoint::AfterAcks(k, d), ["ACK", _]) => {
                acks += 1;
                if acks == k {
                    std::thread::sleep(d);
                    break;
                }
            }
            (KillPoint::DuringPump(d), ["PUMP"]) => {
                std::thread::sleep(d);
                break;
            }
            _ => {}
        }
    }
    child.0.kill().expect("SIGKILL child");
    let status = child.0.wait().expect("reap child");
    assert_eq!(status.signal(), Some(9), "child not killed: {status:?}");
    for line in lines {
        let line = line.expect("child stdout");
        if let ["BEGIN", id, size] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
            begun = Some((id.parse().expect("id"), size.parse().expect("size")));
        }
    }
    begun
}

/// The side file: call id -> (first seq, last seq, size). A torn last line is skipped.
fn read_acks(dir: &Path) -> BTreeMap<u64, (u64, u64, usize)> {
    let text = std::fs::read_to_string(dir.join("acked.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["ACK", a, b, id, size] => Some((
                    id.parse().ok()?,
                    (a.parse().ok()?, b.parse().ok()?, size.parse().ok()?),
                )),
                _ => None,
            }
        })
        .collect()
}

/// Checks the store and the uplink file after a kill; returns the call ids present.
fn verify(dir: &Path) -> BTreeSet<u64> {
    let store = open(&dir.join("queue.db"), Limits::default());
    store.check().expect("integrity after the kill");
    let stored = store.readings_after(0, usize::MAX).expect("read store");
    let pk = key().verifying_key();

    // The file: every line verifies; the same first_seq means the same batch.
    let mut delivered: BTreeMap<u64, FileBatch> = BTreeMap::new();
    for line in FileUplink::read(dir.join("uplink.jsonl")).unwrap_or_default() {
        line.verify(&pk).expect("file line verifies");
        match delivered.get(&line.first_seq) {
            Some(held) => assert_eq!(held, &line, "a re-send differs from the first send"),
            None => {
                delivered.insert(line.first_seq, line);
            }
        }
    }
    let mut seen: BTreeMap<u64, Reading> = BTreeMap::new();
    for b in delivered.values() {
        for (seq, r) in &b.readings {
            assert!(
                seen.insert(*seq, r.clone()).is_none(),
                "seq {seq} in two batches"
            );
        }
    }
    for q in &stored {
        if let Some(r) = seen.get(&q.seq) {
            assert_eq!(
                r, &q.reading,
                "seq {} stored and delivered differently",
                q.seq
            );
        }
        seen.insert(q.seq, q.reading.clone());
    }

    // Every acknowledged reading is present; every call present is complete.
    for (id, (a, b, size)) in read_acks(dir) {
        assert_eq!((b - a + 1) as usize, size, "call {id}");
        for (i, seq) in (a..=b).enumerate() {
            let r = seen
                .get(&seq)
                .unwrap_or_else(|| panic!("acknowledged seq {seq} (call {id}) is lost"));
            assert_eq!(r, &reading(id, i), "seq {seq}");
        }
    }
    let mut calls: BTreeMap<u64, usize> = BTreeMap::new();
    for (&seq, r) in &seen {
        check_reading(&QueuedReading {
            seq,
            reading: r.clone(),
        });
        *calls.entry(r.time_ms).or_default() += 1;
    }
    for (&id, &n) in &calls {
        assert_eq!(n, call_size(id), "call {id} is partial");
    }
    calls.into_keys().collect()
}

/// The reading is one the child wrote, whole.
fn check_reading(q: &QueuedReading) {
    let r = &q.reading;
    let i = r.value as usize;
    assert_eq!(r, &reading(r.time_ms, i), "seq {}", q.seq);
}

/// A file line back into a batch (the values are small integers, exact in JSON).
fn to_batch(line: &FileBatch) -> Batch {
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let batch = Batch {
        id: line.id,
        first_seq: line.first_seq,
        last_seq: line.last_seq,
        readings: line
            .readings
            .iter()
            .map(|(seq, r)| QueuedReading {
                seq: *seq,
                reading: r.clone(),
            })
            .collect(),
        gateway: unhex(&line.gateway).try_into().expect("32 bytes"),
        signature: unhex(&line.signature).try_into().expect("64 bytes"),
    };
    batch
        .verify(&key().verifying_key())
        .expect("replayed batch verifies");
    batch
}
