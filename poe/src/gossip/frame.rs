//! The gossip framing: one frame per transmit, its own compact binary codec (independent of
//! `poe::wire`), decoded strictly into typed values.
//!
//! ```text
//! frame         = version(u8 = 1) kind(u8) body             ; no trailing bytes
//! topic         = len(u8, 1..=255) UTF-8 bytes
//! kind 1 PUBLISH       body = topic data_len(u32 BE, <= MAX_DATA_LEN) data
//! kind 2 SUBSCRIPTIONS body = count(u16 BE, 1..=MAX_TOPICS) { action(u8: 0 leave, 1 join) topic }
//! kind 3 GRAFT         body = count(u16 BE, 1..=MAX_TOPICS) { topic }
//! kind 4 PRUNE         body = backoff_secs(u16 BE) count(u16 BE, 1..=MAX_TOPICS) { topic }
//! kind 5 IHAVE         body = topic count(u16 BE, 1..=MAX_IDS) { message id (32 bytes) }
//! kind 6 IWANT         body = count(u16 BE, 1..=MAX_IDS) { message id (32 bytes) }
//! kind 7 IDONTWANT     body = count(u16 BE, 1..=MAX_IDS) { message id (32 bytes) }
//! ```
//!
//! IDONTWANT is gossipsub v1.2's control message ("IDONTWANT Message"): the sender already has
//! these messages, so the receiver should not push them to it.
//!
//! Decoding never panics and never allocates more than the input justifies: every count is
//! checked against both its limit and the bytes that remain before anything is reserved.

use alloc::string::String;
use alloc::vec::Vec;

use super::MessageId;

/// Version byte of every frame.
pub const VERSION: u8 = 1;
/// Longest topic, in bytes (the length prefix is one byte).
pub const MAX_TOPIC_LEN: usize = 255;
/// Hard codec limit on a message's data; [`super::GossipConfig::max_message_size`] is usually
/// much smaller and is enforced by the engine.
pub const MAX_DATA_LEN: usize = 1 << 20;
/// Most topics in one SUBSCRIPTIONS, GRAFT or PRUNE frame.
pub const MAX_TOPICS: usize = 256;
/// Most message ids in one IHAVE or IWANT frame.
pub const MAX_IDS: usize = 1024;

const KIND_PUBLISH: u8 = 1;
const KIND_SUBSCRIPTIONS: u8 = 2;
const KIND_GRAFT: u8 = 3;
const KIND_PRUNE: u8 = 4;
const KIND_IHAVE: u8 = 5;
const KIND_IWANT: u8 = 6;
const KIND_IDONTWANT: u8 = 7;

/// One subscription change announced by a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `true` to join the topic, `false` to leave it.
    pub subscribe: bool,
    /// The topic.
    pub topic: String,
}

/// A decoded gossip frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A full message (eager push, or the answer to IWANT).
    Publish {
        /// Topic it is published on.
        topic: String,
        /// Payload.
        data: Vec<u8>,
    },
    /// The sender joined or left topics (sent to every peer on connect and on change).
    Subscriptions(Vec<Subscription>),
    /// The sender added the receiver to its mesh of these topics.
    Graft {
        /// Topics grafted.
        topics: Vec<String>,
    },
    /// The sender removed the receiver from its mesh of these topics.
    Prune {
        /// Topics pruned.
        topics: Vec<String>,
        /// Seconds before the receiver may GRAFT again (gossipsub v1.1 backoff).
        backoff_secs: u16,
    },
    /// The sender has these recent messages of `topic` (lazy gossip).
    IHave {
        /// Topic of the messages.
        topic: String,
        /// Their ids.
        ids: Vec<MessageId>,
    },
    /// The sender wants these messages (answer to IHAVE).
    IWant {
        /// Ids requested.
        ids: Vec<MessageId>,
    },
    /// The sender already has these messages: do not push them to it (gossipsub v1.2,
    /// "IDONTWANT Message").
    IDontWant {
        /// Ids the sender does not want pushed.
        ids: Vec<MessageId>,
    },
}

