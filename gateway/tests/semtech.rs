//! The Semtech UDP (GWMP v2) wire format, the sans-IO server, and the tokio adapter driven by a
//! simulated packet forwarder over loopback UDP. The simulated forwarder is written from
//! Lora-net/packet_forwarder PROTOCOL.TXT (§3.2 PUSH_DATA, §5.2 PULL_DATA, §5.5 TX_ACK), with its
//! own byte handling, not the crate's emitter.

use std::net::SocketAddr;
use std::time::Duration;

use gateway::lora::semtech::{
    self, DataRate, Identifier, Modulation, Packet, ParseError, PullRespPayload, PushDataPayload,
    RxPk, Stat, TxAckPayload, TxError, TxPk, TxPkAck,
};
use gateway::lora::server::{DownlinkError, Event, SemtechServer, ServerConfig};
use gateway::lora::udp::{SemtechUdp, UdpConfig, UdpDownlinkError};
use proptest::prelude::*;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(3);

// --- the simulated packet forwarder -----------------------------------------------------------

struct Forwarder {
    sock: UdpSocket,
    eui: [u8; 8],
    server: SocketAddr,
    next_token: u16,
}

impl Forwarder {
    async fn new(eui: [u8; 8], server: SocketAddr) -> Forwarder {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        Forwarder {
            sock,
            eui,
            server,
            next_token: u16::from_be_bytes([eui[7], 0x11]),
        }
    }

    fn token(&mut self) -> [u8; 2] {
        self.next_token = self.next_token.wrapping_mul(31).wrapping_add(7);
        self.next_token.to_be_bytes()
    }

    /// Sends `version | token | id | [EUI] | body` and returns the token.
    async fn send(&mut self, version: u8, id: u8, with_eui: bool, body: &[u8]) -> [u8; 2] {
        let token = self.token();
        let mut d = vec![version, token[0], token[1], id];
        if with_eui {
            d.extend_from_slice(&self.eui);
        }
        d.extend_from_slice(body);
        self.sock.send_to(&d, self.server).await.expect("send");
        token
    }

    /// PUSH_DATA (§3.2) with a JSON body; returns the token.
    async fn push_data(&mut self, json: &str) -> [u8; 2] {
        self.send(2, 0x00, true, json.as_bytes()).await
    }

    /// PULL_DATA (§5.2); returns the token.
    async fn pull_data(&mut self) -> [u8; 2] {
        self.send(2, 0x02, true, b"").await
    }

    /// TX_ACK (§5.5) for a PULL_RESP token, with an optional JSON body.
    async fn tx_ack(&mut self, token: [u8; 2], json: &str) {
        let mut d = vec![2, token[0], token[1], 0x05];
        d.extend_from_slice(&self.eui);
        d.extend_from_slice(json.as_bytes());
        self.sock.send_to(&d, self.server).await.expect("send");
    }

    /// The next datagram, if one arrives within `wait`.
    async fn recv_within(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65_535];
        match tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                assert_eq!(from, self.server, "datagram from the server's address");
                buf.truncate(n);
                Some(buf)
            }
            _ => None,
        }
    }

    /// Expects an ACK (§3.3 PUSH_ACK 0x01 / §5.3 PULL_ACK 0x04): exactly 4 bytes, same token.
    async fn expect_ack(&self, id: u8, token: [u8; 2]) {
        let d = self.recv_within(WAIT).await.expect("an ACK");
        assert_eq!(d, vec![2, token[0], token[1], id], "ACK bytes");
    }
}

fn lora_rxpk_json(tmst: u32, data: &[u8]) -> String {
    format!(
        r#"{{"time":"2013-03-31T16:21:17.528002Z","tmst":{tmst},"chan":2,"rfch":0,"freq":866.349812,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/6","rssi":-35,"lsnr":5.1,"size":{},"data":"{}"}}"#,
        data.len(),
        semtech::encode_data(data)
    )
}

async fn start() -> (SemtechUdp, mpsc::Receiver<Event>) {
    let config = UdpConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..UdpConfig::default()
    };
    let (udp, events, _task) = SemtechUdp::spawn(config).await.expect("spawn");
    (udp, events)
}

async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("event in time")
        .expect("channel open")
}

async fn no_event(events: &mut mpsc::Receiver<Event>) {
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.recv())
            .await
            .is_err(),
        "no event expected"
    );
}

// --- over UDP --------------------------------------------------------------------------------

