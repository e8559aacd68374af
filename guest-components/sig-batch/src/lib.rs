//! The block data of the guests `sig-verify` and `sig-verify-wasm`: a batch of ed25519-signed
//! messages, and the verdict both guests give on it, byte for byte.
//!
//! Format (all integers little-endian):
//!
//! ```text
//! u32 n
//! n times: u32 message length, the message, 64-byte signature, 32-byte public key
//! ```
//!
//! Nothing may follow the last item.
//!
//! The whole batch is parsed before any signature is checked: a malformed batch is rejected
//! as malformed (and costs no signature check) even when one of its signatures is bad too.
//!
//! This file has no dependencies and no crate attributes: `tests/guests` includes it as a
//! module (`#[path]`) so that its builders and the guests share one parser.

/// The length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// The length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// The length of the item count, and of each item's message length.
pub const LENGTH_LEN: usize = 4;
/// The fewest bytes an item can take (an empty message).
pub const MIN_ITEM_LEN: usize = LENGTH_LEN + SIGNATURE_LEN + PUBLIC_KEY_LEN;

/// One signed message of a batch, borrowed from the block data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    /// The signed message.
    pub message: &'a [u8],
    /// Its ed25519 signature.
    pub signature: &'a [u8; SIGNATURE_LEN],
    /// The ed25519 public key that signed it.
    pub public_key: &'a [u8; PUBLIC_KEY_LEN],
}

/// Parses a batch. `Err` holds the guests' verdict on a malformed batch,
/// `malformed batch: <what>`.
///
/// Allocates at most one `Item` per [`MIN_ITEM_LEN`] bytes of `data`, whatever the item count
/// claims.
pub fn parse(data: &[u8]) -> Result<Vec<Item<'_>>, String> {
    let malformed = |what: String| format!("malformed batch: {what}");
    let Some((count, mut rest)) = data.split_first_chunk::<LENGTH_LEN>() else {
        return Err(malformed(format!(
            "{} bytes, too short for the {LENGTH_LEN}-byte item count",
            data.len()
        )));
    };
    let n = u32::from_le_bytes(*count) as usize;
    // Checked before allocating anything for the items.
    if n > rest.len() / MIN_ITEM_LEN {
        return Err(malformed(format!(
            "{n} items cannot fit in {} bytes (an item takes at least {MIN_ITEM_LEN})",
            rest.len()
        )));
    }
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let Some((len, after)) = rest.split_first_chunk::<LENGTH_LEN>() else {
            return Err(malformed(format!("item {i}: message length cut short")));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > after.len() {
            return Err(malformed(format!(
                "item {i}: message length {len} runs past the end ({} bytes left)",
                after.len()
            )));
        }
        let (message, after) = after.split_at(len);
        let Some((signature, after)) = after.split_first_chunk::<SIGNATURE_LEN>() else {
            return Err(malformed(format!("item {i}: signature cut short")));
        };
        let Some((public_key, after)) = after.split_first_chunk::<PUBLIC_KEY_LEN>() else {
            return Err(malformed(format!("item {i}: public key cut short")));
        };
        items.push(Item {
            message,
            signature,
            public_key,
        });
        rest = after;
    }
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} trailing bytes after the last item",
            rest.len()
        )));
    }
    Ok(items)
}

/// The verdict of the guests on `data`, with `verify` checking one item's signature: `Ok(n)`
/// when the batch is well-formed and every signature verifies (the guests' new head is `n` as
/// `u64` LE), else the reason: the batch is malformed ([`parse`]), or
/// `signature {i} does not verify` for the first failing item `i` (0-based; no item after it
/// is checked).
pub fn verdict(data: &[u8], mut verify: impl FnMut(&Item<'_>) -> bool) -> Result<u64, String> {
    let items = parse(data)?;
    for (i, item) in items.iter().enumerate() {
        if !verify(item) {
            return Err(format!("signature {i} does not verify"));
        }
    }
    Ok(items.len() as u64)
}
