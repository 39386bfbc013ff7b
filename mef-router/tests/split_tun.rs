//! Root-only: a real kernel TCP client, in its own network namespace, connects through a TUN
//! device to an address nobody owns; the packets are fed to a `TcpSplitter` in this process,
//! which terminates the connection (any-IP) and answers. Skips with a reason when not root or
//! when namespaces/TUN are unavailable.
//!
//! Clean-up needs no code: the namespace is anonymous (`unshare(CLONE_NEWNET)` on the client
//! thread only), and it and its TUN device disappear when the thread has exited and the TUN file
//! descriptor is dropped, also when the test panics.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mef_router::split::{SplitConfig, SplitEvent, TcpSplitter};
use sha2::{Digest, Sha256};

const TUN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 219, 0, 1);
/// On the TUN's subnet but assigned to nobody: only the splitter can answer.
const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 219, 0, 77), 8080);
const LEN: usize = 300_000;

fn data() -> Vec<u8> {
    (0..LEN).map(|i| (i * 31 % 251) as u8).collect()
}

/// Runs in the client thread: new namespace, TUN device, then a kernel TCP transfer.
fn client(dev_tx: mpsc::Sender<Result<tun::Device, String>>) -> Result<Vec<u8>, String> {
    let setup = || -> Result<tun::Device, String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
        let mut config = tun::Configuration::default();
        config
            .tun_name("mefsplit0")
            .address(TUN_ADDR)
            .netmask(Ipv4Addr::new(255, 255, 255, 0))
            .mtu(1500)
            .up();
        tun::create(&config).map_err(|e| format!("creating TUN device: {e}"))
    };
    match setup() {
        Ok(dev) => dev_tx.send(Ok(dev)).map_err(|e| e.to_string())?,
        Err(e) => {
            let _ = dev_tx.send(Err(e.clone()));
            return Err(e);
        }
    }
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(SERVER), Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&data())
        .map_err(|e| format!("write: {e}"))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    Ok(reply)
}

#[test]
fn kernel_tcp_client_through_tun_is_split() {
    // The owner of /proc/self is the process's effective uid.
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !is_root {
        println!(
            "skipping kernel_tcp_client_through_tun_is_split: needs root (network namespace and TUN device)"
        );
        return;
    }
    let (dev_tx, dev_rx) = mpsc::channel();
    let handle = thread::spawn(move || client(dev_tx));
    let dev = match dev_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(dev)) => dev,
        Ok(Err(reason)) => {
            println!("skipping kernel_tcp_client_through_tun_is_split: {reason}");
            let _ = handle.join();
            return;
        }
        Err(e) => panic!("client thread did not set up: {e}"),
    };

    let start = Instant::now();
    let mut splitter = TcpSplitter::new(
        SplitConfig {
            random_seed: 0x1234_5678,
            ..SplitConfig::default()
        },
        start,
    )
    .expect("splitter");
    let mut accepted = None;
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    let mut reply: Option<Vec<u8>> = None;
    let mut reply_sent = 0usize;
    let mut closed = false;
    let mut buf = vec![0u8; 65536];
    let deadline = start + Duration::from_secs(30);
    while Instant::now() < deadline && !(closed && handle.is_finished()) {
        match dev.recv_timeout(&mut buf, Duration::from_millis(1)) {
            // Kernel noise (IPv6 router solicitations and such) is dropped and counted.
            Ok(n) => {
                let _ = splitter.handle_ip_packet(Instant::now(), &buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("TUN read: {e}"),
        }
        let now = Instant::now();
        if splitter.poll_timeout().is_some_and(|t| t <= now) {
            splitter.handle_timeout(now);
        }
        while let Some(ev) = splitter.poll_event() {
            match ev {
                SplitEvent::Accepted { id, client, server } => {
                    accepted = Some((id, client, server))
                }
                SplitEvent::Readable { id } => loop {
                    let n = splitter.read(id, &mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    received += n;
                },
                SplitEvent::PeerClosed { .. } => {
                    let digest = hasher.clone().finalize();
                    reply = Some(format!("got {received} bytes, sha256 {digest:x}").into_bytes());
                }
                SplitEvent::Closed { .. } => closed = true,
                SplitEvent::Reset { id } => panic!("connection {id} reset"),
                _ => {}
            }
        }
        if let (Some(r), Some((id, _, _))) = (&reply, accepted)
            && reply_sent < r.len()
        {
            reply_sent += splitter.write(id, &r[reply_sent..]).expect("write");
            if reply_sent == r.len() {
                splitter.shutdown(id).expect("shutdown");
            }
        }
        if splitter.poll_timeout().is_some_and(|t| t <= now) {
            splitter.handle_timeout(now);
        }
        while let Some(p) = splitter.poll_ip_packet() {
            dev.send(&p).expect("TUN write");
        }
    }
    let client_reply = handle
        .join()
        .expect("client thread")
        .expect("client transfer");
    let (_, client, server) = accepted.expect("connection accepted");
    assert_eq!(*client.ip(), TUN_ADDR);
    assert_eq!(server, SERVER);
    let expected = format!("got {LEN} bytes, sha256 {:x}", Sha256::digest(data()));
    assert_eq!(String::from_utf8_lossy(&client_reply), expected);
    assert!(closed, "clean close");
    println!("kernel client through TUN: {:?}", splitter.stats());
}
