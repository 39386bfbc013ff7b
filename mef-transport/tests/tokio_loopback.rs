//! The tokio adapter over real UDP sockets on loopback.

use std::time::{Duration, Instant};

use mef_transport::tokio_io::MefEndpoint;
use mef_transport::{CloseReason, Config, RateMode, StaticKeypair};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_50mb_transfer_verified() {
    let mut rng = ChaCha20Rng::seed_from_u64(50);
    let server_key = StaticKeypair::generate(&mut rng);
    let server_pub = server_key.public();
    let server = MefEndpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        server_key,
        Config::default(),
    )
    .expect("bind server");
    let addr = server.local_addr().expect("addr");
    let client = MefEndpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        StaticKeypair::generate(&mut rng),
        Config::default(),
    )
    .expect("bind client");
    let client_pub = {
        let mut r = ChaCha20Rng::seed_from_u64(50);
        let _ = StaticKeypair::generate(&mut r);
        StaticKeypair::generate(&mut r).public()
    };

    const LEN: usize = 50 * 1024 * 1024;
    let mut payload = vec![0u8; LEN];
    rng.fill_bytes(&mut payload);
    let want: [u8; 32] = Sha256::digest(&payload).into();

    let srv = tokio::spawn(async move {
        let conn = server.accept().await.expect("incoming connection");
        assert_eq!(
            conn.remote_static(),
            Some(client_pub),
            "client authenticated"
        );
        let mut s = conn.accept_stream().await.expect("stream");
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n;
        }
        // Echo a short confirmation on the same stream.
        s.write_all(b"done").await.expect("write back");
        s.shutdown().await.expect("finish");
        let got: [u8; 32] = hasher.finalize().into();
        let reason = conn.closed().await;
        (total, got, reason)
    });

    let start = Instant::now();
    let conn = client.connect(addr, server_pub).await.expect("connect");
    let mut s = conn.open_stream().expect("open");
    for chunk in payload.chunks(1 << 20) {
        s.write_all(chunk).await.expect("write");
    }
    s.shutdown().await.expect("all data acknowledged");
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.expect("read back");
    assert_eq!(back, b"done");
    let elapsed = start.elapsed();
    let stats = conn.stats().expect("stats");
    conn.close(0, b"bye");

    let (total, got, reason) = tokio::time::timeout(Duration::from_secs(10), srv)
        .await
        .expect("server finishes")
        .expect("server task");
    assert_eq!(total, LEN);
    assert_eq!(got, want, "content verified by SHA-256");
    assert_eq!(
        reason,
        CloseReason::Remote {
            code: 0,
            reason: "bye".into()
        }
    );
    // No router on loopback: the fallback controller runs.
    assert_eq!(stats.mode, RateMode::Fallback);
    let mbps = LEN as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    eprintln!("loopback: {mbps:.0} Mbit/s in {elapsed:?}; {stats:?}");
    assert!(
        mbps > 100.0,
        "fallback controller reaches a sensible speed: {mbps:.0} Mbit/s"
    );
}

#[tokio::test]
async fn loopback_wrong_key_times_out() {
    let mut rng = ChaCha20Rng::seed_from_u64(51);
    let server = MefEndpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        StaticKeypair::generate(&mut rng),
        Config::default(),
    )
    .expect("bind");
    let cfg = Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let client = MefEndpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        StaticKeypair::generate(&mut rng),
        cfg,
    )
    .expect("bind");
    let err = client
        .connect(server.local_addr().expect("addr"), [1u8; 32])
        .await
        .expect_err("wrong key must fail");
    assert!(err.to_string().contains("handshake timeout"), "{err}");
}
