//! Discovery: TXT records (good and forged), the `[mesh]` config, and real mDNS between two
//! nodes over multicast.
//!
//! The mDNS test runs over real sockets on `lo`. As root it re-runs itself (the same test, told
//! by an environment variable that it is the inner run) inside a fresh network namespace made with `unshare --net`
//! (util-linux) where `ip` (iproute2) sets `lo` up: the host is untouched, nothing else on the
//! host can answer or disturb it, and the namespace dies with the child process. Linux needs no
//! MULTICAST flag on `lo` for this (joining 224.0.0.251 on 127.0.0.1 and sending with
//! `IP_MULTICAST_IF` = 127.0.0.1 loops back either way; checked both ways), but the namespace
//! turns it on anyway, as a real interface would have it. Not root, the test runs on the host's
//! `lo` with a per-process mDNS port and fresh identities, and skips with a printed reason only
//! if no multicast gets through.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use mesh::discovery::record::{Advertisement, encode_key, instance_of, txt_properties};
use mesh::discovery::{
    ConfigError, DiscoveryError, DiscoveryEvent, InterfaceSelection, Mdns, MdnsConfig,
    MeshFileConfig, PeerRecord, SERVICE_TYPE,
};
use mesh::{HashnameError, Identity};

fn identity(seed: u8) -> Identity {
    Identity::from_bytes([seed; 32])
}

fn advert(id: &Identity) -> Advertisement {
    Advertisement {
        fullname: format!("{}.{SERVICE_TYPE}", id.hashname()),
        port: 4242,
        ips: vec![
            "192.0.2.7".parse().expect("ip"),
            "fe80::1".parse().expect("ip"),
        ],
        scope_ids: vec![0, 3],
        txt: txt_properties(&id.hashname(), &id.public_key()),
    }
}

fn set_txt(ad: &mut Advertisement, key: &str, value: &str) {
    for (k, v) in &mut ad.txt {
        if k == key {
            *v = value.to_owned();
        }
    }
}

#[test]
fn txt_record_round_trip() {
    let id = identity(1);
    let ad = advert(&id);
    let keys: Vec<&str> = ad.txt.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["hn", "key", "v"]);
    let rec = ad.verify().expect("verifies");
    assert_eq!(rec.hashname, id.hashname());
    assert_eq!(rec.static_key, id.public_key());
    let v6: SocketAddr = "[fe80::1%3]:4242".parse().expect("addr");
    assert_eq!(rec.addrs, vec!["192.0.2.7:4242".parse().expect("addr"), v6]);
    // TXT keys are case-insensitive (RFC 6763 §6.4), and so is the service type.
    let mut upper = ad.clone();
    upper.txt = upper
        .txt
        .into_iter()
        .map(|(k, v)| (k.to_uppercase(), v))
        .collect();
    upper.fullname = format!("{}._MEF-MESH._udp.local.", id.hashname());
    assert_eq!(upper.verify(), Ok(rec));
}

#[test]
fn forged_txt_records_are_refused() {
    let a = identity(1);
    let b = identity(2);

    // B's key under A's hashname: the classic forgery.
    let mut forged = advert(&a);
    set_txt(&mut forged, "key", &encode_key(&b.public_key()));
    assert_eq!(
        forged.verify(),
        Err(DiscoveryError::KeyMismatch {
            claimed: a.hashname(),
            actual: b.hashname()
        })
    );

    // Consistent hn/key for B, but advertised under A's instance name.
    let mut renamed = advert(&b);
    renamed.fullname = format!("{}.{SERVICE_TYPE}", a.hashname());
    assert!(matches!(
        renamed.verify(),
        Err(DiscoveryError::InstanceMismatch { .. })
    ));

    let mut ad = advert(&a);
    ad.txt.retain(|(k, _)| k != "key");
    assert_eq!(ad.verify(), Err(DiscoveryError::MissingTxt("key")));
    let mut ad = advert(&a);
    ad.txt.retain(|(k, _)| k != "hn");
    assert_eq!(ad.verify(), Err(DiscoveryError::MissingTxt("hn")));
    let mut ad = advert(&a);
    ad.txt.retain(|(k, _)| k != "v");
    assert_eq!(ad.verify(), Err(DiscoveryError::MissingTxt("v")));

    let mut ad = advert(&a);
    set_txt(&mut ad, "v", "2");
    assert_eq!(
        ad.verify(),
        Err(DiscoveryError::UnsupportedVersion("2".into()))
    );
    let mut ad = advert(&a);
    set_txt(&mut ad, "hn", "not-a-hashname");
    assert_eq!(
        ad.verify(),
        Err(DiscoveryError::BadHashname(HashnameError::Length(14)))
    );
    let mut ad = advert(&a);
    set_txt(&mut ad, "key", "abcd");
    assert!(matches!(ad.verify(), Err(DiscoveryError::BadKey(_))));
    let mut ad = advert(&a);
    set_txt(&mut ad, "key", "éé");
    assert!(matches!(ad.verify(), Err(DiscoveryError::BadKey(_))));

    let mut ad = advert(&a);
    ad.fullname = format!("{}._http._tcp.local.", a.hashname());
    assert!(matches!(
        ad.verify(),
        Err(DiscoveryError::WrongServiceType(_))
    ));
    let mut ad = advert(&a);
    ad.ips.clear();
    assert_eq!(ad.verify(), Err(DiscoveryError::NoAddress));
    let mut ad = advert(&a);
    ad.port = 0;
    assert_eq!(ad.verify(), Err(DiscoveryError::NoAddress));

    // Garbage never panics.
    for name in [
        "",
        ".",
        SERVICE_TYPE,
        "é._mef-mesh._udp.local.",
        "ü",
        "x._mef-mesh._udp.local",
    ] {
        let _ = instance_of(name);
        let ad = Advertisement {
            fullname: name.into(),
            ..Advertisement::default()
        };
        assert!(ad.verify().is_err());
    }
}