/// Why a frame did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer is empty.
    #[error("empty frame")]
    Empty,
    /// The version byte is not [`VERSION`].
    #[error("unsupported frame version {0}")]
    Version(u8),
    /// The kind byte names no frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The frame ends before a field does.
    #[error("truncated frame: {field} needs {needed} bytes, {remaining} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the frame.
        remaining: usize,
    },
    /// Bytes follow the last field.
    #[error("{0} trailing bytes after the frame")]
    TrailingBytes(usize),
    /// A topic of length zero.
    #[error("empty topic")]
    EmptyTopic,
    /// A topic that is not UTF-8.
    #[error("topic is not UTF-8")]
    TopicNotUtf8,
    /// A SUBSCRIPTIONS action byte other than 0 or 1.
    #[error("bad subscription action byte {0}")]
    BadAction(u8),
    /// A list with zero entries (the encoder never sends one).
    #[error("empty {0} list")]
    EmptyList(&'static str),
    /// A list longer than its limit.
    #[error("{what} list of {count} entries exceeds the limit {max}")]
    TooMany {
        /// The list.
        what: &'static str,
        /// Entries announced.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Data longer than [`MAX_DATA_LEN`].
    #[error("data of {len} bytes exceeds the codec limit {max}")]
    DataTooLong {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Frame {
    /// The frame's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Publish { .. } => KIND_PUBLISH,
            Frame::Subscriptions(_) => KIND_SUBSCRIPTIONS,
            Frame::Graft { .. } => KIND_GRAFT,
            Frame::Prune { .. } => KIND_PRUNE,
            Frame::IHave { .. } => KIND_IHAVE,
            Frame::IWant { .. } => KIND_IWANT,
            Frame::IDontWant { .. } => KIND_IDONTWANT,
        }
    }

    /// Whether encoded `bytes` are a PUBLISH frame (a full message rather than control).
    pub fn is_publish_bytes(bytes: &[u8]) -> bool {
        bytes.get(1) == Some(&KIND_PUBLISH)
    }

    /// Append the encoding to `out`. The caller keeps the limits (topic lengths, list lengths,
    /// data length); the engine only builds frames within them, and [`Frame::decode`] rejects
    /// frames outside them.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.kind());
        match self {
            Frame::Publish { topic, data } => {
                put_topic(out, topic);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes());
                out.extend_from_slice(data);
            }
            Frame::Subscriptions(subs) => {
                put_u16(out, subs.len());
                for s in subs {
                    out.push(u8::from(s.subscribe));
                    put_topic(out, &s.topic);
                }
            }
            Frame::Graft { topics } => put_topics(out, topics),
            Frame::Prune {
                topics,
                backoff_secs,
            } => {
                out.extend_from_slice(&backoff_secs.to_be_bytes());
                put_topics(out, topics);
            }
            Frame::IHave { topic, ids } => {
                put_topic(out, topic);
                put_ids(out, ids);
            }
            Frame::IWant { ids } | Frame::IDontWant { ids } => put_ids(out, ids),
        }
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decode one whole frame; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let mut r = Reader { buf: bytes };
        let version = r.u8("version").map_err(|_| FrameError::Empty)?;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = r.u8("kind")?;
        let frame = match kind {
            KIND_PUBLISH => {
                let topic = r.topic()?;
                let len = r.u32("data length")? as usize;
                if len > MAX_DATA_LEN {
                    return Err(FrameError::DataTooLong {
                        len,
                        max: MAX_DATA_LEN,
                    });
                }
                let data = r.take("data", len)?.to_vec();
                Frame::Publish { topic, data }
            }
            KIND_SUBSCRIPTIONS => {
                // Each entry is at least 3 bytes (action, length, one topic byte).
                let n = r.count("subscription", MAX_TOPICS, 3)?;
                let mut subs = Vec::with_capacity(n);
                for _ in 0..n {
                    let subscribe = match r.u8("action")? {
                        0 => false,
                        1 => true,
                        b => return Err(FrameError::BadAction(b)),
                    };
                    subs.push(Subscription {
                        subscribe,
                        topic: r.topic()?,
                    });
                }
                Frame::Subscriptions(subs)
            }
            KIND_GRAFT => Frame::Graft {
                topics: r.topics()?,
            },
            KIND_PRUNE => {
                let backoff_secs = r.u16("backoff")?;
                Frame::Prune {
                    topics: r.topics()?,
                    backoff_secs,
                }
            }
            KIND_IHAVE => {
                let topic = r.topic()?;
                Frame::IHave {
                    topic,
                    ids: r.ids()?,
                }
            }
            KIND_IWANT => Frame::IWant { ids: r.ids()? },
            KIND_IDONTWANT => Frame::IDontWant { ids: r.ids()? },
            k => return Err(FrameError::UnknownKind(k)),
        };
        if !r.buf.is_empty() {
            return Err(FrameError::TrailingBytes(r.buf.len()));
        }
        Ok(frame)
    }
}

fn put_u16(out: &mut Vec<u8>, n: usize) {
    // Lists are built within MAX_TOPICS / MAX_IDS, far below u16::MAX.
    out.extend_from_slice(&(n as u16).to_be_bytes());
}

fn put_topic(out: &mut Vec<u8>, topic: &str) {
    // Topics are validated to 1..=MAX_TOPIC_LEN bytes before they reach a frame.
    out.push(topic.len() as u8);
    out.extend_from_slice(topic.as_bytes());
}

