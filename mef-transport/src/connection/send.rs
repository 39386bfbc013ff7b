//! Building outgoing packets: the Initial, the cached Handshake reply, CLOSE, and `Data` packets
//! with ACK, flow-control and STREAM frames.

use std::time::Instant;

use super::{Connection, State};
use crate::crypto::TAG_LEN;
use crate::recovery::{SentFrames, SentPacket, StreamChunk};
use crate::streams::StreamId;
use crate::wire::frame::{Ack, Frame, StreamFrame, types};
use crate::wire::header::{bps_to_kbps, flags};
use crate::wire::{HEADER_LEN, Header, Packet, PacketType, varint};

/// Associated data of a handshake packet header for the Noise prologue: the AEAD associated
/// data with the packet number zeroed too, so retransmitted Initials share one prologue.
pub(crate) fn handshake_ad(header: &[u8]) -> [u8; HEADER_LEN] {
    let mut ad = Packet::new_unchecked(header).associated_data();
    ad[12..20].fill(0);
    ad
}

/// A frame smaller than this is not worth starting at the end of a packet.
const MIN_FRAME_ROOM: usize = 8;

impl Connection {
    pub(super) fn initial_header(&self, pn: u64) -> Header {
        let demand = self.configured_demand_kbps();
        Header {
            packet_type: PacketType::Initial,
            flags: 0,
            hops: 0,
            conn_id: self.local_cid,
            packet_number: pn,
            demand_kbps: demand,
            current_rate_kbps: 0,
            stamp_kbps: demand,
            rtt_us: 0,
        }
    }

    pub(super) fn take_pn(&mut self) -> u64 {
        let pn = self.next_pn;
        self.next_pn += 1;
        pn
    }