#[test]
fn mdns_start_refuses_a_key_that_is_not_the_hashnames() {
    let a = identity(1);
    let b = identity(2);
    let err = Mdns::start(a.hashname(), b.public_key(), 4242, &MdnsConfig::default())
        .expect_err("mismatched key refused");
    assert!(matches!(err, DiscoveryError::KeyMismatch { .. }), "{err}");
}

#[test]
fn peer_record_verified_checks_key() {
    let a = identity(1);
    let b = identity(2);
    assert!(PeerRecord::verified(a.hashname(), a.public_key(), vec![]).is_ok());
    assert!(matches!(
        PeerRecord::verified(a.hashname(), b.public_key(), vec![]),
        Err(DiscoveryError::KeyMismatch { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Config

fn seed_toml(id: &Identity, addrs: &str) -> String {
    format!(
        "[[mesh.seed]]\nhashname = \"{}\"\nkey = \"{}\"\naddrs = [{addrs}]\n",
        id.hashname(),
        encode_key(&id.public_key())
    )
}

#[test]
fn config_parses_and_round_trips() {
    let a = identity(1);
    let b = identity(2);
    let text = format!(
        "[gateway]\nname = \"other parts of the config are ignored\"\n\n[mesh]\nlisten = \"127.0.0.1:5000\"\nmdns = false\n\n{}\n{}",
        seed_toml(&a, "\"192.0.2.1:4242\", \"[2001:db8::1]:4242\""),
        seed_toml(&b, "\"192.0.2.2:4243\""),
    );
    let cfg = MeshFileConfig::from_toml(&text).expect("parses");
    assert_eq!(
        cfg.listen,
        "127.0.0.1:5000".parse::<SocketAddr>().expect("addr")
    );
    assert!(!cfg.mdns);
    assert_eq!(cfg.seeds.len(), 2);
    assert_eq!(cfg.seeds[0].hashname, a.hashname());
    assert_eq!(cfg.seeds[0].static_key, a.public_key());
    assert_eq!(cfg.seeds[0].addrs.len(), 2);
    assert_eq!(
        cfg.seeds[1].addrs,
        vec!["192.0.2.2:4243".parse::<SocketAddr>().expect("addr")]
    );

    let back = cfg.to_toml().expect("serializes");
    assert_eq!(MeshFileConfig::from_toml(&back), Ok(cfg));

    // Defaults.
    let cfg = MeshFileConfig::from_toml("[mesh]\n").expect("parses");
    assert_eq!(cfg, MeshFileConfig::default());
    assert_eq!(
        cfg.listen,
        "0.0.0.0:4242".parse::<SocketAddr>().expect("addr")
    );
    assert!(cfg.mdns);
    assert_eq!(
        MeshFileConfig::from_toml(&cfg.to_toml().expect("serializes")),
        Ok(cfg)
    );
}

#[test]
fn config_errors() {
    let a = identity(1);
    let b = identity(2);
    let key_a = encode_key(&a.public_key());
    let key_b = encode_key(&b.public_key());
    let hn_a = a.hashname();
    let seed = |hn: &str, key: &str, addrs: &str| {
        format!("[mesh]\n[[mesh.seed]]\nhashname = \"{hn}\"\nkey = \"{key}\"\naddrs = [{addrs}]\n")
    };

    assert_eq!(
        MeshFileConfig::from_toml("[gateway]\nx = 1\n"),
        Err(ConfigError::MissingMesh)
    );
    assert!(matches!(
        MeshFileConfig::from_toml("[mesh"),
        Err(ConfigError::Toml(_))
    ));
    assert!(matches!(
        MeshFileConfig::from_toml("[mesh]\nmdns = \"yes\"\n"),
        Err(ConfigError::Toml(_))
    ));
    match MeshFileConfig::from_toml("[mesh]\nlisten = \"0.0.0.0:1\"\nmdsn = true\n") {
        Err(ConfigError::Toml(msg)) => assert!(msg.contains("unknown field"), "{msg}"),
        other => panic!("unknown key accepted: {other:?}"),
    }
    match MeshFileConfig::from_toml(&format!(
        "{}port = 1\n",
        seed(&hn_a.to_string(), &key_a, "\"192.0.2.1:1\"")
    )) {
        Err(ConfigError::Toml(msg)) => assert!(msg.contains("unknown field"), "{msg}"),
        other => panic!("unknown seed key accepted: {other:?}"),
    }
    assert_eq!(
        MeshFileConfig::from_toml("[mesh]\nlisten = \"0.0.0.0\"\n"),
        Err(ConfigError::BadListen("0.0.0.0".into()))
    );
    assert_eq!(
        MeshFileConfig::from_toml(&seed("abc", &key_a, "\"192.0.2.1:1\"")),
        Err(ConfigError::BadHashname {
            seed: 0,
            source: HashnameError::Length(3)
        })
    );
    assert!(matches!(
        MeshFileConfig::from_toml(&seed(&hn_a.to_string(), "abcd", "\"192.0.2.1:1\"")),
        Err(ConfigError::BadKey { seed: 0, .. })
    ));
    assert_eq!(
        MeshFileConfig::from_toml(&seed(&hn_a.to_string(), &key_b, "\"192.0.2.1:1\"")),
        Err(ConfigError::KeyMismatch {
            seed: 0,
            hashname: hn_a
        })
    );
    assert_eq!(
        MeshFileConfig::from_toml(&seed(&hn_a.to_string(), &key_a, "\"192.0.2.1\"")),
        Err(ConfigError::BadAddr {
            seed: 0,
            addr: "192.0.2.1".into()
        })
    );
    assert_eq!(
        MeshFileConfig::from_toml(&seed(&hn_a.to_string(), &key_a, "")),
        Err(ConfigError::NoAddrs { seed: 0 })
    );
    let twice = format!(
        "[mesh]\n{}{}",
        seed_toml(&a, "\"192.0.2.1:1\""),
        seed_toml(&a, "\"192.0.2.1:2\"")
    );
    assert_eq!(
        MeshFileConfig::from_toml(&twice),
        Err(ConfigError::DuplicateSeed {
            seed: 1,
            hashname: hn_a
        })
    );
    // The second seed's index is reported.
    let second_bad = format!(
        "[mesh]\n{}{}",
        seed_toml(&a, "\"192.0.2.1:1\""),
        seed_toml(&b, "\"nope\"")
    );
    assert_eq!(
        MeshFileConfig::from_toml(&second_bad),
        Err(ConfigError::BadAddr {
            seed: 1,
            addr: "nope".into()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Real mDNS

const TEST: &str = "mdns_two_nodes_discover_each_other";
const NETNS_ENV: &str = "MESH_MDNS_TEST_IN_NETNS";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Two nodes discover each other over real multicast, refuse a forged advertisement, and see
/// each other go. As root: in a fresh network namespace (see the module docs), where this same
/// test runs again as the inner run and must pass there. Otherwise: on the host's `lo`, on a
/// per-process mDNS port, skipping if multicast does not get through.
#[test]
fn mdns_two_nodes_discover_each_other() {
    if std::env::var_os(NETNS_ENV).is_some() {
        // The inner run, inside the namespace the outer run made.
        if let Err(why) = two_nodes(mdns_sd::MDNS_PORT) {
            panic!("in a fresh namespace with a multicast lo: {why}");
        }
        return;
    }
    if !is_root() {
        let port = 20_000 + (std::process::id() % 20_000) as u16;
        match two_nodes(port) {
            Ok(()) => {}
            Err(why) => println!(
                "SKIP {TEST}: not root (so no private network namespace) and on the host's lo {why}"
            ),
        }
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let script = "ip link set lo up && ip link set lo multicast on && exec \"$0\" \"$@\"";
    let out = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", script])
        .arg(&exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .output()
        .expect("run unshare (util-linux) and ip (iproute2)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- inner stdout ---\n{stdout}\n--- inner stderr ---\n{stderr}");
    assert!(
        out.status.success(),
        "inner mDNS test failed: {}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "inner test did not run");
}

fn wait_for<T>(
    m: &mut Mdns,
    timeout: Duration,
    mut f: impl FnMut(DiscoveryEvent) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(ev) = m.recv_timeout(left)
            && let Some(t) = f(ev)
        {
            return Some(t);
        }
    }
    None
}

/// Identities unique to this process, so concurrent runs on one host never mix.
fn fresh_identity(n: u8) -> Identity {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut bytes = [n; 32];
    bytes[..4].copy_from_slice(&std::process::id().to_le_bytes());
    bytes[4..20].copy_from_slice(&nanos.to_le_bytes());
    Identity::from_bytes(bytes)
}

/// Two real nodes on `lo` with mDNS on `mdns_port`. `Err` only if A never finds B (multicast
/// does not get through); every later check panics.
fn two_nodes(mdns_port: u16) -> Result<(), String> {
    let config = MdnsConfig {
        interfaces: InterfaceSelection::Named(vec!["lo".into()]),
        mdns_port,
        ..MdnsConfig::default()
    };
    let a = fresh_identity(1);
    let b = fresh_identity(2);

    // A forger advertising C's hashname with D's key, through mdns-sd directly.
    let c = fresh_identity(3);
    let d = fresh_identity(4);
    let forger = mdns_sd::ServiceDaemon::new_with_port(mdns_port).expect("forger daemon");
    forger
        .disable_interface(mdns_sd::IfKind::All)
        .expect("forger iface");
    forger.enable_interface("lo").expect("forger iface");
    let mut txt = txt_properties(&c.hashname(), &c.public_key());
    txt[1].1 = encode_key(&d.public_key());
    let info = mdns_sd::ServiceInfo::new(
        SERVICE_TYPE,
        &c.hashname().to_string(),
        "forger.local.",
        "127.0.0.1",
        4000,
        &txt[..],
    )
    .expect("forged service info");
    forger.register(info).expect("register forged");

    let mut ma = Mdns::start(a.hashname(), a.public_key(), 4001, &config).expect("start A");
    let mut mb = Mdns::start(b.hashname(), b.public_key(), 4002, &config).expect("start B");

    let timeout = Duration::from_secs(20);
    let Some(found_b) = wait_for(&mut ma, timeout, |ev| match ev {
        DiscoveryEvent::Found(r) if r.hashname == b.hashname() => Some(r),
        DiscoveryEvent::Found(r) => panic!("A found an unexpected peer {r:?}"),
        DiscoveryEvent::Lost(_) => None,
    }) else {
        let _ = forger.shutdown();
        return Err(format!("A did not find B within {timeout:?}"));
    };
    assert_eq!(found_b.static_key, b.public_key());
    assert!(
        found_b.addrs.iter().all(|s| s.port() == 4002),
        "{:?}",
        found_b.addrs
    );
    let lo: SocketAddr = "127.0.0.1:4002".parse().expect("addr");
    assert!(found_b.addrs.contains(&lo), "{:?}", found_b.addrs);

    let found_a = wait_for(&mut mb, timeout, |ev| match ev {
        DiscoveryEvent::Found(r) if r.hashname == a.hashname() => Some(r),
        DiscoveryEvent::Found(r) => panic!("B found an unexpected peer {r:?}"),
        DiscoveryEvent::Lost(_) => None,
    })
    .expect("B finds A");
    assert_eq!(found_a.static_key, a.public_key());
    assert!(found_a.addrs.iter().all(|s| s.port() == 4001));

    // The forged record is refused, never reported.
    let deadline = Instant::now() + timeout;
    while ma.stats().refused == 0 && Instant::now() < deadline {
        if let Some(ev) = ma.recv_timeout(Duration::from_millis(200)) {
            panic!("unexpected event while waiting for the refusal: {ev:?}");
        }
    }
    println!("A stats: {:?}; B stats: {:?}", ma.stats(), mb.stats());
    assert!(
        ma.stats().refused >= 1,
        "the forged advertisement was not seen"
    );
    assert!(ma.peers().all(|p| p.hashname != c.hashname()));

    // B leaves: A sees it go (mdns-sd's goodbye packets, TTL 0).
    mb.shutdown().expect("B shutdown");
    let lost = wait_for(&mut ma, timeout, |ev| match ev {
        DiscoveryEvent::Lost(h) => Some(h),
        DiscoveryEvent::Found(_) => None,
    });
    assert_eq!(lost, Some(b.hashname()));
    assert_eq!(ma.peers().count(), 0);
    ma.shutdown().expect("A shutdown");
    let _ = forger.shutdown();
    Ok(())
}

proptest::proptest! {
    /// Arbitrary advertisements and config text never panic.
    #[test]
    fn arbitrary_input_never_panics(
        fullname in ".{0,80}",
        port in proptest::prelude::any::<u16>(),
        txt in proptest::collection::vec((".{0,4}", ".{0,60}"), 0..5),
        config in ".{0,200}",
    ) {
        let ad = Advertisement { fullname, port, ips: vec![], scope_ids: vec![], txt };
        let _ = ad.verify();
        let _ = MeshFileConfig::from_toml(&config);
        let _ = MeshFileConfig::from_toml(&format!("[mesh]\n{config}"));
    }
}
