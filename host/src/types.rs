//! The values exchanged with a validation function (mirrors `wit/validation.wit`).

use crate::bindings::pvf::validation::types as wit;
use crate::limits::{
    MAX_BLOCK_DATA_BYTES, MAX_HEAD_DATA_BYTES, MAX_HORIZONTAL_MESSAGE_BYTES,
    MAX_HORIZONTAL_MESSAGES, MAX_MESSAGES_TOTAL_BYTES, MAX_UPWARD_MESSAGE_BYTES,
    MAX_UPWARD_MESSAGES,
};

/// Everything a validation function is given about one candidate block.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ValidationParams {
    /// The parachain head the candidate builds on.
    #[serde(with = "serde_bytes")]
    pub parent_head: Vec<u8>,
    /// The candidate's block data (proof of validity).
    #[serde(with = "serde_bytes")]
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

    /// Checks the contract's limits on params ([`MAX_HEAD_DATA_BYTES`], [`MAX_BLOCK_DATA_BYTES`]);
    /// the reason when one is exceeded. Validation of over-limit params is `invalid`.
    pub fn check_limits(&self) -> Result<(), String> {
        if self.parent_head.len() > MAX_HEAD_DATA_BYTES {
            return Err(format!(
                "parent head of {} bytes exceeds the limit of {MAX_HEAD_DATA_BYTES}",
                self.parent_head.len()
            ));
        }
        if self.block_data.len() > MAX_BLOCK_DATA_BYTES {
            return Err(format!(
                "block data of {} bytes exceeds the limit of {MAX_BLOCK_DATA_BYTES}",
                self.block_data.len()
            ));
        }
        Ok(())
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboundHrmpMessage {
    /// The receiving parachain.
    pub recipient: u32,
    /// The message payload.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// What a valid candidate produces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidationResult {
    /// The new parachain head.
    #[serde(with = "serde_bytes")]
    pub head_data: Vec<u8>,
    /// Replacement validation code, if the candidate upgrades it.
    #[serde(with = "serde_bytes")]
    pub new_validation_code: Option<Vec<u8>>,
    /// Messages to the relay chain.
    #[serde(with = "upward")]
    pub upward_messages: Vec<Vec<u8>>,
    /// Messages to other parachains.
    pub horizontal_messages: Vec<OutboundHrmpMessage>,
    /// How many downward messages were processed.
    pub processed_downward_messages: u32,
    /// The horizontal-message watermark.
    pub hrmp_watermark: u32,
}

impl ValidationResult {
    /// Checks the contract's limits on results (head, new code at most `max_code_bytes`, counts
    /// and sizes of messages: see the crate's limits table); the reason when one is exceeded.
    pub fn check_limits(&self, max_code_bytes: usize) -> Result<(), String> {
        if self.head_data.len() > MAX_HEAD_DATA_BYTES {
            return Err(format!(
                "head data of {} bytes exceeds the limit of {MAX_HEAD_DATA_BYTES}",
                self.head_data.len()
            ));
        }
        if let Some(code) = &self.new_validation_code
            && code.len() > max_code_bytes
        {
            return Err(format!(
                "new validation code of {} bytes exceeds the code limit of {max_code_bytes}",
                code.len()
            ));
        }
        check_messages(
            "upward",
            self.upward_messages.iter().map(Vec::len),
            MAX_UPWARD_MESSAGES,
            MAX_UPWARD_MESSAGE_BYTES,
        )?;
        check_messages(
            "horizontal",
            self.horizontal_messages.iter().map(|m| m.data.len()),
            MAX_HORIZONTAL_MESSAGES,
            MAX_HORIZONTAL_MESSAGE_BYTES,
        )
    }
}

/// Checks a result's messages of one `kind` against the count, per-message and total limits.
fn check_messages(
    kind: &str,
    sizes: impl ExactSizeIterator<Item = usize>,
    max_count: usize,
    max_size: usize,
) -> Result<(), String> {
    if sizes.len() > max_count {
        return Err(format!(
            "{} {kind} messages exceed the limit of {max_count}",
            sizes.len()
        ));
    }
    let mut total = 0usize;
    for (i, size) in sizes.enumerate() {
        if size > max_size {
            return Err(format!(
                "{kind} message {i} of {size} bytes exceeds the limit of {max_size}"
            ));
        }
        total += size;
    }
    if total > MAX_MESSAGES_TOTAL_BYTES {
        return Err(format!(
            "{kind} messages of {total} bytes in all exceed the limit of {MAX_MESSAGES_TOTAL_BYTES}"
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> ValidationResult {
        ValidationResult {
            head_data: vec![0; MAX_HEAD_DATA_BYTES],
            new_validation_code: Some(vec![0; 100]),
            upward_messages: vec![vec![0; MAX_UPWARD_MESSAGE_BYTES]; 4],
            horizontal_messages: vec![
                OutboundHrmpMessage {
                    recipient: 1,
                    data: vec![0; MAX_HORIZONTAL_MESSAGE_BYTES],
                };
                4
            ],
            processed_downward_messages: 0,
            hrmp_watermark: 0,
        }
    }

    #[test]
    fn results_at_the_limits_pass_and_one_past_each_fails() {
        assert_eq!(result().check_limits(100), Ok(()));
        type Breach = (&'static str, fn(&mut ValidationResult));
        let breaches: [Breach; 7] = [
            ("head data", |r| r.head_data.push(0)),
            ("new validation code", |r| {
                r.new_validation_code.as_mut().unwrap().push(0)
            }),
            ("upward message 3", |r| r.upward_messages[3].push(0)),
            ("upward messages exceed the limit of 16384", |r| {
                r.upward_messages = vec![vec![]; MAX_UPWARD_MESSAGES + 1]
            }),
            ("upward messages of", |r| {
                r.upward_messages = vec![vec![0; MAX_UPWARD_MESSAGE_BYTES]; 129]
            }),
            ("horizontal message 0", |r| {
                r.horizontal_messages[0].data.push(0)
            }),
            ("horizontal messages exceed", |r| {
                r.horizontal_messages = vec![
                    OutboundHrmpMessage {
                        recipient: 0,
                        data: vec![]
                    };
                    MAX_HORIZONTAL_MESSAGES + 1
                ]
            }),
        ];
        for (needle, breach) in breaches {
            let mut r = result();
            breach(&mut r);
            let err = r.check_limits(100).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn params_over_the_limits_fail() {
        let ok = ValidationParams::new(
            vec![0; MAX_HEAD_DATA_BYTES],
            vec![0; MAX_BLOCK_DATA_BYTES],
            1,
        );
        assert_eq!(ok.check_limits(), Ok(()));
        let head = ValidationParams::new(vec![0; MAX_HEAD_DATA_BYTES + 1], vec![], 1);
        assert!(head.check_limits().unwrap_err().contains("parent head"));
        let block = ValidationParams::new(vec![], vec![0; MAX_BLOCK_DATA_BYTES + 1], 1);
        assert!(block.check_limits().unwrap_err().contains("block data"));
    }
}

/// Upward messages as a sequence of byte strings (each one length and a copy).
mod upward {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub(super) fn serialize<S: Serializer>(messages: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(messages.iter().map(|m| Bytes::new(m)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let messages = Vec::<ByteBuf>::deserialize(d)?;
        Ok(messages.into_iter().map(ByteBuf::into_vec).collect())
    }
}