#[test]
fn default_bind_is_port_1700_on_all_interfaces() {
    assert_eq!(
        UdpConfig::default().bind,
        "0.0.0.0:1700".parse::<SocketAddr>().expect("addr")
    );
}

#[tokio::test]
async fn udp_push_data_with_several_rxpk_is_acked_and_delivered() {
    let (udp, mut events) = start().await;
    let eui = [0xaa, 0x55, 0x5a, 0, 0, 0, 0, 1];
    let mut fwd = Forwarder::new(eui, udp.local_addr()).await;
    // PROTOCOL.TXT §4's example shape: two LoRa packets and one FSK packet (numeric datr, no
    // codr/lsnr), plus a v2 `rsig` extra that must be tolerated.
    let fsk = r#"{"time":"2013-03-31T16:21:17.530974Z","tmst":3512348514,"chan":9,"rfch":1,"freq":869.1,"stat":1,"modu":"FSK","datr":50000,"rssi":-75,"size":16,"data":"VEVTVF9QQUNLRVRfMTIzNA==","rsig":[{"ant":0,"chan":9}]}"#;
    let json = format!(
        r#"{{"rxpk":[{},{fsk},{}]}}"#,
        lora_rxpk_json(3512348611, b"one"),
        lora_rxpk_json(3316387610, b"three")
    );
    let token = fwd.push_data(&json).await;
    fwd.expect_ack(0x01, token).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        match next_event(&mut events).await {
            Event::Uplink {
                gateway_eui,
                rxpk,
                payload,
            } => {
                assert_eq!(gateway_eui, eui);
                assert_eq!(payload, rxpk.data);
                got.push((rxpk.modu, rxpk.datr.clone(), payload));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        got[0],
        (
            Modulation::Lora,
            DataRate::Lora("SF7BW125".into()),
            b"one".to_vec()
        )
    );
    assert_eq!(
        got[1],
        (
            Modulation::Fsk,
            DataRate::Fsk(50_000),
            b"TEST_PACKET_1234".to_vec()
        )
    );
    assert_eq!(got[2].2, b"three".to_vec());
    no_event(&mut events).await;
}

#[tokio::test]
async fn udp_stat_only_push_data_and_crc_failures() {
    let (udp, mut events) = start().await;
    let eui = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut fwd = Forwarder::new(eui, udp.local_addr()).await;
    // §4 example status object.
    let token = fwd
        .push_data(r#"{"stat":{"time":"2014-01-12 08:59:28 GMT","lati":46.24000,"long":3.25230,"alti":145,"rxnb":2,"rxok":2,"rxfw":2,"ackr":100.0,"dwnb":2,"txnb":2}}"#)
        .await;
    fwd.expect_ack(0x01, token).await;
    match next_event(&mut events).await {
        Event::Stat { gateway_eui, stat } => {
            assert_eq!(gateway_eui, eui);
            assert_eq!(stat.lati, Some(46.24));
            assert_eq!(stat.long, Some(3.2523));
            assert_eq!(stat.alti, Some(145));
            assert_eq!(
                (stat.rxnb, stat.rxok, stat.rxfw, stat.dwnb, stat.txnb),
                (Some(2), Some(2), Some(2), Some(2), Some(2))
            );
            assert_eq!(stat.ackr, Some(100.0));
        }
        other => panic!("{other:?}"),
    }
    // A packet with a failed CRC (stat -1) is acked but not delivered.
    let bad = lora_rxpk_json(1, b"x").replace(r#""stat":1"#, r#""stat":-1"#);
    let token = fwd.push_data(&format!(r#"{{"rxpk":[{bad}]}}"#)).await;
    fwd.expect_ack(0x01, token).await;
    no_event(&mut events).await;
    assert_eq!(udp.counters().await.expect("running").crc_dropped, 1);
}

#[tokio::test]
async fn udp_pull_data_downlink_and_tx_ack() {
    let (udp, mut events) = start().await;
    let eui = [0xb8, 0x27, 0xeb, 0xff, 0xfe, 0, 0, 1];
    let mut fwd = Forwarder::new(eui, udp.local_addr()).await;
    // Before any PULL_DATA there is no route.
    let txpk = TxPk::lora_immediate(869.525, "SF9BW125", 14, b"downlink!".to_vec());
    assert!(matches!(
        udp.send_downlink(eui, txpk.clone()).await,
        Err(UdpDownlinkError::Server(DownlinkError::UnknownForwarder(_)))
    ));
    let token = fwd.pull_data().await;
    fwd.expect_ack(0x04, token).await;
    // PULL_RESP (§5.4) reaches the forwarder at its PULL_DATA address.
    udp.send_downlink(eui, txpk).await.expect("downlink sent");
    let d = fwd.recv_within(WAIT).await.expect("PULL_RESP");
    assert_eq!((d[0], d[3]), (2, 0x03), "version 2, PULL_RESP");
    let resp_token = [d[1], d[2]];
    let json: serde_json::Value = serde_json::from_slice(&d[4..]).expect("JSON body");
    let t = &json["txpk"];
    assert_eq!(t["imme"], true);
    assert_eq!(t["freq"], 869.525);
    assert_eq!(t["powe"], 14);
    assert_eq!(t["modu"], "LORA");
    assert_eq!(t["datr"], "SF9BW125");
    assert_eq!(t["codr"], "4/5");
    assert_eq!(t["ipol"], true);
    assert_eq!(t["size"], 9);
    assert_eq!(t["data"], semtech::encode_data(b"downlink!"));
    // TX_ACK with an error value (§5.5, §6).
    fwd.tx_ack(resp_token, r#"{"txpk_ack":{"error":"COLLISION_PACKET"}}"#)
        .await;
    assert_eq!(
        next_event(&mut events).await,
        Event::TxAck {
            gateway_eui: eui,
            token: u16::from_be_bytes(resp_token),
            error: TxError::CollisionPacket
        }
    );
    // TX_ACK without JSON means no error.
    fwd.tx_ack(resp_token, "").await;
    assert!(matches!(
        next_event(&mut events).await,
        Event::TxAck {
            error: TxError::None,
            ..
        }
    ));
}

#[tokio::test]
async fn udp_malformed_json_and_wrong_versions() {
    let (udp, mut events) = start().await;
    let eui = [9; 8];
    let mut fwd = Forwarder::new(eui, udp.local_addr()).await;
    // Malformed JSON in a PUSH_DATA: acknowledged (§3.3), content dropped and counted.
    let token = fwd.push_data(r#"{"rxpk":[{"tmst":1,"#).await;
    fwd.expect_ack(0x01, token).await;
    // Invalid base64 in `data` is malformed too.
    let token = fwd
        .push_data(&lora_rxpk_json(1, b"x").replace("eA==", "!!!"))
        .await;
    fwd.expect_ack(0x01, token).await;
    no_event(&mut events).await;
    // Protocol versions 1 and 3: no answer.
    fwd.send(1, 0x00, true, lora_rxpk_json(1, b"x").as_bytes())
        .await;
    assert!(fwd.recv_within(Duration::from_millis(200)).await.is_none());
    fwd.send(1, 0x02, true, b"").await;
    assert!(fwd.recv_within(Duration::from_millis(200)).await.is_none());
    fwd.send(3, 0x02, true, b"").await;
    assert!(fwd.recv_within(Duration::from_millis(200)).await.is_none());
    // Garbage, unknown identifier, truncated EUI: no answer.
    fwd.send(2, 0x07, false, b"").await;
    fwd.sock
        .send_to(&[2, 0, 1, 0x02, 1, 2], udp.local_addr())
        .await
        .expect("send");
    fwd.sock
        .send_to(&[0xff], udp.local_addr())
        .await
        .expect("send");
    assert!(fwd.recv_within(Duration::from_millis(200)).await.is_none());
    no_event(&mut events).await;
    let c = udp.counters().await.expect("running");
    assert_eq!(c.malformed, 8);
    assert_eq!(c.uplinks, 0);
    // The server still works afterwards.
    let token = fwd.pull_data().await;
    fwd.expect_ack(0x04, token).await;
}

#[tokio::test]
async fn udp_two_forwarders_at_once() {
    let (udp, mut events) = start().await;
    let (ea, eb) = ([0xa; 8], [0xb; 8]);
    let mut a = Forwarder::new(ea, udp.local_addr()).await;
    let mut b = Forwarder::new(eb, udp.local_addr()).await;
    let ta = a.pull_data().await;
    let tb = b.pull_data().await;
    a.expect_ack(0x04, ta).await;
    b.expect_ack(0x04, tb).await;
    let ta = a
        .push_data(&format!(r#"{{"rxpk":[{}]}}"#, lora_rxpk_json(1, b"from-a")))
        .await;
    let tb = b
        .push_data(&format!(r#"{{"rxpk":[{}]}}"#, lora_rxpk_json(2, b"from-b")))
        .await;
    a.expect_ack(0x01, ta).await;
    b.expect_ack(0x01, tb).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        if let Event::Uplink {
            gateway_eui,
            payload,
            ..
        } = next_event(&mut events).await
        {
            seen.push((gateway_eui, payload));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![(ea, b"from-a".to_vec()), (eb, b"from-b".to_vec())]
    );
    // Downlinks go to the right forwarder.
    udp.send_downlink(
        eb,
        TxPk::lora_immediate(869.525, "SF9BW125", 14, b"to-b".to_vec()),
    )
    .await
    .expect("sent");
    udp.send_downlink(
        ea,
        TxPk::lora_immediate(869.525, "SF9BW125", 14, b"to-a".to_vec()),
    )
    .await
    .expect("sent");
    let da = a.recv_within(WAIT).await.expect("a's PULL_RESP");
    let db = b.recv_within(WAIT).await.expect("b's PULL_RESP");
    let data = |d: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(&d[4..]).expect("json")["txpk"]["data"].clone()
    };
    assert_eq!(data(&da), semtech::encode_data(b"to-a"));
    assert_eq!(data(&db), semtech::encode_data(b"to-b"));
}

// --- the sans-IO server ------------------------------------------------------------------------

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

fn pull(eui: [u8; 8], token: u16) -> Vec<u8> {
    Packet::PullData {
        token,
        gateway_eui: eui,
    }
    .emit()
    .expect("emit")
}

#[test]
fn server_push_ack_precedes_processing_and_echoes_token() {
    let mut s = SemtechServer::new(ServerConfig::default());
    let push = Packet::PushData {
        token: 0xbeef,
        gateway_eui: [1; 8],
        payload: PushDataPayload {
            rxpk: vec![],
            stat: Some(Stat {
                rxnb: Some(1),
                ..Stat::default()
            }),
        },
    };
    let h = s.handle_datagram(10, addr(1), &push.emit().expect("emit"));
    assert_eq!(h.reply, Some(vec![2, 0xbe, 0xef, 0x01]));
    assert!(matches!(&h.events[..], [Event::Stat { .. }]));
    let f = s.forwarder(&[1; 8]).expect("tracked");
    assert_eq!(
        (f.push_addr, f.pull_addr, f.last_seen_ms),
        (Some(addr(1)), None, 10)
    );
    assert_eq!(f.stat.as_ref().and_then(|s| s.rxnb), Some(1));
}

#[test]
fn server_downlink_needs_a_recent_pull_address() {
    let mut s = SemtechServer::new(ServerConfig {
        pull_timeout_ms: 1000,
        ..ServerConfig::default()
    });
    let txpk = TxPk::lora_immediate(868.1, "SF7BW125", 14, vec![1, 2, 3]);
    assert!(matches!(
        s.send_downlink(0, [2; 8], txpk.clone()),
        Err(DownlinkError::UnknownForwarder(_))
    ));
    s.handle_datagram(
        0,
        addr(1),
        &Packet::PushData {
            token: 1,
            gateway_eui: [2; 8],
            payload: PushDataPayload::default(),
        }
        .emit()
        .expect("emit"),
    );
    assert!(matches!(
        s.send_downlink(0, [2; 8], txpk.clone()),
        Err(DownlinkError::NoRoute(_))
    ));
    let h = s.handle_datagram(100, addr(7), &pull([2; 8], 0x1234));
    assert_eq!(h.reply, Some(vec![2, 0x12, 0x34, 0x04]));
    let (to, bytes) = s.send_downlink(500, [2; 8], txpk.clone()).expect("route");
    assert_eq!(to, addr(7));
    match Packet::parse(&bytes).expect("valid") {
        Packet::PullResp { payload, .. } => assert_eq!(payload.txpk, txpk),
        other => panic!("{other:?}"),
    }
    // Tokens differ between consecutive downlinks.
    let (_, b2) = s.send_downlink(500, [2; 8], txpk.clone()).expect("route");
    assert_ne!(bytes[1..3], b2[1..3]);
    // Stale route.
    assert!(matches!(
        s.send_downlink(1101, [2; 8], txpk),
        Err(DownlinkError::NoRoute(_))
    ));
}

#[test]
fn server_forwarder_table_is_bounded_and_evicts_the_stalest() {
    let mut s = SemtechServer::new(ServerConfig {
        max_forwarders: 3,
        ..ServerConfig::default()
    });
    for i in 0..3u8 {
        s.handle_datagram(u64::from(i) * 10, addr(1), &pull([i; 8], 1));
    }
    s.handle_datagram(100, addr(1), &pull([0; 8], 2)); // refresh 0: 1 is now the stalest
    s.handle_datagram(200, addr(1), &pull([9; 8], 3));
    let mut euis: Vec<u8> = s.forwarders().map(|f| f.eui[0]).collect();
    euis.sort();
    assert_eq!(euis, vec![0, 2, 9]);
}

#[test]
fn server_counts_malformed_per_source_bounded() {
    let mut s = SemtechServer::new(ServerConfig {
        max_malformed_sources: 2,
        ..ServerConfig::default()
    });
    for port in [1, 1, 2, 3] {
        let h = s.handle_datagram(0, addr(port), &[1, 0, 0, 0]);
        assert_eq!(h.dropped, Some(ParseError::Version(1)));
        assert!(h.reply.is_none());
    }
    assert_eq!(
        (
            s.malformed_from(&addr(1)),
            s.malformed_from(&addr(2)),
            s.malformed_from(&addr(3))
        ),
        (2, 1, 0)
    );
    let c = s.counters();
    assert_eq!((c.malformed, c.malformed_unattributed), (4, 1));
}

// --- the wire format ---------------------------------------------------------------------------

fn sample_rxpk() -> RxPk {
    RxPk {
        time: Some("2013-03-31T16:21:17.528002Z".into()),
        tmms: Some(1_000_000),
        tmst: 3_512_348_611,
        freq: 866.349812,
        chan: Some(2),
        rfch: Some(0),
        stat: 1,
        modu: Modulation::Lora,
        datr: DataRate::Lora("SF7BW125".into()),
        codr: Some("4/6".into()),
        rssi: Some(-35),
        lsnr: Some(5.1),
        size: 3,
        data: vec![1, 2, 3],
    }
}

#[test]
fn wire_every_packet_type_round_trips() {
    let packets = vec![
        Packet::PushData {
            token: 1,
            gateway_eui: [1, 2, 3, 4, 5, 6, 7, 8],
            payload: PushDataPayload {
                rxpk: vec![sample_rxpk()],
                stat: Some(Stat {
                    lati: Some(46.24),
                    ..Stat::default()
                }),
            },
        },
        Packet::PushAck { token: 2 },
        Packet::PullData {
            token: 3,
            gateway_eui: [8; 8],
        },
        Packet::PullResp {
            token: 4,
            payload: PullRespPayload {
                txpk: TxPk::lora_immediate(869.525, "SF12BW125", 27, vec![9; 20]),
            },
        },
        Packet::PullAck { token: 5 },
        Packet::TxAck {
            token: 6,
            gateway_eui: [6; 8],
            payload: None,
        },
        Packet::TxAck {
            token: 7,
            gateway_eui: [7; 8],
            payload: Some(TxAckPayload {
                txpk_ack: TxPkAck {
                    error: Some(TxError::TooLate),
                    warn: None,
                },
            }),
        },
    ];
    for p in packets {
        let bytes = p.emit().expect("emit");
        assert_eq!(bytes[0], 2);
        assert_eq!(bytes[3], p.identifier().byte());
        assert_eq!(u16::from_be_bytes([bytes[1], bytes[2]]), p.token());
        assert_eq!(Packet::parse(&bytes).expect("parse"), p);
    }
}

#[test]
fn wire_tx_ack_error_values() {
    for (s, e) in [
        ("NONE", TxError::None),
        ("TOO_LATE", TxError::TooLate),
        ("TOO_EARLY", TxError::TooEarly),
        ("FULL", TxError::Full),
        ("EMPTY", TxError::Empty),
        ("COLLISION_PACKET", TxError::CollisionPacket),
        ("COLLISION_BEACON", TxError::CollisionBeacon),
        ("TX_FREQ", TxError::TxFreq),
        ("TX_POWER", TxError::TxPower),
        ("GPS_UNLOCKED", TxError::GpsUnlocked),
        ("SOMETHING_NEW", TxError::Unknown),
    ] {
        let mut d = vec![2, 0, 9, 5, 1, 1, 1, 1, 1, 1, 1, 1];
        d.extend_from_slice(format!(r#"{{"txpk_ack":{{"error":"{s}"}}}}"#).as_bytes());
        d.push(0); // a C string terminator is tolerated
        match Packet::parse(&d).expect("valid") {
            Packet::TxAck {
                payload: Some(p), ..
            } => assert_eq!(p.error(), e, "{s}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn wire_header_errors_are_typed() {
    assert_eq!(
        Packet::parse(&[]),
        Err(ParseError::TooShort { len: 0, need: 4 })
    );
    assert_eq!(
        Packet::parse(&[2, 0, 0]),
        Err(ParseError::TooShort { len: 3, need: 4 })
    );
    assert_eq!(Packet::parse(&[1, 0, 0, 1]), Err(ParseError::Version(1)));
    assert_eq!(
        Packet::parse(&[2, 0, 0, 6]),
        Err(ParseError::UnknownIdentifier(6))
    );
    assert_eq!(
        Packet::parse(&[2, 0, 0, 2, 1, 2, 3]),
        Err(ParseError::TooShort { len: 7, need: 12 })
    );
    assert_eq!(
        Packet::parse(&[2, 0, 0, 1, 0]),
        Err(ParseError::Trailing {
            identifier: Identifier::PushAck,
            extra: 1
        })
    );
    let mut d = vec![2, 0xab, 0xcd, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    d.extend_from_slice(b"{not json");
    match Packet::parse(&d) {
        Err(ParseError::Json {
            identifier: Identifier::PushData,
            token: 0xabcd,
            gateway_eui: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // PUSH_DATA and PULL_RESP require a body; TX_ACK does not.
    assert!(matches!(
        Packet::parse(&[2, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
        Err(ParseError::Json { .. })
    ));
    assert!(matches!(
        Packet::parse(&[2, 0, 0, 3]),
        Err(ParseError::Json { .. })
    ));
    assert!(matches!(
        Packet::parse(&[2, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8]),
        Ok(Packet::TxAck { payload: None, .. })
    ));
}

#[test]
fn wire_protocol_txt_downlink_examples_parse() {
    // §6's examples (the `data` there is 43 base64 characters without padding).
    for json in [
        r#"{"txpk":{"imme":true,"freq":864.123456,"rfch":0,"powe":14,"modu":"LORA","datr":"SF11BW125","codr":"4/6","ipol":false,"size":32,"data":"H3P3N2i9qc4yt7rK7ldqoeCVJGBybzPY5h1Dd7P7p8v"}}"#,
        r#"{"txpk":{"imme":true,"freq":861.3,"rfch":0,"powe":12,"modu":"FSK","datr":50000,"fdev":3000,"size":32,"data":"H3P3N2i9qc4yt7rK7ldqoeCVJGBybzPY5h1Dd7P7p8v"}}"#,
    ] {
        let mut d = vec![2, 0, 0, 3];
        d.extend_from_slice(json.as_bytes());
        match Packet::parse(&d).expect("valid") {
            Packet::PullResp { payload, .. } => {
                assert_eq!(payload.txpk.data.len(), 32);
                assert!(payload.txpk.imme);
            }
            other => panic!("{other:?}"),
        }
    }
}

proptest! {
    #[test]
    fn wire_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = Packet::parse(&bytes);
    }

    #[test]
    fn wire_parse_never_panics_behind_a_valid_header(id in 0u8..6, body in "\\PC{0,96}") {
        let mut d = vec![2, 1, 2, id, 1, 2, 3, 4, 5, 6, 7, 8];
        d.extend_from_slice(body.as_bytes());
        let _ = Packet::parse(&d);
    }

    #[test]
    fn server_never_panics(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut s = SemtechServer::new(ServerConfig { max_forwarders: 2, max_malformed_sources: 2, ..ServerConfig::default() });
        for (i, d) in datagrams.iter().enumerate() {
            let mut d = d.clone();
            if i % 2 == 0 && !d.is_empty() { d[0] = 2; }
            let _ = s.handle_datagram(i as u64, addr(i as u16 % 3), &d);
            let _ = s.send_downlink(i as u64, [0; 8], TxPk::lora_immediate(868.1, "SF7BW125", 14, d.clone()));
        }
    }

    #[test]
    fn wire_push_data_round_trips(token in any::<u16>(), eui in any::<[u8; 8]>(), tmst in any::<u32>(),
                                  data in proptest::collection::vec(any::<u8>(), 0..64), rssi in -140i32..0) {
        let mut rx = sample_rxpk();
        rx.tmst = tmst;
        rx.size = data.len() as u32;
        rx.data = data;
        rx.rssi = Some(rssi);
        let p = Packet::PushData { token, gateway_eui: eui, payload: PushDataPayload { rxpk: vec![rx], stat: None } };
        prop_assert_eq!(Packet::parse(&p.emit().expect("emit")).expect("parse"), p);
    }
}
