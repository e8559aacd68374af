//! Block data for the guests `sig_verify` and `sig_verify_wasm`: batches of ed25519-signed
//! messages, deterministic from a seed, with [`expected_verdict`] telling what both guests
//! answer.
//!
//! The format and the verdict are those of `guest-components/sig-batch`, whose source this
//! module includes, so the guests and these helpers share one parser:
//!
//! ```text
//! u32 LE n, then n items: u32 LE message length, the message, 64-byte signature, 32-byte key
//! ```
//!
//! `sig_verify` calls the host's `ed25519-verify` once per item, in order, until the first
//! that fails (none when the batch is malformed: it is parsed whole first). Each call is given
//! `SIGNATURE_LEN + message length + PUBLIC_KEY_LEN` bytes ([`call_bytes`]).

use ed25519_zebra::{Signature, SigningKey, VerificationKey};

#[path = "../../../guest-components/sig-batch/src/lib.rs"]
mod format;

pub use format::{LENGTH_LEN, MIN_ITEM_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN};

/// One item of a batch: the message, its signature, the public key.
pub type SignedItem = (Vec<u8>, [u8; SIGNATURE_LEN], [u8; PUBLIC_KEY_LEN]);

/// The messages of [`signed_items`] are shorter than this.
pub const MAX_MESSAGE_LEN: usize = 200;

/// The block data holding `items`, in order.
pub fn encode_batch(items: &[SignedItem]) -> Vec<u8> {
    let count = u32::try_from(items.len()).expect("at most u32::MAX items");
    let mut data = count.to_le_bytes().to_vec();
    for (message, signature, public_key) in items {
        let len = u32::try_from(message.len()).expect("a message of at most u32::MAX bytes");
        data.extend_from_slice(&len.to_le_bytes());
        data.extend_from_slice(message);
        data.extend_from_slice(signature);
        data.extend_from_slice(public_key);
    }
    data
}

/// SplitMix64: a small deterministic stream, enough for test keys and messages.
struct Stream(u64);

