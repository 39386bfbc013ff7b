//! `mef-gateway run --simulate N [--rate R]`: N simulated sensors whose traffic goes through the
//! daemon's **real** paths.
//!
//! - Even-numbered sensors are BLE BTHome devices (every other one encrypted with a bind key the
//!   simulator registers with the ingest pipeline), advertising packet id, battery,
//!   temperature, humidity and pressure (4 readings per advert) with plausible random-walk
//!   drift and incrementing packet ids / encryption counters. Their adverts are handed to the
//!   BLE ingest path exactly as the BlueZ scanner hands them over.
//! - Odd-numbered sensors are LoRaWAN class-A devices with plaintext test DevAddrs
//!   (registered as plaintext devices), sending Cayenne LPP temperature, humidity and barometer
//!   (3 readings per uplink) with an incrementing FCnt. The simulator acts as a Semtech packet
//!   forwarder: it wraps the PHYPayloads in rxpk objects (up to 8 per PUSH_DATA), sends them
//!   over UDP to the daemon's own LoRa listener, sends a PULL_DATA every 10 s, and counts the
//!   PUSH_ACKs it gets back.
//!
//! The total rate is `R` readings per second, spread round-robin over the sensors.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bthome;
use crate::lora::semtech::{DataRate, Modulation, Packet, PushDataPayload, RxPk};
use crate::lpp;

use super::run::{Input, now_ms};

/// The EUI the simulated packet forwarder reports.
pub const SIM_GATEWAY_EUI: [u8; 8] = [0xAA, 0x55, 0x5A, 0x00, 0x00, 0x00, 0x00, 0x01];

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of sensors.
    pub sensors: usize,
    /// Total readings per second.
    pub rate: f64,
    /// Where the daemon's LoRa listener is (an unspecified address is replaced by loopback).
    pub lora_target: Option<SocketAddr>,
    /// Random seed.
    pub seed: u64,
}

/// The device configuration the simulated sensors need in the ingest pipeline.
#[derive(Debug, Clone, Default)]
pub struct SimDevices {
    /// BTHome bind keys of the encrypted simulated sensors.
    pub ble_keys: Vec<([u8; 6], [u8; 16])>,
    /// Plaintext DevAddrs of the simulated LoRa sensors.
    pub lora_plaintext: Vec<u32>,
}

/// splitmix64.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

#[derive(Debug, Clone)]
enum Radio {
    Ble {
        mac: [u8; 6],
        key: Option<[u8; 16]>,
        packet_id: u8,
        counter: u32,
    },
    Lora {
        dev_addr: u32,
        fcnt: u16,
    },
}

#[derive(Debug, Clone)]
struct Sensor {
    radio: Radio,
    temperature: f64,
    humidity: f64,
    battery: f64,
    pressure: f64,
}

impl Sensor {
    fn readings(&self) -> f64 {
        match self.radio {
            Radio::Ble { .. } => 4.0,
            Radio::Lora { .. } => 3.0,
        }
    }

    fn drift(&mut self, rng: &mut Rng) {
        self.temperature = (self.temperature + 0.05 * rng.sym()).clamp(-10.0, 40.0);
        self.humidity = (self.humidity + 0.2 * rng.sym()).clamp(5.0, 95.0);
        self.pressure = (self.pressure + 0.05 * rng.sym()).clamp(950.0, 1050.0);
        self.battery = (self.battery - 0.001).max(5.0);
    }
}

