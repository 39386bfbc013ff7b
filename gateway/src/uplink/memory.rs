//! An in-memory uplink for tests.

use std::collections::BTreeMap;

use super::{Ack, Uplink, UplinkError};
use crate::store::{Batch, QueuedReading};

/// An in-memory receiver: can be switched down and up, records every batch it accepted once
/// (de-duplicating re-sends by `first_seq`, as a real receiver must), and counts submissions
/// and duplicates so tests can check exactly-once delivery.
#[derive(Debug, Default)]
pub struct TestUplink {
    down: bool,
    lose_next_ack: bool,
    /// Accepted batches by `first_seq`.
    batches: BTreeMap<u64, Batch>,
    submissions: u64,
    duplicates: u64,
}

impl TestUplink {
    /// An uplink that is up and has received nothing.
    pub fn new() -> Self {
        TestUplink::default()
    }

    /// Switches the uplink down (`submit` fails with [`UplinkError::Down`]) or up.
    pub fn set_up(&mut self, up: bool) {
        self.down = !up;
    }

    /// Whether the uplink is up.
    pub fn is_up(&self) -> bool {
        !self.down
    }

    /// The next accepted batch's acknowledgement is lost: the batch is kept but `submit`
    /// fails, as when the network drops the reply (the sender must re-send).
    pub fn lose_next_ack(&mut self) {
        self.lose_next_ack = true;
    }

    /// The accepted batches, in `first_seq` order (each once).
    pub fn batches(&self) -> impl Iterator<Item = &Batch> {
        self.batches.values()
    }

    /// Every accepted reading, in `seq` order (each once).
    pub fn readings(&self) -> impl Iterator<Item = &QueuedReading> {
        self.batches.values().flat_map(|b| b.readings.iter())
    }

    /// `submit` calls that reached the receiver while up (including re-sends).
    pub fn submissions(&self) -> u64 {
        self.submissions
    }

    /// Re-sends of a batch already held.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

impl Uplink for TestUplink {
    fn submit(&mut self, batch: &Batch) -> Result<Ack, UplinkError> {
        if self.down {
            return Err(UplinkError::Down {
                reason: "test uplink switched down".into(),
            });
        }
        self.submissions += 1;
        let duplicate = match self.batches.get(&batch.first_seq) {
            Some(held) => {
                if held != batch {
                    return Err(UplinkError::Rejected {
                        batch_id: batch.id,
                        reason: format!(
                            "batch at seq {} differs from the one held (batch {})",
                            batch.first_seq, held.id
                        ),
                    });
                }
                self.duplicates += 1;
                true
            }
            None => {
                self.batches.insert(batch.first_seq, batch.clone());
                false
            }
        };
        if std::mem::take(&mut self.lose_next_ack) {
            return Err(UplinkError::Down {
                reason: "test uplink lost the acknowledgement".into(),
            });
        }
        Ok(Ack {
            batch_id: batch.id,
            duplicate,
        })
    }
}
