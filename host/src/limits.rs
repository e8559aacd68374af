//! Limits of the contract: how large a candidate's parameters and a validation function's result
//! may be. They are constants, the same on every node, so exceeding one is a deterministic
//! `invalid` verdict, and they bound what a guest or a caller can make the host hold in memory.
//!
//! The values follow the reference system (Polkadot's relay-chain configuration bounds):
//!
//! | what | limit | reference |
//! |---|---|---|
//! | parent head, result head | [`MAX_HEAD_DATA_BYTES`] = 1 MiB | `max_head_data_size` |
//! | block data (the proof of validity) | [`MAX_BLOCK_DATA_BYTES`] = 10 MiB | `MAX_POV_SIZE` |
//! | new validation code | the host's code limit ([`Config::max_code_bytes`](crate::Config::max_code_bytes)) | `max_code_size` |
//! | upward messages | [`MAX_UPWARD_MESSAGES`] = 16 384, each at most [`MAX_UPWARD_MESSAGE_BYTES`] = 128 KiB | `MAX_UPWARD_MESSAGE_NUM`, `MAX_UPWARD_MESSAGE_SIZE_BOUND` |
//! | horizontal messages | [`MAX_HORIZONTAL_MESSAGES`] = 16 384, each at most [`MAX_HORIZONTAL_MESSAGE_BYTES`] = 128 KiB | `MAX_HORIZONTAL_MESSAGE_NUM` |
//! | all upward (or all horizontal) message bytes of one result | [`MAX_MESSAGES_TOTAL_BYTES`] = 16 MiB | queue size bounds |
//!
//! A result over a limit is `invalid` ([`LimitKind::Result`](crate::LimitKind::Result)); params
//! over a limit are `invalid` too ([`LimitKind::Params`](crate::LimitKind::Params)): an oversized
//! proof of validity is the candidate's fault, as in the reference system.

/// The largest head data, in bytes: of the parent head in the params and of the head a valid
/// candidate produces.
pub const MAX_HEAD_DATA_BYTES: usize = 1 << 20;
/// The largest block data (proof of validity) of a candidate, in bytes.
pub const MAX_BLOCK_DATA_BYTES: usize = 10 << 20;
/// The most upward messages one result may carry.
pub const MAX_UPWARD_MESSAGES: usize = 16 * 1024;
/// The largest upward message, in bytes.
pub const MAX_UPWARD_MESSAGE_BYTES: usize = 128 * 1024;
/// The most horizontal (HRMP) messages one result may carry.
pub const MAX_HORIZONTAL_MESSAGES: usize = 16 * 1024;
/// The largest horizontal message payload, in bytes.
pub const MAX_HORIZONTAL_MESSAGE_BYTES: usize = 128 * 1024;
/// The most bytes all upward messages of one result may hold together; the same bound holds for
/// all horizontal messages together.
pub const MAX_MESSAGES_TOTAL_BYTES: usize = 16 << 20;