fn sensors(n: usize, seed: u64) -> (Vec<Sensor>, SimDevices) {
    let mut rng = Rng(seed);
    let mut devices = SimDevices::default();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let i32_ = u32::try_from(i).unwrap_or(u32::MAX);
        let radio = if i % 2 == 0 {
            let b = i32_.to_be_bytes();
            let mac = [0xA4, 0xC1, 0x38 ^ 0x80, b[1], b[2], b[3]];
            let key = if (i / 2) % 2 == 1 {
                let mut k = [0u8; 16];
                k[..8].copy_from_slice(&rng.next().to_le_bytes());
                k[8..].copy_from_slice(&rng.next().to_le_bytes());
                devices.ble_keys.push((mac, k));
                Some(k)
            } else {
                None
            };
            Radio::Ble {
                mac,
                key,
                packet_id: 0,
                counter: 0,
            }
        } else {
            let dev_addr = 0x2600_0000 | (i32_ & 0x00ff_ffff);
            devices.lora_plaintext.push(dev_addr);
            Radio::Lora { dev_addr, fcnt: 0 }
        };
        out.push(Sensor {
            radio,
            temperature: 20.0 + 3.0 * rng.sym(),
            humidity: 50.0 + 10.0 * rng.sym(),
            battery: 90.0 + 10.0 * rng.sym().abs(),
            pressure: 1013.0 + 5.0 * rng.sym(),
        });
    }
    (out, devices)
}

/// The ingest configuration the `n` simulated sensors (seed `seed`) need.
pub fn devices(n: usize, seed: u64) -> SimDevices {
    sensors(n, seed).1
}

/// An unconfirmed-data-up LoRaWAN PHYPayload (no FOpts, MIC zero: the gateway does not check
/// it) carrying `frm_payload` on `fport`.
pub fn lorawan_uplink(dev_addr: u32, fcnt: u16, fport: u8, frm_payload: &[u8]) -> Vec<u8> {
    let mut phy = Vec::with_capacity(13 + frm_payload.len());
    phy.push(0x40);
    phy.extend_from_slice(&dev_addr.to_le_bytes());
    phy.push(0x00);
    phy.extend_from_slice(&fcnt.to_le_bytes());
    phy.push(fport);
    phy.extend_from_slice(frm_payload);
    phy.extend_from_slice(&[0; 4]);
    phy
}

/// An rxpk (868.1 MHz, SF7BW125, CRC ok) carrying `phy`.
pub fn rxpk(phy: &[u8], tmst: u32) -> RxPk {
    RxPk {
        time: None,
        tmms: None,
        tmst,
        freq: 868.1,
        chan: Some(0),
        rfch: Some(0),
        stat: 1,
        modu: Modulation::Lora,
        datr: DataRate::Lora("SF7BW125".into()),
        codr: Some("4/5".into()),
        rssi: Some(-87),
        lsnr: Some(7.5),
        size: u32::try_from(phy.len()).unwrap_or(u32::MAX),
        data: phy.to_vec(),
    }
}

/// A PUSH_DATA datagram.
pub fn push_data(token: u16, gateway_eui: [u8; 8], rxpk: Vec<RxPk>) -> Vec<u8> {
    Packet::PushData {
        token,
        gateway_eui,
        payload: PushDataPayload { rxpk, stat: None },
    }
    .emit()
    .unwrap_or_default()
}

fn ble_advert(s: &mut Sensor) -> Option<([u8; 6], Vec<u8>)> {
    let Radio::Ble {
        mac,
        key,
        packet_id,
        counter,
    } = &mut s.radio
    else {
        return None;
    };
    *packet_id = packet_id.wrapping_add(1);
    let mut objects = Vec::new();
    objects.extend(bthome::encode_raw(0x00, i64::from(*packet_id))?);
    objects.extend(bthome::encode_value(0x01, s.battery.round())?);
    objects.extend(bthome::encode_value(0x02, s.temperature)?);
    objects.extend(bthome::encode_value(0x03, s.humidity)?);
    objects.extend(bthome::encode_value(0x04, s.pressure)?);
    let data = match key {
        Some(k) => {
            *counter = counter.wrapping_add(1);
            bthome::encrypt(k, *mac, false, *counter, &objects).ok()?
        }
        None => {
            let mut d = vec![bthome::device_info_byte(false, false)];
            d.extend(objects);
            d
        }
    };
    Some((*mac, data))
}

