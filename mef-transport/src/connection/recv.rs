//! Incoming packets: the server's side of the handshake, the client's processing of the reply,
//! and authenticated `Data` packets with their frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::send::handshake_ad;
use super::{ConnectError, Connection, ConnectionHandle, Event, Keys, ServerHandshake, State};
use crate::config::Config;
use crate::crypto::{self, Handshake, StaticKeypair};
use crate::recovery::{SentFrames, SentPacket};
use crate::streams::Side;
use crate::wire::handshake::{MAX_LEN, TransportParams};
use crate::wire::header::flags;
use crate::wire::{Frame, Frames, HEADER_LEN, Header, Packet, PacketType};

/// Inputs for creating the server side of a connection from a client's Initial.
pub(crate) struct ServerInit<'a> {
    pub handle: ConnectionHandle,
    pub config: Arc<Config>,
    pub local: &'a StaticKeypair,
    pub local_cid: u64,
    pub remote: SocketAddr,
    pub seed: Zeroizing<[u8; 32]>,
    pub now: Instant,
}

/// The stamp on a packet, clamped to the demand in the same (authenticated) header, or `None`
/// if no router stamped it. A receiver never believes more than the sender asked for, so a
/// forged stamp can only lower a rate (see `docs/PROTOCOL.md` §4).
fn clamped_stamp(h: &Header, demand_kbps: u32) -> Option<u32> {
    (h.flags & flags::STAMPED != 0).then(|| h.stamp_kbps.min(demand_kbps))
}

impl Connection {
    /// Server side: verifies the Initial (Noise IK message 1), answers with message 2 and
    /// derives the keys. The server learns the client→server stamp here, ½ RTT after the
    /// client started, and uses it as its provisional rate (seed 003: the router allocates the
    /// share "to both endpoints").
    pub(crate) fn new_server(init: ServerInit<'_>, packet: &[u8]) -> Result<Self, ConnectError> {
        let header = Header::decode(packet).map_err(|_| ConnectError::CidMismatch)?;
        let mut c = Self::base(
            init.handle,
            Side::Server,
            init.config,
            init.local_cid,
            init.remote,
        );
        let prologue = crypto::prologue(&handshake_ad(&packet[..HEADER_LEN]));
        let mut noise = Handshake::responder(init.local, &prologue, &init.seed)?;
        let mut payload = [0u8; 512];
        let n = noise.read(&packet[HEADER_LEN..], &mut payload)?;
        let params = TransportParams::parse(&payload[..n], false)?;
        if params.cid != header.conn_id {
            return Err(ConnectError::CidMismatch);
        }
        c.apply_peer_params(&params);
        // The header demand is authenticated through the prologue; it equals params.demand.
        let initial_stamp = clamped_stamp(&header, header.demand_kbps.min(params.demand_kbps));
        let mut reply_params = [0u8; MAX_LEN];
        let m = c
            .local_params(initial_stamp)
            .emit(&mut reply_params, true)?;
        let pn = c.take_pn();
        let demand = c.configured_demand_kbps();
        let h = Header {
            packet_type: PacketType::Handshake,
            flags: 0,
            hops: 0,
            conn_id: c.remote_cid,
            packet_number: pn,
            demand_kbps: demand,
            current_rate_kbps: 0,
            stamp_kbps: demand,
            rtt_us: 0,
        };
        let mut reply = vec![0u8; HEADER_LEN + 256];
        h.emit(&mut reply);
        let k = noise.write(&reply_params[..m], &mut reply[HEADER_LEN..])?;
        reply.truncate(HEADER_LEN + k);
        c.remote_static = noise.remote_static();
        let (send, recv) = noise.split()?;
        c.keys = Some(Keys { send, recv });
        c.state = State::Established;
        if initial_stamp.is_some() {
            c.rate.on_stamp(initial_stamp, c.recovery.rtt.smoothed());
        }
        // The reply is tracked like a data packet: the client's first ACK gives the server
        // an RTT sample and the echo of the stamp on the reply (server→client direction).
        c.recovery.on_sent(SentPacket {
            pn,
            time_sent: init.now,
            size: reply.len() as u32,
            ack_eliciting: true,
            in_flight: true,
            frames: SentFrames::default(),
            done: false,
        });
        c.server_hs = Some(ServerHandshake {
            reply,
            pending: true,
            deadline: init.now + c.config.handshake_timeout,
        });
        c.reset_idle(init.now);
        c.events.push_back(Event::Accepted(c.handle));
        Ok(c)
    }

    /// A retransmitted Initial for this (already created) server connection: answer again
    /// with the cached reply unless the client already proved it has the keys.
    pub(crate) fn on_duplicate_initial(&mut self) {
        if let Some(hs) = &mut self.server_hs {
            hs.pending = true;
        }
    }