impl Stream {
    fn new(seed: u64) -> Self {
        Stream(seed ^ 0x5349_475f_4241_5443) // "SIG_BATC"
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// The next key and message of `stream`: the key from `SigningKey::from` 32 drawn bytes, a
/// message of 0 to `MAX_MESSAGE_LEN - 1` drawn bytes.
fn draw_key_and_message(stream: &mut Stream) -> (SigningKey, Vec<u8>) {
    let mut secret = [0; 32];
    stream.fill(&mut secret);
    let len = (stream.next_u64() % MAX_MESSAGE_LEN as u64) as usize;
    let mut message = vec![0; len];
    stream.fill(&mut message);
    (SigningKey::from(secret), message)
}

/// `n` validly signed items, the same for the same `n` and `seed` (the first `k` items of
/// `signed_items(n, seed)` are `signed_items(k, seed)`): each with its own key (from
/// `SigningKey::from` 32 bytes drawn from the seed) and a message of 0 to
/// `MAX_MESSAGE_LEN - 1` bytes.
pub fn signed_items(n: usize, seed: u64) -> Vec<SignedItem> {
    let mut stream = Stream::new(seed);
    (0..n)
        .map(|_| {
            let (key, message) = draw_key_and_message(&mut stream);
            let signature = key.sign(&message).to_bytes();
            let public_key = VerificationKey::from(&key).into();
            (message, signature, public_key)
        })
        .collect()
}

/// The block data of [`signed_items`]`(n, seed)`: both guests find it valid, with head
/// `(n as u64).to_le_bytes()`.
pub fn signed_batch(n: usize, seed: u64) -> Vec<u8> {
    encode_batch(&signed_items(n, seed))
}

/// [`signed_batch`]`(n, seed)` but for item `bad_index`, whose signature is its key's valid
/// signature of another message (the same message with one more byte), so that it does not
/// verify while being well-formed. Both guests answer `signature {bad_index} does not verify`.
///
/// # Panics
/// When `bad_index >= n`.
pub fn batch_with_bad_signature(n: usize, bad_index: usize, seed: u64) -> Vec<u8> {
    assert!(bad_index < n, "bad_index {bad_index} is not an item of {n}");
    let mut items = signed_items(n, seed);
    let mut stream = Stream::new(seed);
    // The key of item `bad_index`, drawn again as `signed_items` drew it.
    let (key, mut message) = (0..=bad_index)
        .map(|_| draw_key_and_message(&mut stream))
        .last()
        .expect("bad_index < n");
    message.push(0);
    items[bad_index].1 = key.sign(&message).to_bytes();
    encode_batch(&items)
}

/// Malformed block data, each with a name: both guests answer `malformed batch: ...` to each
/// (the exact text is [`expected_verdict`]'s).
pub fn malformed_batches() -> Vec<(&'static str, Vec<u8>)> {
    let valid = signed_batch(3, 1);
    let one_item = signed_batch(1, 2);
    let with_count = |count: u32, rest: &[u8]| {
        let mut data = count.to_le_bytes().to_vec();
        data.extend_from_slice(rest);
        data
    };
    let mut cases = vec![
        ("empty", Vec::new()),
        ("count cut short", vec![1, 0]),
        ("truncated", valid[..valid.len() - 1].to_vec()),
        ("trailing byte", [&valid[..], &[0]].concat()),
        ("trailing bytes after no item", with_count(0, &[7; 5])),
        ("n one too many", with_count(2, &one_item[4..])),
        ("huge n", with_count(u32::MAX, &one_item[4..])),
        ("huge n, no items", with_count(u32::MAX, &[])),
    ];
    // One item whose message length runs past the end.
    let mut past_end = one_item.clone();
    let past = u32::try_from(one_item.len()).expect("small");
    past_end[4..8].copy_from_slice(&past.to_le_bytes());
    cases.push(("message length past the end", past_end));
    let mut huge_len = one_item;
    huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("huge message length", huge_len));
    // The first item's message takes the room of the second.
    let mut second_cut = with_count(2, &100u32.to_le_bytes());
    second_cut.extend_from_slice(&[0; 100 + SIGNATURE_LEN + PUBLIC_KEY_LEN + 3]);
    cases.push(("second item cut short", second_cut));
    // Message lengths that leave too few bytes for the signature, or for the key.
    for (name, len) in [("signature cut short", 40u32), ("public key cut short", 1)] {
        let mut data = with_count(1, &len.to_le_bytes());
        data.extend_from_slice(&[0; SIGNATURE_LEN + PUBLIC_KEY_LEN]);
        cases.push((name, data));
    }
    cases
}

/// The message length of each item of `data`, in order: the host's `ed25519-verify` is called
/// with [`call_bytes`] of it for each item that `sig_verify` checks. `Err` is the guests'
/// verdict on malformed data (`malformed batch: ...`).
pub fn batch_items(data: &[u8]) -> Result<Vec<usize>, String> {
    Ok(format::parse(data)?
        .iter()
        .map(|item| item.message.len())
        .collect())
}

/// The bytes given to one call of `ed25519-verify` for a message of `message_len` bytes:
/// signature, message and public key.
pub fn call_bytes(message_len: usize) -> usize {
    SIGNATURE_LEN + message_len + PUBLIC_KEY_LEN
}

/// Whether `signature` is a valid signature of `message` by `public_key` under ed25519-zebra
/// (ZIP-215), as both guests check it.
pub fn verifies(
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
    public_key: &[u8; PUBLIC_KEY_LEN],
) -> bool {
    VerificationKey::try_from(*public_key).is_ok_and(|key| {
        key.verify(&Signature::from_bytes(signature), message)
            .is_ok()
    })
}

/// What both `sig_verify` and `sig_verify_wasm` answer for block data `data`: `Ok(n)` (their
/// head is `n.to_le_bytes()`) or the exact reason of their `err`.
pub fn expected_verdict(data: &[u8]) -> Result<u64, String> {
    format::verdict(data, |item| {
        verifies(item.message, item.signature, item.public_key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_batches_round_trip_through_the_guests_parser() {
        for (n, seed) in [(0, 0), (1, 1), (7, 2), (64, 3)] {
            let items = signed_items(n, seed);
            let data = encode_batch(&items);
            assert_eq!(data, signed_batch(n, seed));
            let parsed = format::parse(&data).expect("well-formed");
            assert_eq!(parsed.len(), n);
            for (item, (message, signature, public_key)) in parsed.iter().zip(&items) {
                assert_eq!(item.message, &message[..]);
                assert_eq!(item.signature, signature);
                assert_eq!(item.public_key, public_key);
            }
            let lengths: Vec<usize> = items.iter().map(|(m, _, _)| m.len()).collect();
            assert_eq!(batch_items(&data), Ok(lengths.clone()));
            let size = 4 + lengths
                .iter()
                .map(|&l| LENGTH_LEN + call_bytes(l))
                .sum::<usize>();
            assert_eq!(data.len(), size);
        }
    }

    #[test]
    fn batches_are_deterministic_and_vary_with_the_seed() {
        assert_eq!(signed_batch(5, 9), signed_batch(5, 9));
        assert_ne!(signed_batch(5, 9), signed_batch(5, 10));
        let long = signed_items(8, 9);
        assert_eq!(&long[..5], &signed_items(5, 9)[..]);
        // Distinct keys, and messages of many lengths below MAX_MESSAGE_LEN, empty included
        // somewhere in a large enough batch.
        let items = signed_items(400, 4);
        let mut keys: Vec<_> = items.iter().map(|(_, _, k)| *k).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), items.len());
        let lengths: std::collections::BTreeSet<usize> =
            items.iter().map(|(m, _, _)| m.len()).collect();
        assert!(lengths.len() > 100, "{} distinct lengths", lengths.len());
        assert!(*lengths.last().unwrap() < MAX_MESSAGE_LEN);
        assert!(lengths.contains(&0));
    }

    #[test]
    fn signatures_verify_natively() {
        for (message, signature, public_key) in signed_items(20, 5) {
            let key = VerificationKey::try_from(public_key).expect("a valid key");
            key.verify(&Signature::from_bytes(&signature), &message)
                .expect("verifies");
        }
        assert_eq!(expected_verdict(&signed_batch(20, 5)), Ok(20));
        assert_eq!(expected_verdict(&signed_batch(0, 5)), Ok(0));
    }

    #[test]
    fn the_bad_signature_alone_does_not_verify() {
        for (n, bad) in [(1, 0), (5, 0), (5, 2), (5, 4)] {
            let data = batch_with_bad_signature(n, bad, 6);
            let good = signed_batch(n, 6);
            assert_eq!(data.len(), good.len(), "only a signature changes");
            let items = format::parse(&data).expect("well-formed");
            for (i, item) in items.iter().enumerate() {
                assert_eq!(
                    verifies(item.message, item.signature, item.public_key),
                    i != bad,
                    "item {i} of {n}, bad {bad}"
                );
            }
            assert_eq!(
                expected_verdict(&data),
                Err(format!("signature {bad} does not verify"))
            );
        }
    }

    #[test]
    #[should_panic(expected = "not an item")]
    fn a_bad_index_past_the_end_panics() {
        batch_with_bad_signature(3, 3, 0);
    }

    #[test]
    fn malformed_batches_are_malformed_with_distinct_names() {
        let cases = malformed_batches();
        let mut names: Vec<&str> = cases.iter().map(|(name, _)| *name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len());
        for (name, data) in &cases {
            let reason = batch_items(data).expect_err(name);
            assert!(reason.starts_with("malformed batch: "), "{name}: {reason}");
            assert_eq!(expected_verdict(data), Err(reason), "{name}");
        }
    }

    #[test]
    fn malformed_reasons_name_what_is_wrong() {
        let reason = |name: &str| {
            let (_, data) = malformed_batches()
                .into_iter()
                .find(|(n, _)| *n == name)
                .expect(name);
            batch_items(&data).expect_err(name)
        };
        assert_eq!(
            reason("empty"),
            "malformed batch: 0 bytes, too short for the 4-byte item count"
        );
        assert_eq!(
            reason("trailing byte"),
            "malformed batch: 1 trailing bytes after the last item"
        );
        assert!(reason("huge n").starts_with("malformed batch: 4294967295 items cannot fit in "));
        assert!(
            reason("huge message length").starts_with(
                "malformed batch: item 0: message length 4294967295 runs past the end"
            )
        );
        assert_eq!(
            reason("signature cut short"),
            "malformed batch: item 0: signature cut short"
        );
        assert_eq!(
            reason("public key cut short"),
            "malformed batch: item 0: public key cut short"
        );
        assert!(reason("n one too many").starts_with("malformed batch: 2 items cannot fit in "));
        assert_eq!(
            reason("second item cut short"),
            "malformed batch: item 1: message length cut short"
        );
    }

    #[test]
    fn a_malformed_batch_is_malformed_even_with_a_bad_signature() {
        let mut data = batch_with_bad_signature(2, 0, 7);
        data.push(0);
        assert_eq!(
            expected_verdict(&data),
            Err("malformed batch: 1 trailing bytes after the last item".into())
        );
    }
}