fn put_topics(out: &mut Vec<u8>, topics: &[String]) {
    put_u16(out, topics.len());
    for t in topics {
        put_topic(out, t);
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &[MessageId]) {
    put_u16(out, ids.len());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
}

/// A cursor over the frame; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated {
                field,
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        let b = self.take(field, 1)?;
        Ok(b[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        let b = self.take(field, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        let b = self.take(field, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A list count in `1..=max` whose entries (at least `min_entry` bytes each) fit in what
    /// remains, so reserving `count` entries is justified by the input.
    fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_entry: usize,
    ) -> Result<usize, FrameError> {
        let n = usize::from(self.u16(what)?);
        if n == 0 {
            return Err(FrameError::EmptyList(what));
        }
        if n > max {
            return Err(FrameError::TooMany {
                what,
                count: n,
                max,
            });
        }
        let needed = n.saturating_mul(min_entry);
        if needed > self.buf.len() {
            return Err(FrameError::Truncated {
                field: what,
                needed,
                remaining: self.buf.len(),
            });
        }
        Ok(n)
    }

    fn topic(&mut self) -> Result<String, FrameError> {
        let len = usize::from(self.u8("topic length")?);
        if len == 0 {
            return Err(FrameError::EmptyTopic);
        }
        let bytes = self.take("topic", len)?;
        let s = core::str::from_utf8(bytes).map_err(|_| FrameError::TopicNotUtf8)?;
        Ok(String::from(s))
    }

    fn topics(&mut self) -> Result<Vec<String>, FrameError> {
        let n = self.count("topic", MAX_TOPICS, 2)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.topic()?);
        }
        Ok(v)
    }

    fn ids(&mut self) -> Result<Vec<MessageId>, FrameError> {
        let n = self.count("message id", MAX_IDS, 32)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let b = self.take("message id", 32)?;
            let mut id = [0u8; 32];
            id.copy_from_slice(b);
            v.push(MessageId(id));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn samples() -> Vec<Frame> {
        let id = MessageId::new("blocks", b"x");
        vec![
            Frame::Publish {
                topic: "blocks".into(),
                data: b"hello".to_vec(),
            },
            Frame::Publish {
                topic: "t".into(),
                data: Vec::new(),
            },
            Frame::Subscriptions(vec![
                Subscription {
                    subscribe: true,
                    topic: "votes".into(),
                },
                Subscription {
                    subscribe: false,
                    topic: "τοπικό".into(),
                },
            ]),
            Frame::Graft {
                topics: vec!["a".into(), "b".into()],
            },
            Frame::Prune {
                topics: vec!["a".into()],
                backoff_secs: 60,
            },
            Frame::IHave {
                topic: "blocks".into(),
                ids: vec![id, MessageId([7; 32])],
            },
            Frame::IWant { ids: vec![id] },
            Frame::IDontWant {
                ids: vec![id, MessageId([9; 32])],
            },
        ]
    }

    #[test]
    fn round_trip_every_kind() {
        for f in samples() {
            let bytes = f.to_bytes();
            assert_eq!(Frame::decode(&bytes), Ok(f.clone()), "{f:?}");
            assert_eq!(Frame::is_publish_bytes(&bytes), f.kind() == KIND_PUBLISH);
        }
    }

    #[test]
    fn exact_encoding_of_a_publish() {
        let f = Frame::Publish {
            topic: "ab".into(),
            data: vec![9, 8],
        };
        assert_eq!(f.to_bytes(), vec![1, 1, 2, b'a', b'b', 0, 0, 0, 2, 9, 8]);
    }

    #[test]
    fn strict_decoding_rejects_with_reasons() {
        assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::decode(&[2, 1]), Err(FrameError::Version(2)));
        assert_eq!(Frame::decode(&[1, 9]), Err(FrameError::UnknownKind(9)));
        assert_eq!(Frame::decode(&[1, 8]), Err(FrameError::UnknownKind(8)));
        let mut b = samples()[0].to_bytes();
        b.push(0);
        assert_eq!(Frame::decode(&b), Err(FrameError::TrailingBytes(1)));
        assert!(matches!(
            Frame::decode(&b[..b.len() - 3]),
            Err(FrameError::Truncated { field: "data", .. })
        ));
        assert_eq!(
            Frame::decode(&[1, 1, 0, 0, 0, 0, 0]),
            Err(FrameError::EmptyTopic)
        );
        assert_eq!(
            Frame::decode(&[1, 1, 1, 0xff, 0, 0, 0, 0]),
            Err(FrameError::TopicNotUtf8)
        );
        assert_eq!(
            Frame::decode(&[1, 2, 0, 1, 2, 1, b'a']),
            Err(FrameError::BadAction(2))
        );
        assert_eq!(
            Frame::decode(&[1, 3, 0, 0]),
            Err(FrameError::EmptyList("topic"))
        );
        assert!(matches!(
            Frame::decode(&[1, 6, 0xff, 0xff]),
            Err(FrameError::TooMany { count: 65535, .. })
        ));
        // A count that the remaining bytes cannot hold is refused before allocating.
        assert!(matches!(
            Frame::decode(&[1, 6, 0, 200, 0, 0]),
            Err(FrameError::Truncated {
                field: "message id",
                needed: 6400,
                ..
            })
        ));
        assert!(matches!(
            Frame::decode(&[1, 1, 1, b'a', 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::DataTooLong { .. })
        ));
    }

    #[test]
    fn idontwant_is_bounded_and_strict() {
        let id = MessageId([3; 32]);
        let bytes = Frame::IDontWant { ids: vec![id] }.to_bytes();
        let mut want = vec![1, 7, 0, 1];
        want.extend_from_slice(&[3; 32]);
        assert_eq!(bytes, want);
        assert_eq!(
            Frame::decode(&[1, 7, 0, 0]),
            Err(FrameError::EmptyList("message id"))
        );
        assert_eq!(
            Frame::decode(&[1, 7, 0x04, 0x01]),
            Err(FrameError::TooMany {
                what: "message id",
                count: MAX_IDS + 1,
                max: MAX_IDS
            })
        );
        assert!(matches!(
            Frame::decode(&bytes[..bytes.len() - 1]),
            Err(FrameError::Truncated {
                field: "message id",
                ..
            })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Frame::decode(&long), Err(FrameError::TrailingBytes(1)));
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        "[a-z0-9/._-]{1,40}"
    }

    fn id_strategy() -> impl Strategy<Value = MessageId> {
        any::<[u8; 32]>().prop_map(MessageId)
    }

    fn frame_strategy() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                topic_strategy(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(topic, data)| Frame::Publish { topic, data }),
            proptest::collection::vec(
                (any::<bool>(), topic_strategy())
                    .prop_map(|(subscribe, topic)| Subscription { subscribe, topic }),
                1..8
            )
            .prop_map(Frame::Subscriptions),
            proptest::collection::vec(topic_strategy(), 1..8)
                .prop_map(|topics| Frame::Graft { topics }),
            (
                proptest::collection::vec(topic_strategy(), 1..8),
                any::<u16>()
            )
                .prop_map(|(topics, backoff_secs)| Frame::Prune {
                    topics,
                    backoff_secs
                }),
            (
                topic_strategy(),
                proptest::collection::vec(id_strategy(), 1..20)
            )
                .prop_map(|(topic, ids)| Frame::IHave { topic, ids }),
            proptest::collection::vec(id_strategy(), 1..20).prop_map(|ids| Frame::IWant { ids }),
            proptest::collection::vec(id_strategy(), 1..20)
                .prop_map(|ids| Frame::IDontWant { ids }),
        ]
    }

    proptest! {
        #[test]
        fn any_valid_frame_round_trips(f in frame_strategy()) {
            prop_assert_eq!(Frame::decode(&f.to_bytes()), Ok(f));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(f) = Frame::decode(&bytes) {
                // Whatever decodes re-encodes to the same bytes (the encoding is canonical).
                prop_assert_eq!(f.to_bytes(), bytes);
            }
        }

        #[test]
        fn idontwant_bodies_never_panic_and_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            ids in proptest::collection::vec(id_strategy(), 1..40),
        ) {
            // Arbitrary bytes after the IDONTWANT header: a typed error or a canonical frame.
            let mut bytes = vec![VERSION, KIND_IDONTWANT];
            bytes.extend_from_slice(&body);
            match Frame::decode(&bytes) {
                Ok(f) => {
                    let is_idontwant = matches!(f, Frame::IDontWant { .. });
                    prop_assert!(is_idontwant);
                    prop_assert_eq!(f.to_bytes(), bytes);
                }
                Err(e) => {
                    let unknown = matches!(e, FrameError::UnknownKind(_));
                    prop_assert!(!unknown);
                }
            }
            let f = Frame::IDontWant { ids };
            prop_assert_eq!(Frame::decode(&f.to_bytes()), Ok(f));
        }

        #[test]
        fn mutated_frames_never_panic(
            f in frame_strategy(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut bytes = f.to_bytes();
            for (i, x) in flips {
                let n = bytes.len();
                bytes[i % n] ^= x;
            }
            let keep = cut % (bytes.len() + 1);
            let _ = Frame::decode(&bytes[..keep]);
            if let Ok(g) = Frame::decode(&bytes) {
                prop_assert_eq!(g.to_bytes(), bytes);
            }
        }
    }
}