    /// Client side: the server's Handshake packet (Noise IK message 2).
    pub(crate) fn handle_handshake(&mut self, now: Instant, packet: &[u8]) {
        if !matches!(self.state, State::Handshaking) {
            return; // duplicate reply
        }
        let Ok(header) = Header::decode(packet) else {
            return;
        };
        let Some(hs) = self.client_hs.as_mut() else {
            return;
        };
        let mut payload = [0u8; 512];
        let n = match hs.noise.read(&packet[HEADER_LEN..], &mut payload) {
            Ok(n) => n,
            Err(e) => {
                // A failed read leaves snow's state unusable: restart from a fresh state is not
                // possible without a new ephemeral key, so count it and wait for the timeout.
                tracing::debug!(conn = self.handle.0, error = %e, "bad handshake reply");
                self.stats.decrypt_failures += 1;
                return;
            }
        };
        let Ok(params) = TransportParams::parse(&payload[..n], true) else {
            self.stats.decrypt_failures += 1;
            return;
        };
        let Some(hs) = self.client_hs.take() else {
            return;
        };
        let last_sent = hs.last_sent.unwrap_or(now);
        let (send, recv) = match hs.noise.split() {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(conn = self.handle.0, error = %e, "split failed");
                return;
            }
        };
        self.keys = Some(Keys { send, recv });
        self.apply_peer_params(&params);
        self.state = State::Established;
        self.stats.packets_received += 1;
        self.stats.bytes_received += packet.len() as u64;
        // First RTT sample: Initial → Handshake (each reply answers the latest Initial).
        self.recovery
            .rtt
            .update(now.saturating_duration_since(last_sent), Duration::ZERO);
        // The rate routers gave our Initial, echoed by the server: 1 RTT after we started,
        // before the first byte of data (RCP's SYN/SYN-ACK, done inside the handshake).
        let own_demand = self.configured_demand_kbps();
        let echo = params.initial_stamp_kbps.map(|s| s.min(own_demand));
        self.stats.last_echo_kbps = echo;
        self.rate.on_stamp(echo, self.recovery.rtt.smoothed());
        // Acknowledge the reply at once, echoing its stamp (server→client direction).
        self.replay.update(header.packet_number);
        self.ack.latest_stamp = clamped_stamp(&header, params.demand_kbps.min(header.demand_kbps));
        self.ack.latest_stamp_pn = Some(header.packet_number);
        self.ack
            .ranges
            .insert(header.packet_number..header.packet_number + 1);
        self.ack.largest = Some((header.packet_number, now));
        self.ack.unacked_eliciting = 1;
        self.ack.unacked_any = true;
        self.ack.immediate = true;
        self.reset_idle(now);
        if !self.handshake_done_emitted {
            self.handshake_done_emitted = true;
            self.events.push_back(Event::Connected(self.handle));
        }
    }

    /// An encrypted `Data` packet addressed to this connection.
    pub(crate) fn handle_data(&mut self, now: Instant, remote: SocketAddr, packet: &[u8]) {
        if matches!(self.state, State::Drained | State::Draining { .. }) {
            return;
        }
        let Some(keys) = &self.keys else {
            // Data before the Handshake reply (reordered): cannot be read yet; the sender's
            // loss recovery repeats it.
            self.stats.decrypt_failures += 1;
            return;
        };
        let Ok(p) = Packet::new_checked(packet) else {
            return;
        };
        let header = Header::parse(&p);
        let pn = header.packet_number;
        // Anti-replay check before the costly decryption (WireGuard §5.4.6).
        if !self.replay.check(pn) {
            self.stats.replays_dropped += 1;
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(packet);
        let range = match keys.recv.open(&mut scratch) {
            Ok(r) => r,
            Err(_) => {
                self.stats.decrypt_failures += 1;
                self.scratch = scratch;
                return;
            }
        };
        // Only an authenticated packet may move the window.
        if !self.replay.update(pn) {
            self.stats.replays_dropped += 1;
            self.scratch = scratch;
            return;
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += packet.len() as u64;
        self.remote = remote;
        self.server_hs = None; // the client has the keys: handshake confirmed
        self.sent_eliciting_since_recv = false;

        if let State::Closing { .. } = self.state {
            // RFC 9000 §10.2.1: answer packets in the closing state with CLOSE again.
            self.close_pending = true;
            self.scratch = scratch;
            return;
        }

        // The echo reports the stamp of the most recent packet (highest number).
        if self.ack.latest_stamp_pn.is_none_or(|l| pn > l) {
            self.ack.latest_stamp_pn = Some(pn);
            // Clamp to the demand in this authenticated header and the handshake's demand.
            let demand = header.demand_kbps.min(self.peer.demand_kbps);
            self.ack.latest_stamp = clamped_stamp(&header, demand);
        }

        let mut eliciting = false;
        let mut error = None;
        for frame in Frames::new(&scratch[range]) {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            };
            match frame {
                Frame::Padding(_) => {}
                Frame::Ping => eliciting = true,
                Frame::Ack(ack) => self.on_ack_frame(now, &ack),
                Frame::Stream(s) => {
                    eliciting = true;
                    if let Err(e) = self.streams.on_stream_frame(s.id, s.offset, s.data, s.fin) {
                        error = Some(e.to_string());
                        break;
                    }
                }
                Frame::MaxData(m) => {
                    eliciting = true;
                    self.streams.on_max_data(m);
                }
                Frame::MaxStreamData { id, max } => {
                    eliciting = true;
                    self.streams.on_max_stream_data(id, max);
                }
                Frame::Close { code, reason } => {
                    let reason = String::from_utf8_lossy(reason).into_owned();
                    self.events.push_back(Event::Closed {
                        conn: self.handle,
                        reason: super::CloseReason::Remote { code, reason },
                    });
                    let until = now + self.three_pto();
                    self.state = State::Draining { until };
                    self.recovery.clear();
                    self.scratch = scratch;
                    return;
                }
            }
            if matches!(self.state, State::Closing { .. }) {
                break;
            }
        }
        self.scratch = scratch;
        if let Some(e) = error {
            self.protocol_violation(now, e);
            return;
        }
        // After the frames, so a first RTT sample already shortens the 3·PTO floor.
        self.reset_idle(now);
        self.on_packet_received(now, pn, eliciting);
    }

    /// Receiver ACK bookkeeping (RFC 9000 §13.2.1–§13.2.2): ACK every
    /// `ack_eliciting_threshold` ack-eliciting packets, at once on reordering or a gap, and
    /// otherwise within max_ack_delay.
    fn on_packet_received(&mut self, now: Instant, pn: u64, eliciting: bool) {
        let prev_largest = self.ack.largest.map(|(l, _)| l);
        self.ack.ranges.insert(pn..pn + 1);
        self.ack.ranges.truncate_lowest(self.config.max_ack_ranges);
        if prev_largest.is_none_or(|l| pn > l) {
            self.ack.largest = Some((pn, now));
        }
        self.ack.unacked_any = true;
        if !eliciting {
            return;
        }
        self.ack.unacked_eliciting += 1;
        let out_of_order = prev_largest.is_some_and(|l| pn != l + 1);
        if out_of_order || self.ack.unacked_eliciting >= self.config.ack_eliciting_threshold {
            self.ack.immediate = true;
        } else if self.ack.deadline.is_none() {
            self.ack.deadline = Some(now + self.config.max_ack_delay);
        }
    }

    fn on_ack_frame(&mut self, now: Instant, ack: &crate::wire::Ack<'_>) {
        let delay = Duration::from_micros(ack.delay_us).min(self.peer.max_ack_delay);
        let mut out = std::mem::take(&mut self.ack_outcome);
        out.acked.clear();
        out.lost.clear();
        out.rtt_updated = false;
        // Ignore ranges above anything we sent (RFC 9000 §13.1 would make this an error).
        let sent_max = self.next_pn.saturating_sub(1);
        let ranges = ack
            .ranges()
            .filter(|(lo, _)| *lo <= sent_max)
            .map(|(lo, hi)| (lo, hi.min(sent_max)));
        self.recovery.on_ack(now, ranges, delay, &mut out);
        let srtt = self.recovery.rtt.smoothed();
        let window = self.rate.window(srtt);
        let app_limited = out.in_flight_before < window / 2;
        for p in &out.acked {
            for c in p.frames.stream_chunks() {
                self.streams.on_chunk_acked(c);
            }
            if let Some(l) = p.frames.ack_largest {
                // RFC 9000 §13.2.4: stop acknowledging what the peer saw acknowledged.
                self.ack
                    .ranges
                    .remove_below(l.saturating_sub(self.config.max_ack_ranges as u64));
            }
            if p.in_flight {
                self.rate
                    .on_ack(now, p.time_sent, u64::from(p.size), srtt, app_limited);
            }
        }
        if !out.lost.is_empty() {
            let lost = std::mem::take(&mut out.lost);
            self.on_packets_lost(now, &lost);
            out.lost = lost;
        }
        // Rate feedback from the newest ACK only (ACKs may be reordered).
        if self.largest_ack_processed.is_none_or(|l| ack.largest > l) {
            self.largest_ack_processed = Some(ack.largest);
            self.stats.last_echo_kbps = ack.rate_echo_kbps;
            self.rate.on_stamp(ack.rate_echo_kbps, srtt);
        }
        self.ack_outcome = out;
    }
}
