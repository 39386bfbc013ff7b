//! The LoRaWAN 1.0.x MAC layer as far as a gateway can read it without network keys: the
//! PHYPayload's MAC header and frame header (LoRaWAN 1.0.3 §4.1–§4.3), and FRMPayload
//! decryption when the caller supplies the session key (§4.3.3).
//!
//! What is **not** done: the MIC (§4.4, AES-CMAC with the NwkSKey) is carried but not verified
//! (a gateway does not hold the NwkSKey; the network server verifies it), join procedures (§6)
//! are recognised by MType only, and LoRaWAN 1.1 key separation (FNwkSIntKey, 32-bit FCnt
//! recovery beyond the 16 bits on the wire) is not modelled: decryption takes the FCnt the
//! caller supplies, by default the 16 wire bits.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};

/// Message type, the top three bits of MHDR (§4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MType {
    /// 000: join request.
    JoinRequest,
    /// 001: join accept.
    JoinAccept,
    /// 010: unconfirmed data up.
    UnconfirmedDataUp,
    /// 011: unconfirmed data down.
    UnconfirmedDataDown,
    /// 100: confirmed data up.
    ConfirmedDataUp,
    /// 101: confirmed data down.
    ConfirmedDataDown,
    /// 110: rejoin request (1.1) / RFU (1.0).
    RejoinRequest,
    /// 111: proprietary.
    Proprietary,
}

impl MType {
    /// The MType of an MHDR byte.
    pub fn from_mhdr(mhdr: u8) -> MType {
        match mhdr >> 5 {
            0 => MType::JoinRequest,
            1 => MType::JoinAccept,
            2 => MType::UnconfirmedDataUp,
            3 => MType::UnconfirmedDataDown,
            4 => MType::ConfirmedDataUp,
            5 => MType::ConfirmedDataDown,
            6 => MType::RejoinRequest,
            _ => MType::Proprietary,
        }
    }

    /// Whether this is an uplink data frame.
    pub fn is_data_up(self) -> bool {
        matches!(self, MType::UnconfirmedDataUp | MType::ConfirmedDataUp)
    }

    /// Whether this is a data frame (up or down).
    pub fn is_data(self) -> bool {
        matches!(
            self,
            MType::UnconfirmedDataUp
                | MType::ConfirmedDataUp
                | MType::UnconfirmedDataDown
                | MType::ConfirmedDataDown
        )
    }
}

/// Why a PHYPayload is not a readable LoRaWAN frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Too short for MHDR + FHDR + MIC (or a join request's fixed size).
    #[error("PHYPayload of {len} bytes is too short for a {what}")]
    TooShort {
        /// Its length.
        len: usize,
        /// What it was being read as.
        what: &'static str,
    },
    /// The MHDR's Major field is not LoRaWAN R1 (0).
    #[error("unsupported LoRaWAN major version {0}")]
    Major(u8),
    /// Not a data frame or join request (join accept, rejoin, proprietary).
    #[error("MType {0:?} carries no device data the gateway can read")]
    NotData(MType),
}

/// A parsed data frame (§4.3): MHDR | DevAddr | FCtrl | FCnt | FOpts | [FPort | FRMPayload] | MIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame<'a> {
    /// The message type.
    pub mtype: MType,
    /// Device address (sent little-endian; this is its numeric value, printed big-endian).
    pub dev_addr: u32,
    /// The frame control byte (ADR, ADRACKReq, ACK, FPending/ClassB, FOptsLen).
    pub fctrl: u8,
    /// The 16 least significant bits of the frame counter.
    pub fcnt: u16,
    /// MAC commands piggy-backed in the header (0–15 bytes).
    pub fopts: &'a [u8],
    /// The port, if the frame has a payload (0 = MAC commands, 1..=223 application).
    pub fport: Option<u8>,
    /// The (encrypted) application payload.
    pub frm_payload: &'a [u8],
    /// The message integrity code (not verified here).
    pub mic: [u8; 4],
}

impl DataFrame<'_> {
    /// Whether the frame travels device → network.
    pub fn is_uplink(&self) -> bool {
        self.mtype.is_data_up()
    }
}

/// A join request (§6.2.4): the only unencrypted frame that names the device by DevEUI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRequest {
    /// AppEUI / JoinEUI (numeric value; sent little-endian).
    pub app_eui: u64,
    /// DevEUI (numeric value; sent little-endian).
    pub dev_eui: u64,
    /// DevNonce.
    pub dev_nonce: u16,
}

