//! The values exchanged with a validation function (mirrors `wit/validation.wit`).

use crate::bindings::pvf::validation::types as wit;

/// Everything a validation function is given about one candidate block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationParams {
    /// The parachain head the candidate builds on.
    pub parent_head: Vec<u8>,
    /// The candidate's block data (proof of validity).
    pub block_data: Vec<u8>,
    /// The relay-chain block number the candidate is anchored to.
    pub relay_parent_number: u32,
    /// The relay-chain storage root the candidate is anchored to.
    pub relay_parent_storage_root: [u8; 32],
}

impl ValidationParams {
    /// Parameters with a zero storage root.
    pub fn new(parent_head: Vec<u8>, block_data: Vec<u8>, relay_parent_number: u32) -> Self {
        Self {
            parent_head,
            block_data,
            relay_parent_number,
            relay_parent_storage_root: [0; 32],
        }
    }

    /// The guest's view of these parameters: borrowed, nothing copied.
    pub(crate) fn to_wit(&self) -> wit::ValidationParams<'_> {
        wit::ValidationParams {
            parent_head: &self.parent_head,
            block_data: &self.block_data,
            relay_parent_number: self.relay_parent_number,
            relay_parent_storage_root: &self.relay_parent_storage_root,
        }
    }
}

/// A message to another parachain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundHrmpMessage {
    /// The receiving parachain.
    pub recipient: u32,
    /// The message payload.
    pub data: Vec<u8>,
}

/// What a valid candidate produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationResult {
    /// The new parachain head.
    pub head_data: Vec<u8>,
    /// Replacement validation code, if the candidate upgrades it.
    pub new_validation_code: Option<Vec<u8>>,
    /// Messages to the relay chain.
    pub upward_messages: Vec<Vec<u8>>,
    /// Messages to other parachains.
    pub horizontal_messages: Vec<OutboundHrmpMessage>,
    /// How many downward messages were processed.
    pub processed_downward_messages: u32,
    /// The horizontal-message watermark.
    pub hrmp_watermark: u32,
}

impl From<wit::ValidationResult> for ValidationResult {
    fn from(r: wit::ValidationResult) -> Self {
        Self {
            head_data: r.head_data,
            new_validation_code: r.new_validation_code,
            upward_messages: r.upward_messages,
            horizontal_messages: r
                .horizontal_messages
                .into_iter()
                .map(|m| OutboundHrmpMessage {
                    recipient: m.recipient,
                    data: m.data,
                })
                .collect(),
            processed_downward_messages: r.processed_downward_messages,
            hrmp_watermark: r.hrmp_watermark,
        }
    }
}