    /// Writes the next datagram for this connection into `buf`; `false` if nothing is due.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        match self.state {
            State::Drained | State::Draining { .. } => false,
            State::Closing { .. } => self.send_close(now, buf),
            State::Handshaking => self.send_initial(now, buf),
            State::Established => {
                if let Some(hs) = &mut self.server_hs
                    && hs.pending
                {
                    hs.pending = false;
                    buf.extend_from_slice(&hs.reply);
                    self.stats.packets_sent += 1;
                    self.stats.bytes_sent += buf.len() as u64;
                    return true;
                }
                self.send_data(now, buf)
            }
        }
    }

    fn send_initial(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        let Some(hs) = &self.client_hs else {
            return false;
        };
        if !hs.pending {
            return false;
        }
        let pn = self.take_pn();
        let header = self.initial_header(pn);
        let Some(hs) = &mut self.client_hs else {
            return false;
        };
        buf.resize(HEADER_LEN, 0);
        header.emit(buf);
        buf.extend_from_slice(&hs.msg1);
        hs.pending = false;
        hs.last_sent = Some(now);
        // Exponential backoff of Initial retransmissions (like RFC 9002 §6.2.1's PTO backoff).
        let backoff = self
            .config
            .handshake_retransmit
            .saturating_mul(1 << hs.attempts.min(10));
        hs.attempts += 1;
        hs.retransmit_at = Some(now + backoff);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += buf.len() as u64;
        true
    }

    fn data_header(&mut self, now: Instant, pn: u64, closing: bool) -> Header {
        let (demand, app_limited) = self.advertised_demand(now);
        let mut f = 0;
        if app_limited {
            f |= flags::APP_LIMITED;
        }
        if closing {
            f |= flags::CLOSING;
        }
        let rtt_us = if self.recovery.rtt.has_sample() {
            u32::try_from(self.recovery.rtt.smoothed().as_micros()).unwrap_or(u32::MAX)
        } else {
            0
        };
        Header {
            packet_type: PacketType::Data,
            flags: f,
            hops: 0,
            conn_id: self.remote_cid,
            packet_number: pn,
            demand_kbps: demand,
            current_rate_kbps: bps_to_kbps(self.rate_bps()),
            // The stamp starts at the demand; routers only ever lower it.
            stamp_kbps: demand,
            rtt_us,
        }
    }

    fn send_close(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        if !self.close_pending || self.keys.is_none() {
            return false;
        }
        self.close_pending = false;
        let Some((code, reason)) = self.close_frame.clone() else {
            return false;
        };
        buf.resize(self.mtu, 0);
        let max = self.mtu - TAG_LEN;
        // A final ACK first, so the peer learns that its last data (e.g. a FIN) arrived before
        // it processes the CLOSE (RFC 9000 §10.2 allows ACK frames in the closing packet).
        let mut n = 0;
        if self.ack.unacked_any {
            let room = max - HEADER_LEN - crate::wire::frame::MAX_REASON_LEN - 24;
            n = self
                .emit_ack(now, &mut buf[HEADER_LEN..HEADER_LEN + room])
                .unwrap_or(0);
        }
        let close = Frame::Close {
            code,
            reason: &reason,
        };
        let Ok(m) = close.emit(&mut buf[HEADER_LEN + n..max]) else {
            return false;
        };
        let pn = self.take_pn();
        let mut h = self.data_header_static(pn);
        h.flags |= flags::CLOSING;
        h.emit(buf);
        self.seal_into(buf, n + m)
    }

    /// A header without touching the demand meter (used for CLOSE).
    fn data_header_static(&self, pn: u64) -> Header {
        let demand = self.configured_demand_kbps();
        Header {
            packet_type: PacketType::Data,
            flags: 0,
            hops: 0,
            conn_id: self.remote_cid,
            packet_number: pn,
            demand_kbps: demand,
            current_rate_kbps: 0,
            stamp_kbps: demand,
            rtt_us: 0,
        }
    }

    fn seal_into(&mut self, buf: &mut Vec<u8>, payload_len: usize) -> bool {
        let Some(keys) = &self.keys else { return false };
        match keys.send.seal(buf, payload_len) {
            Ok(total) => {
                buf.truncate(total);
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += total as u64;
                true
            }
            Err(e) => {
                tracing::warn!(conn = self.handle.0, error = %e, "seal failed");
                false
            }
        }
    }

    fn send_data(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        if self.keys.is_none() {
            return false;
        }
        self.next_pacing = None;
        let srtt = self.recovery.rtt.smoothed();
        let ack_pending = self.ack.unacked_any && !self.ack.ranges.is_empty();
        let ack_due = self.ack.unacked_eliciting > 0
            && (self.ack.immediate || self.ack.deadline.is_some_and(|t| now >= t));
        let want = self.probes > 0
            || self.ping_pending
            || self.streams.has_sendable()
            || self.streams.has_flow_updates();
        let mut eliciting_ok = false;
        if want {
            if self.probes > 0 {
                eliciting_ok = true;
            } else if self.recovery.bytes_in_flight + self.mtu as u64 <= self.rate.window(srtt) {
                let size = (self.mtu + self.wire_overhead) as u64;
                match self.rate.pacing_delay(now, srtt, size) {
                    None => eliciting_ok = true,
                    Some(t) => self.next_pacing = Some(t),
                }
            }
        }
        if !eliciting_ok && !ack_due {
            return false;
        }
        buf.resize(self.mtu, 0);
        let max = self.mtu - TAG_LEN;
        let mut pos = HEADER_LEN;
        let mut frames = SentFrames::default();
        let mut eliciting = false;
        let mut retransmitted = false;

        if ack_pending && let Some(n) = self.emit_ack(now, &mut buf[pos..max]) {
            pos += n;
            frames.ack_largest = self.ack.largest.map(|(pn, _)| pn);
        }

        if eliciting_ok {
            if let Some(m) = self.streams.take_max_data() {
                match Frame::MaxData(m).emit(&mut buf[pos..max]) {
                    Ok(n) => {
                        pos += n;
                        frames.max_data = true;
                        eliciting = true;
                    }
                    Err(_) => self.streams.max_data_lost(),
                }
            }
            while let Some((id, m)) = self.streams.take_max_stream_data() {
                match (Frame::MaxStreamData { id: id.0, max: m }).emit(&mut buf[pos..max]) {
                    Ok(n) => {
                        pos += n;
                        frames.max_stream_data.push(id.0);
                        eliciting = true;
                    }
                    Err(_) => {
                        self.streams.max_stream_data_lost(id.0);
                        break;
                    }
                }
            }
            // STREAM frames fill the rest of the packet.
            loop {
                let remaining = max - pos;
                if remaining < MIN_FRAME_ROOM {
                    break;
                }
                let budget = |id: StreamId, off: u64| {
                    let hdr = StreamFrame::header_len(id.0, off, 0, false);
                    remaining.checked_sub(hdr)
                };
                let Some(c) = self.streams.next_chunk(budget) else {
                    break;
                };
                let hdr_nolen = StreamFrame::header_len(c.id.0, c.offset, 0, false);
                let room = remaining - hdr_nolen;
                // The last frame omits its length and runs to the end of the payload
                // (RFC 9000 §19.8), saving up to 2 bytes per packet.
                let explicit = room - c.len >= MIN_FRAME_ROOM + varint::size(c.len as u64);
                let Ok(h) = StreamFrame::emit_header(
                    &mut buf[pos..max],
                    c.id.0,
                    c.offset,
                    c.len,
                    c.fin,
                    explicit,
                ) else {
                    break;
                };
                pos += h;
                self.streams.copy_chunk(&c, &mut buf[pos..pos + c.len]);
                pos += c.len;
                eliciting = true;
                let chunk = StreamChunk {
                    id: c.id.0,
                    offset: c.offset,
                    len: c.len as u32,
                    fin: c.fin,
                };
                if frames.stream.is_none() {
                    frames.stream = Some(chunk);
                } else {
                    frames.more_streams.push(chunk);
                }
                if c.retransmit {
                    retransmitted = true;
                    self.stats.bytes_retransmitted += c.len as u64;
                } else {
                    self.stats.stream_bytes_sent += c.len as u64;
                }
                if !explicit {
                    break;
                }
            }
            if !eliciting && (self.ping_pending || self.probes > 0) && pos < max {
                buf[pos] = types::PING;
                pos += 1;
                eliciting = true;
            }
        }
        if pos == HEADER_LEN {
            return false;
        }
        let pn = self.take_pn();
        let header = self.data_header(now, pn, false);
        header.emit(buf);
        if !self.seal_into(buf, pos - HEADER_LEN) {
            return false;
        }
        let size = buf.len();
        let wire = (size + self.wire_overhead) as u64;
        self.meter_sent(now, wire);
        if eliciting {
            self.ping_pending = false;
            self.probes = self.probes.saturating_sub(1);
            self.rate.on_sent(wire);
            if retransmitted {
                self.stats.packets_retransmitted += 1;
            }
            if !self.sent_eliciting_since_recv {
                self.sent_eliciting_since_recv = true;
                self.reset_idle(now);
            }
            self.recovery.on_sent(SentPacket {
                pn,
                time_sent: now,
                size: size as u32,
                ack_eliciting: true,
                in_flight: true,
                frames,
                done: false,
            });
        }
        true
    }

    /// Emits an ACK frame for the received ranges (newest first, bounded) and resets the ACK
    /// state (RFC 9000 §13.2).
    fn emit_ack(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let (_, at) = self.ack.largest?;
        self.ack_ranges_buf.clear();
        self.ack_ranges_buf.extend(
            self.ack
                .ranges
                .iter()
                .rev()
                .take(self.config.max_ack_ranges)
                .map(|r| (r.start, r.end - 1)),
        );
        let delay = now.saturating_duration_since(at).as_micros() as u64;
        let echo = self.ack.latest_stamp;
        // If the range list does not fit, send fewer ranges.
        let mut count = self.ack_ranges_buf.len();
        while count > 0 {
            if let Ok(n) = Ack::emit(out, delay, echo, &self.ack_ranges_buf[..count]) {
                self.ack.unacked_eliciting = 0;
                self.ack.unacked_any = false;
                self.ack.immediate = false;
                self.ack.deadline = None;
                return Some(n);
            }
            count /= 2;
        }
        None
    }
}