/// A PHYPayload the gateway can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A data frame.
    Data(DataFrame<'a>),
    /// A join request.
    JoinRequest(JoinRequest),
}

/// Parses a PHYPayload (the rxpk `data`). Never panics.
pub fn parse(phy: &[u8]) -> Result<Frame<'_>, FrameError> {
    let Some(&mhdr) = phy.first() else {
        return Err(FrameError::TooShort {
            len: 0,
            what: "MHDR",
        });
    };
    let major = mhdr & 0x03;
    if major != 0 {
        return Err(FrameError::Major(major));
    }
    let mtype = MType::from_mhdr(mhdr);
    match mtype {
        MType::JoinRequest => {
            // MHDR | AppEUI 8 | DevEUI 8 | DevNonce 2 | MIC 4 = 23 bytes.
            if phy.len() != 23 {
                return Err(FrameError::TooShort {
                    len: phy.len(),
                    what: "join request",
                });
            }
            let le64 = |s: &[u8]| s.iter().rev().fold(0u64, |a, &b| (a << 8) | u64::from(b));
            Ok(Frame::JoinRequest(JoinRequest {
                app_eui: le64(&phy[1..9]),
                dev_eui: le64(&phy[9..17]),
                dev_nonce: u16::from_le_bytes([phy[17], phy[18]]),
            }))
        }
        m if m.is_data() => parse_data(phy, mtype).map(Frame::Data),
        other => Err(FrameError::NotData(other)),
    }
}

fn parse_data(phy: &[u8], mtype: MType) -> Result<DataFrame<'_>, FrameError> {
    // MHDR 1 | DevAddr 4 | FCtrl 1 | FCnt 2 | FOpts 0..15 | FPort 0..1 | FRMPayload | MIC 4.
    const MIN: usize = 1 + 7 + 4;
    let short = || FrameError::TooShort {
        len: phy.len(),
        what: "data frame",
    };
    if phy.len() < MIN {
        return Err(short());
    }
    let dev_addr = u32::from_le_bytes([phy[1], phy[2], phy[3], phy[4]]);
    let fctrl = phy[5];
    let fcnt = u16::from_le_bytes([phy[6], phy[7]]);
    let fopts_len = usize::from(fctrl & 0x0f);
    let mac_end = phy.len() - 4;
    let fhdr_end = 8 + fopts_len;
    if fhdr_end > mac_end {
        return Err(short());
    }
    let mut mic = [0u8; 4];
    mic.copy_from_slice(&phy[mac_end..]);
    let (fport, frm_payload) = if fhdr_end < mac_end {
        (Some(phy[fhdr_end]), &phy[fhdr_end + 1..mac_end])
    } else {
        (None, &phy[mac_end..mac_end])
    };
    Ok(DataFrame {
        mtype,
        dev_addr,
        fctrl,
        fcnt,
        fopts: &phy[8..fhdr_end],
        fport,
        frm_payload,
        mic,
    })
}

/// Decrypts (or encrypts: the operation is its own inverse) a FRMPayload, LoRaWAN 1.0.x
/// §4.3.3.1: for i = 1..=k, A_i = 0x01 | 0x00×4 | Dir | DevAddr (LE) | FCnt (32-bit LE) | 0x00 | i,
/// S_i = aes128_encrypt(K, A_i), payload ⊕ (S_1 | … | S_k). K is the AppSKey for FPort 1..=223
/// and the NwkSKey for FPort 0; `uplink` selects Dir (0 up, 1 down).
pub fn crypt_frm_payload(
    key: &[u8; 16],
    uplink: bool,
    dev_addr: u32,
    fcnt: u32,
    payload: &[u8],
) -> Vec<u8> {
    let cipher = Aes128::new(GenericArray::from_slice(key));
    let mut out = Vec::with_capacity(payload.len());
    for (i, chunk) in payload.chunks(16).enumerate() {
        let mut a = [0u8; 16];
        a[0] = 0x01;
        a[5] = if uplink { 0 } else { 1 };
        a[6..10].copy_from_slice(&dev_addr.to_le_bytes());
        a[10..14].copy_from_slice(&fcnt.to_le_bytes());
        // The block counter is one byte; a LoRaWAN payload (≤ 242 bytes) needs at most 16 blocks.
        a[15] = (i as u8).wrapping_add(1);
        let mut block = GenericArray::from(a);
        cipher.encrypt_block(&mut block);
        out.extend(chunk.iter().zip(block.iter()).map(|(p, s)| p ^ s));
    }
    out
}