fn lora_uplink(s: &mut Sensor, tmst: u32) -> Option<RxPk> {
    let Radio::Lora { dev_addr, fcnt } = &mut s.radio else {
        return None;
    };
    *fcnt = fcnt.wrapping_add(1);
    let mut e = lpp::Encoder::new();
    e.add_temperature(1, s.temperature).ok()?;
    e.add_humidity(2, s.humidity).ok()?;
    e.add_barometer(3, s.pressure).ok()?;
    let phy = lorawan_uplink(*dev_addr, *fcnt, 1, &e.finish());
    Some(rxpk(&phy, tmst))
}

/// Starts the simulator thread: BLE adverts into `inputs`, LoRa PUSH_DATA over UDP to
/// `cfg.lora_target`; runs until `stop` is set.
pub fn spawn(
    cfg: SimConfig,
    inputs: SyncSender<Input>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.set_nonblocking(true)?;
    let target = cfg.lora_target.map(|mut t| {
        if t.ip().is_unspecified() {
            t.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        t
    });
    std::thread::Builder::new()
        .name("simulate".into())
        .spawn(move || simulate(cfg, target, socket, inputs, stop))
}

fn simulate(
    cfg: SimConfig,
    target: Option<SocketAddr>,
    socket: UdpSocket,
    inputs: SyncSender<Input>,
    stop: Arc<AtomicBool>,
) {
    let (mut sensors, _) = sensors(cfg.sensors, cfg.seed);
    let mut rng = Rng(cfg.seed ^ 0x5157);
    if sensors.is_empty() {
        return;
    }
    let tick = Duration::from_millis(10);
    let start = Instant::now();
    let mut last = start;
    let mut last_pull = start - Duration::from_secs(10);
    let mut last_report = start;
    let mut credit = 0.0;
    let mut next = 0usize;
    let mut token: u16 = 0;
    let (mut adverts, mut datagrams, mut acks, mut dropped) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        let now = Instant::now();
        credit = (credit + cfg.rate * (now - last).as_secs_f64()).min(cfg.rate.max(10.0));
        last = now;
        if let Some(t) = target
            && now - last_pull >= Duration::from_secs(10)
        {
            last_pull = now;
            token = token.wrapping_add(1);
            if let Ok(p) = (Packet::PullData {
                token,
                gateway_eui: SIM_GATEWAY_EUI,
            })
            .emit()
            {
                let _ = socket.send_to(&p, t);
            }
        }
        let mut rxpks = Vec::new();
        let tmst = u32::try_from(start.elapsed().as_micros() & 0xffff_ffff).unwrap_or(0);
        let count = sensors.len();
        while credit >= sensors[next].readings() {
            let s = &mut sensors[next];
            credit -= s.readings();
            next = (next + 1) % count;
            s.drift(&mut rng);
            if let Some((mac, data)) = ble_advert(s) {
                adverts += 1;
                let input = Input::Ble {
                    mac,
                    rssi: Some(-60 - (rng.next() % 30) as i16),
                    data,
                    time_ms: now_ms(),
                };
                match inputs.try_send(input) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => dropped += 1,
                    Err(TrySendError::Disconnected(_)) => return,
                }
            } else if target.is_some()
                && let Some(r) = lora_uplink(s, tmst)
            {
                rxpks.push(r);
            }
        }
        if let Some(t) = target {
            for chunk in rxpks.chunks(8) {
                token = token.wrapping_add(1);
                let d = push_data(token, SIM_GATEWAY_EUI, chunk.to_vec());
                if socket.send_to(&d, t).is_ok() {
                    datagrams += 1;
                }
            }
            while let Ok((n, _)) = socket.recv_from(&mut buf) {
                if n >= 4 && buf[3] == 0x01 {
                    acks += 1;
                }
            }
        }
        if now - last_report >= Duration::from_secs(10) {
            last_report = now;
            tracing::info!(
                "simulate: {adverts} BLE adverts ({dropped} dropped at a full input queue), \
                 {datagrams} PUSH_DATA sent, {acks} PUSH_ACK received"
            );
        }
    }
}
